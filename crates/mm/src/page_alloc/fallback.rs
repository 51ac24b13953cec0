//! Falling back to the other migratetype's free lists when an allocation
//! finds nothing large enough on its own: claiming the whole pageblock for
//! its type, or else stealing just the block it needs.
//!
//! Models: mm/page_alloc.c (Linux 6.18, checked against the 6.12 source):
//! the fallback half of `__rmqueue()`, `__rmqueue_claim()`,
//! `__rmqueue_steal()`, `try_to_claim_block()` (`try_to_steal_block()` in
//! 6.12), `should_try_claim_block()` (`can_steal_fallback()` in 6.12),
//! `prep_move_freepages_block()` and `__move_freepages_block()`; the
//! kernel's `fallbacks[]` is `Migratetype::fallback()`.
//! Not modelled: `ALLOC_NOFRAGMENT`, watermark boosting on fallback, and
//! counting allocated pages of the requested type towards a claim.

use super::free_lists::{list_index, smallest_order_in, NR_TYPED_ORDERS, TYPED_ORDERS_MASK};
use super::{BuddyAllocator, Migratetype, PAGEBLOCK_NR_PAGES, PB_ORDER};

impl BuddyAllocator {
    /// Allocates a block of order `low` from the other migratetype's free
    /// lists, for when `mt`'s own lists and the whole free pageblocks have
    /// nothing large enough; returns its start. Mirrors the fallback half of
    /// `__rmqueue()`:
    ///
    /// 1. `__rmqueue_claim()`: from the largest order down to `low`, the
    ///    lowest-PFN free block of the other type is a candidate, unless
    ///    `should_try_claim_block()` rules out claiming at that order (which
    ///    ends the search, as it rules out every lower order too). The
    ///    candidate's pageblock is claimed if `try_to_claim_block()` agrees,
    ///    and the allocation is then served from `mt`'s replenished lists.
    /// 2. `__rmqueue_steal()`: otherwise the lowest-PFN free block of the
    ///    smallest sufficient order on the other type's lists is split and
    ///    taken; its remainders stay on the other type's lists and its
    ///    pageblock keeps its type.
    ///
    /// Only orders below `PAGEBLOCK_ORDER` take part: free blocks above are
    /// whole pageblocks, which `rmqueue_smallest()` has already searched (the
    /// kernel's claim loop starts at `MAX_PAGE_ORDER` and claims such a block
    /// outright). The model has one zone, so it never sets
    /// `ALLOC_NOFRAGMENT`, which would skip the steal.
    pub(super) fn rmqueue_fallback(&mut self, low: usize, mt: Migratetype) -> Option<u64> {
        if low >= PB_ORDER {
            return None;
        }
        let other = mt.fallback();
        for current in (low..PB_ORDER).rev() {
            if self.nonempty_lists & (1 << list_index(current, other)) == 0 {
                continue;
            }
            if !should_try_claim_block(current, mt) {
                break;
            }
            let candidate = self.free_lists[list_index(current, other)]
                .first()
                .expect("nonempty_lists has a bit for an empty free list");
            if self.try_to_claim_block(candidate, mt) {
                let start = self.rmqueue_smallest(low, mt);
                assert!(
                    start.is_some(),
                    "buddy allocator: claimed the pageblock of free block pfn {candidate:#x} order-{current} \
                     for {mt:?}, but order-{low} is still not on its lists\n{self:?}"
                );
                return start;
            }
        }
        let found = smallest_order_in(self.nonempty_orders(other) & TYPED_ORDERS_MASK, low)?;
        let start = self.pop_first_from_free_area(found, other);
        self.expand(start, low, found, other);
        Some(start)
    }

