//! What the rest of the model reads from the allocator: free-page counts,
//! the free blocks, the counts of `/proc/buddyinfo` and `/proc/pagetypeinfo`,
//! the fragmentation index, and the per-range queries compaction uses.
//! Nothing here changes the allocator.
//!
//! Models: `NR_FREE_PAGES`, and from mm/vmstat.c (Linux 6.18)
//! `frag_show_print()` (`/proc/buddyinfo`), `pagetypeinfo_showfree_print()`
//! (`/proc/pagetypeinfo`) and `__fragmentation_index()`. The pageblock
//! counts of `/proc/pagetypeinfo` are in `pageblock.rs`.

use super::free_area::{FreeArea, FreeAreaIter};
use super::free_lists::{orders_in, smallest_order_in};
use super::{BuddyAllocator, Migratetype, NR_PAGE_ORDERS, PB_ORDER};
use crate::types::{Order, Pfn};

impl BuddyAllocator {
    /// `NR_FREE_PAGES`.
    pub fn nr_free_pages(&self) -> u64 {
        self.nr_free
    }

    /// The pages the zone manages, free or not.
    pub fn nr_total_pages(&self) -> u64 {
        self.nr_pages
    }

    /// Every free block as (start, order), in ascending PFN order.
    /// Visits each free block once; for reports and invariant checks, not
    /// for hot paths.
    pub fn free_blocks(&self) -> impl Iterator<Item = (Pfn, Order)> + '_ {
        FreeBlocks {
            heads: orders_in(self.all_nonempty_orders(), 0)
                .flat_map(|order| {
                    self.free_areas_of_order(order)
                        .filter(|area| !area.is_empty())
                        .map(move |area| (order, area.iter().peekable()))
                })
                .collect(),
        }
    }

    /// The free blocks that lie wholly inside the `nr` pages from `start`,
    /// as (start, order), ascending: what compaction isolates from a
    /// pageblock it has emptied. A free block larger than the range that
    /// contains it is not listed; `alloc_exact()` takes such a range.
    /// O(log n) per order plus the blocks listed.
    pub fn free_blocks_in_range(&self, start: Pfn, nr: u64) -> impl Iterator<Item = (Pfn, Order)> {
        let first = start.0;
        let end = first.saturating_add(nr);
        let mut blocks: Vec<(Pfn, Order)> = Vec::new();
        for order in orders_in(self.all_nonempty_orders(), 0) {
            let size = 1u64 << order;
            let last_start = end.saturating_sub(size - 1);
            for area in self.free_areas_of_order(order) {
                blocks.extend(area.range(first, last_start).map(|block| (Pfn(block), Order::new(order as u8))));
            }
        }
        blocks.sort_unstable();
        blocks.into_iter()
    }

    /// Free blocks of exactly `order`: `zone->free_area[order].nr_free`.
    pub fn nr_free_blocks(&self, order: Order) -> u64 {
        self.free_areas_of_order(order.get() as usize).map(FreeArea::len).sum()
    }

    /// Free blocks of exactly `order` on `mt`'s free list: one cell of the
    /// free-block table of `/proc/pagetypeinfo`. Whole free pageblocks, which
    /// the model keeps untyped, count as movable.
    pub fn nr_free_blocks_of_type(&self, order: Order, mt: Migratetype) -> u64 {
        let order = order.get() as usize;
        if order < PB_ORDER || mt == Migratetype::Movable {
            self.free_area(order, mt).len()
        } else {
            0
        }
    }

    /// Free blocks per order, one line of `/proc/buddyinfo`.
    pub fn buddyinfo(&self) -> [u64; NR_PAGE_ORDERS] {
        std::array::from_fn(|order| self.free_areas_of_order(order).map(FreeArea::len).sum())
    }

    /// Whether the page at `pfn` is in a free block (false outside the zone).
    pub fn is_free(&self, pfn: Pfn) -> bool {
        pfn.0 < self.nr_pages && self.free_block_containing(pfn.0, 0).is_some()
    }

    /// Free pages among the `nr` pages from `start` (pages outside the zone
    /// count as not free).
    pub fn nr_free_in_range(&self, start: Pfn, nr: u64) -> u64 {
        let first = start.0;
        let end = first.saturating_add(nr);
        let mut nr_free = 0;
        for order in orders_in(self.all_nonempty_orders(), 0) {
            let size = 1u64 << order;
            // A block overlaps the range if it starts within it or fewer
            // than `size` pages before it.
            for area in self.free_areas_of_order(order) {
                for block in area.range(first.saturating_sub(size - 1), end) {
                    nr_free += (block + size).min(end) - block.max(first);
                }
            }
        }
        nr_free
    }

    /// The order of the largest free block, or `None` if nothing is free.
    pub fn largest_free_order(&self) -> Option<Order> {
        let mask = self.all_nonempty_orders();
        (mask != 0).then(|| Order::new(mask.ilog2() as u8))
    }

    /// How much a failure to allocate `order` would be due to fragmentation
    /// rather than lack of memory, in thousandths.
    ///
    /// Mirrors `__fragmentation_index()` (mm/vmstat.c, shown in
    /// `/sys/kernel/debug/extfrag/extfrag_index`): `-1000` if a block of at
    /// least `order` is free (the allocation would succeed), `0` if nothing
    /// is free, and otherwise `1000 - (1000 + free_pages * 1000 / 2^order) /
    /// free_blocks` with integer division: towards 1000 the failure is
    /// fragmentation, towards 0 (or below, when a few blocks hold all free
    /// memory) lack of memory. The kernel's `vm.extfrag_threshold` (500)
    /// compares against this value.
    pub fn fragmentation_index(&self, order: Order) -> i32 {
        let nr_free_blocks: u64 = self.buddyinfo().iter().sum();
        if nr_free_blocks == 0 {
            return 0;
        }
        if smallest_order_in(self.all_nonempty_orders(), order.get() as usize).is_some() {
            return -1000;
        }
        let requested = order.nr_pages();
        let index = 1000 - (1000 + self.nr_free * 1000 / requested) as i64 / nr_free_blocks as i64;
        index as i32
    }
}

