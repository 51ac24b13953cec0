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

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

use crate::errno::Errno;
use crate::types::{Order, Pfn, PAGE_SHIFT, PAGE_SIZE};

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
/// The orders with a free list per migratetype, `0..PB_ORDER`.
const NR_TYPED_ORDERS: usize = PB_ORDER;
/// The free lists: one per order, then one more per order below
/// `PAGEBLOCK_ORDER` (see `BuddyAllocator::free_lists`).
const NR_FREE_LISTS: usize = NR_PAGE_ORDERS + NR_TYPED_ORDERS;
/// Mask bits, one per order: the orders below `PAGEBLOCK_ORDER`.
const TYPED_ORDERS_MASK: u32 = (1 << NR_TYPED_ORDERS) - 1;
/// Mask bits, one per order: every order.
const ALL_ORDERS_MASK: u32 = (1 << NR_PAGE_ORDERS) - 1;
/// Mask bits, one per order: `PAGEBLOCK_ORDER` and above.
const WHOLE_ORDERS_MASK: u32 = ALL_ORDERS_MASK & !TYPED_ORDERS_MASK;

/// The lower clamp `calculate_min_free_kbytes()` applies.
pub const MIN_FREE_KBYTES_FLOOR: u64 = 128;
/// The upper clamp `calculate_min_free_kbytes()` applies (256 MiB).
pub const MIN_FREE_KBYTES_CEILING: u64 = 262_144;
/// The default of `vm.watermark_scale_factor`, in units of 1/10000 of the
/// zone's managed pages.
pub const DEFAULT_WATERMARK_SCALE_FACTOR: u64 = 10;
/// The range `vm.watermark_scale_factor` accepts (its sysctl bounds).
pub const WATERMARK_SCALE_FACTOR_RANGE: std::ops::RangeInclusive<u64> = 1..=3000;

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

/// The zone watermarks, in pages: `zone->_watermark[WMARK_MIN..=WMARK_HIGH]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Watermarks {
    /// `WMARK_MIN`: below it only reserve users (`__GFP_HIGH`, OOM victims,
    /// PF_MEMALLOC) may allocate; direct reclaim is the rest's only way on.
    pub min: u64,
    /// `WMARK_LOW`: the fast path's mark; an allocation that would go below
    /// it wakes kswapd.
    pub low: u64,
    /// `WMARK_HIGH`: kswapd reclaims until free pages are back above it.
    pub high: u64,
}

impl Watermarks {
    /// The watermarks of a zone that is the machine's only lowmem zone.
    ///
    /// Mirrors `__setup_per_zone_wmarks()` for one zone: the zone's share of
    /// `min_free_kbytes` is all of it, so `WMARK_MIN` is `min_free_kbytes` in
    /// pages, and each further mark adds
    /// `max(min / 4, managed * watermark_scale_factor / 10000)`.
    /// (`WMARK_PROMO`, one more step up, is for memory tiering and is not
    /// modelled.)
    pub fn for_zone(managed_pages: u64, min_free_kbytes: u64, watermark_scale_factor: u64) -> Self {
        let min = min_free_kbytes >> (PAGE_SHIFT - 10);
        // `mult_frac()` splits the product so that it cannot overflow.
        let scaled = (managed_pages / 10_000) * watermark_scale_factor
            + (managed_pages % 10_000) * watermark_scale_factor / 10_000;
        let delta = (min / 4).max(scaled);
        Watermarks { min, low: min + delta, high: min + 2 * delta }
    }
}

/// The default `min_free_kbytes` for a machine with `lowmem_kbytes` of
/// memory below highmem: `sqrt(lowmem_kbytes * 16)`, clamped to
/// `[MIN_FREE_KBYTES_FLOOR, MIN_FREE_KBYTES_CEILING]`.
///
/// Mirrors `calculate_min_free_kbytes()`, with `lowmem_kbytes` passed in
/// rather than read from `nr_free_buffer_pages()` (which, at the boot-time
/// call, is every managed page because no watermark is set yet).
pub fn default_min_free_kbytes(lowmem_kbytes: u64) -> u64 {
    // `int_sqrt()` is the floor of the square root, as `isqrt()` is.
    (lowmem_kbytes * 16).isqrt().clamp(MIN_FREE_KBYTES_FLOOR, MIN_FREE_KBYTES_CEILING)
}

/// The watermark an allocation must leave satisfied: the `ALLOC_WMARK_*`
/// index in the kernel's `alloc_flags`, or `ALLOC_NO_WATERMARKS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllocWatermark {
    /// `ALLOC_WMARK_MIN`: the slow path, after kswapd has been woken.
    Min,
    /// `ALLOC_WMARK_LOW`: the fast path, `get_page_from_freelist()` as first
    /// called from `__alloc_pages()`.
    Low,
    /// `ALLOC_WMARK_HIGH`: the mark kswapd balances to, and the one
    /// `__alloc_pages_may_oom()` tries last before killing.
    High,
    /// `ALLOC_NO_WATERMARKS`: no check at all. The PF_MEMALLOC reserve path
    /// (reclaim itself, and OOM victims on kernels without an MMU).
    NoWatermarks,
}

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
    const fn fallback(self) -> Migratetype {
        match self {
            Migratetype::Unmovable => Migratetype::Movable,
            Migratetype::Movable => Migratetype::Unmovable,
        }
    }
}

/// What an allocation may dip into and what it is for: the subset of the
/// kernel's `alloc_flags` that `__zone_watermark_ok()` reads, plus the
/// migratetype that `gfp_migratetype()` derives from the GFP flags
/// (`ac->migratetype`).
///
/// The reductions apply to the chosen mark in this order: `min_reserve`
/// halves it (rounding the part kept up), `non_block` together with
/// `min_reserve` takes a further quarter, and `oom` halves what is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocFlags {
    pub wmark: AllocWatermark,
    /// `ALLOC_MIN_RESERVE` (`__GFP_HIGH`; `ALLOC_HIGH` before Linux 6.4):
    /// may use half of the reserve below the mark.
    pub min_reserve: bool,
    /// `ALLOC_NON_BLOCK` (the caller cannot reclaim; part of `ALLOC_HARDER`
    /// before Linux 6.4). Deepens `min_reserve` only: on its own it gives
    /// no access to the reserve, as in the kernel.
    pub non_block: bool,
    /// `ALLOC_OOM`: an OOM victim exiting may use half of what is left.
    pub oom: bool,
    /// The free lists searched first, and the type a pageblock is claimed
    /// for on fallback. `Movable` in every constant below.
    pub migratetype: Migratetype,
}

impl AllocFlags {
    /// The slow path's flags for `GFP_KERNEL`-like requests.
    pub const WMARK_MIN: AllocFlags = AllocFlags::with_wmark(AllocWatermark::Min);
    /// The fast path's flags.
    pub const WMARK_LOW: AllocFlags = AllocFlags::with_wmark(AllocWatermark::Low);
    pub const WMARK_HIGH: AllocFlags = AllocFlags::with_wmark(AllocWatermark::High);
    /// `ALLOC_NO_WATERMARKS`.
    pub const NO_WATERMARKS: AllocFlags = AllocFlags::with_wmark(AllocWatermark::NoWatermarks);
    /// What `gfp_to_alloc_flags()` gives `GFP_ATOMIC`: the min mark,
    /// `__GFP_HIGH` and non-blocking.
    pub const ATOMIC: AllocFlags = AllocFlags::WMARK_MIN.min_reserve().non_block();

