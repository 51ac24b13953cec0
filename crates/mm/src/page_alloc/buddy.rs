//! The buddy core: carving the zone into free blocks at boot, allocation
//! from the smallest fitting free block with its split, free with its
//! merge, and taking a given free range for compaction.
//!
//! Models: mm/page_alloc.c (Linux 6.18): `get_page_from_freelist()` and
//! `__rmqueue()` for one zone, `__rmqueue_smallest()`, `expand()`,
//! `__free_one_page()`, and `__isolate_free_page()` as compaction uses it;
//! the boot-time carving of `__free_pages_memory()` (mm/memblock.c). The
//! fallback to the other migratetype's free lists is in `fallback.rs`.

use super::free_area::FreeArea;
use super::free_lists::{list_index_from, list_offset, smallest_order_in};
use super::pageblock::PageblockTypes;
use super::watermark::{default_min_free_kbytes, DEFAULT_WATERMARK_SCALE_FACTOR};
use super::{AllocFailure, AllocFlags, BuddyAllocator, Migratetype, Watermarks, NR_PAGE_ORDERS, PB_ORDER};
use crate::types::{Order, Pfn, PAGE_SIZE};

/// The largest zone the model accepts, in pages: 2^52 pages is the whole
/// 64-bit physical address space, and keeps every page count below 2^62 so
/// that the watermark arithmetic cannot overflow.
const MAX_NR_PAGES: u64 = 1 << 52;

/// Whether `free()` looks for every free block its range overlaps. That
/// costs one set lookup per order, so like the kernel's `VM_BUG_ON`s in
/// `__free_one_page()` it runs only in debug and test builds or with the
/// `check-invariants` feature. A double free of exactly a free block is
/// caught in every build.
const CHECK_FREE_OVERLAP: bool = cfg!(any(debug_assertions, feature = "check-invariants"));

impl BuddyAllocator {
    /// A zone of `nr_pages` pages, all free and every pageblock movable, with
    /// the kernel's default watermarks for a machine whose only memory it is.
    ///
    /// The range is carved into maximal aligned blocks as
    /// `__free_pages_memory()` does at boot: a 1 TiB zone is 1024 order-18
    /// blocks, and 16 MiB + 12 KiB is one order-12 block, one order-1 block
    /// and one order-0 block.
    ///
    /// Panics if `nr_pages` is 0 or above 2^52 (a caller's bug: machine
    /// sizes are validated where the scenario is parsed).
    pub fn new(nr_pages: u64) -> Self {
        assert!(nr_pages > 0, "BuddyAllocator::new: a zone needs at least one page");
        assert!(
            nr_pages <= MAX_NR_PAGES,
            "BuddyAllocator::new: {nr_pages:#x} pages is more than the 2^52 a 64-bit physical address space holds"
        );
        let min_free_kbytes = default_min_free_kbytes(nr_pages * (PAGE_SIZE >> 10));
        let mut zone = BuddyAllocator {
            nr_pages,
            free_lists: std::array::from_fn(|index| FreeArea::new(index % NR_PAGE_ORDERS)),
            nonempty_lists: 0,
            pageblock_types: PageblockTypes::new(),
            nr_free: nr_pages,
            min_free_kbytes,
            watermark_scale_factor: DEFAULT_WATERMARK_SCALE_FACTOR,
            watermarks: Watermarks::for_zone(nr_pages, min_free_kbytes, DEFAULT_WATERMARK_SCALE_FACTOR),
        };
        let mut start = 0;
        while start < nr_pages {
            let aligned_order = if start == 0 { Order::MAX.get() as u32 } else { start.trailing_zeros() };
            let fitting_order = (nr_pages - start).ilog2();
            let order = aligned_order.min(fitting_order).min(Order::MAX.get() as u32) as usize;
            zone.add_to_free_area(start, order, Migratetype::Movable);
            start += 1 << order;
        }
        zone
    }

