//! The one allocation path every page of the model comes from, and the GFP
//! flags its call sites pass.
//!
//! Models: include/linux/gfp_types.h (`GFP_PGTABLE_USER`,
//! `GFP_HIGHUSER_MOVABLE`, `GFP_TRANSHUGE`, `GFP_TRANSHUGE_LIGHT`) and
//! mm/page_alloc.c's `__alloc_pages()`: `should_fail_alloc_page()`, then
//! `get_page_from_freelist()` at the min watermark, then the slow path
//! (`__alloc_pages_slowpath()`): direct compaction where the flags allow it
//! (`__alloc_pages_direct_compact()`), then direct reclaim
//! (`__alloc_pages_direct_reclaim()`), then a typed failure. The model's
//! fast path already uses the min watermark (the kernel tries the low mark
//! first, then wakes kswapd and retries at min; without kswapd the outcome is
//! the same). Direct reclaim frees nothing yet: reclaim and swap arrive with
//! the memory-pressure issue and plug in at `try_to_free_pages()`.
//! Compaction migrates folios, whose own target pages come straight from the
//! buddy allocator (`compaction_alloc()` takes isolated free pages): they
//! never fail by injection.

use thiserror::Error;

use crate::errno::{Errno, FaultError};
use crate::fault_inject::FailPoint;
use crate::folio::Folio;
use crate::page_alloc::{AllocFailure, AllocFlags};
use crate::types::{FolioId, Order, Pfn};
use crate::world::World;

/// What a call site asks of an allocation: the watermark and migratetype,
/// whether it may compact or reclaim, and the injection point it counts at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gfp {
    pub flags: AllocFlags,
    /// `__GFP_DIRECT_RECLAIM` for an order above 0: may run direct
    /// compaction when no free block of the order exists.
    pub compact: bool,
    /// `__GFP_DIRECT_RECLAIM`: may run direct reclaim when memory is short.
    pub reclaim: bool,
    pub point: FailPoint,
}

impl Gfp {
    /// `GFP_PGTABLE_USER`: page-table pages, unmovable.
    pub const PGTABLE_USER: Gfp =
        Gfp { flags: AllocFlags::WMARK_MIN.unmovable(), compact: false, reclaim: true, point: FailPoint::PageTable };
    /// `GFP_HIGHUSER_MOVABLE`: order-0 user folios (faults, COW, fork's
    /// copies of pinned pages).
    pub const HIGHUSER_MOVABLE: Gfp =
        Gfp { flags: AllocFlags::WMARK_MIN, compact: false, reclaim: true, point: FailPoint::Folio };
    /// The huge zero folio: `GFP_TRANSHUGE` without `__GFP_MOVABLE`. The
    /// kernel's flags allow direct compaction; the model does not compact for
    /// it (docs/fidelity.md).
    pub const HUGE_ZERO: Gfp =
        Gfp { flags: AllocFlags::WMARK_MIN.unmovable(), compact: false, reclaim: false, point: FailPoint::Folio };

    /// A THP or mTHP folio: `GFP_TRANSHUGE` when the defrag policy lets the
    /// caller compact directly (`vma_thp_gfp_mask()`, khugepaged's
    /// `defrag` knob, MADV_COLLAPSE), `GFP_TRANSHUGE_LIGHT` otherwise.
    pub const fn transhuge(compact: bool) -> Gfp {
        Gfp { flags: AllocFlags::WMARK_MIN, compact, reclaim: compact, point: FailPoint::Folio }
    }
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum AllocError {
    /// The buddy allocator refused, after compaction and reclaim if allowed.
    #[error("page allocation failed: {0}")]
    Buddy(AllocFailure),
    /// A failure injected at a named point (`fault_inject`).
    #[error("page allocation failed by injection at {}", .0.name())]
    Injected(FailPoint),
}

/// A failed allocation in a system call is `ENOMEM`.
impl From<AllocError> for Errno {
    fn from(_: AllocError) -> Errno {
        Errno::NoMem
    }
}

/// A failed allocation in a fault is `VM_FAULT_OOM`.
impl From<AllocError> for FaultError {
    fn from(_: AllocError) -> FaultError {
        FaultError::Oom
    }
}

impl World {
    /// `__alloc_pages()`: `1 << order` pages for `gfp`, or why not.
    pub(crate) fn alloc_pages(&mut self, order: Order, gfp: Gfp) -> Result<Pfn, AllocError> {
        if self.fault_inject.should_fail(gfp.point) {
            return Err(AllocError::Injected(gfp.point));
        }
        let first = match self.buddy.alloc(order, gfp.flags) {
            Ok(pfn) => return Ok(pfn),
            Err(e) => e,
        };
        self.alloc_pages_slowpath(order, gfp, first).map_err(AllocError::Buddy)
    }

    /// `__alloc_pages_slowpath()` after the first attempt failed with `first`.
    fn alloc_pages_slowpath(&mut self, order: Order, gfp: Gfp, first: AllocFailure) -> Result<Pfn, AllocFailure> {
        let mut failure = first;
        if gfp.compact && order.is_large() && failure == AllocFailure::NoBlockOfOrder {
            if !self.compact_zone_order(order) {
                return Err(failure);
            }
            match self.buddy.alloc(order, gfp.flags) {
                Ok(pfn) => return Ok(pfn),
                Err(e) => failure = e,
            }
        }
        if gfp.reclaim && self.try_to_free_pages(order, gfp) > 0 {
            return self.buddy.alloc(order, gfp.flags);
        }
        Err(failure)
    }

    /// `try_to_free_pages()`: direct reclaim. Returns the pages freed.
    ///
    /// Linux 6.18 without a swap device can still free clean lazyfree folios
    /// and split THPs on the deferred queue under pressure; the model does
    /// neither yet, so an allocation that fails here fails as it would on a
    /// machine whose reclaim finds nothing. The memory-pressure issue
    /// (vmscan, swap) fills this in.
    fn try_to_free_pages(&mut self, _order: Order, _gfp: Gfp) -> u64 {
        0
    }

    /// Allocates a folio of `order` for `family`'s anon_vma tree: a fresh
    /// folio with no references, no mappings and page index 0; the caller
    /// sets the index and the refcount before mapping it.
    pub(crate) fn folio_alloc(&mut self, order: Order, gfp: Gfp, family: u32) -> Result<FolioId, AllocError> {
        let pfn = self.alloc_pages(order, gfp)?;
        Ok(self.folios.insert(Folio::new(pfn, order, 0, family)))
    }
}