    /// Claims for `mt` the pageblock holding the free block at `block`, which
    /// is on the other type's list, if at least half of the pageblock is
    /// free: moves every free block in it to `mt`'s lists and sets the
    /// pageblock's type. Returns whether it did.
    ///
    /// Mirrors `try_to_claim_block()` below `pageblock_order`, with
    /// `prep_move_freepages_block()` (a pageblock that runs past the zone's
    /// end is never claimed) and `__move_freepages_block()`. The kernel also
    /// counts towards the half the allocated pages that suit the request:
    /// for a movable request the pageblock's LRU pages, for an unmovable one
    /// (from a movable pageblock) its pages that are neither free nor on the
    /// LRU. The allocator keeps no per-page state to tell, so the model
    /// takes every allocated page to be of its pageblock's type and counts
    /// free pages only: where earlier steals mixed the types, it claims less
    /// often than the kernel.
    fn try_to_claim_block(&mut self, block: u64, mt: Migratetype) -> bool {
        let first = block & !(PAGEBLOCK_NR_PAGES - 1);
        let end = first + PAGEBLOCK_NR_PAGES;
        if end > self.nr_pages {
            return false;
        }
        let old = mt.fallback();
        let nr_free: u64 = (0..NR_TYPED_ORDERS)
            .map(|order| (self.free_area(order, old).range(first, end).count() as u64) << order)
            .sum();
        if nr_free < PAGEBLOCK_NR_PAGES / 2 {
            return false;
        }
        for order in 0..NR_TYPED_ORDERS {
            let moving: Vec<u64> = self.free_area(order, old).range(first, end).collect();
            for start in moving {
                self.del_from_free_area(start, order, old);
                self.add_to_free_area(start, order, mt);
            }
        }
        self.pageblock_types.set_range(first, PAGEBLOCK_NR_PAGES, mt);
        true
    }
}

