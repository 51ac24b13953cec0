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

/// What a write stores at the start of each page it touches. Contents
/// matter: splitting a THP remaps subpages that hold only zeroes to the
/// shared zero page, and a pattern lets a scenario check that contents
/// survive collapse, split, COW and mremap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fill {
    /// The byte `NONZERO_FILL` at the page's first byte (the default).
    NonZero,
    /// A zero byte at the page's first byte.
    Zero,
    /// The 64-bit word `pattern_word(tag, i)` at the start of page `i` of
    /// the touched range.
    Pattern(u64),
}

/// The byte a `Fill::NonZero` store writes at the first byte of a page, on
/// both backends.
pub const NONZERO_FILL: u8 = 0x5a;

/// The word a `Fill::Pattern(tag)` store writes at the start of page `i` of
/// the touched range: SplitMix64 of the tag and the index, never 0 (so a
/// patterned page is never mistaken for an all-zero one) and never
/// `NONZERO_FILL`.
pub const fn pattern_word(tag: u64, i: u64) -> u64 {
    let mut z = tag.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 0x100
}
