//! The errnos the model returns and the live kernel may answer, by name and
//! number.
//!
//! Models: include/uapi/asm-generic/errno-base.h (x86-64 numbers).

use thiserror::Error;

/// An errno a system call returns, with the kernel's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error, serde::Serialize, serde::Deserialize)]
pub enum Errno {
    #[error("EPERM")]
    Perm,
    #[error("ESRCH")]
    Srch,
    #[error("EAGAIN")]
    Again,
    #[error("ENOMEM")]
    NoMem,
    #[error("EFAULT")]
    Fault,
    #[error("EBUSY")]
    Busy,
    #[error("EEXIST")]
    Exist,
    #[error("EINVAL")]
    Inval,
}

/// Name and number of each errno, in the order of the numbers.
const TABLE: &[(Errno, &str, i32)] = &[
    (Errno::Perm, "EPERM", 1),
    (Errno::Srch, "ESRCH", 3),
    (Errno::Again, "EAGAIN", 11),
    (Errno::NoMem, "ENOMEM", 12),
    (Errno::Fault, "EFAULT", 14),
    (Errno::Busy, "EBUSY", 16),
    (Errno::Exist, "EEXIST", 17),
    (Errno::Inval, "EINVAL", 22),
];

impl Errno {
    /// Every errno thpsim knows, by ascending number.
    pub const ALL: &'static [Errno] =
        &[Errno::Perm, Errno::Srch, Errno::Again, Errno::NoMem, Errno::Fault, Errno::Busy, Errno::Exist, Errno::Inval];

    const fn entry(self) -> (Errno, &'static str, i32) {
        TABLE[self as usize]
    }

    /// The kernel's name: `ENOMEM`.
    pub const fn name(self) -> &'static str {
        self.entry().1
    }

    /// The errno number on x86-64 Linux.
    pub const fn code(self) -> i32 {
        self.entry().2
    }

    /// The errno for a number the host returned, if thpsim knows it.
    pub fn from_code(code: i32) -> Option<Errno> {
        TABLE.iter().find(|e| e.2 == code).map(|e| e.0)
    }

    /// The errno a name (`ENOMEM`) stands for.
    pub fn from_name(name: &str) -> Option<Errno> {
        TABLE.iter().find(|e| e.1 == name).map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_variants_names_and_numbers() {
        assert_eq!(Errno::ALL.len(), TABLE.len());
        for (i, &errno) in Errno::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].0, errno, "TABLE is indexed by discriminant");
            assert_eq!(errno.to_string(), errno.name());
            assert_eq!(Errno::from_code(errno.code()), Some(errno));
            assert_eq!(Errno::from_name(errno.name()), Some(errno));
        }
        assert_eq!(Errno::NoMem.code(), 12);
        assert_eq!(Errno::Inval.code(), 22);
        assert_eq!(Errno::from_code(2), None);
    }
}
