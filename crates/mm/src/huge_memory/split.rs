//! Splitting: a PMD leaf into a PTE table (`split_huge_pmd()`), and a large
//! folio into order-0 folios (`split_folio()`), with the zero-page remap of
//! all-zero subpages.
//!
//! Models: mm/huge_memory.c (Linux 6.18): `__split_huge_pmd()`,
//! `__split_huge_pmd_locked()`, `can_split_folio()`,
//! `split_huge_page_to_list_to_order()`, `__folio_split()`, `unmap_folio()`,
//! `remap_page()`; mm/migrate.c's `try_to_map_unused_to_zeropage()`.
//!
//! `split_huge_pmd()` returns a `Result`: with the eager deposit of 6.18 it
//! never fails, because the deposited table becomes the PTE table. Each
//! caller says in its doc what a failure would mean for it, as the lazy
//! PTE-table series' per-caller table does.

use crate::errno::Errno;
use crate::events::MmEvent;
use crate::folio::{Folio, PageBits};
use crate::gfp::AllocError;
use crate::pgtable::{Entry, Leaf, Level, PtNode};
use crate::rmap::RmapLevel;
use crate::stats::{MthpStat, VmEvent};
use crate::types::*;
use crate::world::World;

impl World {
    /// `split_huge_pmd()`: turns the PMD leaf covering `addr` (a THP or the
    /// huge zero folio) into a PTE table mapping the same pages. Does nothing
    /// if no PMD leaf covers `addr`. Fails only when the PTE table cannot be
    /// had (`withdraw_for_split()`), leaving the PMD as it was.
    pub(crate) fn split_huge_pmd(&mut self, pid: Pid, addr: Vaddr) -> Result<(), AllocError> {
        let Some(pmd) = self.pmd_off(pid, addr) else { return Ok(()) };
        let entry = self.entry(pmd);
        match entry {
            Entry::Page(_) | Entry::Zero => {}
            Entry::None | Entry::Table(_) => return Ok(()),
        }
        let haddr = addr.align_down(PMD_SIZE);
        let table_pfn = self.withdraw_for_split(pid, pmd.table)?;
        self.stats.count(VmEvent::ThpSplitPmd);
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
                if leaf.dirty {
                    self.folios[leaf.folio].dirty = true;
                }
                for i in 0..nr {
                    table.set(i as usize, Entry::Page(Leaf { page: i as u32, ..leaf }));
                }
                self.folio_remove_rmap_pmd(leaf.folio, pid);
            }
            Entry::None | Entry::Table(_) => unreachable!("checked above"),
        }
        let table = self.pt.insert(table);
        self.set_entry(pmd, Entry::Table(table));
        self.events.emit(|| MmEvent::SplitPmd { pid, addr: haddr });
        self.events.emit(|| MmEvent::TlbFlush { pid, start: haddr, end: haddr.add(PMD_SIZE) });
        Ok(())
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
    /// reference (a GUP pin), as the kernel's `can_split_folio()` check does,
    /// and with `ENOMEM` when a PMD mapping cannot be split (then the folio
    /// stays whole: the PMDs split so far stay split, as `unmap_folio()`
    /// leaves them).
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
                self.split_huge_pmd(m.pid, m.addr)?;
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
            f.set_word(0, old.word(p));
            f.lazyfree = old.lazyfree;
            f.dirty = old.dirty;
            f.referenced = old.referenced;
            f.inactive = old.inactive;
            new_ids.push(self.folios.insert(f));
        }
        // Repoint every PTE at the new folios; all-zero pages go to the
        // shared zero page (remap_page() with RMP_USE_SHARED_ZEROPAGE).
        for m in mappings {
            let new = new_ids[m.page as usize];
            let slot = self.pte_off(m.pid, m.addr).expect("mapping vanished during split");
            let leaf = match self.entry(slot) {
                Entry::Page(leaf) => leaf,
                other @ (Entry::None | Entry::Zero | Entry::Table(_)) => {
                    panic!("{:?} {}: mapping became {other:?} during split", m.pid, m.addr)
                }
            };
            if !self.folios[new].written.get(0) {
                self.set_entry(slot, Entry::Zero);
                self.mm_mut(m.pid).rss_anon -= 1;
                let f = &mut self.folios[new];
                f.large_mapcount -= 1;
                f.refcount -= 1;
                if f.large_mapcount == 0 {
                    f.nr_pages_mapped = 0;
                    self.stats.nr_anon_mapped -= 1;
                }
            } else {
                self.set_entry(slot, Entry::Page(Leaf { folio: new, page: 0, ..leaf }));
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
}
