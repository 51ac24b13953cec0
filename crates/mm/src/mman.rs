//! The arguments of the memory system calls: `PROT_*`, `MADV_*`,
//! `PR_SET_THP_DISABLE` states, and the kind of access a touch makes.
//!
//! Models: include/uapi/asm-generic/mman-common.h, include/uapi/linux/prctl.h.

use serde::{Deserialize, Serialize};

/// `PROT_*` bits of mmap and mprotect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Prot {
    pub const NONE: Prot = Prot { read: false, write: false, exec: false };
    pub const READ: Prot = Prot { read: true, write: false, exec: false };
    pub const READ_WRITE: Prot = Prot { read: true, write: true, exec: false };
}

/// `MADV_*` advices, by their kernel names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Advice {
    Normal,
    DontNeed,
    Free,
    HugePage,
    NoHugePage,
    Collapse,
    Cold,
    PageOut,
    PopulateRead,
    PopulateWrite,
    DontFork,
    DoFork,
}

impl Advice {
    /// The `MADV_*` number on x86-64.
    pub const fn code(self) -> i32 {
        match self {
            Advice::Normal => 0,
            Advice::DontNeed => 4,
            Advice::Free => 8,
            Advice::DontFork => 10,
            Advice::DoFork => 11,
            Advice::HugePage => 14,
            Advice::NoHugePage => 15,
            Advice::Cold => 20,
            Advice::PageOut => 21,
            Advice::PopulateRead => 22,
            Advice::PopulateWrite => 23,
            Advice::Collapse => 25,
        }
    }
}

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

/// prctl(PR_SET_THP_DISABLE) in its three states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ThpDisable {
    /// prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0).
    Off,
    /// prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0): no THP anywhere in the process.
    All,
    /// prctl(PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0):
    /// THP only where MADV_HUGEPAGE (or MADV_COLLAPSE) asks for it.
    ExceptAdvised,
}
