//! Pageblock migratetypes: the kernel's `enum migratetype`, reduced to the
//! two types the model allocates, and the type of every pageblock.
//!
//! Models: `get_pageblock_migratetype()` and `set_pageblock_migratetype()`
//! over `zone->pageblock_flags` (mm/page_alloc.c, Linux 6.18), and the
//! "Number of blocks type" column of `/proc/pagetypeinfo` (mm/vmstat.c).
//! The fallback between the types' free lists is in `fallback.rs`.
//! Not modelled: `MIGRATE_RECLAIMABLE`, `MIGRATE_HIGHATOMIC`, `MIGRATE_CMA`,
//! `MIGRATE_ISOLATE` and `page_group_by_mobility_disabled`.

use super::free_area::FreeArea;
use super::{BuddyAllocator, PAGEBLOCK_NR_PAGES, PB_ORDER};
use crate::types::Pfn;

/// How movable the pages of a pageblock or an allocation are: the kernel's
/// `enum migratetype`, reduced to the two types the model allocates.
///
/// Anonymous folios are `Movable` (`GFP_HIGHUSER_MOVABLE` and
/// `GFP_TRANSHUGE`); page tables (`GFP_PGTABLE_USER`) and the huge zero
/// folio (`GFP_TRANSHUGE & ~__GFP_MOVABLE`) are `Unmovable`. Not modelled:
/// `MIGRATE_RECLAIMABLE` (slab caches with shrinkers, which the model does
/// not allocate), `MIGRATE_HIGHATOMIC`, `MIGRATE_CMA` and `MIGRATE_ISOLATE`.
/// With `MIGRATE_RECLAIMABLE` gone, each type's row of the kernel's
/// `fallbacks[]` is just the other type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Migratetype {
    /// `MIGRATE_UNMOVABLE`: page tables, the huge zero folio.
    Unmovable,
    /// `MIGRATE_MOVABLE`: user pages, which compaction can migrate. Every
    /// pageblock is movable at boot, as `memmap_init_range()` marks them.
    Movable,
}

/// The number of modelled migratetypes.
const NR_MIGRATETYPES: usize = 2;

impl Migratetype {
    /// Both types, in the kernel's order.
    pub const ALL: [Migratetype; NR_MIGRATETYPES] = [Migratetype::Unmovable, Migratetype::Movable];

    /// The type whose free lists an allocation of this type falls back to:
    /// the kernel's `fallbacks[]` row without `MIGRATE_RECLAIMABLE`.
    pub(super) const fn fallback(self) -> Migratetype {
        match self {
            Migratetype::Unmovable => Migratetype::Movable,
            Migratetype::Movable => Migratetype::Unmovable,
        }
    }
}

/// The migratetype of every pageblock, stored as the set of unmovable ones:
/// a sparse bitmap over pageblock numbers (a `FreeArea` of
/// `PAGEBLOCK_ORDER`), so that the few pageblocks page tables fill cost a
/// few words, whatever the size of the zone. Every other pageblock is
/// movable, wholly free ones included (see `BuddyAllocator`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PageblockTypes {
    unmovable: FreeArea,
}

impl PageblockTypes {
    pub(super) fn new() -> Self {
        PageblockTypes { unmovable: FreeArea::new(PB_ORDER) }
    }

    /// The type of the pageblock that holds `pfn`.
    #[inline(always)]
    pub(super) fn get(&self, pfn: u64) -> Migratetype {
        if !self.unmovable.is_empty() && self.unmovable.contains(pfn & !(PAGEBLOCK_NR_PAGES - 1)) {
            Migratetype::Unmovable
        } else {
            Migratetype::Movable
        }
    }

