//! thpsim-mm: an executable model of Linux anonymous memory and THP.
#![forbid(unsafe_code)]

pub mod errno;
pub mod mman;
pub mod types;

pub use errno::*;
pub use types::*;
