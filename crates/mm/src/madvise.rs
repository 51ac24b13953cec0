//! madvise() for anonymous memory.
//!
//! Models: mm/madvise.c (Linux 6.18): `madvise_walk_vmas()`,
//! `madvise_update_vma()`, `hugepage_madvise()`, `madvise_dontneed_single_vma()`
//! with `CONFIG_PT_RECLAIM` (empty PTE tables of wholly zapped PMDs are
//! freed), `madvise_free_pte_range()` and `madvise_free_huge_pmd()`,
//! `madvise_cold_or_pageout_pte_range()`, `madvise_populate()`; and the part
//! of mm/vmscan.c `shrink_folio_list()` that MADV_PAGEOUT reaches with no
//! swap device: large folios are split (`thp_swpout_fallback`) and every
//! page stays resident.
//! MADV_PAGEOUT discards clean lazyfree (MADV_FREE) folios as reclaim does.
//! Not modelled yet: swap-out (a later issue); see docs/fidelity.md.

use crate::errno::Errno;
use crate::mman::Advice;
use crate::mmap::check_range;
use crate::pgtable::{Entry, Leaf, Level};
use crate::rmap::RmapLevel;
use crate::stats::{MthpStat, VmEvent};
use crate::types::*;
use crate::vma::VmFlags;
use crate::world::World;

/// Where a folio the madvise walker found is mapped.
#[derive(Clone, Copy, Debug)]
enum Mapped {
    /// By the PMD entry `index` of `table`.
    Pmd { table: PtId, index: usize },
    /// By `nr` consecutive entries of the PTE `table` from `first`.
    Ptes { table: PtId, first: usize, nr: usize },
}

impl World {
    /// madvise(addr, len, advice).
    pub fn madvise(&mut self, pid: Pid, addr: Vaddr, len: u64, advice: Advice) -> Result<(), Errno> {
        self.check_pid(pid)?;
        let end = check_range(addr, len)?;
        if end == addr {
            return Ok(());
        }
        self.begin_op("madvise");
        let result = self.do_madvise(pid, addr, end, advice);
        self.end_op();
        result
    }

    fn do_madvise(&mut self, pid: Pid, start: Vaddr, end: Vaddr, advice: Advice) -> Result<(), Errno> {
        let flag_change = |set: VmFlags, clear: VmFlags| move |f: VmFlags| f.without(clear).union(set);
        let update = match advice {
            Advice::HugePage => Some(flag_change(VmFlags::HUGEPAGE, VmFlags::NOHUGEPAGE)),
            Advice::NoHugePage => Some(flag_change(VmFlags::NOHUGEPAGE, VmFlags::HUGEPAGE)),
            Advice::DontFork => Some(flag_change(VmFlags::DONTFORK, VmFlags::default())),
            Advice::DoFork => Some(flag_change(VmFlags::default(), VmFlags::DONTFORK)),
            _ => None,
        };
        if let Some(f) = update {
            let result = self.modify_vma_flags(pid, start, end, false, f);
            if advice == Advice::HugePage {
                for v in self.mm_ref(pid).vmas.starts_overlapping(start, end) {
                    self.khugepaged_enter_vma(pid, v);
                }
            }
            self.merge_range(pid, Vaddr(start.0.saturating_sub(PAGE_SIZE)), end.add(PAGE_SIZE));
            return result.map(|_| ());
        }
        if matches!(advice, Advice::PopulateRead | Advice::PopulateWrite) {
            return self.madvise_populate(pid, start, end, advice == Advice::PopulateWrite);
        }
        // The rest act on each mapped piece; a hole makes the call fail with
        // ENOMEM after the mapped parts were handled.
        let pieces: Vec<(Vaddr, Vaddr)> =
            self.mm_ref(pid).vmas.overlapping(start, end).map(|v| (v.start.max(start), v.end.min(end))).collect();
        let mapped: u64 = pieces.iter().map(|(s, e)| e.0 - s.0).sum();
        let hole = mapped != end.0 - start.0;
        for (s, e) in pieces {
            match advice {
                Advice::Normal => {}
                Advice::DontNeed => self.madvise_dontneed(pid, s, e),
                Advice::Free => self.madvise_free(pid, s, e),
                Advice::Cold => self.madvise_cold_or_pageout(pid, s, e, false),
                Advice::PageOut => self.madvise_cold_or_pageout(pid, s, e, true),
                Advice::PopulateRead | Advice::PopulateWrite => unreachable!("handled above"),
                Advice::Collapse => self.madvise_collapse(pid, s, e)?,
                Advice::HugePage | Advice::NoHugePage | Advice::DontFork | Advice::DoFork => unreachable!(),
            }
        }
        if hole {
            return Err(Errno::NoMem);
        }
        Ok(())
    }