/// Merges the non-empty free areas into one ascending walk.
struct FreeBlocks<'a> {
    heads: Vec<(usize, std::iter::Peekable<FreeAreaIter<'a>>)>,
}

impl Iterator for FreeBlocks<'_> {
    type Item = (Pfn, Order);

    fn next(&mut self) -> Option<(Pfn, Order)> {
        let mut lowest: Option<(u64, usize)> = None;
        for (index, (_, head)) in self.heads.iter_mut().enumerate() {
            if let Some(&start) = head.peek() {
                if lowest.is_none_or(|(best, _)| start < best) {
                    lowest = Some((start, index));
                }
            }
        }
        let (start, index) = lowest?;
        let (order, head) = &mut self.heads[index];
        head.next();
        Some((Pfn(start), Order::new(*order as u8)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_alloc::test_util::*;
    use crate::page_alloc::{AllocFailure, AllocFlags};

    #[test]
    fn queries_on_a_partly_allocated_zone() {
        // 0    4    8         16
        // |held|o2 |o3        |    after alloc(o2) from a 16-page zone.
        let mut zone = BuddyAllocator::new(16);
        assert_eq!(zone.alloc(order(2), AllocFlags::NO_WATERMARKS), Ok(Pfn(0)));
        assert_eq!(blocks(&zone), vec![(4, 2), (8, 3)]);
        assert!(!zone.is_free(Pfn(3)));
        assert!(zone.is_free(Pfn(4)));
        assert!(zone.is_free(Pfn(15)));
        assert!(!zone.is_free(Pfn(16)), "outside the zone");
        assert_eq!(zone.nr_free_in_range(Pfn(0), 16), 12);
        assert_eq!(zone.nr_free_in_range(Pfn(2), 4), 2);
        assert_eq!(zone.nr_free_in_range(Pfn(9), 3), 3);
        assert_eq!(zone.nr_free_in_range(Pfn(14), 100), 2);
        assert_eq!(zone.nr_free_in_range(Pfn(u64::MAX - 1), 10), 0);
        assert_eq!(zone.largest_free_order(), Some(order(3)));
        assert_eq!(zone.buddyinfo()[..4], [0, 0, 1, 1]);
        let inside =
            |start, nr| zone.free_blocks_in_range(Pfn(start), nr).map(|(pfn, o)| (pfn.0, o.get())).collect::<Vec<_>>();
        assert_eq!(inside(0, 16), vec![(4, 2), (8, 3)]);
        assert_eq!(inside(4, 11), vec![(4, 2)], "the order-3 block ends past pfn 15");
        assert_eq!(inside(8, 4), vec![], "inside a free block, but no whole block");
        assert_eq!(inside(u64::MAX - 4, 100), vec![]);
    }

    #[test]
    fn fragmented_zone_fails_order9_with_no_block_of_order() {
        // 64 MiB: take every page, then free every even one.
        // 0 1 2 3 4 ...
        // |f|x|f|x|f|...   8192 free order-0 blocks, none merge.
        let mut zone = BuddyAllocator::new(pages(64 * MIB));
        drain_to(&mut zone, 0);
        for pfn in (0..pages(64 * MIB)).step_by(2) {
            zone.free(Pfn(pfn), Order::BASE);
        }
        zone.check_invariants();
        assert_eq!(zone.nr_free_pages(), 8192);
        assert_eq!(zone.nr_free_blocks(Order::BASE), 8192);
        assert!(zone.nr_free_pages() > zone.watermarks().high);
        assert_eq!(zone.largest_free_order(), Some(Order::BASE));
        assert_eq!(zone.watermark_check(Order::PMD, AllocFlags::WMARK_HIGH), Err(AllocFailure::NoBlockOfOrder));
        assert_eq!(zone.alloc(Order::PMD, AllocFlags::WMARK_HIGH), Err(AllocFailure::NoBlockOfOrder));
        assert_eq!(zone.alloc(Order::PMD, AllocFlags::NO_WATERMARKS), Err(AllocFailure::NoBlockOfOrder));
        assert_eq!(zone.alloc(order(1), AllocFlags::WMARK_LOW), Err(AllocFailure::NoBlockOfOrder));
        // __fragmentation_index(9): 1000 - (1000 + 8192 * 1000 / 512) / 8192
        //   = 1000 - 17000 / 8192 = 1000 - 2 = 998: almost pure fragmentation.
        assert_eq!(zone.fragmentation_index(Order::PMD), 998);
        assert_eq!(zone.fragmentation_index(Order::BASE), -1000);
        assert_eq!(zone.alloc(Order::BASE, AllocFlags::WMARK_HIGH), Ok(Pfn(0)));
    }

    #[test]
    fn fragmentation_index_with_little_memory_is_low_or_negative() {
        // One free order-8 block and nothing else, asking for order 9:
        // 1000 - (1000 + 256 * 1000 / 512) / 1 = 1000 - 1500 = -500, as in the kernel.
        let mut zone = BuddyAllocator::new(1024);
        zone.alloc(order(9), AllocFlags::NO_WATERMARKS).unwrap();
        zone.alloc(order(8), AllocFlags::NO_WATERMARKS).unwrap();
        assert_eq!(blocks(&zone), vec![(768, 8)]);
        assert_eq!(zone.fragmentation_index(order(9)), -500);
        assert_eq!(zone.fragmentation_index(order(8)), -1000);
    }
}
