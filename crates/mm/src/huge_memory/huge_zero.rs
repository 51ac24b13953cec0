//! The huge zero folio: one PMD-sized page of zeroes that read faults in
//! THP-enabled VMAs map read-only, with a reference per mm that maps it and
//! a shrinker that frees it when only the global reference is left.
//!
//! Models: mm/huge_memory.c (`mm_get_huge_zero_folio()`,
//! `mm_put_huge_zero_folio()`, `get_huge_zero_folio()`,
//! `shrink_huge_zero_folio_scan()`), without `CONFIG_PERSISTENT_HUGE_ZERO_FOLIO`.

use crate::events::MmEvent;
use crate::gfp::Gfp;
use crate::stats::VmEvent;
use crate::types::*;
use crate::world::{HugeZero, World};

impl World {
    /// `mm_get_huge_zero_folio()`: takes this mm's reference on the huge zero
    /// folio, allocating it on first use. False if it cannot be allocated.
    pub(crate) fn mm_get_huge_zero_folio(&mut self, pid: Pid) -> bool {
        if self.mm_ref(pid).huge_zero_ref {
            return true;
        }
        match &mut self.huge_zero {
            Some(hz) => hz.refcount += 1,
            None => match self.alloc_pages(Order::PMD, Gfp::HUGE_ZERO) {
                Ok(pfn) => {
                    self.stats.count(VmEvent::ThpZeroPageAlloc);
                    self.events.emit(|| MmEvent::Zeroed { bytes: PMD_SIZE });
                    // One reference for the global pointer, one for this mm.
                    self.huge_zero = Some(HugeZero { pfn, refcount: 2 });
                }
                Err(_) => {
                    self.stats.count(VmEvent::ThpZeroPageAllocFailed);
                    return false;
                }
            },
        }
        self.mm_mut(pid).huge_zero_ref = true;
        true
    }

    /// `copy_huge_pmd()` of a huge zero PMD: the child takes its own
    /// reference (`mm_get_huge_zero_folio()` on an existing folio never fails).
    pub(crate) fn mm_dup_huge_zero_folio(&mut self, dst: Pid) {
        if !std::mem::replace(&mut self.mm_mut(dst).huge_zero_ref, true) {
            self.huge_zero.as_mut().expect("a huge zero PMD without the huge zero folio").refcount += 1;
        }
    }

    /// `mm_put_huge_zero_folio()` at mm teardown.
    pub(crate) fn mm_put_huge_zero_folio(&mut self, pid: Pid) {
        if std::mem::take(&mut self.mm_mut(pid).huge_zero_ref) {
            self.huge_zero.as_mut().expect("mm holds a reference to a freed huge zero folio").refcount -= 1;
        }
    }

    /// `shrink_huge_zero_folio_scan()`: frees the huge zero folio when only
    /// the global reference is left. Returns the pages freed.
    pub(crate) fn shrink_huge_zero_folio(&mut self) -> u64 {
        match self.huge_zero {
            Some(hz) if hz.refcount == 1 => {
                self.buddy.free(hz.pfn, Order::PMD);
                self.huge_zero = None;
                Order::PMD.nr_pages()
            }
            _ => 0,
        }
    }
}
