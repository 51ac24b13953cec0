//! PMD-level anonymous THP: huge faults, the huge zero folio, write faults
//! on PMD mappings, `split_huge_pmd`, `split_folio`, and the deferred-split
//! and underused-THP shrinkers.
//!
//! Models: mm/huge_memory.c (Linux 6.18): `do_huge_pmd_anonymous_page()`,
//! `do_huge_zero_wp_pmd()`, `do_huge_pmd_wp_page()`, `zap_huge_pmd()`,
//! `__split_huge_pmd_locked()`, `split_huge_page_to_list_to_order()`,
//! `deferred_split_scan()`, `thp_underused()`, `mm_get_huge_zero_folio()`,
//! `shrink_huge_zero_folio_scan()`; and mm/migrate.c's
//! `try_to_map_unused_to_zeropage()` for the zero-page remap after a split.
//! Not modelled: file and shmem THP, DAX, userfaultfd, splits to orders
//! above 0 (no anonymous caller asks for them in 6.18's baseline).

use crate::errno::{Errno, FaultError};
use crate::events::MmEvent;
use crate::folio::{Folio, PageBits};
use crate::gfp::Gfp;
use crate::memory::{HugeFault, VmFault};
use crate::pgtable::{Entry, Leaf, Level, PtNode};
use crate::rmap::RmapLevel;
use crate::stats::{MthpStat, VmEvent};
use crate::types::*;
use crate::vma::Vma;
use crate::world::{HugeZero, World};

