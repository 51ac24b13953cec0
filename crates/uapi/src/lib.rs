//! thpsim-uapi: the kernel ABI thpsim speaks, written down once.
//!
//! Every name and number that crosses the line between a scenario, the
//! model and the live kernel lives here: the THP sysfs knobs under
//! /sys/kernel/mm/transparent_hugepage (path, accepted values, print form,
//! save/restore order), the `MADV_*` advices, the errnos, the `PROT_*` bits
//! and the `PR_SET_THP_DISABLE` values. The scenario parser, the model's
//! `Config`, the random generator and the Linux backend all read these
//! tables, so a knob or an advice added here reaches all of them.
//!
//! Models: include/uapi/asm-generic/mman-common.h, include/uapi/linux/prctl.h,
//! include/uapi/asm-generic/errno-base.h, Documentation/admin-guide/mm/transhuge.rst
//! (Linux 6.18, x86-64).
#![forbid(unsafe_code)]

pub mod errno;
pub mod knob;
pub mod mman;

pub use errno::Errno;
pub use knob::{Defrag, Knob, KnobError, KnobValues, MthpEnabled, MthpSize, Setting, ThpEnabled, THP_ROOT};
pub use mman::{Advice, Prot, ThpDisable};

/// Declares an enum whose variants are spelled as words in scenarios or in
/// sysfs, with `ALL`, `NAMES`, `name()` and `from_name()`, so the words are
/// written once, beside the variants. Exported: the model declares its
/// policy switches with it too.
#[macro_export]
macro_rules! words {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $var:ident = $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name { $($(#[$vmeta])* $var,)+ }

        impl $name {
            /// Every value, in the order the kernel (or the scenario language) lists them.
            pub const ALL: &'static [$name] = &[$($name::$var,)+];
            /// The words, in the order of `ALL`.
            pub const NAMES: &'static [&'static str] = &[$($word,)+];
            /// The word for this value.
            pub const fn name(self) -> &'static str {
                match self { $($name::$var => $word,)+ }
            }
            /// The value a word names, if any.
            pub fn from_name(word: &str) -> Option<$name> {
                match word { $($word => Some($name::$var),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
