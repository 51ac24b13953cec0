//! The arguments of the memory system calls: `PROT_*`, `MADV_*`,
//! `PR_SET_THP_DISABLE` states, and the kind of access a touch makes.
//!
//! Models: include/uapi/asm-generic/mman-common.h, include/uapi/linux/prctl.h.

use serde::{Deserialize, Serialize};

/// The kernel's numbers and the scenario words for these live in `thpsim_uapi`.
pub use thpsim_uapi::mman::{Advice, Prot, ThpDisable};

/// Load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    Read,
    Write,
}

/// What a write stores. Contents matter: splitting a THP remaps subpages
/// that hold only zeroes to the shared zero page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fill {
    /// A non-zero pattern (the default).
    NonZero,
    /// Zero bytes.
    Zero,
}
