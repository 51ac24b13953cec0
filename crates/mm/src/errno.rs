//! The kernel's error answers, as values.
//!
//! Models: the `-E*` returns of the mm system calls and the `VM_FAULT_*`
//! codes of the fault path (include/uapi/asm-generic/errno-base.h,
//! include/linux/mm_types.h).

use thiserror::Error;

/// An errno a system call of the model returns; the table of names and
/// numbers lives in `thpsim_uapi`.
pub use thpsim_uapi::Errno;

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
