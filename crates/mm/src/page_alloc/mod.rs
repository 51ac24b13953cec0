//! The buddy allocator of one zone: free areas per order and migratetype,
//! splitting and merging, grouping by mobility (pageblock migratetypes,
//! fallback with pageblock claiming and stealing), zone watermarks, the
//! watermark check with its reserve reductions, and the fragmentation index.
//!
//! Models: mm/page_alloc.c (Linux 6.18, checked against the 6.12 source):
//! `expand()`, `__rmqueue()`, `__rmqueue_smallest()`, `__rmqueue_claim()`,
//! `__rmqueue_steal()`, `try_to_claim_block()` (`try_to_steal_block()` in
//! 6.12), `should_try_claim_block()` (`can_steal_fallback()` in 6.12),
//! `fallbacks[]`, `__move_freepages_block()`, `set_pageblock_migratetype()`,
//! `__free_one_page()`, `__zone_watermark_ok()`,
//! `calculate_min_free_kbytes()`, `__setup_per_zone_wmarks()`; and
//! `__fragmentation_index()` from mm/vmstat.c.
//!
//! Not modelled: more than one zone or node (so no `lowmem_reserve`, no
//! zonelist fallback and no `ALLOC_NOFRAGMENT`), the reclaimable,
//! highatomic, CMA and isolate migratetypes, `page_group_by_mobility_disabled`
//! (machines under about 12 MiB; the model always groups), watermark
//! boosting on fallback, per-CPU page lists, guard pages, free-page reporting
//! and shuffling. The kernel's `MAX_PAGE_ORDER` is 10 on x86-64; this model
//! goes up to `Order::MAX` (18) so that 1 GiB folios can come from the buddy
//! allocator, which changes `/proc/buddyinfo`-style counts and the
//! fragmentation index accordingly. Where the model's grouping by mobility
//! differs from the kernel's is listed in the doc of `BuddyAllocator`.
//!
//! The state is one sparse bitmap of free blocks per order and migratetype
//! (see `FreeArea`) and one sparse bitmap of unmovable pageblocks, never a
//! per-page or per-pageblock array, so host memory grows with the number of
//! free blocks and unmovable pageblocks, not with the size of the simulated
//! machine: a freshly booted 1 TiB zone is 1024 order-18 blocks in 16 words.
//! Allocation and free cost O(log n) per order split or merged.
//!
//! The files, one job each:
//! - `buddy`: the core, `__rmqueue_smallest()`, `expand()` and
//!   `__free_one_page()`, and the zone's boot-time carving;
//! - `free_lists`: which free list a block of an order and migratetype is
//!   on, and the helpers that add, remove and find free blocks;
//! - `free_area`: one free list, as a sparse bitmap of block numbers;
//! - `pageblock`: `Migratetype` and the type of every pageblock;
//! - `fallback`: `__rmqueue_claim()` and `__rmqueue_steal()`;
//! - `watermark`: the watermarks, `AllocFlags` and `__zone_watermark_ok()`;
//! - `query`: free counts, buddyinfo, pagetypeinfo, the fragmentation index;
//! - `invariants`: `BuddyAllocator::check_invariants()`.

mod buddy;
mod fallback;
mod free_area;
mod free_lists;
mod invariants;
mod pageblock;
mod query;
mod watermark;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod differential;
#[cfg(test)]
mod test_util;

use std::fmt;

use thiserror::Error;

use crate::types::Order;
use free_area::FreeArea;
use free_lists::NR_FREE_LISTS;
use pageblock::PageblockTypes;

pub use pageblock::Migratetype;
pub use watermark::{
    default_min_free_kbytes, AllocFlags, AllocWatermark, Watermarks, DEFAULT_WATERMARK_SCALE_FACTOR,
    MIN_FREE_KBYTES_CEILING, MIN_FREE_KBYTES_FLOOR, WATERMARK_SCALE_FACTOR_RANGE,
};

/// Number of orders the allocator manages, `0..=Order::MAX`: the kernel's
/// `NR_PAGE_ORDERS`.
pub const NR_PAGE_ORDERS: usize = Order::MAX.get() as usize + 1;

/// `pageblock_order` on x86-64: `HPAGE_PMD_ORDER`, so a pageblock is 2 MiB.
/// Each pageblock has one migratetype.
pub const PAGEBLOCK_ORDER: Order = Order::PMD;
/// `pageblock_nr_pages`.
pub const PAGEBLOCK_NR_PAGES: u64 = PAGEBLOCK_ORDER.nr_pages();
/// `PAGEBLOCK_ORDER` as an index: free lists of lower orders are kept per
/// migratetype, those of this order and above are shared.
const PB_ORDER: usize = PAGEBLOCK_ORDER.get() as usize;

