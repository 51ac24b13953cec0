//! thpsim scenario language.
#![forbid(unsafe_code)]
pub mod op;
pub use op::*;
