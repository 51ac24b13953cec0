//! The kernel's error answers, as values.
//!
//! Models: the `-E*` returns of the mm system calls and the `VM_FAULT_*`
//! codes of the fault path (include/uapi/asm-generic/errno-base.h,
//! include/linux/mm_types.h).

use thiserror::Error;

/// An errno a system call of the model returns, with the kernel's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error, serde::Serialize, serde::Deserialize)]
pub enum Errno {
    #[error("ENOMEM")]
    NoMem,
    #[error("EINVAL")]
    Inval,
    #[error("EFAULT")]
    Fault,
    #[error("EBUSY")]
    Busy,
    #[error("EAGAIN")]
    Again,
    #[error("EEXIST")]
    Exist,
    #[error("EPERM")]
    Perm,
    #[error("ESRCH")]
    Srch,
}

impl Errno {
    /// The errno number on x86-64 Linux.
    pub const fn code(self) -> i32 {
        match self {
            Errno::Perm => 1,
            Errno::Srch => 3,
            Errno::Again => 11,
            Errno::NoMem => 12,
            Errno::Fault => 14,
            Errno::Busy => 16,
            Errno::Exist => 17,
            Errno::Inval => 22,
        }
    }

    /// The errno for a number the host returned, if the model knows it.
    pub const fn from_code(code: i32) -> Option<Errno> {
        Some(match code {
            1 => Errno::Perm,
            3 => Errno::Srch,
            11 => Errno::Again,
            12 => Errno::NoMem,
            14 => Errno::Fault,
            16 => Errno::Busy,
            17 => Errno::Exist,
            22 => Errno::Inval,
            _ => return None,
        })
    }
}

/// How a fault ended, when it did not simply succeed (`VM_FAULT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum FaultError {
    /// `VM_FAULT_OOM`: no memory for the page or a page table.
    #[error("VM_FAULT_OOM")]
    Oom,
    /// `VM_FAULT_SIGSEGV`: no VMA, or the access is not allowed.
    #[error("VM_FAULT_SIGSEGV")]
    Segv,
}

/// A fault that fails inside a system call (GUP, MADV_POPULATE, a user
/// access the model performs) reads as the errno the kernel returns there.
impl From<FaultError> for Errno {
    fn from(e: FaultError) -> Errno {
        match e {
            FaultError::Oom => Errno::NoMem,
            FaultError::Segv => Errno::Fault,
        }
    }
}