/// Why an allocation failed. The kernel returns NULL in all three cases;
/// the model says which, because the first two call for reclaim and the
/// third for compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum AllocFailure {
    /// Fewer free pages than the request, whatever the watermark.
    #[error("out of memory: fewer free pages than requested")]
    OutOfMemory,
    /// Allocating would take free pages below the requested watermark.
    #[error("allocation would go below the watermark")]
    BelowWatermark,
    /// Enough free pages, but no free block of the requested order or larger:
    /// external fragmentation.
    #[error("no free block of the requested order (fragmentation)")]
    NoBlockOfOrder,
}

/// The buddy allocator of the model's one zone, managing PFNs
/// `0..nr_total_pages()`, with grouping by mobility.
///
/// Allocation takes the lowest-PFN free block of the smallest order that
/// fits from the requested migratetype's free lists, and falls back to the
/// other type's lists only when those have none (see `alloc()`). The kernel
/// instead takes the head of a LIFO free list (`__rmqueue_smallest()`), so
/// its choice depends on the order in which blocks were freed; lowest-PFN
/// keeps the model deterministic and makes its state a function of which
/// pages are free and of the pageblock types and nothing else, at the price
/// of not reproducing the kernel's PFNs (which the oracle never compares).
/// Because every free block merges with its free buddy at once, the free
/// blocks are exactly the maximal aligned blocks (of order at most
/// `Order::MAX`) inside the set of free pages: a buddy below
/// `PAGEBLOCK_ORDER` lies in the same pageblock, and above it the two
/// modelled types merge freely, as in the kernel.
///
/// Grouping by mobility, and where the model simplifies it:
/// - Every pageblock has a migratetype, `Movable` at boot. A free block below
///   `PAGEBLOCK_ORDER` is on the free list of its pageblock's type, as in the
///   kernel.
/// - A free block of `PAGEBLOCK_ORDER` or above is whole free pageblocks, and
///   the model gives those no type: they sit on one shared list per order,
///   serve requests of either type without a fallback, and the pageblocks an
///   allocation takes or splits off them get the requested type. The kernel
///   keeps a type for free pageblocks too, so its `__rmqueue_smallest()`
///   prefers a free pageblock of the requested type, and its fallback claims
///   the largest free block of the other type whole (up to `MAX_PAGE_ORDER`,
///   two pageblocks on x86-64), where the model types only the pageblock it
///   allocates from and takes the smallest whole block.
/// - A pageblock that becomes wholly free forgets its type and reads as
///   `Movable` again.
/// - Claiming a pageblock counts its free pages only; see
///   `try_to_claim_block()`.
#[derive(Clone, PartialEq, Eq)]
pub struct BuddyAllocator {
    /// Pages managed: PFNs `0..nr_pages` (`zone_managed_pages()`; the model
    /// reserves nothing for the kernel image or the memmap).
    nr_pages: u64,
    /// `zone->free_area[order].free_list[migratetype]`: the start PFNs of
    /// the free blocks, ordered by PFN rather than kept as LIFO lists. List
    /// `order` holds the movable blocks below `PAGEBLOCK_ORDER` and the
    /// whole free pageblocks, which have no type, from there up; list
    /// `NR_PAGE_ORDERS + order` holds the unmovable blocks below
    /// `PAGEBLOCK_ORDER` (see `list_index()`). One flat array, so that
    /// finding a list costs no branch on the hot paths.
    free_lists: [FreeArea; NR_FREE_LISTS],
    /// Bit `i` is set exactly when `free_lists[i]` is non-empty, so that the
    /// smallest fitting order is found without visiting empty lists.
    nonempty_lists: u32,
    /// The migratetype of every pageblock (`zone->pageblock_flags`).
    pageblock_types: PageblockTypes,
    /// `NR_FREE_PAGES`: the sum of the sizes of all free blocks.
    nr_free: u64,
    /// `vm.min_free_kbytes`.
    min_free_kbytes: u64,
    /// `vm.watermark_scale_factor`.
    watermark_scale_factor: u64,
    /// Derived from the two sysctls above and `nr_pages`.
    watermarks: Watermarks,
}

impl fmt::Debug for BuddyAllocator {
    /// A summary: the free sets of a large zone are too big to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuddyAllocator")
            .field("nr_pages", &self.nr_pages)
            .field("nr_free", &self.nr_free)
            .field("buddyinfo", &self.buddyinfo())
            .field("nr_unmovable_pageblocks", &self.nr_pageblocks(Migratetype::Unmovable))
            .field("watermarks", &self.watermarks)
            .finish()
    }
}