    /// Sets the type of the pageblocks in the `nr_pages` pages from `first`;
    /// both are multiples of `PAGEBLOCK_NR_PAGES`.
    /// `set_pageblock_migratetype()` over a range.
    #[inline(always)]
    pub(super) fn set_range(&mut self, first: u64, nr_pages: u64, mt: Migratetype) {
        match mt {
            // The common case, a movable pageblock staying movable, costs a
            // load and a branch.
            Migratetype::Movable if self.unmovable.is_empty() => {}
            Migratetype::Movable if nr_pages == PAGEBLOCK_NR_PAGES => {
                self.unmovable.remove(first);
            }
            Migratetype::Movable => {
                while let Some(pageblock) = self.unmovable.range(first, first + nr_pages).next() {
                    self.unmovable.remove(pageblock);
                }
            }
            Migratetype::Unmovable => {
                for pageblock in (first..first + nr_pages).step_by(PAGEBLOCK_NR_PAGES as usize) {
                    self.unmovable.insert(pageblock);
                }
            }
        }
    }

    /// The first unmovable pageblock in the pages `first..end`.
    pub(super) fn first_unmovable_in(&self, first: u64, end: u64) -> Option<u64> {
        self.unmovable.range(first, end).next()
    }

    fn nr_unmovable(&self) -> u64 {
        self.unmovable.len()
    }

    /// Whether any pageblock is unmovable.
    #[inline(always)]
    pub(super) fn has_unmovable(&self) -> bool {
        !self.unmovable.is_empty()
    }

    /// Checks the set's representation and that every unmovable pageblock
    /// starts inside the zone.
    pub(super) fn check(&self, nr_pages: u64) {
        self.unmovable.check();
        if let Some(last) = self.unmovable.range(nr_pages, u64::MAX).next() {
            panic!(
                "buddy allocator: pageblock pfn {last:#x} is marked Unmovable but starts past the zone's end \
                 pfn {nr_pages:#x}"
            );
        }
    }
}

impl BuddyAllocator {
    /// The migratetype of the pageblock that holds `pfn`
    /// (`get_pageblock_migratetype()`); `Movable` for a wholly free
    /// pageblock, and for a PFN outside the zone.
    pub fn pageblock_migratetype(&self, pfn: Pfn) -> Migratetype {
        if pfn.0 < self.nr_pages {
            self.pageblock_types.get(pfn.0)
        } else {
            Migratetype::Movable
        }
    }

    /// Pageblocks of type `mt`, counting a last pageblock that the zone only
    /// partly covers: a "Number of blocks type" column of
    /// `/proc/pagetypeinfo`. Wholly free pageblocks count as movable.
    pub fn nr_pageblocks(&self, mt: Migratetype) -> u64 {
        let nr_unmovable = self.pageblock_types.nr_unmovable();
        match mt {
            Migratetype::Unmovable => nr_unmovable,
            Migratetype::Movable => self.nr_pages.div_ceil(PAGEBLOCK_NR_PAGES) - nr_unmovable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_alloc::test_util::*;
    use crate::page_alloc::AllocFlags;
    use crate::types::Order;
    use std::collections::BTreeSet;

    #[test]
    fn unmovable_allocations_interleaved_with_movable_share_one_pageblock() {
        // 64 MiB, 32 pageblocks: one unmovable page before every 512
        // movable ones, 8 unmovable and 4096 movable pages in all.
        let run = |unmovable: AllocFlags| {
            let mut zone = BuddyAllocator::new(pages(64 * MIB));
            let (mut unmovable_pfns, mut movable_pfns) = (Vec::new(), Vec::new());
            for i in 0..4096 {
                if i % 512 == 0 {
                    unmovable_pfns.push(zone.alloc(Order::BASE, unmovable).unwrap());
                }
                movable_pfns.push(zone.alloc(Order::BASE, MOVABLE).unwrap());
            }
            zone.check_invariants();
            (zone, unmovable_pfns, movable_pfns)
        };
        // 0        512                        4608
        // |U x8    |M M M ...     (8 pageblocks)|free ...
        let (zone, unmovable, movable) = run(UNMOVABLE);
        assert_eq!(unmovable, (0..8).map(Pfn).collect::<Vec<_>>());
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 1);
        assert_eq!(zone.pageblock_migratetype(Pfn(0)), Migratetype::Unmovable);
        assert!(movable.iter().all(|pfn| pageblock_of(pfn) != 0), "a movable page went into the unmovable pageblock");
        let used: BTreeSet<u64> = movable.iter().map(pageblock_of).collect();
        assert_eq!(used, (1..=8).collect());

        // Without grouping (the same requests, all movable) each of the 8
        // lands next to the movable pages of its time: 8 pageblocks pinned.
        let (zone, spread, _) = run(MOVABLE);
        let pinned: BTreeSet<u64> = spread.iter().map(pageblock_of).collect();
        assert_eq!(pinned, (0..8).collect());
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 0);
    }

