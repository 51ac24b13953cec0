//! The arguments of the memory system calls as the kernel numbers them:
//! `PROT_*` bits, `MADV_*` advices, and `prctl(PR_SET_THP_DISABLE)`.
//!
//! Models: include/uapi/asm-generic/mman-common.h, include/uapi/linux/prctl.h
//! (Linux 6.18, x86-64).

use serde::{Deserialize, Serialize};

use crate::words;

/// `PROT_READ`.
pub const PROT_READ: u32 = 0x1;
/// `PROT_WRITE`.
pub const PROT_WRITE: u32 = 0x2;
/// `PROT_EXEC`.
pub const PROT_EXEC: u32 = 0x4;

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

    /// The `prot` argument of mmap and mprotect.
    pub const fn bits(self) -> u32 {
        (if self.read { PROT_READ } else { 0 })
            | (if self.write { PROT_WRITE } else { 0 })
            | (if self.exec { PROT_EXEC } else { 0 })
    }

    /// The protection of a `prot` argument; other bits are ignored.
    pub const fn from_bits(bits: u32) -> Prot {
        Prot { read: bits & PROT_READ != 0, write: bits & PROT_WRITE != 0, exec: bits & PROT_EXEC != 0 }
    }
}

words! {
    /// `MADV_*` advices, by the names scenarios spell them (the kernel's
    /// name without `MADV_`, in lower case).
    pub enum Advice {
        Normal = "normal",
        DontNeed = "dontneed",
        Free = "free",
        HugePage = "hugepage",
        NoHugePage = "nohugepage",
        Collapse = "collapse",
        Cold = "cold",
        PageOut = "pageout",
        PopulateRead = "populate_read",
        PopulateWrite = "populate_write",
        DontFork = "dontfork",
        DoFork = "dofork",
        WipeOnFork = "wipeonfork",
        KeepOnFork = "keeponfork",
    }
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
            Advice::WipeOnFork => 18,
            Advice::KeepOnFork => 19,
            Advice::HugePage => 14,
            Advice::NoHugePage => 15,
            Advice::Cold => 20,
            Advice::PageOut => 21,
            Advice::PopulateRead => 22,
            Advice::PopulateWrite => 23,
            Advice::Collapse => 25,
        }
    }

    /// The kernel's constant: `MADV_HUGEPAGE`.
    pub fn kernel_name(self) -> String {
        format!("MADV_{}", self.name().to_ascii_uppercase())
    }

    /// An advice by its scenario name (`hugepage`) or its kernel name (`MADV_HUGEPAGE`).
    pub fn from_word(word: &str) -> Option<Advice> {
        match word.strip_prefix("MADV_") {
            Some(rest) => Advice::from_name(&rest.to_ascii_lowercase()),
            None => Advice::from_name(word),
        }
    }
}

/// `PR_SET_THP_DISABLE` (include/uapi/linux/prctl.h).
pub const PR_SET_THP_DISABLE: i32 = 41;
/// `PR_GET_THP_DISABLE`.
pub const PR_GET_THP_DISABLE: i32 = 42;
/// `PR_SET_THP_DISABLE` arg3 flag of Linux 6.18: keep THP where
/// MADV_HUGEPAGE (or MADV_COLLAPSE) asks for it.
pub const PR_THP_DISABLE_EXCEPT_ADVISED: u64 = 1 << 1;

words! {
    /// prctl(PR_SET_THP_DISABLE) in its three states, as `prctl thp_disable <word>` spells them.
    pub enum ThpDisable {
        /// prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0): no THP anywhere in the process.
        All = "all",
        /// prctl(PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0):
        /// THP only where MADV_HUGEPAGE (or MADV_COLLAPSE) asks for it.
        ExceptAdvised = "except_advised",
        /// prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0).
        Off = "off",
    }
}

impl ThpDisable {
    /// arg2 and arg3 of `prctl(PR_SET_THP_DISABLE, arg2, arg3, 0, 0)`.
    pub const fn prctl_args(self) -> (u64, u64) {
        match self {
            ThpDisable::Off => (0, 0),
            ThpDisable::All => (1, 0),
            ThpDisable::ExceptAdvised => (1, PR_THP_DISABLE_EXCEPT_ADVISED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prot_bits_are_the_kernels() {
        assert_eq!(Prot::NONE.bits(), 0);
        assert_eq!(Prot::READ.bits(), 1);
        assert_eq!(Prot::READ_WRITE.bits(), 3);
        assert_eq!(Prot { read: true, write: false, exec: true }.bits(), 5);
        for bits in 0..8 {
            assert_eq!(Prot::from_bits(bits).bits(), bits);
        }
    }

    #[test]
    fn advices_by_name_number_and_kernel_name() {
        assert_eq!(Advice::ALL.len(), 14);
        for &advice in Advice::ALL {
            assert_eq!(Advice::from_word(advice.name()), Some(advice));
            assert_eq!(Advice::from_word(&advice.kernel_name()), Some(advice));
        }
        assert_eq!(Advice::HugePage.kernel_name(), "MADV_HUGEPAGE");
        assert_eq!(Advice::Collapse.code(), 25);
        assert_eq!((Advice::WipeOnFork.code(), Advice::KeepOnFork.code()), (18, 19));
        assert_eq!(Advice::from_word("MADV_WIPEONFORK"), Some(Advice::WipeOnFork));
        assert_eq!(Advice::from_word("huge"), None);
    }

    #[test]
    fn prctl_args() {
        assert_eq!(ThpDisable::Off.prctl_args(), (0, 0));
        assert_eq!(ThpDisable::All.prctl_args(), (1, 0));
        assert_eq!(ThpDisable::ExceptAdvised.prctl_args(), (1, 2));
        assert_eq!(ThpDisable::NAMES, ["all", "except_advised", "off"]);
    }
}
