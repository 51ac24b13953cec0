//! One free list as a set: the start PFNs of the free blocks of one order,
//! a sparse bitmap of 64-bit words (a sorted vector while small, a B-tree
//! when large), and the ascending walks over it.
//!
//! Stands in for one `free_area[order].free_list[migratetype]` of
//! mm/page_alloc.c (Linux 6.18), a LIFO `list_head` in the kernel, ordered
//! by PFN here so that the model's choice of block is deterministic. The
//! same structure, at `PAGEBLOCK_ORDER`, holds the set of unmovable
//! pageblocks.

use std::collections::BTreeMap;

/// The free blocks of one order, as a sparse bitmap over block numbers
/// (`start >> order`): 64-bit words of 64 consecutive blocks, only the
/// non-zero ones stored, in ascending order.
///
/// Splitting a block down from `Order::MAX` and merging it back touches one
/// free area per order, most of them holding a handful of words, so small
/// areas are sorted vectors (a binary search and a shift of at most
/// `FREE_AREA_FEW_MAX` entries) and only large ones pay for a B-tree. Every
/// operation is O(log n) in the number of words. A block and its buddy share
/// a word, and dense areas (a freshly booted zone, or every other page free)
/// cost two bits per block rather than a B-tree entry.
///
/// The same structure, at `PAGEBLOCK_ORDER`, holds the set of unmovable
/// pageblocks (`PageblockTypes`).
#[derive(Clone, Debug)]
pub(super) struct FreeArea {
    /// The order: block `start` is bit `(start >> order) % 64` of word
    /// `(start >> order) / 64`.
    pub(super) order: u32,
    /// Blocks in the area: the set bits of all words.
    nr_blocks: u64,
    words: FreeWords,
}

/// The non-zero words of a `FreeArea`, keyed by word number.
#[derive(Clone, Debug)]
enum FreeWords {
    /// At most `FREE_AREA_FEW_MAX` words, sorted by word number.
    Few(Vec<(u64, u64)>),
    /// At least `FREE_AREA_MANY_MIN` words.
    Many(BTreeMap<u64, u64>),
}

/// A vector of words that would grow past this becomes a B-tree.
const FREE_AREA_FEW_MAX: usize = 32;

/// A B-tree that shrinks below this many words becomes a vector again; the
/// gap to `FREE_AREA_FEW_MAX` keeps an area that hovers around one size from
/// converting back and forth.
const FREE_AREA_MANY_MIN: usize = 8;

impl PartialEq for FreeArea {
    /// Equal when they hold the same blocks, whichever the representation.
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order && self.nr_blocks == other.nr_blocks && self.iter().eq(other.iter())
    }
}

impl Eq for FreeArea {}

impl FreeArea {
    pub(super) fn new(order: usize) -> Self {
        FreeArea { order: order as u32, nr_blocks: 0, words: FreeWords::Few(Vec::with_capacity(FREE_AREA_FEW_MAX)) }
    }

    pub(super) fn len(&self) -> u64 {
        self.nr_blocks
    }

    pub(super) fn is_empty(&self) -> bool {
        self.nr_blocks == 0
    }

    /// The word number and bit of the block at `start`.
    #[inline(always)]
    fn locate(&self, start: u64) -> (u64, u64) {
        debug_assert_eq!(
            start & ((1 << self.order) - 1),
            0,
            "free area order-{}: block pfn {start:#x} is not aligned to the order",
            self.order
        );
        let block = start >> self.order;
        (block / 64, 1 << (block % 64))
    }

    pub(super) fn contains(&self, start: u64) -> bool {
        let (key, bit) = self.locate(start);
        let word = match &self.words {
            FreeWords::Few(words) => {
                words.binary_search_by_key(&key, |&(key, _)| key).map_or(0, |index| words[index].1)
            }
            FreeWords::Many(words) => words.get(&key).copied().unwrap_or(0),
        };
        word & bit != 0
    }

    /// Adds the block at `start`; false if it was already there.
    #[inline(always)]
    pub(super) fn insert(&mut self, start: u64) -> bool {
        let (key, bit) = self.locate(start);
        // The vector case is the hot one (splitting touches an area per
        // order, most of them small) and stays inline; the rest does not.
        let FreeWords::Few(words) = &mut self.words else {
            return self.insert_cold(key, bit);
        };
        let inserted = match search_words(words, key) {
            Ok(index) => {
                let word = &mut words[index].1;
                let inserted = *word & bit == 0;
                *word |= bit;
                inserted
            }
            Err(index) if words.len() < FREE_AREA_FEW_MAX => {
                words.insert(index, (key, bit));
                true
            }
            Err(_) => return self.insert_cold(key, bit),
        };
        self.nr_blocks += inserted as u64;
        inserted
    }

