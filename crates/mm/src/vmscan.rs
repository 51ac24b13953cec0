//! Reclaim as far as Linux 6.18 goes without a swap device: the slab
//! shrinkers `drop_caches` runs, and `shrink_folio_list()` for the folios
//! MADV_PAGEOUT hands it.
//!
//! Models: fs/drop_caches.c and mm/vmscan.c (`drop_slab()`,
//! `shrink_folio_list()` for anonymous folios when `add_to_swap()` fails:
//! large folios are split (`thp_swpout_fallback`) and every page stays
//! resident; clean lazyfree folios are discarded) and mm/rmap.c's
//! `try_to_unmap()` with TTU_SPLIT_HUGE_PMD for lazyfree folios.
//! Not modelled yet: swap, the LRU lists and kswapd (the memory-pressure
//! issue adds them here, behind `reclaim_folio_no_swap()` and the
//! allocation path's `try_to_free_pages()`).

use crate::pagewalk::Lookup;
use crate::pgtable::Entry;
use crate::rmap::RmapLevel;
use crate::stats::{MthpStat, VmEvent};
use crate::types::*;
use crate::world::World;

impl World {
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

    /// `try_to_unmap()` of a lazyfree (MADV_FREE) folio from
    /// `shrink_folio_list()`. Every PMD mapping is split first
    /// (TTU_SPLIT_HUGE_PMD; measured on 6.18: `thp_split_pmd` moves per PMD);
    /// a split that fails keeps the folio, mapped, as a failed
    /// `try_to_unmap()` does. Then, when no PTE was written since MADV_FREE
    /// and nothing else holds the folio, every mapping is cleared and the
    /// folio freed. A written one is swap-backed again and kept, PTE-mapped.
    fn reclaim_lazyfree(&mut self, id: FolioId) {
        for m in self.rmap_walk(id) {
            if m.level == RmapLevel::Pmd && self.split_huge_pmd(m.pid, m.addr).is_err() {
                return;
            }
        }
        let mappings = self.rmap_walk(id);
        let dirty = mappings.iter().any(|m| match self.lookup(m.pid, m.addr) {
            Lookup::Pte { entry: Entry::Page(leaf), .. } => leaf.dirty,
            other @ (Lookup::Hole | Lookup::Pud { .. } | Lookup::Pmd { .. } | Lookup::Pte { .. }) => {
                panic!("{:?} {}: rmap found a PTE mapping, the tables show {other:?}", m.pid, m.addr)
            }
        });
        if dirty {
            self.folios[id].lazyfree = false;
            return;
        }
        let folio = &self.folios[id];
        if folio.refcount != folio.mapcount() {
            return;
        }
        // shrink_folio_list(): a clean lazyfree folio is discarded.
        let nr = folio.nr_pages();
        self.stats.count_n(VmEvent::PgLazyFreed, nr);
        // Unmap each contiguous run of PTEs at once (the batched lazyfree
        // unmap of 6.16+), so the folio never looks partially mapped.
        let mut runs: Vec<(Pid, Vaddr, Vaddr)> = Vec::new();
        for m in mappings {
            match runs.last_mut() {
                Some((pid, _, end)) if *pid == m.pid && *end == m.addr && !m.addr.is_aligned(PMD_SIZE) => {
                    *end = m.addr.add(PAGE_SIZE)
                }
                _ => runs.push((m.pid, m.addr, m.addr.add(PAGE_SIZE))),
            }
        }
        for (pid, start, end) in runs {
            self.unmap_page_range(pid, start, end);
        }
    }

    /// `shrink_folio_list()` for an anonymous folio when no swap device
    /// exists: `add_to_swap()` fails, so a large folio is split
    /// (`thp_swpout_fallback`) and every page is put back, resident.
    pub(crate) fn reclaim_folio_no_swap(&mut self, id: FolioId) {
        if self.folios.get(id).is_none() {
            return;
        }
        if self.folios[id].lazyfree {
            // Not swap-backed: no swap slot is needed, it is discarded or kept.
            self.reclaim_lazyfree(id);
            return;
        }
        let folio = &self.folios[id];
        if !folio.is_large() {
            return;
        }
        if !self.can_split_folio(id) {
            return;
        }
        let order = folio.order;
        if folio.deferred.queued && folio.deferred.partially_mapped {
            // Partially mapped folios are split right away; the pieces then
            // fail add_to_swap() one by one and stay.
            let _ = self.split_folio(id);
            return;
        }
        if self.split_folio(id).is_err() {
            return;
        }
        if order >= Order::PMD {
            self.stats.count(VmEvent::ThpSwpoutFallback);
        }
        self.stats.mthp(order, MthpStat::SwpoutFallback, 1);
    }
}
