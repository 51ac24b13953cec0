//! The operations a scenario performs, in the concrete form both backends run.
//!
//! The planner (`plan.rs`) resolves region names and offsets to addresses,
//! so an `Op` carries only numbers: the model and the Linux executor map
//! every region at the same virtual address (MAP_FIXED_NOREPLACE), and their
//! observations can be compared address for address.

use serde::{Deserialize, Serialize};

pub use thpsim_mm::mman::{pattern_word, Access, Advice, Fill, Prot, ThpDisable};
pub use thpsim_uapi::Setting;

/// A scenario process, numbered in order of first appearance (0 is the first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProcId(pub u32);

/// A named GUP pin, numbered in order of creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PinRef(pub u32);

/// Which pages of a range a touch visits, in ascending address order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TouchPattern {
    /// Every page.
    All,
    /// Pages 0, n, 2n, ... of the range.
    EveryNth(u64),
    /// `count` distinct pages chosen by a seeded generator (see
    /// `TouchPattern::page_indices`): the same seed gives the same pages on
    /// every backend and every host.
    Random { count: u64, seed: u64 },
}

/// One operation, with every name already resolved to an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Writes a THP sysfs file: `setting.value()` to
    /// /sys/kernel/mm/transparent_hugepage/`setting.knob().path()`.
    Set {
        setting: Setting,
    },
    /// Starts a new process with an empty address space.
    Spawn {
        proc: ProcId,
    },
    /// fork(): `child` gets a copy of `parent`'s address space.
    Fork {
        parent: ProcId,
        child: ProcId,
    },
    /// The process exits; all its memory is unmapped.
    Exit {
        proc: ProcId,
    },
    /// mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE).
    Mmap {
        proc: ProcId,
        addr: u64,
        len: u64,
        prot: Prot,
    },
    /// mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED):
    /// replaces whatever the process mapped in the range.
    MmapFixed {
        proc: ProcId,
        addr: u64,
        len: u64,
        prot: Prot,
    },
    Munmap {
        proc: ProcId,
        addr: u64,
        len: u64,
    },
    /// mlock(addr, len): VM_LOCKED, and every page faulted in.
    Mlock {
        proc: ProcId,
        addr: u64,
        len: u64,
    },
    /// munlock(addr, len).
    Munlock {
        proc: ProcId,
        addr: u64,
        len: u64,
    },
    Mprotect {
        proc: ProcId,
        addr: u64,
        len: u64,
        prot: Prot,
    },
    /// mremap(old_addr, old_len, new_len, MREMAP_MAYMOVE [| MREMAP_FIXED, new_addr]).
    Mremap {
        proc: ProcId,
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        new_addr: Option<u64>,
    },
    /// mremap(old_addr, old_len, new_len, 0): without MREMAP_MAYMOVE, the
    /// mapping grows or shrinks where it is (ENOMEM if it cannot grow there).
    MremapInPlace {
        proc: ProcId,
        old_addr: u64,
        old_len: u64,
        new_len: u64,
    },
    Madvise {
        proc: ProcId,
        addr: u64,
        len: u64,
        advice: Advice,
    },
    /// Loads from or stores to the pages of a range the pattern selects; one
    /// access per page, at the page's first byte.
    Touch {
        proc: ProcId,
        addr: u64,
        len: u64,
        access: Access,
        fill: Fill,
        pattern: TouchPattern,
    },
    Prctl {
        proc: ProcId,
        disable: ThpDisable,
    },
    /// pin_user_pages(FOLL_PIN | FOLL_WRITE [| FOLL_LONGTERM]) on a range.
    Pin {
        proc: ProcId,
        pin: PinRef,
        addr: u64,
        len: u64,
        longterm: bool,
    },
    Unpin {
        pin: PinRef,
    },
    /// Lets khugepaged complete `full_scans` full passes over its mm list.
    Khugepaged {
        full_scans: u32,
    },
    /// Runs the shrinkers (`echo 2 > /proc/sys/vm/drop_caches`): the
    /// deferred-split and underused-THP shrinkers.
    Shrink,
}

impl Op {
    /// The process an operation acts in, if it acts in one.
    pub fn proc(&self) -> Option<ProcId> {
        match *self {
            Op::Spawn { proc }
            | Op::Exit { proc }
            | Op::Mmap { proc, .. }
            | Op::MmapFixed { proc, .. }
            | Op::Munmap { proc, .. }
            | Op::Mlock { proc, .. }
            | Op::Munlock { proc, .. }
            | Op::MremapInPlace { proc, .. }
            | Op::Mprotect { proc, .. }
            | Op::Mremap { proc, .. }
            | Op::Madvise { proc, .. }
            | Op::Touch { proc, .. }
            | Op::Prctl { proc, .. }
            | Op::Pin { proc, .. } => Some(proc),
            Op::Fork { parent, .. } => Some(parent),
            Op::Set { .. } | Op::Unpin { .. } | Op::Khugepaged { .. } | Op::Shrink => None,
        }
    }
}

/// A region the observation should describe: the planner's view of a
/// scenario name at the time of the observation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRef {
    pub proc: ProcId,
    /// The scenario's name of the process (`p1`).
    pub proc_name: String,
    /// The scenario's name of the region (`A`).
    pub name: String,
    pub addr: u64,
    pub len: u64,
}

/// The tag of `pattern=<word>` (`Fill::Pattern(tag)`): FNV-1a of the word,
/// so every backend and every run stores the same words for the same tag.
pub fn pattern_tag(word: &str) -> u64 {
    word.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A deterministic generator for `TouchPattern::Random` (splitmix64), so both
/// backends visit the same pages.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A value in `0..bound` (`bound` > 0), without modulo bias worth caring
    /// about for page selection.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
}

impl TouchPattern {
    /// The page indices (0-based, within a range of `nr_pages` pages) the
    /// pattern visits, ascending and without repeats.
    pub fn page_indices(self, nr_pages: u64) -> Vec<u64> {
        self.pages(nr_pages).collect()
    }

    /// The pages `page_indices` lists, lazily: a touch of a terabyte needs
    /// no list of its pages.
    pub fn pages(self, nr_pages: u64) -> impl Iterator<Item = u64> {
        let (step, mut random) = match self {
            TouchPattern::All => (1, None),
            TouchPattern::EveryNth(n) => (n.max(1), None),
            // Selection sampling (Knuth's algorithm S): ascending, exact count.
            TouchPattern::Random { count, seed } => (1, Some((count.min(nr_pages), SplitMix64::new(seed)))),
        };
        let mut chosen = 0u64;
        (0..nr_pages)
            .step_by(usize::try_from(step).unwrap_or(usize::MAX))
            .map_while(move |i| match &mut random {
                None => Some(Some(i)),
                Some((want, rng)) => {
                    let needed = *want - chosen;
                    if needed == 0 {
                        return None;
                    }
                    let pick = rng.below(nr_pages - i) < needed;
                    chosen += u64::from(pick);
                    Some(pick.then_some(i))
                }
            })
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_pattern_is_exact_sorted_and_seeded() {
        let a = TouchPattern::Random { count: 37, seed: 7 }.page_indices(512);
        let b = TouchPattern::Random { count: 37, seed: 7 }.page_indices(512);
        let c = TouchPattern::Random { count: 37, seed: 8 }.page_indices(512);
        assert_eq!(a.len(), 37);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(TouchPattern::Random { count: 900, seed: 1 }.page_indices(512).len(), 512);
    }

    #[test]
    fn every_nth_pattern() {
        assert_eq!(TouchPattern::EveryNth(4).page_indices(10), vec![0, 4, 8]);
    }
}