    /// `insert()` into a B-tree, or into a full vector that becomes one.
    #[cold]
    #[inline(never)]
    fn insert_cold(&mut self, key: u64, bit: u64) -> bool {
        if let FreeWords::Few(words) = &self.words {
            self.words = FreeWords::Many(words.iter().copied().collect());
        }
        let FreeWords::Many(words) = &mut self.words else {
            unreachable!("free area order-{} still a vector after conversion", self.order);
        };
        let word = words.entry(key).or_insert(0);
        let inserted = *word & bit == 0;
        *word |= bit;
        self.nr_blocks += inserted as u64;
        inserted
    }

    /// Removes the block at `start`; false if it was not there.
    #[inline(always)]
    pub(super) fn remove(&mut self, start: u64) -> bool {
        let (key, bit) = self.locate(start);
        let FreeWords::Few(words) = &mut self.words else {
            return self.remove_cold(key, bit);
        };
        let Ok(index) = search_words(words, key) else {
            return false;
        };
        let word = &mut words[index].1;
        if *word & bit == 0 {
            return false;
        }
        *word &= !bit;
        if *word == 0 {
            // Popping the last entry skips `remove()`'s call to memmove,
            // which costs more than all the rest when the area is this small.
            if index + 1 == words.len() {
                words.pop();
            } else {
                words.remove(index);
            }
        }
        self.nr_blocks -= 1;
        true
    }

    /// `remove()` from a B-tree, which becomes a vector if it gets small.
    #[cold]
    #[inline(never)]
    fn remove_cold(&mut self, key: u64, bit: u64) -> bool {
        let FreeWords::Many(words) = &mut self.words else {
            unreachable!("remove_cold on a vector free area");
        };
        let Some(word) = words.get_mut(&key).filter(|word| **word & bit != 0) else {
            return false;
        };
        *word &= !bit;
        if *word == 0 {
            words.remove(&key);
            if words.len() < FREE_AREA_MANY_MIN {
                let mut few = Vec::with_capacity(FREE_AREA_FEW_MAX);
                few.extend(words.iter().map(|(&key, &word)| (key, word)));
                self.words = FreeWords::Few(few);
            }
        }
        self.nr_blocks -= 1;
        true
    }

    /// The lowest block's start.
    #[inline]
    pub(super) fn first(&self) -> Option<u64> {
        let (key, word) = match &self.words {
            FreeWords::Few(words) => words.first().copied()?,
            FreeWords::Many(words) => words.first_key_value().map(|(&key, &word)| (key, word))?,
        };
        Some((key * 64 + word.trailing_zeros() as u64) << self.order)
    }

    /// Removes and returns the lowest block's start.
    #[inline]
    pub(super) fn pop_first(&mut self) -> Option<u64> {
        let start = self.first()?;
        self.remove(start);
        Some(start)
    }

    pub(super) fn iter(&self) -> FreeAreaIter<'_> {
        self.range(0, u64::MAX)
    }

    /// The starts of the blocks that start in `low..high`, ascending.
    pub(super) fn range(&self, low: u64, high: u64) -> FreeAreaIter<'_> {
        let block_low = low.div_ceil(1 << self.order);
        let block_high = high.div_ceil(1 << self.order);
        let words = if block_low >= block_high {
            FreeWordsIter::Few([].iter())
        } else {
            let (key_low, key_high) = (block_low / 64, (block_high - 1) / 64);
            match &self.words {
                FreeWords::Few(words) => {
                    let first = words.partition_point(|&(key, _)| key < key_low);
                    let end = words.partition_point(|&(key, _)| key <= key_high);
                    FreeWordsIter::Few(words[first..end].iter())
                }
                FreeWords::Many(words) => FreeWordsIter::Many(words.range(key_low..=key_high)),
            }
        };
        FreeAreaIter { order: self.order, block_low, block_high, words, key: 0, bits: 0 }
    }

    /// Checks the representation: no zero words, words in order, the block
    /// count right, and each variant within its size bounds.
    pub(super) fn check(&self) {
        let order = self.order;
        let (nr_words, nr_blocks) = match &self.words {
            FreeWords::Few(words) => {
                assert!(
                    words.len() <= FREE_AREA_FEW_MAX,
                    "buddy allocator: order-{order} free area is a vector of {} words, more than {FREE_AREA_FEW_MAX}",
                    words.len(),
                );
                assert!(
                    words.windows(2).all(|pair| pair[0].0 < pair[1].0),
                    "buddy allocator: order-{order} free area words are not in ascending order: {words:x?}",
                );
                (words.len(), words.iter().map(|&(_, word)| word.count_ones() as u64).sum::<u64>())
            }
            FreeWords::Many(words) => {
                assert!(
                    words.len() >= FREE_AREA_MANY_MIN,
                    "buddy allocator: order-{order} free area is a B-tree of {} words, fewer than {FREE_AREA_MANY_MIN}",
                    words.len(),
                );
                (words.len(), words.values().map(|word| word.count_ones() as u64).sum::<u64>())
            }
        };
        let zero_words = match &self.words {
            FreeWords::Few(words) => words.iter().filter(|&&(_, word)| word == 0).count(),
            FreeWords::Many(words) => words.values().filter(|&&word| word == 0).count(),
        };
        assert_eq!(
            zero_words, 0,
            "buddy allocator: order-{order} free area keeps {zero_words} empty words out of {nr_words}"
        );
        assert_eq!(
            self.nr_blocks, nr_blocks,
            "buddy allocator: order-{order} free area counts {} blocks but its words hold {nr_blocks}",
            self.nr_blocks,
        );
    }
}