/// Whether a fallback for `mt` that found a free block of `order` on the
/// other type's lists should try to claim the block's whole pageblock.
///
/// Mirrors `should_try_claim_block()` (`can_steal_fallback()` in 6.12): yes
/// for a block of at least half the pageblock order, as a large free block
/// hints at a mostly free pageblock, and yes for any unmovable request,
/// whose pages would otherwise pin a movable pageblock that compaction could
/// never empty. Movable requests only steal what they need from unmovable
/// pageblocks: compaction can move them out later.
/// (`page_group_by_mobility_disabled` is not modelled.)
fn should_try_claim_block(order: usize, mt: Migratetype) -> bool {
    order >= PB_ORDER / 2 || mt == Migratetype::Unmovable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_alloc::test_util::*;
    use crate::types::{Order, Pfn};

    #[test]
    fn unmovable_fallback_claims_a_movable_pageblock_at_least_half_free() {
        // Every page allocated, then 100 pages of pageblock 2 and 300 of
        // pageblock 5 freed:
        // 0     512   1024      1536 ...  2560       3072      4096
        // |U    |M    |f100 M   |M  ...   |f300 M    |M ...    |
        let mut zone = zone_with_full_unmovable_pageblock(7);
        free_range(&mut zone, 1024..1124);
        free_range(&mut zone, 2560..2860);
        // The largest movable free block is pageblock 5's order-8 one, and
        // pageblock 5 is more than half free: claimed whole. Its free pages,
        // 256 + 32 + 8 + 4, move to the unmovable lists, and the request
        // takes the smallest of them.
        assert_eq!(zone.alloc(Order::BASE, UNMOVABLE), Ok(Pfn(2856)));
        zone.check_invariants();
        assert_eq!(zone.pageblock_migratetype(Pfn(2560)), Migratetype::Unmovable);
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 2);
        assert_eq!(zone.nr_free_blocks_of_type(order(8), Migratetype::Unmovable), 1);
        assert_eq!(zone.nr_free_blocks_of_type(order(8), Migratetype::Movable), 0);
        // Pageblock 2 is untouched: 64 + 32 + 4 movable pages.
        assert_eq!(zone.pageblock_migratetype(Pfn(1024)), Migratetype::Movable);
        assert_eq!(zone.nr_free_blocks_of_type(order(6), Migratetype::Movable), 1);
        // Later unmovable requests stay in the claimed pageblock.
        assert_eq!(zone.alloc(Order::BASE, UNMOVABLE), Ok(Pfn(2857)));
        assert_eq!(zone.alloc(order(3), UNMOVABLE), Ok(Pfn(2848)));
        // A movable request still finds pageblock 2 first.
        assert_eq!(zone.alloc(Order::BASE, MOVABLE), Ok(Pfn(1120)));
        zone.check_invariants();
    }

    #[test]
    fn unmovable_fallback_steals_pages_when_no_pageblock_is_half_free() {
        // As above, but only 200 pages of pageblock 5 are free: no
        // candidate pageblock has 256 free pages, so the request steals the
        // smallest movable block (order 2 at 1120) and no type changes.
        let mut zone = zone_with_full_unmovable_pageblock(7);
        free_range(&mut zone, 1024..1124);
        free_range(&mut zone, 2560..2760);
        assert_eq!(zone.alloc(Order::BASE, UNMOVABLE), Ok(Pfn(1120)));
        zone.check_invariants();
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 1);
        assert_eq!(zone.pageblock_migratetype(Pfn(1120)), Migratetype::Movable);
        // The split-off pages stay on the movable lists.
        assert_eq!(zone.nr_free_blocks_of_type(order(1), Migratetype::Movable), 1);
        assert_eq!(zone.nr_free_blocks_of_type(Order::BASE, Migratetype::Movable), 1);
        assert_eq!(zone.nr_free_blocks_of_type(Order::BASE, Migratetype::Unmovable), 0);
    }

    #[test]
    fn movable_fallback_claims_only_through_blocks_of_half_the_pageblock_order() {
        // Pageblocks 0 and 1 full of unmovable pages, the rest movable; then
        // half of pageblock 1 freed in blocks of one order.
        let half_free_in_blocks_of = |o: u8| {
            let mut zone = BuddyAllocator::new(pages(16 * MIB));
            alloc_n(&mut zone, 2 * PAGEBLOCK_NR_PAGES, UNMOVABLE);
            alloc_n(&mut zone, 6 * PAGEBLOCK_NR_PAGES, MOVABLE);
            assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 2);
            let size = 1u64 << o;
            for chunk in (512..1024).step_by(2 * size as usize) {
                free_range(&mut zone, chunk..chunk + size);
            }
            assert_eq!(zone.nr_free_pages(), 256);
            zone
        };
        // 16 order-4 blocks: order 4 is pageblock_order / 2, so a movable
        // request tries to claim, and the pageblock is half free.
        let mut zone = half_free_in_blocks_of(4);
        assert_eq!(zone.alloc(Order::BASE, MOVABLE), Ok(Pfn(512)));
        assert_eq!(zone.pageblock_migratetype(Pfn(512)), Migratetype::Movable);
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 1);
        assert_eq!(zone.nr_free_blocks_of_type(order(4), Migratetype::Movable), 15);
        zone.check_invariants();

        // 32 order-3 blocks: below order 4 a movable request never claims;
        // it steals the lowest block and the pageblock stays unmovable.
        let mut zone = half_free_in_blocks_of(3);
        assert_eq!(zone.alloc(Order::BASE, MOVABLE), Ok(Pfn(512)));
        assert_eq!(zone.pageblock_migratetype(Pfn(512)), Migratetype::Unmovable);
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 2);
        assert_eq!(zone.nr_free_blocks_of_type(order(3), Migratetype::Unmovable), 31);
        assert_eq!(zone.nr_free_blocks_of_type(order(2), Migratetype::Unmovable), 1);
        zone.check_invariants();
    }

    #[test]
    fn a_pageblock_past_the_zone_end_is_never_claimed() {
        // 1408 pages: pageblock 2 (1024..1536) is cut at 1408. All
        // allocated, then the partial pageblock freed: 384 free pages, but
        // `prep_move_freepages_block()` refuses a pageblock the zone does
        // not span, so the unmovable request steals.
        let mut zone = BuddyAllocator::new(1408);
        alloc_n(&mut zone, 1408, MOVABLE);
        free_range(&mut zone, 1024..1408);
        assert_eq!(blocks(&zone), vec![(1024, 8), (1280, 7)]);
        assert_eq!(zone.alloc(Order::BASE, UNMOVABLE), Ok(Pfn(1280)));
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 0);
        assert_eq!(zone.nr_pageblocks(Migratetype::Movable), 3);
        zone.check_invariants();
    }
}