    const fn with_wmark(wmark: AllocWatermark) -> AllocFlags {
        AllocFlags { wmark, min_reserve: false, non_block: false, oom: false, migratetype: Migratetype::Movable }
    }
    /// These flags plus `ALLOC_MIN_RESERVE`.
    pub const fn min_reserve(self) -> AllocFlags {
        AllocFlags { min_reserve: true, ..self }
    }
    /// These flags plus `ALLOC_NON_BLOCK`.
    pub const fn non_block(self) -> AllocFlags {
        AllocFlags { non_block: true, ..self }
    }
    /// These flags plus `ALLOC_OOM`.
    pub const fn oom(self) -> AllocFlags {
        AllocFlags { oom: true, ..self }
    }
    /// These flags for an unmovable allocation: a GFP mask without
    /// `__GFP_MOVABLE` or `__GFP_RECLAIMABLE`, such as `GFP_KERNEL`.
    pub const fn unmovable(self) -> AllocFlags {
        AllocFlags { migratetype: Migratetype::Unmovable, ..self }
    }
}

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

    /// Whether an allocation of `order` with `flags` passes the watermark
    /// check: `Ok` or why not.
    ///
    /// Mirrors `__zone_watermark_ok()` for one zone with no highatomic or CMA
    /// pages and no `lowmem_reserve`: the free pages that would remain
    /// usable after taking all but one page of the request must exceed the
    /// mark as reduced by the reserve flags; then, for order > 0, a free block
    /// of at least that order must exist, of either migratetype. `NoWatermarks`
    /// passes without a check, as `get_page_from_freelist()` skips it.
    pub fn watermark_check(&self, order: Order, flags: AllocFlags) -> Result<(), AllocFailure> {
        let mark = match flags.wmark {
            AllocWatermark::Min => self.watermarks.min,
            AllocWatermark::Low => self.watermarks.low,
            AllocWatermark::High => self.watermarks.high,
            AllocWatermark::NoWatermarks => return Ok(()),
        };
        // Signed, as in the kernel: the free count may go negative. Both
        // values are below 2^62 (see MAX_NR_PAGES).
        let mut min = mark as i64;
        if flags.min_reserve {
            min -= min / 2;
            if flags.non_block {
                min -= min / 4;
            }
        }
        if flags.oom {
            min -= min / 2;
        }
        let usable_free = self.nr_free as i64 - (order.nr_pages() as i64 - 1);
        if usable_free <= min {
            return Err(AllocFailure::BelowWatermark);
        }
        if order.is_large() && smallest_order_in(self.all_nonempty_orders(), order.get() as usize).is_none() {
            return Err(AllocFailure::NoBlockOfOrder);
        }
        Ok(())
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

    /// The zone's watermarks, in pages.
    pub fn watermarks(&self) -> Watermarks {
        self.watermarks
    }

    /// `vm.min_free_kbytes`.
    pub fn min_free_kbytes(&self) -> u64 {
        self.min_free_kbytes
    }

    /// Writes `vm.min_free_kbytes` and recomputes the watermarks, as
    /// `min_free_kbytes_sysctl_handler()` does; khugepaged's
    /// `set_recommended_min_free_kbytes()` goes the same way.
    /// `EINVAL` if the value does not fit the sysctl's `int`.
    pub fn set_min_free_kbytes(&mut self, kbytes: u64) -> Result<(), Errno> {
        if kbytes > i32::MAX as u64 {
            return Err(Errno::Inval);
        }
        self.min_free_kbytes = kbytes;
        self.setup_watermarks();
        Ok(())
    }

    /// `vm.watermark_scale_factor`.
    pub fn watermark_scale_factor(&self) -> u64 {
        self.watermark_scale_factor
    }

    /// Writes `vm.watermark_scale_factor` and recomputes the watermarks.
    /// `EINVAL` outside the sysctl's range, 1 to 3000.
    pub fn set_watermark_scale_factor(&mut self, factor: u64) -> Result<(), Errno> {
        if !WATERMARK_SCALE_FACTOR_RANGE.contains(&factor) {
            return Err(Errno::Inval);
        }
        self.watermark_scale_factor = factor;
        self.setup_watermarks();
        Ok(())
    }

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

    /// Checks the free lists: every free block lies in the zone and is
    /// aligned to its order, no two overlap, no free block has a free buddy
    /// of its own order (the two would have merged), every free block below
    /// `PAGEBLOCK_ORDER` is on the list of its pageblock's migratetype, the
    /// pageblocks of a larger free block have no type (read `Movable`), the
    /// non-empty-order masks match the free lists, and `NR_FREE_PAGES` equals
    /// the sum of the free blocks. Panics on the first break, saying what,
    /// where, expected and found. Visits every free block.
    pub fn check_invariants(&self) {
        for (index, area) in self.free_lists.iter().enumerate() {
            let bit = self.nonempty_lists & (1 << index) != 0;
            assert_eq!(
                bit,
                !area.is_empty(),
                "buddy allocator: nonempty_lists bit {index} (order-{}) is {bit} but the free list holds {} \
                 blocks\n{self:?}",
                area.order,
                area.len(),
            );
        }
        self.pageblock_types.check(self.nr_pages);
        let mut sum = 0u64;
        for (order, list_type, area) in self.all_free_areas() {
            let size = 1u64 << order;
            area.check();
            for start in area.iter() {
                // A free list stores block numbers, so this holds unless
                // decoding them is wrong.
                assert_eq!(
                    start % size,
                    0,
                    "buddy allocator: free block pfn {start:#x} order-{order} is not aligned to its order: \
                     expected pfn % {size:#x} == 0, found {:#x}\n{self:?}",
                    start % size,
                );
                assert!(
                    start + size <= self.nr_pages,
                    "buddy allocator: free block pfn {start:#x} order-{order} ends at pfn {:#x}, past the \
                     zone's end {:#x}\n{self:?}",
                    start + size,
                    self.nr_pages,
                );
                if order < Order::MAX.get() as usize {
                    let buddy = start ^ size;
                    assert!(
                        !self.free_areas_of_order(order).any(|area| area.contains(buddy)),
                        "buddy allocator: free block pfn {start:#x} order-{order} and its buddy pfn {buddy:#x} \
                         are both free but not merged into order-{}\n{self:?}",
                        order + 1,
                    );
                }
                match list_type {
                    Some(mt) => {
                        let pageblock_type = self.pageblock_types.get(start);
                        assert_eq!(
                            pageblock_type,
                            mt,
                            "buddy allocator: free block pfn {start:#x} order-{order} is on the {mt:?} free list \
                             but its pageblock pfn {:#x} is {pageblock_type:?}\n{self:?}",
                            start & !(PAGEBLOCK_NR_PAGES - 1),
                        );
                    }
                    None => {
                        let typed = self.pageblock_types.first_unmovable_in(start, start + size);
                        assert_eq!(
                            typed, None,
                            "buddy allocator: free block pfn {start:#x} order-{order} is whole free pageblocks, \
                             which have no type, but a pageblock in it is marked Unmovable\n{self:?}",
                        );
                    }
                }
                sum += size;
            }
        }
        assert_eq!(
            sum, self.nr_free,
            "buddy allocator: NR_FREE_PAGES is {} but the free blocks add up to {sum} pages\n{self:?}",
            self.nr_free,
        );
        let mut previous: Option<(Pfn, Order)> = None;
        for (pfn, order) in self.free_blocks() {
            if let Some((prev_pfn, prev_order)) = previous {
                let prev_end = prev_pfn.0 + prev_order.nr_pages();
                assert!(
                    prev_end <= pfn.0,
                    "buddy allocator: free block pfn {:#x} {prev_order} (pages {:#x}..{prev_end:#x}) overlaps \
                     free block pfn {:#x} {order} (pages {:#x}..{:#x})\n{self:?}",
                    prev_pfn.0,
                    prev_pfn.0,
                    pfn.0,
                    pfn.0,
                    pfn.0 + order.nr_pages(),
                );
            }
            previous = Some((pfn, order));
        }
    }

    /// Recomputes the watermarks after a sysctl write
    /// (`setup_per_zone_wmarks()`).
    fn setup_watermarks(&mut self) {
        self.watermarks = Watermarks::for_zone(self.nr_pages, self.min_free_kbytes, self.watermark_scale_factor);
    }

    /// Takes the lowest-PFN free block of the smallest order at or above
    /// `low` that an allocation of `mt` finds without falling back, splits it
    /// down to `low` and returns its start. Mirrors `__rmqueue_smallest()`,
    /// with whole free pageblocks on every type's path (see the type's doc):
    /// the pageblocks the allocation takes or splits off such a block get
    /// type `mt`.
    #[inline(always)]
    fn rmqueue_smallest(&mut self, low: usize, mt: Migratetype) -> Option<u64> {
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
    fn rmqueue_fallback(&mut self, low: usize, mt: Migratetype) -> Option<u64> {
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

    /// Splits the free block of order `high` at `start`, already taken off
    /// its free list, down to order `low`, keeping the lowest part and
    /// returning each upper half to the free list of its order for `mt`.
    /// Mirrors `expand()`.
    #[inline(always)]
    fn expand(&mut self, start: u64, low: usize, high: usize, mt: Migratetype) {
        let offset = list_offset(mt);
        for order in (low..high).rev() {
            self.add_to_list(start + (1 << order), list_index_from(order, offset));
        }
    }

    /// The free list that holds blocks of `order` in pageblocks of type
    /// `mt`: the type's own below `PAGEBLOCK_ORDER`, the shared one above.
    #[inline(always)]
    fn free_area(&self, order: usize, mt: Migratetype) -> &FreeArea {
        &self.free_lists[list_index(order, mt)]
    }

    /// Every free list of `order`: one per type below `PAGEBLOCK_ORDER`,
    /// the shared one above.
    fn free_areas_of_order(&self, order: usize) -> impl Iterator<Item = &FreeArea> {
        let unmovable = (order < PB_ORDER).then(|| &self.free_lists[NR_PAGE_ORDERS + order]);
        std::iter::once(&self.free_lists[order]).chain(unmovable)
    }

    /// Every free list once, as (order, its type or `None` if shared, list).
    fn all_free_areas(&self) -> impl Iterator<Item = (usize, Option<Migratetype>, &FreeArea)> {
        self.free_lists.iter().enumerate().map(|(index, area)| {
            let order = index % NR_PAGE_ORDERS;
            let mt = if index >= NR_PAGE_ORDERS {
                Some(Migratetype::Unmovable)
            } else if order < PB_ORDER {
                Some(Migratetype::Movable)
            } else {
                None
            };
            (order, mt, area)
        })
    }

    /// The orders whose list an allocation of `mt` searches first is
    /// non-empty: its own below `PAGEBLOCK_ORDER`, the shared ones above.
    #[inline(always)]
    fn nonempty_orders(&self, mt: Migratetype) -> u32 {
        let lists = self.nonempty_lists;
        ((lists >> list_offset(mt)) & TYPED_ORDERS_MASK) | (lists & WHOLE_ORDERS_MASK)
    }

    /// The orders with a free block of either type.
    #[inline(always)]
    fn all_nonempty_orders(&self) -> u32 {
        (self.nonempty_lists & ALL_ORDERS_MASK) | (self.nonempty_lists >> NR_PAGE_ORDERS)
    }

    /// Adds a block to the free list of `order` for `mt`; false if it was
    /// already there.
    #[inline(always)]
    fn add_to_free_area(&mut self, start: u64, order: usize, mt: Migratetype) -> bool {
        self.add_to_list(start, list_index(order, mt))
    }

    /// Removes a block from the free list of `order` for `mt`; false if it
    /// was not there.
    #[inline(always)]
    fn del_from_free_area(&mut self, start: u64, order: usize, mt: Migratetype) -> bool {
        self.del_from_list(start, list_index(order, mt))
    }

    /// Adds a block to `free_lists[index]`; false if it was already there.
    #[inline(always)]
    fn add_to_list(&mut self, start: u64, index: usize) -> bool {
        self.nonempty_lists |= 1 << index;
        self.free_lists[index].insert(start)
    }

    /// Removes a block from `free_lists[index]`; false if it was not there.
    #[inline(always)]
    fn del_from_list(&mut self, start: u64, index: usize) -> bool {
        if self.nonempty_lists & (1 << index) == 0 {
            return false;
        }
        let area = &mut self.free_lists[index];
        let removed = area.remove(start);
        if area.is_empty() {
            self.nonempty_lists &= !(1 << index);
        }
        removed
    }

    /// Removes and returns the lowest block on the free list of `order` for
    /// `mt`, which must not be empty.
    #[inline(always)]
    fn pop_first_from_free_area(&mut self, order: usize, mt: Migratetype) -> u64 {
        let index = list_index(order, mt);
        let area = &mut self.free_lists[index];
        let start = area.pop_first().expect("nonempty_lists has a bit for an empty free list");
        if area.is_empty() {
            self.nonempty_lists &= !(1 << index);
        }
        start
    }

    /// The free block, of `min_order` or larger, that contains page `pfn`.
    /// Below `PAGEBLOCK_ORDER` only the list of the pageblock's type can
    /// hold it.
    fn free_block_containing(&self, pfn: u64, min_order: usize) -> Option<(u64, usize)> {
        let mt = self.pageblock_types.get(pfn);
        orders_in(self.nonempty_orders(mt), min_order).find_map(|order| {
            let start = pfn & !((1u64 << order) - 1);
            self.free_area(order, mt).contains(start).then_some((start, order))
        })
    }

    /// Some free block that shares a page with the aligned block of `order`
    /// at `start`: one that contains it, or a smaller one inside it.
    fn find_overlapping_free_block(&self, start: u64, order: Order) -> Option<(u64, usize)> {
        let order = order.get() as usize;
        let end = start + (1u64 << order);
        self.free_block_containing(start, order).or_else(|| {
            orders_in(self.all_nonempty_orders(), 0).take_while(|&o| o < order).find_map(|o| {
                self.free_areas_of_order(o).find_map(|area| area.range(start, end).next().map(|block| (block, o)))
            })
        })
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

/// The index in `BuddyAllocator::free_lists` of the list for blocks of
/// `order` in pageblocks of type `mt`.
#[inline(always)]
fn list_index(order: usize, mt: Migratetype) -> usize {
    list_index_from(order, list_offset(mt))
}

/// What `list_index()` adds to an order below `PAGEBLOCK_ORDER` for `mt`,
/// for loops over orders to compute once.
#[inline(always)]
const fn list_offset(mt: Migratetype) -> usize {
    match mt {
        Migratetype::Unmovable => NR_PAGE_ORDERS,
        Migratetype::Movable => 0,
    }
}

/// `list_index()` with the type's `list_offset()`.
#[inline(always)]
fn list_index_from(order: usize, offset: usize) -> usize {
    if order < PB_ORDER {
        order + offset
    } else {
        order
    }
}

/// The smallest order at or above `order` whose bit is set in `mask`.
#[inline(always)]
fn smallest_order_in(mask: u32, order: usize) -> Option<usize> {
    let above = mask >> order;
    (above != 0).then(|| order + above.trailing_zeros() as usize)
}

/// The orders at or above `order` whose bits are set in `mask`, ascending.
fn orders_in(mask: u32, order: usize) -> impl Iterator<Item = usize> {
    (order..NR_PAGE_ORDERS).filter(move |&o| mask & (1 << o) != 0)
}

/// The migratetype of every pageblock, stored as the set of unmovable ones:
/// a sparse bitmap over pageblock numbers (a `FreeArea` of
/// `PAGEBLOCK_ORDER`), so that the few pageblocks page tables fill cost a
/// few words, whatever the size of the zone. Every other pageblock is
/// movable, wholly free ones included (see `BuddyAllocator`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct PageblockTypes {
    unmovable: FreeArea,
}

impl PageblockTypes {
    fn new() -> Self {
        PageblockTypes { unmovable: FreeArea::new(PB_ORDER) }
    }

    /// The type of the pageblock that holds `pfn`.
    #[inline(always)]
    fn get(&self, pfn: u64) -> Migratetype {
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
    fn set_range(&mut self, first: u64, nr_pages: u64, mt: Migratetype) {
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
    fn first_unmovable_in(&self, first: u64, end: u64) -> Option<u64> {
        self.unmovable.range(first, end).next()
    }

    fn nr_unmovable(&self) -> u64 {
        self.unmovable.len()
    }

    /// Whether any pageblock is unmovable.
    #[inline(always)]
    fn has_unmovable(&self) -> bool {
        !self.unmovable.is_empty()
    }

    /// Checks the set's representation and that every unmovable pageblock
    /// starts inside the zone.
    fn check(&self, nr_pages: u64) {
        self.unmovable.check();
        if let Some(last) = self.unmovable.range(nr_pages, u64::MAX).next() {
            panic!(
                "buddy allocator: pageblock pfn {last:#x} is marked Unmovable but starts past the zone's end \
                 pfn {nr_pages:#x}"
            );
        }
    }
}

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
struct FreeArea {
    /// The order: block `start` is bit `(start >> order) % 64` of word
    /// `(start >> order) / 64`.
    order: u32,
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
    fn new(order: usize) -> Self {
        FreeArea { order: order as u32, nr_blocks: 0, words: FreeWords::Few(Vec::with_capacity(FREE_AREA_FEW_MAX)) }
    }

    fn len(&self) -> u64 {
        self.nr_blocks
    }

    fn is_empty(&self) -> bool {
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

    fn contains(&self, start: u64) -> bool {
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
    fn insert(&mut self, start: u64) -> bool {
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
    fn remove(&mut self, start: u64) -> bool {
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
    fn first(&self) -> Option<u64> {
        let (key, word) = match &self.words {
            FreeWords::Few(words) => words.first().copied()?,
            FreeWords::Many(words) => words.first_key_value().map(|(&key, &word)| (key, word))?,
        };
        Some((key * 64 + word.trailing_zeros() as u64) << self.order)
    }

    /// Removes and returns the lowest block's start.
    #[inline]
    fn pop_first(&mut self) -> Option<u64> {
        let start = self.first()?;
        self.remove(start);
        Some(start)
    }

    fn iter(&self) -> FreeAreaIter<'_> {
        self.range(0, u64::MAX)
    }

    /// The starts of the blocks that start in `low..high`, ascending.
    fn range(&self, low: u64, high: u64) -> FreeAreaIter<'_> {
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
    fn check(&self) {
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
struct FreeAreaIter<'a> {
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
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    const ONE_TIB_PAGES: u64 = 1 << 28;

    fn pages(bytes: u64) -> u64 {
        bytes / PAGE_SIZE
    }

    fn order(o: u8) -> Order {
        Order::new(o)
    }

    fn blocks(zone: &BuddyAllocator) -> Vec<(u64, u8)> {
        zone.free_blocks().map(|(pfn, o)| (pfn.0, o.get())).collect()
    }

    thread_local! {
        /// Set while `panic_message()` runs a call that is meant to panic.
        static EXPECTING_PANIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Runs `f`, which must panic, and returns its panic message. The panic
    /// is not printed: the hook installed here stays quiet on the thread
    /// that expects it and passes every other panic to the previous hook.
    fn panic_message(f: impl FnOnce()) -> String {
        static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
        QUIET_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !EXPECTING_PANIC.with(|expecting| expecting.get()) {
                    previous(info);
                }
            }));
        });
        EXPECTING_PANIC.with(|expecting| expecting.set(true));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        EXPECTING_PANIC.with(|expecting| expecting.set(false));
        let payload = result.expect_err("expected a panic, but the call returned");
        if let Some(message) = payload.downcast_ref::<String>() {
            message.clone()
        } else if let Some(message) = payload.downcast_ref::<&str>() {
            message.to_string()
        } else {
            String::from("<non-string panic payload>")
        }
    }

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
    fn watermarks_match_the_kernel_formula() {
        // 16 GiB = 4,194,304 pages. lowmem_kbytes = 16,777,216 (2^24).
        // int_sqrt(2^24 * 16) = int_sqrt(2^28) = 2^14 = 16384 kB, inside [128, 262144].
        // WMARK_MIN = 16384 >> 2 = 4096 pages.
        // delta = max(4096 / 4 = 1024, 4194304 * 10 / 10000 = 4194.304 -> 4194) = 4194.
        // WMARK_LOW = 4096 + 4194 = 8290, WMARK_HIGH = 8290 + 4194 = 12484.
        let zone = BuddyAllocator::new(pages(16 * GIB));
        assert_eq!(zone.min_free_kbytes(), 16384);
        assert_eq!(zone.watermarks(), Watermarks { min: 4096, low: 8290, high: 12484 });

        // 1 TiB = 2^28 pages. lowmem_kbytes = 2^30.
        // int_sqrt(2^30 * 16) = int_sqrt(2^34) = 2^17 = 131072 kB, inside the clamp.
        // WMARK_MIN = 131072 >> 2 = 32768 pages.
        // delta = max(32768 / 4 = 8192, 268435456 * 10 / 10000 = 268435.456 -> 268435) = 268435.
        // WMARK_LOW = 32768 + 268435 = 301203, WMARK_HIGH = 301203 + 268435 = 569638.
        let zone = BuddyAllocator::new(ONE_TIB_PAGES);
        assert_eq!(zone.min_free_kbytes(), 131072);
        assert_eq!(zone.watermarks(), Watermarks { min: 32768, low: 301203, high: 569638 });

        // 16 MiB = 4096 pages. lowmem_kbytes = 16384; int_sqrt(262144) = 512 kB.
        // WMARK_MIN = 128 pages; delta = max(32, 4096 * 10 / 10000 = 4) = 32.
        let zone = BuddyAllocator::new(pages(16 * MIB));
        assert_eq!(zone.min_free_kbytes(), 512);
        assert_eq!(zone.watermarks(), Watermarks { min: 128, low: 160, high: 192 });
    }

    #[test]
    fn min_free_kbytes_is_clamped() {
        // 256 kB: int_sqrt(4096) = 64 kB, raised to the 128 kB floor.
        assert_eq!(default_min_free_kbytes(256), 128);
        // 4 TiB: int_sqrt(2^32 * 16) = 2^18 = 262144 kB, exactly the ceiling.
        assert_eq!(default_min_free_kbytes(4 << 30), 262_144);
        // 16 TiB would be 2^19 kB; held at the ceiling.
        assert_eq!(default_min_free_kbytes(16 << 30), 262_144);
        // int_sqrt rounds down: 1000 * 16 = 16000, sqrt 126.49 -> 126 -> 128.
        assert_eq!(default_min_free_kbytes(1000), 128);
        assert_eq!(default_min_free_kbytes(1_000_000), 4000);
        assert_eq!(default_min_free_kbytes(1_000_001), 4000);
    }

    #[test]
    fn sysctl_writes_recompute_watermarks() {
        let mut zone = BuddyAllocator::new(pages(16 * GIB));
        // min_free_kbytes = 65536: WMARK_MIN = 16384, delta = max(4096, 4194) = 4194.
        assert_eq!(zone.set_min_free_kbytes(65536), Ok(()));
        assert_eq!(zone.watermarks(), Watermarks { min: 16384, low: 20578, high: 24772 });
        // watermark_scale_factor = 100: delta = max(4096, 41943) = 41943.
        assert_eq!(zone.set_watermark_scale_factor(100), Ok(()));
        assert_eq!(zone.watermarks(), Watermarks { min: 16384, low: 58327, high: 100270 });
        assert_eq!(zone.set_watermark_scale_factor(0), Err(Errno::Inval));
        assert_eq!(zone.set_watermark_scale_factor(3001), Err(Errno::Inval));
        assert_eq!(zone.set_min_free_kbytes(1 << 31), Err(Errno::Inval));
        assert_eq!(zone.watermark_scale_factor(), 100);
    }

    /// Allocates order-0 pages ignoring watermarks until `target` pages are free.
    fn drain_to(zone: &mut BuddyAllocator, target: u64) {
        while zone.nr_free_pages() > target {
            zone.alloc(Order::BASE, AllocFlags::NO_WATERMARKS).unwrap();
        }
    }

    #[test]
    fn watermark_boundaries_and_reserve_reductions() {
        // 64 MiB = 16384 pages: lowmem 65536 kB, int_sqrt(1048576) = 1024 kB,
        // WMARK_MIN = 256, delta = max(64, 16) = 64, LOW = 320, HIGH = 384.
        let mut zone = BuddyAllocator::new(pages(64 * MIB));
        let wm = zone.watermarks();
        assert_eq!(wm, Watermarks { min: 256, low: 320, high: 384 });

        // An allocation passes when the free pages left afterwards are at
        // least the mark: free - (2^order - 1) > mark.
        drain_to(&mut zone, 257);
        assert_eq!(zone.watermark_check(Order::BASE, AllocFlags::WMARK_MIN), Ok(()));
        assert_eq!(zone.watermark_check(order(1), AllocFlags::WMARK_MIN), Err(AllocFailure::BelowWatermark));
        assert_eq!(zone.watermark_check(Order::BASE, AllocFlags::WMARK_LOW), Err(AllocFailure::BelowWatermark));
        drain_to(&mut zone, 256);
        assert_eq!(zone.alloc(Order::BASE, AllocFlags::WMARK_MIN), Err(AllocFailure::BelowWatermark));
        assert_eq!(zone.nr_free_pages(), 256, "a failed allocation must not change the zone");

        // __GFP_HIGH: min 256 - 128 = 128. With ALLOC_NON_BLOCK too: 128 - 32 = 96.
        // ALLOC_OOM alone: 256 - 128 = 128. All three: 96 - 48 = 48.
        // ALLOC_NON_BLOCK alone gives nothing.
        let cases = [
            (AllocFlags::WMARK_MIN, 256),
            (AllocFlags::WMARK_MIN.non_block(), 256),
            (AllocFlags::WMARK_MIN.min_reserve(), 128),
            (AllocFlags::ATOMIC, 96),
            (AllocFlags::WMARK_MIN.oom(), 128),
            (AllocFlags::ATOMIC.oom(), 48),
            // On the low mark: 320 -> 160 -> 120.
            (AllocFlags::WMARK_LOW.min_reserve().non_block(), 120),
        ];
        let fresh = BuddyAllocator::new(pages(64 * MIB));
        for (flags, effective_min) in cases {
            let mut probe = fresh.clone();
            drain_to(&mut probe, effective_min + 1);
            assert_eq!(probe.alloc(Order::BASE, flags), Ok(Pfn(pages(64 * MIB) - effective_min - 1)), "{flags:?}");
            assert_eq!(probe.alloc(Order::BASE, flags), Err(AllocFailure::BelowWatermark), "{flags:?}");
        }
    }

    #[test]
    fn no_watermarks_succeeds_below_min_where_min_fails() {
        let mut zone = BuddyAllocator::new(pages(64 * MIB));
        drain_to(&mut zone, 100);
        assert_eq!(zone.alloc(Order::BASE, AllocFlags::WMARK_MIN), Err(AllocFailure::BelowWatermark));
        assert_eq!(zone.alloc(order(4), AllocFlags::WMARK_MIN), Err(AllocFailure::BelowWatermark));
        assert!(zone.alloc(Order::BASE, AllocFlags::NO_WATERMARKS).is_ok());
        assert!(zone.alloc(order(4), AllocFlags::NO_WATERMARKS).is_ok());
        drain_to(&mut zone, 0);
        assert_eq!(zone.alloc(Order::BASE, AllocFlags::NO_WATERMARKS), Err(AllocFailure::OutOfMemory));
        assert_eq!(zone.largest_free_order(), None);
        assert_eq!(zone.fragmentation_index(Order::PMD), 0, "nothing free: index 0");
        zone.check_invariants();
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

    #[test]
    fn check_invariants_reports_unmerged_buddies_and_bad_counts() {
        let mut zone = BuddyAllocator::new(1024);
        zone.alloc(Order::BASE, AllocFlags::NO_WATERMARKS).unwrap();
        let mut broken = zone.clone();
        // Put the allocated page back behind the allocator's back, unmerged.
        broken.add_to_free_area(0, 0, Migratetype::Movable);
        broken.nr_free += 1;
        let message = panic_message(|| broken.check_invariants());
        assert!(message.contains("free block pfn 0x0 order-0 and its buddy pfn 0x1 are both free"), "{message}");

        let mut broken = zone.clone();
        broken.nr_free += 3;
        let message = panic_message(|| broken.check_invariants());
        assert!(message.contains("NR_FREE_PAGES is 1026 but the free blocks add up to 1023 pages"), "{message}");

        // 0    4 5 6   8
        // |held|h|f|o1 |o3 ...   then mark 4..8 free as one order-2 block.
        let mut zone = BuddyAllocator::new(1024);
        assert_eq!(zone.alloc(order(2), AllocFlags::NO_WATERMARKS), Ok(Pfn(0)));
        assert_eq!(zone.alloc(Order::BASE, AllocFlags::NO_WATERMARKS), Ok(Pfn(4)));
        let mut broken = zone.clone();
        broken.add_to_free_area(4, 2, Migratetype::Movable);
        broken.nr_free += 4;
        let message = panic_message(|| broken.check_invariants());
        assert!(
            message.contains("free block pfn 0x4 order-2 (pages 0x4..0x8) overlaps free block pfn 0x5 order-0"),
            "{message}"
        );
    }

    // ---- Grouping by mobility --------------------------------------------

    const MOVABLE: AllocFlags = AllocFlags::NO_WATERMARKS;
    const UNMOVABLE: AllocFlags = AllocFlags::NO_WATERMARKS.unmovable();

    fn pageblock_of(pfn: &Pfn) -> u64 {
        pfn.0 / PAGEBLOCK_NR_PAGES
    }

    fn alloc_n(zone: &mut BuddyAllocator, n: u64, flags: AllocFlags) -> Vec<Pfn> {
        (0..n).map(|_| zone.alloc(Order::BASE, flags).unwrap()).collect()
    }

    /// A 16 MiB zone (8 pageblocks) with pageblock 0 full of unmovable
    /// pages, then `movable_pageblocks` pageblocks full of movable ones.
    fn zone_with_full_unmovable_pageblock(movable_pageblocks: u64) -> BuddyAllocator {
        let mut zone = BuddyAllocator::new(pages(16 * MIB));
        let unmovable = alloc_n(&mut zone, PAGEBLOCK_NR_PAGES, UNMOVABLE);
        assert!(unmovable.iter().all(|pfn| pageblock_of(pfn) == 0));
        alloc_n(&mut zone, movable_pageblocks * PAGEBLOCK_NR_PAGES, MOVABLE);
        zone.check_invariants();
        zone
    }

    fn free_range(zone: &mut BuddyAllocator, pfns: std::ops::Range<u64>) {
        for pfn in pfns {
            zone.free(Pfn(pfn), Order::BASE);
        }
        zone.check_invariants();
    }

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

    #[test]
    fn check_invariants_reports_free_lists_that_disagree_with_pageblock_types() {
        let mut zone = BuddyAllocator::new(1024);
        assert_eq!(zone.alloc(Order::BASE, UNMOVABLE), Ok(Pfn(0)));
        // Move the free page at pfn 1 to the movable list behind the
        // allocator's back.
        let mut broken = zone.clone();
        assert!(broken.del_from_free_area(1, 0, Migratetype::Unmovable));
        broken.add_to_free_area(1, 0, Migratetype::Movable);
        let message = panic_message(|| broken.check_invariants());
        assert!(
            message.contains(
                "free block pfn 0x1 order-0 is on the Movable free list but its pageblock pfn 0x0 is Unmovable"
            ),
            "{message}"
        );

        // Mark the wholly free pageblock at 512 unmovable.
        let mut broken = zone.clone();
        broken.pageblock_types.set_range(512, PAGEBLOCK_NR_PAGES, Migratetype::Unmovable);
        let message = panic_message(|| broken.check_invariants());
        assert!(
            message.contains(
                "free block pfn 0x200 order-9 is whole free pageblocks, which have no type, but a pageblock \
                 in it is marked Unmovable"
            ),
            "{message}"
        );
    }

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

    // ---- Differential testing against a naive model ----------------------

    /// The same allocator, obviously correct and slow: one flag per page
    /// and one type per pageblock. Its free blocks are computed by carving
    /// each run of free pages into maximal aligned blocks, and allocation
    /// applies the policy the buddy allocator's docs state directly to that
    /// list, so the two must agree on every PFN and every pageblock type:
    ///
    /// - own blocks first: the lowest of the smallest order among the blocks
    ///   of at least pageblock order (any type) and the smaller blocks in
    ///   pageblocks of the requested type;
    /// - then, below pageblock order, claim: from order 8 down, the lowest
    ///   block of that order in a pageblock of the other type; stop at the
    ///   first order below 4 for a movable request; claim the pageblock if
    ///   it lies in the zone and at least 256 of its pages are free, then
    ///   take an own block;
    /// - then steal: the lowest of the smallest order among the blocks below
    ///   pageblock order in pageblocks of the other type.
    ///
    /// Taking a block of pageblock order or above types the pageblocks the
    /// allocation comes out of; a pageblock whose pages are all free reads
    /// movable. (Plain first-fit, the lowest aligned free range, would pick
    /// differently: it ignores a smaller exact fit higher up.)
    struct NaiveFreeSet {
        free: Vec<bool>,
        /// How many of `free` are true.
        nr_free: u64,
        watermarks: Watermarks,
        /// One per pageblock, the last one possibly partial.
        pageblock_types: Vec<Migratetype>,
    }

    /// The step of `__rmqueue()` that served an allocation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum RmqueuePath {
        Smallest,
        Claim,
        Steal,
    }

    const NAIVE_PAGEBLOCK: u64 = 512;

    impl NaiveFreeSet {
        fn new(nr_pages: u64, watermarks: Watermarks) -> Self {
            NaiveFreeSet {
                free: vec![true; nr_pages as usize],
                nr_free: nr_pages,
                watermarks,
                pageblock_types: vec![Migratetype::Movable; nr_pages.div_ceil(NAIVE_PAGEBLOCK) as usize],
            }
        }

        fn is_free(&self, pfn: u64) -> bool {
            self.free.get(pfn as usize).copied().unwrap_or(false)
        }

        fn type_of(&self, pfn: u64) -> Migratetype {
            self.pageblock_types[(pfn / NAIVE_PAGEBLOCK) as usize]
        }

        fn blocks(&self) -> Vec<(u64, u8)> {
            let nr_pages = self.free.len() as u64;
            let mut blocks = Vec::new();
            let mut run_start = 0;
            while run_start < nr_pages {
                if !self.free[run_start as usize] {
                    run_start += 1;
                    continue;
                }
                let mut run_end = run_start;
                while self.is_free(run_end) {
                    run_end += 1;
                }
                let mut pfn = run_start;
                while pfn < run_end {
                    let mut o = 0u8;
                    while o < Order::MAX.get() && pfn % (2 << o) == 0 && pfn + (2 << o) <= run_end {
                        o += 1;
                    }
                    blocks.push((pfn, o));
                    pfn += 1 << o;
                }
                run_start = run_end;
            }
            blocks
        }

        fn alloc(&mut self, order: u8, flags: AllocFlags) -> Result<(u64, RmqueuePath), AllocFailure> {
            let nr = 1u64 << order;
            let nr_free = self.nr_free;
            if nr_free < nr {
                return Err(AllocFailure::OutOfMemory);
            }
            let mark = match flags.wmark {
                AllocWatermark::Min => Some(self.watermarks.min),
                AllocWatermark::Low => Some(self.watermarks.low),
                AllocWatermark::High => Some(self.watermarks.high),
                AllocWatermark::NoWatermarks => None,
            };
            if let Some(mut mark) = mark {
                if flags.min_reserve {
                    mark = mark.div_ceil(2);
                    if flags.non_block {
                        mark -= mark / 4;
                    }
                }
                if flags.oom {
                    mark = mark.div_ceil(2);
                }
                // What is left after the allocation must reach the mark.
                if nr_free - nr < mark {
                    return Err(AllocFailure::BelowWatermark);
                }
            }
            let mt = flags.migratetype;
            let blocks = self.blocks();
            if let Some(block) = self.own_block(&blocks, order, mt) {
                return Ok((self.take(block, order, mt), RmqueuePath::Smallest));
            }
            if order >= 9 {
                return Err(AllocFailure::NoBlockOfOrder);
            }
            for current in (order..9).rev() {
                let Some(&(candidate, _)) =
                    blocks.iter().filter(|&&(pfn, o)| o == current && self.type_of(pfn) != mt).min()
                else {
                    continue;
                };
                if current < 4 && mt == Migratetype::Movable {
                    break;
                }
                let first = candidate / NAIVE_PAGEBLOCK * NAIVE_PAGEBLOCK;
                let end = first + NAIVE_PAGEBLOCK;
                let nr_free_in_pageblock = (first..end).filter(|&pfn| self.is_free(pfn)).count() as u64;
                if end <= self.free.len() as u64 && nr_free_in_pageblock >= NAIVE_PAGEBLOCK / 2 {
                    self.pageblock_types[(first / NAIVE_PAGEBLOCK) as usize] = mt;
                    let block = self
                        .own_block(&blocks, order, mt)
                        .expect("naive model: a claimed pageblock has no block to allocate");
                    return Ok((self.take(block, order, mt), RmqueuePath::Claim));
                }
            }
            let Some(&block) = blocks
                .iter()
                .filter(|&&(pfn, o)| o >= order && o < 9 && self.type_of(pfn) != mt)
                .min_by_key(|&&(pfn, o)| (o, pfn))
            else {
                return Err(AllocFailure::NoBlockOfOrder);
            };
            Ok((self.take(block, order, mt), RmqueuePath::Steal))
        }

        /// The block an allocation of `order` and `mt` takes without falling back.
        fn own_block(&self, blocks: &[(u64, u8)], order: u8, mt: Migratetype) -> Option<(u64, u8)> {
            blocks
                .iter()
                .copied()
                .filter(|&(pfn, o)| o >= order && (o >= 9 || self.type_of(pfn) == mt))
                .min_by_key(|&(pfn, o)| (o, pfn))
        }

        /// Allocates the first `2^order` pages of the free block `(start, o)`.
        fn take(&mut self, (start, o): (u64, u8), order: u8, mt: Migratetype) -> u64 {
            self.set_range(start, 1 << order, false);
            if o >= 9 {
                let typed_pages = (1u64 << order).max(NAIVE_PAGEBLOCK);
                for pfn in (start..start + typed_pages).step_by(NAIVE_PAGEBLOCK as usize) {
                    self.pageblock_types[(pfn / NAIVE_PAGEBLOCK) as usize] = mt;
                }
            }
            start
        }

        fn alloc_exact(&mut self, pfn: u64, order: u8) -> bool {
            let nr = 1u64 << order;
            if !(pfn..pfn + nr).all(|p| self.is_free(p)) {
                return false;
            }
            self.set_range(pfn, nr, false);
            true
        }

        fn free(&mut self, pfn: u64, order: u8) {
            for p in pfn..pfn + (1 << order) {
                assert!(!self.is_free(p), "naive model: page {p:#x} freed twice");
            }
            self.set_range(pfn, 1 << order, true);
            let nr_pages = self.free.len() as u64;
            let first = pfn / NAIVE_PAGEBLOCK * NAIVE_PAGEBLOCK;
            for pageblock in (first..pfn + (1 << order)).step_by(NAIVE_PAGEBLOCK as usize) {
                let end = pageblock + NAIVE_PAGEBLOCK;
                if end <= nr_pages && (pageblock..end).all(|p| self.is_free(p)) {
                    self.pageblock_types[(pageblock / NAIVE_PAGEBLOCK) as usize] = Migratetype::Movable;
                }
            }
        }

        fn set_range(&mut self, pfn: u64, nr: u64, free: bool) {
            self.free[pfn as usize..(pfn + nr) as usize].fill(free);
            if free {
                self.nr_free += nr;
            } else {
                self.nr_free -= nr;
            }
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Alloc {
            order: u8,
            flags: AllocFlags,
        },
        /// Frees the held block at this index (modulo the number held).
        Free {
            index: usize,
        },
        /// Claims an aligned block, as compaction does (pfn modulo the zone).
        AllocExact {
            pfn: u64,
            order: u8,
        },
        /// Splits a held block into its two halves, each held on its own, so
        /// that later frees cover part of an allocation (as freeing the pages
        /// of a split folio one by one does).
        SplitHeld {
            index: usize,
        },
        /// Compares the range and per-page queries at this PFN.
        Query {
            pfn: u64,
            nr: u64,
        },
    }

    struct Differential {
        buddy: BuddyAllocator,
        naive: NaiveFreeSet,
        held: Vec<(u64, u8)>,
        /// Allocations served by each `RmqueuePath`, in its order.
        paths: [u64; 3],
    }

    impl Differential {
        fn new(nr_pages: u64) -> Self {
            let buddy = BuddyAllocator::new(nr_pages);
            let naive = NaiveFreeSet::new(nr_pages, buddy.watermarks());
            Differential { buddy, naive, held: Vec::new(), paths: [0; 3] }
        }

        /// Applies `op` to both models and asserts they agree; `at` names
        /// the run and step for the failure message. Returns the outcome of
        /// an allocation.
        fn step(&mut self, op: Op, at: &str) -> Option<Result<u64, AllocFailure>> {
            let mut outcome = None;
            match op {
                Op::Alloc { order, flags } => {
                    let got = self.buddy.alloc(Order::new(order), flags).map(|pfn| pfn.0);
                    let want = self.naive.alloc(order, flags);
                    if let Ok((_, path)) = want {
                        self.paths[path as usize] += 1;
                    }
                    let want = want.map(|(pfn, _)| pfn);
                    assert_eq!(got, want, "{at}: {op:?}: buddy vs naive");
                    if let Ok(pfn) = got {
                        self.held.push((pfn, order));
                    }
                    outcome = Some(got);
                }
                Op::Free { index } => {
                    if self.held.is_empty() {
                        return None;
                    }
                    let (pfn, order) = self.held.swap_remove(index % self.held.len());
                    self.buddy.free(Pfn(pfn), Order::new(order));
                    self.naive.free(pfn, order);
                }
                Op::AllocExact { pfn, order } => {
                    let nr_blocks = self.buddy.nr_total_pages() >> order;
                    if nr_blocks == 0 {
                        return None;
                    }
                    let pfn = (pfn % nr_blocks) << order;
                    let got = self.buddy.alloc_exact(Pfn(pfn), Order::new(order));
                    let want = self.naive.alloc_exact(pfn, order);
                    assert_eq!(got, want, "{at}: alloc_exact({pfn:#x}, order-{order}): buddy vs naive");
                    if got {
                        self.held.push((pfn, order));
                    }
                }
                Op::SplitHeld { index } => {
                    if self.held.is_empty() {
                        return None;
                    }
                    let index = index % self.held.len();
                    let (pfn, order) = self.held[index];
                    if order > 0 {
                        self.held[index] = (pfn, order - 1);
                        self.held.push((pfn + (1 << (order - 1)), order - 1));
                    }
                }
                Op::Query { pfn, nr } => {
                    let pfn = pfn % (self.buddy.nr_total_pages() + 2);
                    let want = (pfn..pfn + nr).filter(|&p| self.naive.is_free(p)).count() as u64;
                    assert_eq!(
                        self.buddy.nr_free_in_range(Pfn(pfn), nr),
                        want,
                        "{at}: nr_free_in_range({pfn:#x}, {nr})"
                    );
                    assert_eq!(self.buddy.is_free(Pfn(pfn)), self.naive.is_free(pfn), "{at}: is_free({pfn:#x})");
                    let want: Vec<_> = self
                        .naive
                        .blocks()
                        .into_iter()
                        .filter(|&(start, o)| start >= pfn && start + (1 << o) <= pfn + nr)
                        .collect();
                    let got: Vec<_> =
                        self.buddy.free_blocks_in_range(Pfn(pfn), nr).map(|(start, o)| (start.0, o.get())).collect();
                    assert_eq!(got, want, "{at}: free_blocks_in_range({pfn:#x}, {nr})");
                }
            }
            self.buddy.check_invariants();
            assert_eq!(self.buddy.nr_free_pages(), self.naive.nr_free, "{at}: {op:?}: free page counts differ");
            let naive_blocks = self.naive.blocks();
            assert_eq!(blocks(&self.buddy), naive_blocks, "{at}: {op:?}: free blocks differ");
            let mut buddyinfo = [0u64; NR_PAGE_ORDERS];
            for &(_, o) in &naive_blocks {
                buddyinfo[o as usize] += 1;
            }
            assert_eq!(self.buddy.buddyinfo(), buddyinfo, "{at}: buddyinfo");
            for (index, &want) in self.naive.pageblock_types.iter().enumerate() {
                let pfn = index as u64 * NAIVE_PAGEBLOCK;
                assert_eq!(
                    self.buddy.pageblock_migratetype(Pfn(pfn)),
                    want,
                    "{at}: {op:?}: type of pageblock pfn {pfn:#x}"
                );
            }
            let nr_unmovable =
                self.naive.pageblock_types.iter().filter(|&&mt| mt == Migratetype::Unmovable).count() as u64;
            assert_eq!(self.buddy.nr_pageblocks(Migratetype::Unmovable), nr_unmovable, "{at}: unmovable pageblocks");
            assert_eq!(
                self.buddy.largest_free_order().map(Order::get),
                naive_blocks.iter().map(|&(_, o)| o).max(),
                "{at}: largest_free_order"
            );
            outcome
        }
    }

    /// splitmix64: small, fast and good enough to drive a fuzzer.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_flags(rng: &mut Rng) -> AllocFlags {
        let wmark = match rng.below(5) {
            0 => AllocWatermark::Min,
            1 | 2 => AllocWatermark::Low,
            3 => AllocWatermark::High,
            _ => AllocWatermark::NoWatermarks,
        };
        let bits = rng.below(8);
        AllocFlags {
            wmark,
            min_reserve: bits & 1 != 0,
            non_block: bits & 2 != 0,
            oom: bits & 4 != 0 && rng.below(4) == 0,
            migratetype: if rng.below(3) == 0 { Migratetype::Unmovable } else { Migratetype::Movable },
        }
    }

    /// An op for step `step`: phases of 1000 steps alternate between filling
    /// the zone and draining it, so runs cross the watermarks both ways.
    fn random_op(rng: &mut Rng, step: u64, max_order: u8) -> Op {
        let filling = (step / 1000) & 1 == 0;
        let order = match rng.below(10) {
            0..=5 => 0,
            6 => 9.min(max_order),
            _ => rng.below(max_order as u64 + 1) as u8,
        };
        match rng.below(100) {
            r if r < if filling { 60 } else { 35 } => Op::Alloc { order, flags: random_flags(rng) },
            r if r < 88 => Op::Free { index: rng.next() as usize },
            r if r < 93 => Op::AllocExact { pfn: rng.next(), order },
            r if r < 97 => Op::SplitHeld { index: rng.next() as usize },
            _ => Op::Query { pfn: rng.next(), nr: rng.below(600) },
        }
    }

    const FIXED_SEEDS: [u64; 4] = [0x7e57, 0x5eed_0001, 0x0b0d_d1e5, 0xdead_beef];
    /// Zone sizes for the seeds: 16 MiB + 12 KiB, and three odd ones. Small,
    /// so that the naive model's page-by-page scans stay fast in debug
    /// builds; `Order::MAX` merges are covered by the unit tests.
    const DIFFERENTIAL_SIZES: [u64; 4] = [4096 + 3, 2999, 1537, 1027];
    const DIFFERENTIAL_STEPS: u64 = 20_000;

    #[test]
    fn buddy_allocator_matches_naive_free_set() {
        for (seed, nr_pages) in FIXED_SEEDS.into_iter().zip(DIFFERENTIAL_SIZES) {
            let mut rng = Rng(seed);
            let mut diff = Differential::new(nr_pages);
            let max_order = nr_pages.ilog2().min(Order::MAX.get() as u32) as u8;
            let mut outcomes = [0u64; 4];
            for step in 0..DIFFERENTIAL_STEPS {
                let op = random_op(&mut rng, step, max_order);
                let at = format!("seed {seed:#x} nr_pages {nr_pages} step {step}");
                if let Some(outcome) = diff.step(op, &at) {
                    outcomes[match outcome {
                        Ok(_) => 0,
                        Err(AllocFailure::OutOfMemory) => 1,
                        Err(AllocFailure::BelowWatermark) => 2,
                        Err(AllocFailure::NoBlockOfOrder) => 3,
                    }] += 1;
                }
            }
            let paths = diff.paths;
            println!(
                "seed {seed:#x} nr_pages {nr_pages}: outcomes [ok, oom, below wmark, no block] = {outcomes:?}, \
                 paths [smallest, claim, steal] = {paths:?}"
            );
            // The run must have reached every outcome and every step of
            // `__rmqueue()`, or it tested less than it seems.
            assert!(
                outcomes.iter().all(|&n| n > 0),
                "seed {seed:#x}: outcomes [ok, oom, below wmark, no block] = {outcomes:?}"
            );
            assert!(paths.iter().all(|&n| n > 0), "seed {seed:#x}: paths [smallest, claim, steal] = {paths:?}");
        }
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let flags = (0..4u8, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(w, min_reserve, non_block, oom, unmovable)| AllocFlags {
                wmark: [AllocWatermark::Min, AllocWatermark::Low, AllocWatermark::High, AllocWatermark::NoWatermarks]
                    [w as usize],
                min_reserve,
                non_block,
                oom,
                migratetype: Migratetype::ALL[unmovable as usize],
            },
        );
        prop_oneof![
            4 => (0..=10u8, flags).prop_map(|(order, flags)| Op::Alloc { order, flags }),
            3 => any::<usize>().prop_map(|index| Op::Free { index }),
            1 => (any::<u64>(), 0..=10u8).prop_map(|(pfn, order)| Op::AllocExact { pfn, order }),
            1 => any::<usize>().prop_map(|index| Op::SplitHeld { index }),
            1 => (any::<u64>(), 0..300u64).prop_map(|(pfn, nr)| Op::Query { pfn, nr }),
        ]
    }

    proptest! {
        #[test]
        fn buddy_allocator_matches_naive_free_set_shrinking(
            nr_pages in 1..1200u64,
            ops in proptest::collection::vec(op_strategy(), 1..200),
        ) {
            let mut diff = Differential::new(nr_pages);
            for (step, op) in ops.into_iter().enumerate() {
                diff.step(op, &format!("nr_pages {nr_pages} step {step}"));
            }
        }
    }

    #[test]
    fn same_ops_give_identical_state() {
        let run = || {
            let mut rng = Rng(0x7e57);
            let mut diff = Differential::new(4096 + 3);
            for step in 0..2000 {
                diff.step(random_op(&mut rng, step, 12), "determinism");
            }
            (blocks(&diff.buddy), diff.held)
        };
        assert_eq!(run(), run(), "nondeterminism: seed 0x7e57 gave two results");
    }

    // ---- Timing (prints only; run with --release -- --nocapture) ---------

    /// Prints the best of five timings, to see past other load on the host.
    fn time_round_trips(name: &str, zone: &mut BuddyAllocator, order: Order, iterations: u64) {
        time_round_trips_with(name, zone, order, AllocFlags::WMARK_LOW, iterations);
    }

    /// `time_round_trips()` with the given flags.
    fn time_round_trips_with(name: &str, zone: &mut BuddyAllocator, order: Order, flags: AllocFlags, iterations: u64) {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let started = std::time::Instant::now();
            for _ in 0..iterations {
                let pfn = zone.alloc(order, flags).expect("benchmark allocation failed");
                zone.free(std::hint::black_box(pfn), order);
            }
            best = best.min(started.elapsed().as_nanos() as f64 / iterations as f64);
        }
        println!("page_alloc bench: {name}: {best:.1} ns per alloc+free of {order}");
    }

    #[test]
    fn bench_alloc_free_round_trips() {
        let iterations = if cfg!(debug_assertions) { 500 } else { 500_000 };
        // Worst case: every round trip splits an order-18 block all the way
        // down and merges it all the way back.
        let mut boot = BuddyAllocator::new(ONE_TIB_PAGES);
        time_round_trips("1 TiB boot state (full split+merge)", &mut boot, Order::BASE, iterations);
        time_round_trips("1 TiB boot state (full split+merge)", &mut boot, Order::PMD, iterations);

        // Steady state: 16 GiB, half allocated in a random mix of orders.
        let mut zone = BuddyAllocator::new(pages(16 * GIB));
        let mut rng = Rng(0xbe_4c4);
        let mut held = Vec::new();
        while zone.nr_free_pages() > pages(8 * GIB) {
            let order = if rng.below(4) == 0 { Order::PMD } else { Order::BASE };
            held.push((zone.alloc(order, AllocFlags::NO_WATERMARKS).unwrap(), order));
            if rng.below(3) == 0 {
                let (pfn, order) = held.swap_remove(rng.below(held.len() as u64) as usize);
                zone.free(pfn, order);
            }
        }
        println!(
            "page_alloc bench: steady state has {} free blocks, buddyinfo {:?}",
            zone.buddyinfo().iter().sum::<u64>(),
            zone.buddyinfo()
        );
        time_round_trips("16 GiB half-used steady state", &mut zone, Order::BASE, iterations);
        time_round_trips("16 GiB half-used steady state", &mut zone, Order::PMD, iterations);

        // Fragmented: every page allocated, then one pageblock in eight
        // freed whole and every other pageblock's pages freed at random, so
        // the low orders hold tens of thousands of scattered blocks.
        let nr_pages = if cfg!(debug_assertions) { pages(64 * MIB) } else { pages(GIB) };
        let mut zone = BuddyAllocator::new(nr_pages);
        drain_to(&mut zone, 0);
        for pageblock in (0..nr_pages).step_by(512) {
            let whole = rng.below(8) == 0;
            for pfn in pageblock..pageblock + 512 {
                if whole || rng.below(2) == 0 {
                    zone.free(Pfn(pfn), Order::BASE);
                }
            }
        }
        println!(
            "page_alloc bench: fragmented zone has {} free blocks, buddyinfo {:?}",
            zone.buddyinfo().iter().sum::<u64>(),
            zone.buddyinfo()
        );
        time_round_trips("fragmented", &mut zone, Order::BASE, iterations);
        time_round_trips("fragmented", &mut zone, Order::PMD, iterations);

        // Page tables: one unmovable page held, so that its pageblock keeps
        // free pages on the unmovable lists, then unmovable round trips
        // from those lists, and movable ones beside them.
        let held = zone.alloc(Order::BASE, AllocFlags::WMARK_LOW.unmovable()).unwrap();
        let unmovable = AllocFlags::WMARK_LOW.unmovable();
        time_round_trips_with("fragmented, unmovable", &mut zone, Order::BASE, unmovable, iterations);
        time_round_trips("fragmented, unmovable pageblock held", &mut zone, Order::BASE, iterations);
        zone.free(held, Order::BASE);
    }
}