/// `binary_search` over the sorted words of a vector area, by word number.
/// A linear scan: the vectors are short, and mostly hold one or two words.
#[inline(always)]
fn search_words(words: &[(u64, u64)], key: u64) -> Result<usize, usize> {
    for (index, &(word_key, _)) in words.iter().enumerate() {
        if word_key >= key {
            return if word_key == key { Ok(index) } else { Err(index) };
        }
    }
    Err(words.len())
}

/// The words of a `FreeArea` a walk visits.
enum FreeWordsIter<'a> {
    Few(std::slice::Iter<'a, (u64, u64)>),
    Many(std::collections::btree_map::Range<'a, u64, u64>),
}

/// An ascending walk over the block starts of (part of) a `FreeArea`.
pub(super) struct FreeAreaIter<'a> {
    order: u32,
    /// Block numbers to yield: `block_low..block_high`.
    block_low: u64,
    block_high: u64,
    words: FreeWordsIter<'a>,
    /// The word being walked, and its bits not yet yielded.
    key: u64,
    bits: u64,
}

impl Iterator for FreeAreaIter<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            if self.bits != 0 {
                let block = self.key * 64 + self.bits.trailing_zeros() as u64;
                self.bits &= self.bits - 1;
                if block < self.block_low {
                    continue;
                }
                if block >= self.block_high {
                    self.bits = 0;
                    return None;
                }
                return Some(block << self.order);
            }
            (self.key, self.bits) = match &mut self.words {
                FreeWordsIter::Few(words) => words.next().copied()?,
                FreeWordsIter::Many(words) => words.next().map(|(&key, &word)| (key, word))?,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_alloc::test_util::Rng;

    #[test]
    fn free_area_matches_btreeset_across_representations() {
        for area_order in [0, 3, 18] {
            let mut rng = Rng(0xf7ee + area_order as u64);
            let mut area = FreeArea::new(area_order);
            let mut reference = std::collections::BTreeSet::new();
            let mut conversions = 0;
            let start_of = |block: u64| block << area_order;
            for step in 0..6_000u64 {
                let was_few = matches!(area.words, FreeWords::Few(_));
                // Phases drift the size up and down across both thresholds:
                // 4096 block numbers are 64 words, twice FREE_AREA_FEW_MAX.
                let grow = (step / 1000) & 1 == 0;
                let mut start = start_of(rng.below(4096));
                match rng.below(10) {
                    0..=6 if grow => assert_eq!(area.insert(start), reference.insert(start), "step {step}: insert"),
                    0 => assert_eq!(area.insert(start), reference.insert(start), "step {step}: insert"),
                    1 | 2 => assert_eq!(area.pop_first(), reference.pop_first(), "step {step}: pop_first"),
                    _ => {
                        // Mostly a start that is there, sometimes one that is not.
                        if !reference.is_empty() && rng.below(8) != 0 {
                            let nth = rng.below(reference.len() as u64) as usize;
                            start = *reference.iter().nth(nth).unwrap();
                        }
                        assert_eq!(area.remove(start), reference.remove(&start), "step {step}: remove {start:#x}");
                    }
                }
                assert_eq!(area.contains(start), reference.contains(&start), "step {step}: contains {start:#x}");
                assert_eq!(area.len(), reference.len() as u64, "step {step}: len");
                assert_eq!(area.first(), reference.first().copied(), "step {step}: first");
                let (low, high) = (rng.below(start_of(4200)), rng.below(start_of(4200)));
                assert!(
                    area.range(low, high).eq(reference.range(low..high.max(low)).copied()),
                    "step {step}: range {low:#x}..{high:#x}"
                );
                if step % 64 == 0 {
                    area.check();
                    assert!(area.iter().eq(reference.iter().copied()), "step {step}: contents");
                }
                conversions += (was_few != matches!(area.words, FreeWords::Few(_))) as u32;
            }
            assert!(conversions >= 4, "order-{area_order}: only {conversions} conversions between vector and B-tree");
        }
    }
}
