//! Faults on PMD-sized ranges: a fresh THP or the huge zero folio on a
//! none PMD, and write faults on read-only PMD leaves.
//!
//! Models: mm/huge_memory.c (Linux 6.18): `do_huge_pmd_anonymous_page()`,
//! `__do_huge_pmd_anonymous_page()`, `map_anon_folio_pmd()`,
//! `do_huge_pmd_wp_page()`, `do_huge_zero_wp_pmd()`.

use crate::errno::FaultError;
use crate::events::MmEvent;
use crate::memory::{HugeFault, VmFault};
use crate::pgtable::{Entry, Leaf};
use crate::rmap::RmapLevel;
use crate::stats::{MthpStat, VmEvent};
use crate::types::*;
use crate::vma::Vma;
use crate::world::World;

impl World {
    /// `do_huge_pmd_anonymous_page()`: a fault on a none PMD in a VMA where
    /// PMD THP is allowed.
    pub(crate) fn do_huge_pmd_anonymous_page(&mut self, vmf: &VmFault<'_>) -> Result<HugeFault, FaultError> {
        let VmFault { pid, vma, addr, write, pmd } = *vmf;
        let haddr = addr.align_down(PMD_SIZE);
        if !Self::thp_vma_suitable_order(vma, haddr, Order::PMD) {
            return Ok(HugeFault::Fallback);
        }
        self.anon_vma_prepare(pid, vma);
        self.khugepaged_enter_vma(pid, vma.start);
        if !write && self.config.use_zero_page {
            let table = self.prealloc_deposit(pid)?;
            if !self.mm_get_huge_zero_folio(pid) {
                self.free_prealloc(pid, table);
                self.stats.count(VmEvent::ThpFaultFallback);
                return Ok(HugeFault::Fallback);
            }
            self.deposit(pmd.table, table);
            self.set_entry(pmd, Entry::Zero);
            self.events.emit(|| MmEvent::Fault { pid, addr, write, order: Order::PMD, fallback: false });
            return Ok(HugeFault::Done);
        }
        let family = self.mm_ref(pid).family;
        let Ok(folio) = self.folio_alloc(Order::PMD, self.vma_thp_gfp(vma), family) else {
            self.stats.count(VmEvent::ThpFaultFallback);
            self.stats.mthp(Order::PMD, MthpStat::AnonFaultFallback, 1);
            return Ok(HugeFault::Fallback);
        };
        // __do_huge_pmd_anonymous_page(): no table to deposit is VM_FAULT_OOM.
        let table = match self.prealloc_deposit(pid) {
            Ok(t) => t,
            Err(e) => {
                self.free_unmapped_folio(folio);
                return Err(e.into());
            }
        };
        self.map_anon_folio_pmd(pid, vma, haddr, folio, pmd);
        self.deposit(pmd.table, table);
        self.events.emit(|| MmEvent::Fault { pid, addr, write, order: Order::PMD, fallback: false });
        Ok(HugeFault::Done)
    }

    /// Frees a folio that was allocated but never mapped (`folio_put()` of a
    /// fresh folio). It is not anonymous yet (`folio_test_anon()` turns true
    /// in `folio_add_new_anon_rmap()`), so no anon counter moves.
    pub(crate) fn free_unmapped_folio(&mut self, folio: FolioId) {
        let f = self.folios.remove(folio);
        assert!(
            f.large_mapcount == 0 && f.refcount == 0 && !f.deferred.queued,
            "free_unmapped_folio of a folio in use: {f:?}"
        );
        self.buddy.free(f.pfn, f.order);
    }

    /// `map_anon_folio_pmd()`: maps a fresh, zeroed PMD-order folio and
    /// queues it for the underused-THP shrinker.
    fn map_anon_folio_pmd(&mut self, pid: Pid, vma: &Vma, haddr: Vaddr, folio: FolioId, pmd: crate::pagewalk::Slot) {
        self.folios[folio].index = vma.linear_page_index(haddr);
        self.folios[folio].refcount = 1;
        self.folio_add_new_anon_rmap(folio, pid, RmapLevel::Pmd);
        let writable = vma.writable();
        self.set_entry(pmd, Entry::Page(Leaf { folio, page: 0, writable, dirty: writable, young: true }));
        self.mm_mut(pid).rss_anon += Order::PMD.nr_pages();
        self.stats.count(VmEvent::ThpFaultAlloc);
        self.stats.mthp(Order::PMD, MthpStat::AnonFaultAlloc, 1);
        // Every fresh PMD THP, the one replacing the huge zero folio included,
        // is queued for the underused-THP shrinker (measured on 6.18).
        self.deferred_split_folio(folio, false);
        self.events.emit(|| MmEvent::Zeroed { bytes: PMD_SIZE });
    }

    /// `do_huge_pmd_wp_page()`: a write to a read-only PMD mapping. Reuses
    /// an exclusive folio; replaces the huge zero folio with a fresh THP
    /// (`do_huge_zero_wp_pmd()`, 6.18); otherwise splits the PMD and lets the
    /// PTE path copy one page. A split that fails is VM_FAULT_OOM.
    pub(crate) fn do_huge_pmd_wp_page(&mut self, vmf: &VmFault<'_>) -> Result<HugeFault, FaultError> {
        let VmFault { pid, vma, addr, pmd, .. } = *vmf;
        let haddr = addr.align_down(PMD_SIZE);
        match self.entry(pmd) {
            Entry::Zero => {
                let family = self.mm_ref(pid).family;
                if let Ok(folio) = self.folio_alloc(Order::PMD, self.vma_thp_gfp(vma), family) {
                    self.map_anon_folio_pmd(pid, vma, haddr, folio, pmd);
                    self.events.emit(|| MmEvent::TlbFlush { pid, start: haddr, end: haddr.add(PMD_SIZE) });
                    self.events.emit(|| MmEvent::Fault { pid, addr, write: true, order: Order::PMD, fallback: false });
                    return Ok(HugeFault::Done);
                }
                self.stats.count(VmEvent::ThpFaultFallback);
                self.stats.mthp(Order::PMD, MthpStat::AnonFaultFallback, 1);
            }
            Entry::Page(leaf) => {
                let folio = &self.folios[leaf.folio];
                if folio.anon_exclusive.get(0) || folio.refcount == 1 {
                    self.folios[leaf.folio].anon_exclusive.set(0, true);
                    self.set_entry(pmd, Entry::Page(Leaf { writable: true, dirty: true, young: true, ..leaf }));
                    self.events.emit(|| MmEvent::Fault { pid, addr, write: true, order: Order::PMD, fallback: false });
                    return Ok(HugeFault::Done);
                }
            }
            other @ (Entry::None | Entry::Table(_)) => panic!("do_huge_pmd_wp_page on {other:?}"),
        }
        self.split_huge_pmd(pid, haddr)?;
        Ok(HugeFault::Fallback)
    }
}