impl World {
    /// `mm_get_huge_zero_folio()`: takes this mm's reference on the huge zero
    /// folio, allocating it on first use. False if it cannot be allocated.
    fn mm_get_huge_zero_folio(&mut self, pid: Pid) -> bool {
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

    /// `mm_put_huge_zero_folio()` at mm teardown.
    pub(crate) fn mm_put_huge_zero_folio(&mut self, pid: Pid) {
        if std::mem::take(&mut self.mm_mut(pid).huge_zero_ref) {
            self.huge_zero.as_mut().expect("mm holds a reference to a freed huge zero folio").refcount -= 1;
        }
    }

    /// `shrink_huge_zero_folio_scan()`: frees the huge zero folio when only
    /// the global reference is left. Returns the pages freed.
    fn shrink_huge_zero_folio(&mut self) -> u64 {
        match self.huge_zero {
            Some(hz) if hz.refcount == 1 => {
                self.buddy.free(hz.pfn, Order::PMD);
                self.huge_zero = None;
                Order::PMD.nr_pages()
            }
            _ => 0,
        }
    }

    fn deposit(&mut self, pmd: PtId, table: Pfn) {
        self.pt[pmd].deposit.push(table);
    }

    fn withdraw(&mut self, pmd: PtId) -> Pfn {
        self.pt[pmd].deposit.pop().expect("PMD leaf without a deposited PTE table")
    }

    /// `do_huge_pmd_anonymous_page()`: a fault on a none PMD in a VMA where
    /// PMD THP is allowed.
    pub(crate) fn do_huge_pmd_anonymous_page(&mut self, vmf: &VmFault<'_>) -> Result<HugeFault, FaultError> {
        let VmFault { pid, vma, addr, write, pmd, pi } = *vmf;
        let haddr = addr.align_down(PMD_SIZE);
        if !Self::thp_vma_suitable_order(vma, haddr, Order::PMD) {
            return Ok(HugeFault::Fallback);
        }
        self.anon_vma_prepare(pid, vma);
        self.khugepaged_enter_vma(pid, vma.start);
        if !write && self.config.use_zero_page {
            let table = self.alloc_pt_page(pid, Level::Pte)?;
            if !self.mm_get_huge_zero_folio(pid) {
                self.free_pt_page(pid, Level::Pte, table);
                self.stats.count(VmEvent::ThpFaultFallback);
                return Ok(HugeFault::Fallback);
            }
            self.deposit(pmd, table);
            self.pt[pmd].set(pi, Entry::Zero);
            self.events.emit(|| MmEvent::Fault { pid, addr, write, order: Order::PMD, fallback: false });
            return Ok(HugeFault::Done);
        }
        let family = self.mm_ref(pid).family;
        let Ok(folio) = self.folio_alloc(Order::PMD, self.vma_thp_gfp(vma), family) else {
            self.stats.count(VmEvent::ThpFaultFallback);
            self.stats.mthp(Order::PMD, MthpStat::AnonFaultFallback, 1);
            return Ok(HugeFault::Fallback);
        };
        let table = match self.alloc_pt_page(pid, Level::Pte) {
            Ok(t) => t,
            Err(e) => {
                self.folio_put_refs_new(folio);
                return Err(e.into());
            }
        };
        self.map_anon_folio_pmd(pid, vma, haddr, folio, pmd, pi);
        self.deposit(pmd, table);
        self.events.emit(|| MmEvent::Fault { pid, addr, write, order: Order::PMD, fallback: false });
        Ok(HugeFault::Done)
    }

    /// Frees a folio that was allocated but never mapped.
    fn folio_put_refs_new(&mut self, folio: FolioId) {
        self.folios[folio].refcount = 1;
        self.folio_put_refs(folio, 1);
    }

    /// `map_anon_folio_pmd()`: maps a fresh, zeroed PMD-order folio and
    /// queues it for the underused-THP shrinker.
    fn map_anon_folio_pmd(&mut self, pid: Pid, vma: &Vma, haddr: Vaddr, folio: FolioId, pmd: PtId, pi: usize) {
        self.folios[folio].index = vma.linear_page_index(haddr);
        self.folios[folio].refcount = 1;
        self.folio_add_new_anon_rmap(folio, pid, RmapLevel::Pmd);
        let writable = vma.writable();
        self.pt[pmd].set(pi, Entry::Page(Leaf { folio, page: 0, writable, dirty: writable, young: true }));
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
    /// PTE path copy one page.
    pub(crate) fn do_huge_pmd_wp_page(&mut self, vmf: &VmFault<'_>) -> Result<HugeFault, FaultError> {
        let VmFault { pid, vma, addr, pmd, pi, .. } = *vmf;
        let haddr = addr.align_down(PMD_SIZE);
        match self.pt[pmd].entries[pi] {
            Entry::Zero => {
                let family = self.mm_ref(pid).family;
                if let Ok(folio) = self.folio_alloc(Order::PMD, self.vma_thp_gfp(vma), family) {
                    self.map_anon_folio_pmd(pid, vma, haddr, folio, pmd, pi);
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
                    self.pt[pmd].entries[pi] = Entry::Page(Leaf { writable: true, dirty: true, young: true, ..leaf });
                    self.events.emit(|| MmEvent::Fault { pid, addr, write: true, order: Order::PMD, fallback: false });
                    return Ok(HugeFault::Done);
                }
            }
            other => panic!("do_huge_pmd_wp_page on {other:?}"),
        }
        self.split_huge_pmd(pid, haddr);
        Ok(HugeFault::Fallback)
    }

    /// `zap_huge_pmd()`: unmaps a whole PMD leaf and frees its deposit.
    pub(crate) fn zap_huge_pmd(&mut self, pid: Pid, pmd: PtId, pi: usize) {
        let entry = self.pt[pmd].entries[pi];
        self.pt[pmd].set(pi, Entry::None);
        let table = self.withdraw(pmd);
        self.free_pt_page(pid, Level::Pte, table);
        if let Entry::Page(leaf) = entry {
            self.mm_mut(pid).rss_anon -= Order::PMD.nr_pages();
            self.folio_remove_rmap_pmd(leaf.folio, pid);
            self.folio_put_refs(leaf.folio, 1);
        }
    }

    /// `split_huge_pmd()`: turns the PMD leaf covering `addr` (a THP or the
    /// huge zero folio) into a PTE table mapping the same pages. Never fails:
    /// the deposited table becomes the PTE table. Does nothing if no PMD leaf
    /// covers `addr`.
    pub(crate) fn split_huge_pmd(&mut self, pid: Pid, addr: Vaddr) {
        let Some((pmd, pi)) = self.walk_pmd(pid, addr) else { return };
        let entry = self.pt[pmd].entries[pi];
        if !matches!(entry, Entry::Page(_) | Entry::Zero) {
            return;
        }
        let haddr = addr.align_down(PMD_SIZE);
        self.stats.count(VmEvent::ThpSplitPmd);
        let table_pfn = self.withdraw(pmd);
        let mut table = PtNode::new(table_pfn, Level::Pte);
        match entry {
            Entry::Zero => {
                for i in 0..PTRS_PER_TABLE as usize {
                    table.set(i, Entry::Zero);
                }
            }
            Entry::Page(leaf) => {
                let nr = self.folios[leaf.folio].nr_pages();
                let exclusive = self.folios[leaf.folio].anon_exclusive.get(0);
                self.folios[leaf.folio].refcount += nr as u32 - 1;
                self.folio_add_anon_rmap_ptes(leaf.folio, 0, nr, pid, exclusive);
                for i in 0..nr {
                    table.set(i as usize, Entry::Page(Leaf { page: i as u32, ..leaf }));
                }
                self.folio_remove_rmap_pmd(leaf.folio, pid);
            }
            _ => unreachable!(),
        }
        let table = self.pt.insert(table);
        self.pt[pmd].set(pi, Entry::Table(table));
        self.events.emit(|| MmEvent::SplitPmd { pid, addr: haddr });
        self.events.emit(|| MmEvent::TlbFlush { pid, start: haddr, end: haddr.add(PMD_SIZE) });
    }

    /// `can_split_folio()`: only the mappings (and the caller) hold references.
    pub(crate) fn can_split_folio(&self, id: FolioId) -> bool {
        let folio = &self.folios[id];
        folio.mapcount() == folio.refcount
    }

    /// `split_folio()` → `split_huge_page_to_list_to_order(.., 0)` for an
    /// anonymous folio: splits it into order-0 folios. PMD mappings are split
    /// first (`unmap_folio()` with TTU_SPLIT_HUGE_PMD), all-zero pages are
    /// remapped to the shared zero page, and pages no one maps are freed.
    /// Fails with `EAGAIN` when something beyond the mappings holds a
    /// reference (a GUP pin), as the kernel's `can_split_folio()` check does.
    pub(crate) fn split_folio(&mut self, id: FolioId) -> Result<(), Errno> {
        let order = self.folios[id].order;
        assert!(order.is_large(), "split_folio on a small folio");
        let result = self.split_folio_inner(id);
        if order == Order::PMD {
            self.stats.count(if result.is_ok() { VmEvent::ThpSplitPage } else { VmEvent::ThpSplitPageFailed });
        }
        self.stats.mthp(order, if result.is_ok() { MthpStat::Split } else { MthpStat::SplitFailed }, 1);
        result
    }

    fn split_folio_inner(&mut self, id: FolioId) -> Result<(), Errno> {
        if !self.can_split_folio(id) {
            return Err(Errno::Again);
        }
        // unmap_folio() replaces the mappings by migration entries: a PMD in
        // one go (split with freeze), PTEs one at a time (try_to_migrate_one()),
        // so a PTE-mapped folio looks partially mapped on the way and is
        // queued for deferred split, with its counters, before the split
        // takes it off the queue again.
        if self.unmap_passes_partially_mapped(id) && !self.folios[id].deferred.partially_mapped {
            self.deferred_split_folio(id, true);
        }
        for m in self.rmap_walk(id) {
            if m.level == RmapLevel::Pmd {
                self.split_huge_pmd(m.pid, m.addr);
            }
        }
        let mappings = self.rmap_walk(id);
        if self.folios[id].deferred.queued {
            self.deferred_split_remove(id);
        }
        let old = self.folios.remove(id);
        let order = old.order;
        self.stats.mthp(order, MthpStat::NrAnon, -1);
        self.events.emit(|| MmEvent::SplitFolio { order, new_order: Order::BASE });
        // __split_huge_page(): one order-0 folio per page, carrying its mapcount.
        let nr = old.nr_pages();
        let mut new_ids = Vec::with_capacity(nr as usize);
        for p in 0..nr {
            let mut f = Folio::new(old.pfn.add(p), Order::BASE, old.index + p, old.family);
            let mapcount = old.page_pte_mapcount(p);
            f.large_mapcount = mapcount;
            f.refcount = mapcount;
            f.nr_pages_mapped = u32::from(mapcount > 0);
            f.anon_exclusive = PageBits::new(1);
            f.anon_exclusive.set(0, old.anon_exclusive.get(p));
            f.written.set(0, old.written.get(p));
            f.lazyfree = old.lazyfree;
            f.referenced = old.referenced;
            f.inactive = old.inactive;
            new_ids.push(self.folios.insert(f));
        }
        // Repoint every PTE at the new folios; all-zero pages go to the
        // shared zero page (remap_page() with RMP_USE_SHARED_ZEROPAGE).
        for m in mappings {
            let new = new_ids[m.page as usize];
            let (pte, ti) = self.walk_pte(m.pid, m.addr).expect("mapping vanished during split");
            let Entry::Page(leaf) = self.pt[pte].entries[ti] else { panic!("mapping vanished during split") };
            if !self.folios[new].written.get(0) {
                self.pt[pte].entries[ti] = Entry::Zero;
                self.mm_mut(m.pid).rss_anon -= 1;
                let f = &mut self.folios[new];
                f.large_mapcount -= 1;
                f.refcount -= 1;
                if f.large_mapcount == 0 {
                    f.nr_pages_mapped = 0;
                    self.stats.nr_anon_mapped -= 1;
                }
            } else {
                self.pt[pte].entries[ti] = Entry::Page(Leaf { folio: new, page: 0, ..leaf });
            }
        }
        // Pages nobody maps any more go back to the buddy allocator.
        for new in new_ids {
            if self.folios[new].refcount == 0 {
                let f = self.folios.remove(new);
                self.buddy.free(f.pfn, f.order);
            }
        }
        Ok(())
    }

    /// Whether removing the folio's mappings in rmap-walk order, PMDs whole
    /// and PTEs one by one, leaves it partially mapped at some point: a page
    /// loses its last mapping while another page is still mapped.
    fn unmap_passes_partially_mapped(&self, id: FolioId) -> bool {
        let folio = &self.folios[id];
        let nr = folio.nr_pages();
        let mut entire = folio.entire_mapcount;
        let mut per_page: Vec<u32> = (0..nr).map(|p| folio.page_pte_mapcount(p)).collect();
        let mut mapped = folio.nr_pages_mapped as u64;
        for m in self.rmap_walk(id) {
            match m.level {
                RmapLevel::Pmd => {
                    entire -= 1;
                    if entire == 0 && mapped > 0 && mapped < nr {
                        return true;
                    }
                }
                RmapLevel::Pte => {
                    let c = &mut per_page[m.page as usize];
                    *c -= 1;
                    if *c == 0 {
                        mapped -= 1;
                        if entire == 0 && mapped > 0 {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    /// `thp_underused()`: more all-zero pages than `max_ptes_none` allows.
    fn thp_underused(&self, id: FolioId) -> bool {
        let max_ptes_none = self.config.khugepaged.max_ptes_none as u64;
        let nr = self.folios[id].nr_pages();
        if max_ptes_none == Order::PMD.nr_pages() - 1 {
            return false;
        }
        let (mut zero, mut filled) = (0, 0);
        for p in 0..nr {
            if self.folios[id].written.get(p) {
                filled += 1;
                if filled >= Order::PMD.nr_pages() - max_ptes_none {
                    return false;
                }
            } else {
                zero += 1;
                if zero > max_ptes_none {
                    return true;
                }
            }
        }
        false
    }

    /// `deferred_split_scan()` over the whole queue: splits partially mapped
    /// folios and underused ones; returns how many it split.
    fn deferred_split_scan(&mut self) -> u64 {
        let queued = self.deferred_split_queue();
        let mut split = 0;
        for id in queued {
            let partially_mapped = self.folios[id].deferred.partially_mapped;
            let mut underused = false;
            let mut did_split = false;
            if !partially_mapped {
                underused = self.thp_underused(id);
            }
            if (partially_mapped || underused) && self.split_folio(id).is_ok() {
                did_split = true;
                split += 1;
                if underused {
                    self.stats.count(VmEvent::ThpUnderusedSplitPage);
                }
            }
            if !did_split && !self.folios[id].deferred.partially_mapped {
                // Used (or failed while underused): off the queue for good.
                self.deferred_split_remove(id);
            }
        }
        split
    }

    /// `echo 2 > /proc/sys/vm/drop_caches`: runs the slab shrinkers the way
    /// `drop_slab()` does, repeating while each pass frees enough.
    pub fn drop_caches(&mut self) {
        self.begin_op("drop_caches");
        self.shrink_slab_passes();
        self.end_op();
    }

    pub(crate) fn shrink_slab_passes(&mut self) {
        // drop_slab(): repeat while (freed >> shift++) > 1, a bounded loop.
        let mut shift = 0;
        loop {
            let freed = self.deferred_split_scan() + self.shrink_huge_zero_folio();
            if (freed >> shift) <= 1 || shift >= 63 {
                break;
            }
            shift += 1;
        }
    }
}