    /// Allocates a block of `order` for `flags.migratetype`, leaving the
    /// watermark in `flags` satisfied.
    ///
    /// Mirrors `get_page_from_freelist()` for one zone: the watermark check
    /// of `__zone_watermark_ok()` (skipped for `NoWatermarks`), then
    /// `__rmqueue()`: `__rmqueue_smallest()` takes the lowest-PFN free block
    /// of the smallest sufficient order from the requested type's lists or
    /// the whole free pageblocks; if there is none, `rmqueue_fallback()`
    /// claims or steals from the other type's lists. A larger block is split
    /// and its upper halves go back to the free lists (`expand()`).
    ///
    /// Fails with `OutOfMemory` if fewer than `order.nr_pages()` pages are
    /// free, else `BelowWatermark` or `NoBlockOfOrder` as the watermark
    /// check or the search for a block says. The migratetype never makes an
    /// allocation fail: the fallback finds any free block large enough.
    pub fn alloc(&mut self, order: Order, flags: AllocFlags) -> Result<Pfn, AllocFailure> {
        if self.nr_free < order.nr_pages() {
            return Err(AllocFailure::OutOfMemory);
        }
        self.watermark_check(order, flags)?;
        let low = order.get() as usize;
        let mt = flags.migratetype;
        let start = match self.rmqueue_smallest(low, mt) {
            Some(start) => start,
            None => self.rmqueue_fallback(low, mt).ok_or(AllocFailure::NoBlockOfOrder)?,
        };
        self.nr_free -= order.nr_pages();
        Ok(Pfn(start))
    }

    /// Returns the block of `order` at `pfn` to the allocator, merging it
    /// with its buddy for as long as the buddy is free.
    ///
    /// Mirrors `__free_one_page()`: the block goes on the free list of its
    /// pageblock's migratetype (`get_pfnblock_migratetype()`). Below
    /// `PAGEBLOCK_ORDER` the buddy lies in the same pageblock, so it is on
    /// the same type's list; from there up whole free pageblocks merge
    /// whatever type they had, as the kernel merges unmovable and movable
    /// blocks, and the pageblocks this free makes wholly free forget their
    /// type (see the type's doc).
    ///
    /// Panics, as a model bug, if `pfn` is not aligned to `order`, if the
    /// block runs past the zone, or if it overlaps a free block (a double
    /// free or a free of pages never allocated). The overlap check is
    /// complete in debug and test builds and with the `check-invariants`
    /// feature; otherwise only a double free of a block that is itself
    /// still free is caught.
    pub fn free(&mut self, pfn: Pfn, order: Order) {
        let nr = order.nr_pages();
        self.assert_block_in_zone("free", pfn, order);
        if CHECK_FREE_OVERLAP {
            if let Some((start, found)) = self.find_overlapping_free_block(pfn.0, order) {
                panic!(
                    "buddy allocator: free of pfn {:#x} {order} (pages {:#x}..{:#x}) overlaps free block \
                     pfn {start:#x} order-{found} (pages {start:#x}..{:#x}): double free or free of pages \
                     never allocated\n{self:?}",
                    pfn.0,
                    pfn.0,
                    pfn.0 + nr,
                    start + (1u64 << found),
                );
            }
        }
        let mt = self.pageblock_types.get(pfn.0);
        let offset = list_offset(mt);
        let mut start = pfn.0;
        let mut current = order.get() as usize;
        while current < Order::MAX.get() as usize {
            let buddy = start ^ (1 << current);
            if !self.del_from_list(buddy, list_index_from(current, offset)) {
                break;
            }
            start &= !(1 << current);
            current += 1;
        }
        if current >= PB_ORDER && self.pageblock_types.has_unmovable() {
            // The freed pages now lie in whole free pageblocks; any buddy of
            // pageblock order or above that merged in already was one.
            let whole = (order.get() as usize).max(PB_ORDER);
            let first = pfn.0 & !((1u64 << whole) - 1);
            self.pageblock_types.set_range(first, 1 << whole, Migratetype::Movable);
        }
        let added = self.add_to_list(start, list_index_from(current, offset));
        assert!(
            added,
            "buddy allocator: double free of pfn {:#x} {order}: block pfn {start:#x} order-{current} is already \
             free\n{self:?}",
            pfn.0
        );
        self.nr_free += nr;
    }