    /// `madvise_populate()`: faults pages in as GUP does, page by page from
    /// the start; stops with ENOMEM at the first unmapped page, and with
    /// EINVAL where the VMA forbids the access (`check_vma_flags()` under
    /// FOLL_MADV_POPULATE).
    fn madvise_populate(&mut self, pid: Pid, start: Vaddr, end: Vaddr, write: bool) -> Result<(), Errno> {
        let mut a = start;
        while a < end {
            match self.gup_fault(pid, a, write) {
                Ok(_) => {}
                Err(Errno::Fault) => {
                    return Err(if self.mm_ref(pid).vmas.find(a).is_some() { Errno::Inval } else { Errno::NoMem });
                }
                Err(e) => return Err(e),
            }
            a = a.add(PAGE_SIZE);
        }
        Ok(())
    }

    /// MADV_DONTNEED: zap, then free the PTE tables of PMD ranges zapped
    /// whole (`CONFIG_PT_RECLAIM`, `try_get_and_clear_pmd()`).
    fn madvise_dontneed(&mut self, pid: Pid, start: Vaddr, end: Vaddr) {
        self.zap_range(pid, start, end);
        let mut addr = start.align_up(PMD_SIZE);
        while addr.0 + PMD_SIZE <= end.0 {
            if let Some((pmd, pi)) = self.walk_pmd(pid, addr) {
                if let Entry::Table(pte) = self.pt[pmd].entries[pi] {
                    if self.pt[pte].nr_used == 0 {
                        self.free_table(pid, pmd, pi);
                    }
                }
            }
            addr = addr.add(PMD_SIZE);
        }
    }

    /// Consecutive PTEs from `ti` (below `last`) that map consecutive pages
    /// of one folio (`folio_pte_batch()`).
    pub(crate) fn pte_batch(&self, pte: PtId, ti: usize, last: usize) -> usize {
        let Entry::Page(first) = self.pt[pte].entries[ti] else { return 1 };
        let mut n = 1;
        while ti + n < last {
            match self.pt[pte].entries[ti + n] {
                Entry::Page(l) if l.folio == first.folio && l.page == first.page + n as u32 => n += 1,
                _ => break,
            }
        }
        n
    }

    /// Walks `[start, end)` a folio at a time, as `madvise_free_pte_range()`
    /// and `madvise_cold_or_pageout_pte_range()` do: folios other processes
    /// map are left alone, a large folio only partly inside is split first
    /// (its pages are then visited as small folios), and `act` gets each
    /// folio wholly inside that `may_act` accepts, with where it is mapped.
    fn madvise_walk_folios(
        &mut self,
        pid: Pid,
        start: Vaddr,
        end: Vaddr,
        may_act: impl Fn(&crate::folio::Folio) -> bool,
        mut act: impl FnMut(&mut World, FolioId, Mapped),
    ) {
        let mut addr = start;
        while addr < end {
            let next = addr.align_down(PMD_SIZE).add(PMD_SIZE).min(end);
            let Some((pmd, pi)) = self.walk_pmd(pid, addr) else {
                addr = next;
                continue;
            };
            if let Entry::Page(leaf) = self.pt[pmd].entries[pi] {
                if self.folios[leaf.folio].maybe_mapped_shared() {
                    addr = next;
                    continue;
                }
                if next.0 - addr.0 == PMD_SIZE {
                    act(self, leaf.folio, Mapped::Pmd { table: pmd, index: pi });
                    addr = next;
                    continue;
                }
                // A failed split leaves the PMD mapped: the block is skipped below.
                let _ = self.split_folio(leaf.folio);
            }
            let Entry::Table(pte) = self.pt[pmd].entries[pi] else {
                addr = next;
                continue;
            };
            let first = Level::Pte.index(addr);
            let last = first + ((next.0 - addr.0) / PAGE_SIZE) as usize;
            let mut ti = first;
            while ti < last {
                let Entry::Page(leaf) = self.pt[pte].entries[ti] else {
                    ti += 1;
                    continue;
                };
                let nr = self.pte_batch(pte, ti, last);
                let folio = &self.folios[leaf.folio];
                if folio.is_large() && (nr as u64) < folio.nr_pages() {
                    if !folio.maybe_mapped_shared() && self.split_folio(leaf.folio).is_ok() {
                        continue; // Look at the same PTE again: now a small folio.
                    }
                    ti += nr;
                    continue;
                }
                if may_act(folio) {
                    act(self, leaf.folio, Mapped::Ptes { table: pte, first: ti, nr });
                }
                ti += nr;
            }
            addr = next;
        }
    }

