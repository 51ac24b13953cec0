//! Zone watermarks, the `alloc_flags` an allocation carries, and the
//! watermark check every allocation passes first, with the reserve
//! reductions its flags allow.
//!
//! Models: mm/page_alloc.c (Linux 6.18): `calculate_min_free_kbytes()`,
//! `__setup_per_zone_wmarks()` and its recomputation on writes to
//! `vm.min_free_kbytes` and `vm.watermark_scale_factor`,
//! `__zone_watermark_ok()`, and the `ALLOC_*` flags of mm/internal.h.
//! Not modelled: `lowmem_reserve`, `WMARK_PROMO`, watermark boosting, and
//! the highatomic and CMA reserves.

use super::free_lists::smallest_order_in;
use super::{AllocFailure, BuddyAllocator, Migratetype};
use crate::errno::Errno;
use crate::types::{Order, PAGE_SHIFT};

/// The lower clamp `calculate_min_free_kbytes()` applies.
pub const MIN_FREE_KBYTES_FLOOR: u64 = 128;
/// The upper clamp `calculate_min_free_kbytes()` applies (256 MiB).
pub const MIN_FREE_KBYTES_CEILING: u64 = 262_144;
/// The default of `vm.watermark_scale_factor`, in units of 1/10000 of the
/// zone's managed pages.
pub const DEFAULT_WATERMARK_SCALE_FACTOR: u64 = 10;
/// The range `vm.watermark_scale_factor` accepts (its sysctl bounds).
pub const WATERMARK_SCALE_FACTOR_RANGE: std::ops::RangeInclusive<u64> = 1..=3000;

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

impl BuddyAllocator {
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

    /// Recomputes the watermarks after a sysctl write
    /// (`setup_per_zone_wmarks()`).
    fn setup_watermarks(&mut self) {
        self.watermarks = Watermarks::for_zone(self.nr_pages, self.min_free_kbytes, self.watermark_scale_factor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_alloc::test_util::*;
    use crate::types::Pfn;

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
}