    /// Takes the free block of `order` at `pfn` out of the free lists, if
    /// every page of it is free; returns whether it did.
    ///
    /// For compaction: once migration has emptied an aligned range, the
    /// caller claims it with this. The kernel takes whole free blocks off
    /// their lists with `__isolate_free_page()`; here a larger free block
    /// that contains the range is also accepted and split around it, the
    /// halves not wanted going back to the free lists. No watermark is
    /// checked: compaction's capture of a freed page (`compaction_capture()`)
    /// does not check one either. Pageblock types do not change: a whole
    /// free pageblock split or taken here stays `Movable`, the type of what
    /// compaction puts in it.
    ///
    /// Panics if `pfn` is not aligned to `order` or the block runs past the
    /// zone.
    pub fn alloc_exact(&mut self, pfn: Pfn, order: Order) -> bool {
        self.assert_block_in_zone("alloc_exact", pfn, order);
        // If every page of an aligned block is free, one free block holds it
        // all: two free blocks meeting inside it would be free buddies at
        // some order, and buddies merge.
        let Some((mut start, found)) = self.free_block_containing(pfn.0, order.get() as usize) else {
            return false;
        };
        let mt = self.pageblock_types.get(pfn.0);
        self.del_from_free_area(start, found, mt);
        let mut current = found;
        while current > order.get() as usize {
            current -= 1;
            let half = 1u64 << current;
            if pfn.0 & half == 0 {
                self.add_to_free_area(start + half, current, mt);
            } else {
                self.add_to_free_area(start, current, mt);
                start += half;
            }
        }
        debug_assert_eq!(start, pfn.0, "alloc_exact split down to the wrong block");
        self.nr_free -= order.nr_pages();
        true
    }

    /// Takes the lowest-PFN free block of the smallest order at or above
    /// `low` that an allocation of `mt` finds without falling back, splits it
    /// down to `low` and returns its start. Mirrors `__rmqueue_smallest()`,
    /// with whole free pageblocks on every type's path (see the type's doc):
    /// the pageblocks the allocation takes or splits off such a block get
    /// type `mt`.
    #[inline(always)]
    pub(super) fn rmqueue_smallest(&mut self, low: usize, mt: Migratetype) -> Option<u64> {
        let found = smallest_order_in(self.nonempty_orders(mt), low)?;
        let start = self.pop_first_from_free_area(found, mt);
        // A movable pageblock out of a whole free one needs no write: whole
        // free pageblocks already read movable.
        if found >= PB_ORDER && (mt == Migratetype::Unmovable || self.pageblock_types.has_unmovable()) {
            let typed = low.max(PB_ORDER);
            self.pageblock_types.set_range(start, 1 << typed, mt);
        }
        self.expand(start, low, found, mt);
        Some(start)
    }

    /// Splits the free block of order `high` at `start`, already taken off
    /// its free list, down to order `low`, keeping the lowest part and
    /// returning each upper half to the free list of its order for `mt`.
    /// Mirrors `expand()`.
    #[inline(always)]
    pub(super) fn expand(&mut self, start: u64, low: usize, high: usize, mt: Migratetype) {
        let offset = list_offset(mt);
        for order in (low..high).rev() {
            self.add_to_list(start + (1 << order), list_index_from(order, offset));
        }
    }