    /// Applies `f` to the leaf entries of a mapping the walker reported.
    fn update_leaves(&mut self, mapped: Mapped, f: impl Fn(Leaf) -> Leaf) {
        let (table, range) = match mapped {
            Mapped::Pmd { table, index } => (table, index..index + 1),
            Mapped::Ptes { table, first, nr } => (table, first..first + nr),
        };
        for i in range {
            if let Entry::Page(leaf) = self.pt[table].entries[i] {
                self.pt[table].entries[i] = Entry::Page(f(leaf));
            }
        }
    }

    /// MADV_FREE (`madvise_free_single_vma()`): marks folios this process
    /// maps alone lazyfree, clean and old.
    fn madvise_free(&mut self, pid: Pid, start: Vaddr, end: Vaddr) {
        self.madvise_walk_folios(
            pid,
            start,
            end,
            |folio| folio.mapcount() as u64 == folio.nr_pages(),
            |w, folio, mapped| {
                w.folios[folio].lazyfree = true;
                w.update_leaves(mapped, |leaf| Leaf { dirty: false, young: false, ..leaf });
            },
        );
    }

    /// MADV_COLD and MADV_PAGEOUT (`madvise_cold_or_pageout_pte_range()`):
    /// deactivates folios this process maps alone (COLD also makes their
    /// entries old); PAGEOUT then reclaims them.
    fn madvise_cold_or_pageout(&mut self, pid: Pid, start: Vaddr, end: Vaddr, pageout: bool) {
        let mut list: Vec<FolioId> = Vec::new();
        self.madvise_walk_folios(
            pid,
            start,
            end,
            |folio| !folio.maybe_mapped_shared(),
            |w, folio, mapped| {
                if !pageout {
                    w.update_leaves(mapped, |leaf| Leaf { young: false, ..leaf });
                }
                w.deactivate(folio, pageout, &mut list);
            },
        );
        for folio in list {
            self.reclaim_folio_no_swap(folio);
        }
    }

    fn deactivate(&mut self, id: FolioId, pageout: bool, list: &mut Vec<FolioId>) {
        let folio = &mut self.folios[id];
        folio.referenced = false;
        folio.inactive = true;
        if pageout && !list.contains(&id) {
            list.push(id);
        }
    }

    /// `try_to_unmap()` of a lazyfree (MADV_FREE) folio from
    /// `shrink_folio_list()`. Every PMD mapping is split first
    /// (TTU_SPLIT_HUGE_PMD; measured on 6.18: `thp_split_pmd` moves per PMD);
    /// then, when no PTE was written since MADV_FREE and nothing else holds
    /// the folio, every mapping is cleared and the folio freed. A written one
    /// is swap-backed again and kept, PTE-mapped.
    fn reclaim_lazyfree(&mut self, id: FolioId) {
        for m in self.rmap_walk(id) {
            if m.level == RmapLevel::Pmd {
                self.split_huge_pmd(m.pid, m.addr);
            }
        }
        let mappings = self.rmap_walk(id);
        let dirty = mappings.iter().any(|m| {
            let entry = self.walk_pte(m.pid, m.addr).map(|(t, i)| self.pt[t].entries[i]);
            matches!(entry, Some(Entry::Page(leaf)) if leaf.dirty)
        });
        if dirty {
            self.folios[id].lazyfree = false;
            return;
        }
        let folio = &self.folios[id];
        if folio.refcount != folio.mapcount() {
            return;
        }
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
            self.zap_pte_range(pid, start, end);
        }
    }

    /// `shrink_folio_list()` for an anonymous folio when no swap device
    /// exists: `add_to_swap()` fails, so a large folio is split
    /// (`thp_swpout_fallback`) and every page is put back, resident.
    fn reclaim_folio_no_swap(&mut self, id: FolioId) {
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