    #[test]
    fn unmovable_allocation_takes_a_whole_free_pageblock_when_its_own_are_full() {
        // 0     512   1024  1536  2048       4096
        // |U    |M    |M    |free |free o11  |     then one more unmovable page.
        let mut zone = zone_with_full_unmovable_pageblock(2);
        assert_eq!(blocks(&zone), vec![(1536, 9), (2048, 11)]);
        assert_eq!(zone.alloc(Order::BASE, UNMOVABLE), Ok(Pfn(1536)));
        assert_eq!(zone.pageblock_migratetype(Pfn(1536)), Migratetype::Unmovable);
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 2);
        // The rest of the new pageblock serves the next unmovable requests;
        // movable ones take the next free pageblock.
        assert_eq!(zone.alloc(Order::BASE, UNMOVABLE), Ok(Pfn(1537)));
        assert_eq!(zone.alloc(Order::BASE, MOVABLE), Ok(Pfn(2048)));
        zone.check_invariants();
    }

    #[test]
    fn freeing_a_pageblock_whole_forgets_its_type_and_merges() {
        let boot = BuddyAllocator::new(pages(16 * MIB));
        let mut zone = boot.clone();
        // An order-10 unmovable block, as two page-table-like pageblocks.
        assert_eq!(zone.alloc(order(10), UNMOVABLE), Ok(Pfn(0)));
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 2);
        // The huge zero folio: an unmovable order-9 block.
        assert_eq!(zone.alloc(Order::PMD, UNMOVABLE), Ok(Pfn(1024)));
        let page = zone.alloc(Order::BASE, UNMOVABLE).unwrap();
        assert_eq!(page, Pfn(1536), "a fresh pageblock: the others are full");
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 4);
        zone.check_invariants();
        zone.free(Pfn(0), order(10));
        zone.free(Pfn(1024), Order::PMD);
        assert_eq!(zone.nr_pageblocks(Migratetype::Unmovable), 1);
        // The last page of an unmovable pageblock merges it back to whole,
        // and whole free pageblocks merge whatever their types were.
        zone.free(page, Order::BASE);
        zone.check_invariants();
        assert!(zone == boot, "did not return to the boot state: {zone:?}");
    }

    #[test]
    fn alloc_exact_keeps_pageblock_types() {
        let boot = BuddyAllocator::new(pages(16 * MIB));
        let mut zone = boot.clone();
        assert_eq!(zone.alloc(Order::BASE, UNMOVABLE), Ok(Pfn(0)));
        // Inside the unmovable pageblock: the order-6 block at 64 is split
        // around pfn 100, and the halves split off stay on the unmovable
        // lists (order 5 now holds the blocks at 32 and 64).
        assert!(zone.alloc_exact(Pfn(100), Order::BASE));
        zone.check_invariants();
        assert_eq!(zone.pageblock_migratetype(Pfn(100)), Migratetype::Unmovable);
        assert_eq!(zone.nr_free_blocks_of_type(order(5), Migratetype::Unmovable), 2);
        let nr_movable_below_pageblock: u64 =
            (0..9).map(|o| zone.nr_free_blocks_of_type(order(o), Migratetype::Movable)).sum();
        assert_eq!(nr_movable_below_pageblock, 0);
        // Out of a whole free block: the pageblock reads movable.
        assert!(zone.alloc_exact(Pfn(2048 + 5), Order::BASE));
        assert_eq!(zone.pageblock_migratetype(Pfn(2048)), Migratetype::Movable);
        zone.check_invariants();
        zone.free(Pfn(100), Order::BASE);
        zone.free(Pfn(2048 + 5), Order::BASE);
        zone.free(Pfn(0), Order::BASE);
        assert!(zone == boot, "did not return to the boot state: {zone:?}");
    }
}