    /// Panics unless the block of `order` at `pfn` is aligned and inside the
    /// zone: both are model bugs.
    fn assert_block_in_zone(&self, operation: &str, pfn: Pfn, order: Order) {
        let nr = order.nr_pages();
        assert_eq!(
            pfn.0 & (nr - 1),
            0,
            "buddy allocator: {operation} of pfn {:#x} {order}: pfn is not aligned to the order \
             (expected pfn % {nr:#x} == 0)",
            pfn.0,
        );
        assert!(
            pfn.0.checked_add(nr).is_some_and(|end| end <= self.nr_pages),
            "buddy allocator: {operation} of pfn {:#x} {order}: block runs past the zone's end pfn {:#x}",
            pfn.0,
            self.nr_pages,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_alloc::test_util::*;

    #[test]
    fn boot_state_of_1tib_is_1024_max_order_blocks() {
        let zone = BuddyAllocator::new(ONE_TIB_PAGES);
        let mut expected = [0; NR_PAGE_ORDERS];
        expected[18] = 1024;
        assert_eq!(zone.buddyinfo(), expected);
        assert_eq!(zone.nr_free_blocks(Order::MAX), 1024);
        assert_eq!(zone.nr_free_pages(), ONE_TIB_PAGES);
        assert_eq!(zone.nr_total_pages(), ONE_TIB_PAGES);
        assert_eq!(zone.largest_free_order(), Some(Order::MAX));
        assert!(zone.free_blocks().enumerate().all(|(i, (pfn, o))| pfn.0 == (i as u64) << 18 && o == Order::MAX));
        zone.check_invariants();
    }

    #[test]
    fn odd_sizes_carve_into_maximal_aligned_blocks() {
        // 16 MiB + 12 KiB = 4096 + 3 pages:
        // 0          4096 4098 4099
        // |order-12  |o1 |o0|
        let zone = BuddyAllocator::new(pages(16 * MIB + 12 * KIB));
        assert_eq!(blocks(&zone), vec![(0, 12), (4096, 1), (4098, 0)]);
        zone.check_invariants();

        // 1000 = 512 + 256 + 128 + 64 + 32 + 8.
        let zone = BuddyAllocator::new(1000);
        assert_eq!(blocks(&zone), vec![(0, 9), (512, 8), (768, 7), (896, 6), (960, 5), (992, 3)]);
        zone.check_invariants();

        // 3 GiB + 4 KiB: three order-18 blocks and one page.
        let zone = BuddyAllocator::new(pages(3 * GIB) + 1);
        assert_eq!(blocks(&zone), vec![(0, 18), (1 << 18, 18), (2 << 18, 18), (3 << 18, 0)]);
        zone.check_invariants();

        let zone = BuddyAllocator::new(1);
        assert_eq!(blocks(&zone), vec![(0, 0)]);
    }

    #[test]
    fn odd_tail_does_not_merge_past_the_zone() {
        // 0   2   3
        // |o1 |o0|      freeing pfn 2 must not look for a buddy at pfn 3.
        let mut zone = BuddyAllocator::new(3);
        let tail = zone.alloc(Order::BASE, AllocFlags::NO_WATERMARKS).unwrap();
        assert_eq!(tail, Pfn(2), "the lone order-0 block is the smallest fit");
        zone.free(tail, Order::BASE);
        assert_eq!(blocks(&zone), vec![(0, 1), (2, 0)]);
        zone.check_invariants();
    }

    #[test]
    fn first_order0_alloc_from_1tib_splits_one_block_into_every_order() {
        // pfn 0 is handed out; pfn 1 (o0), 2 (o1), 4 (o2) ... 2^17 (o17) stay free.
        let mut zone = BuddyAllocator::new(ONE_TIB_PAGES);
        assert_eq!(zone.alloc(Order::BASE, AllocFlags::WMARK_LOW), Ok(Pfn(0)));
        let mut expected = [1; NR_PAGE_ORDERS];
        expected[18] = 1023;
        assert_eq!(zone.buddyinfo(), expected);
        let split: Vec<_> = blocks(&zone).into_iter().take(18).collect();
        assert_eq!(split, (0..18).map(|o| (1u64 << o, o)).collect::<Vec<_>>());
        zone.check_invariants();
    }

    #[test]
    fn split_and_merge_round_trip_to_boot_state() {
        let boot = BuddyAllocator::new(pages(16 * GIB) + 5);
        let mut zone = boot.clone();
        let orders = [0, 3, 9, 0, 18, 1, 9, 0, 12, 18, 2, 0];
        let held: Vec<_> =
            orders.iter().map(|&o| (zone.alloc(order(o), AllocFlags::WMARK_LOW).unwrap(), order(o))).collect();
        zone.check_invariants();
        assert_eq!(zone.nr_free_pages(), boot.nr_free_pages() - orders.iter().map(|&o| 1u64 << o).sum::<u64>());
        // Free in an order unrelated to allocation, checking as we go.
        for &i in &[5, 0, 11, 2, 7, 9, 1, 4, 10, 3, 8, 6] {
            let (pfn, o) = held[i];
            zone.free(pfn, o);
            zone.check_invariants();
        }
        assert_eq!(blocks(&zone), blocks(&boot));
        assert!(zone == boot, "round trip did not restore the boot state: {zone:?}");
    }

    #[test]
    fn smallest_fitting_order_wins_over_lower_pfn() {
        // 0         512       768   1024
        // |held o9  |free o8  |held |       then free a page at 0: order 0 comes from there.
        let mut zone = BuddyAllocator::new(1024);
        let a = zone.alloc(order(9), AllocFlags::NO_WATERMARKS).unwrap();
        let b = zone.alloc(order(8), AllocFlags::NO_WATERMARKS).unwrap();
        assert_eq!((a, b), (Pfn(0), Pfn(512)));
        zone.free(a, order(9));
        // Free now: an order-9 block at 0 and an order-8 block at 768.
        assert_eq!(blocks(&zone), vec![(0, 9), (768, 8)]);
        assert_eq!(zone.alloc(order(1), AllocFlags::NO_WATERMARKS), Ok(Pfn(768)));
        zone.check_invariants();
    }

    #[test]
    fn alloc_exact_splits_around_the_claimed_block() {
        // From a 1 TiB boot state, claim the order-9 block at pfn 3 * 512:
        // 0          1024  1536  2048    4096
        // |o10 free  |o9   |held |o11    |o12 ...   up to o17, then the o18s.
        let boot = BuddyAllocator::new(ONE_TIB_PAGES);
        let mut zone = boot.clone();
        assert!(zone.alloc_exact(Pfn(3 * 512), Order::PMD));
        zone.check_invariants();
        assert!(!zone.is_free(Pfn(3 * 512)));
        assert!(!zone.is_free(Pfn(4 * 512 - 1)));
        assert_eq!(zone.nr_free_pages(), ONE_TIB_PAGES - 512);
        let low: Vec<_> = blocks(&zone).into_iter().take(10).collect();
        assert_eq!(
            low,
            vec![
                (0, 10),
                (2 * 512, 9),
                (1 << 11, 11),
                (1 << 12, 12),
                (1 << 13, 13),
                (1 << 14, 14),
                (1 << 15, 15),
                (1 << 16, 16),
                (1 << 17, 17),
                (1 << 18, 18),
            ]
        );
        // Not free any more, nor is any block overlapping it.
        assert!(!zone.alloc_exact(Pfn(3 * 512), Order::PMD));
        assert!(!zone.alloc_exact(Pfn(1024), order(10)));
        assert!(!zone.alloc_exact(Pfn(3 * 512 + 7), Order::BASE));
        // A page inside a free block.
        assert!(zone.alloc_exact(Pfn(5), Order::BASE));
        zone.free(Pfn(5), Order::BASE);
        zone.free(Pfn(3 * 512), Order::PMD);
        assert!(zone == boot, "did not merge back to the boot state: {zone:?}");
    }

    #[test]
    fn model_bugs_in_free_panic_with_what_and_where() {
        let mut zone = BuddyAllocator::new(1024);
        let message = panic_message(|| zone.clone().free(Pfn(3), order(1)));
        assert!(message.contains("free of pfn 0x3 order-1: pfn is not aligned"), "{message}");
        let message = panic_message(|| zone.clone().free(Pfn(1024), Order::BASE));
        assert!(message.contains("runs past the zone's end pfn 0x400"), "{message}");

        // Double free of a block that is itself free.
        let pfn = zone.alloc(order(4), AllocFlags::NO_WATERMARKS).unwrap();
        let mut twice = zone.clone();
        twice.free(pfn, order(4));
        let message = panic_message(|| twice.free(pfn, order(4)));
        assert!(message.contains("overlaps free block pfn 0x0 order-10"), "{message}");

        // A range that straddles allocated and free pages: pfn 0..16 is
        // allocated, 16..32 free, so freeing 0..32 as order 5 overlaps.
        let message = panic_message(|| zone.clone().free(Pfn(0), order(5)));
        assert!(message.contains("overlaps free block pfn 0x10 order-4 (pages 0x10..0x20)"), "{message}");

        // Freeing a page inside a larger free block.
        let message = panic_message(|| zone.clone().free(Pfn(700), Order::BASE));
        assert!(message.contains("overlaps free block pfn 0x200 order-9"), "{message}");
    }
}
