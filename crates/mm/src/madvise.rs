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
use crate::pagewalk::{Slot, Walk, WalkOps};
use crate::pgtable::{Entry, Leaf, Level};
use crate::stats::VmEvent;
use crate::types::*;
use crate::vma::VmFlags;
use crate::world::World;

/// Where a folio the madvise walker found is mapped.
#[derive(Clone, Copy, Debug)]
enum Mapped {
    /// By one PMD entry.
    Pmd(Slot),
    /// By `nr` consecutive PTEs from `first`.
    Ptes { first: Slot, nr: usize },
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
        let flag_change = |set: VmFlags, clear: VmFlags| Some((set, clear));
        // madvise_vma_behavior(): the advices that only change VMA flags.
        let update = match advice {
            Advice::HugePage => flag_change(VmFlags::HUGEPAGE, VmFlags::NOHUGEPAGE),
            Advice::NoHugePage => flag_change(VmFlags::NOHUGEPAGE, VmFlags::HUGEPAGE),
            Advice::DontFork => flag_change(VmFlags::DONTFORK, VmFlags::default()),
            Advice::DoFork => flag_change(VmFlags::default(), VmFlags::DONTFORK),
            Advice::WipeOnFork => flag_change(VmFlags::WIPEONFORK, VmFlags::default()),
            Advice::KeepOnFork => flag_change(VmFlags::default(), VmFlags::WIPEONFORK),
            Advice::Normal
            | Advice::DontNeed
            | Advice::Free
            | Advice::Collapse
            | Advice::Cold
            | Advice::PageOut
            | Advice::PopulateRead
            | Advice::PopulateWrite => None,
        };
        let update = update.map(|(set, clear)| move |f: VmFlags| f.without(clear).union(set));
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
        let pieces: Vec<(Vaddr, Vaddr, VmFlags)> = self
            .mm_ref(pid)
            .vmas
            .overlapping(start, end)
            .map(|v| (v.start.max(start), v.end.min(end), v.flags))
            .collect();
        let mapped: u64 = pieces.iter().map(|(s, e, _)| e.0 - s.0).sum();
        let hole = mapped != end.0 - start.0;
        for (s, e, flags) in pieces {
            // can_madv_lru_vma(), madvise_dontneed_free_valid_vma(): an
            // mlock()ed VMA refuses these, ending the walk with EINVAL.
            let lru_advice = matches!(advice, Advice::DontNeed | Advice::Free | Advice::Cold | Advice::PageOut);
            if lru_advice && flags.contains(VmFlags::LOCKED) {
                return Err(Errno::Inval);
            }
            match advice {
                Advice::Normal => {}
                Advice::DontNeed => self.madvise_dontneed(pid, s, e),
                Advice::Free => self.madvise_free(pid, s, e),
                Advice::Cold => self.madvise_cold_or_pageout(pid, s, e, false),
                Advice::PageOut => self.madvise_cold_or_pageout(pid, s, e, true),
                Advice::PopulateRead | Advice::PopulateWrite => unreachable!("handled above"),
                Advice::Collapse => self.madvise_collapse(pid, s, e)?,
                Advice::HugePage
                | Advice::NoHugePage
                | Advice::DontFork
                | Advice::DoFork
                | Advice::WipeOnFork
                | Advice::KeepOnFork => unreachable!("flag advices are handled above"),
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
        let (first, last) = (start.align_up(PMD_SIZE), end.align_down(PMD_SIZE));
        let Ok(()) = self.walk(pid, first, last, &mut ReclaimPtOps { pid });
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
        act: impl FnMut(&mut World, FolioId, Mapped),
    ) {
        let Ok(()) = self.walk(pid, start, end, &mut FolioOps { may_act, act });
    }

    /// Applies `f` to the leaf entries of a mapping the walker reported.
    fn update_leaves(&mut self, mapped: Mapped, f: impl Fn(Leaf) -> Leaf) {
        let (table, range) = match mapped {
            Mapped::Pmd(slot) => (slot.table, slot.index..slot.index + 1),
            Mapped::Ptes { first, nr } => (first.table, first.index..first.index + nr),
        };
        for i in range {
            let slot = Slot { table, index: i };
            match self.entry(slot) {
                Entry::Page(leaf) => self.set_entry(slot, Entry::Page(f(leaf))),
                other @ (Entry::None | Entry::Zero | Entry::Table(_)) => {
                    panic!("{slot:?}: the folio walker reported {other:?} as a mapping")
                }
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
            // madvise_free_pte_range(): only a folio that is dirty (or in
            // the swap cache) must be mapped by this process alone.
            |folio| !folio.dirty || folio.mapcount() as u64 == folio.nr_pages(),
            |w, folio, mapped| match mapped {
                Mapped::Pmd(slot) => w.madvise_free_huge_pmd(slot),
                Mapped::Ptes { .. } => {
                    w.mark_lazyfree(folio);
                    w.update_leaves(mapped, |leaf| Leaf { dirty: false, young: false, ..leaf });
                }
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

    /// `folio_mark_lazyfree()` and `lru_lazyfree_fn()`: a swap-backed folio
    /// stops being swap-backed and counts `pglazyfree` per page; one that
    /// already is lazyfree counts nothing.
    pub(crate) fn mark_lazyfree(&mut self, id: FolioId) {
        let folio = &mut self.folios[id];
        // madvise_free_pte_range() clears PG_dirty first.
        folio.dirty = false;
        if !folio.lazyfree {
            folio.lazyfree = true;
            let nr = folio.nr_pages();
            self.stats.count_n(VmEvent::PgLazyFree, nr);
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
}

/// MADV_DONTNEED's walk over whole PMD ranges after the zap: frees each
/// PTE table left empty.
struct ReclaimPtOps {
    pid: Pid,
}

impl WalkOps<World> for ReclaimPtOps {
    type Error = std::convert::Infallible;
    const PTES: bool = false;

    fn table(&mut self, w: &mut World, level: Level, slot: Slot, _: Vaddr, _: Vaddr) -> Result<Walk, Self::Error> {
        if level != Level::Pmd {
            return Ok(Walk::Continue);
        }
        let Entry::Table(pte) = w.entry(slot) else { unreachable!("the walker calls table() on tables") };
        if w.pt[pte].nr_used == 0 {
            w.free_table(self.pid, slot);
        }
        Ok(Walk::Skip)
    }

    /// The zap took every leaf of the range.
    fn pmd_leaf(&mut self, _: &mut World, slot: Slot, entry: Entry, _: Vaddr, _: Vaddr) -> Result<Walk, Self::Error> {
        panic!("{slot:?}: {entry:?} left after MADV_DONTNEED zapped the range")
    }
}

/// The folio walk of MADV_FREE, MADV_COLD and MADV_PAGEOUT.
struct FolioOps<P, A> {
    may_act: P,
    act: A,
}

impl<P, A> WalkOps<World> for FolioOps<P, A>
where
    P: Fn(&crate::folio::Folio) -> bool,
    A: FnMut(&mut World, FolioId, Mapped),
{
    type Error = std::convert::Infallible;

    /// A PMD-mapped folio: left alone when shared, handed over whole when
    /// the range covers it, split first otherwise (a failed split, a pinned
    /// folio, leaves it as it is).
    fn pmd_leaf(
        &mut self,
        w: &mut World,
        slot: Slot,
        entry: Entry,
        start: Vaddr,
        end: Vaddr,
    ) -> Result<Walk, Self::Error> {
        let leaf = match entry {
            Entry::Page(leaf) => leaf,
            Entry::Zero => return Ok(Walk::Skip),
            Entry::None | Entry::Table(_) => unreachable!("the walker hands leaves to pmd_leaf"),
        };
        if w.folios[leaf.folio].maybe_mapped_shared() {
            return Ok(Walk::Skip);
        }
        if end.0 - start.0 == PMD_SIZE {
            (self.act)(w, leaf.folio, Mapped::Pmd(slot));
            return Ok(Walk::Skip);
        }
        Ok(if w.split_folio(leaf.folio).is_ok() { Walk::Again } else { Walk::Skip })
    }

    fn pte_entry(
        &mut self,
        w: &mut World,
        slot: Slot,
        entry: Entry,
        _: Vaddr,
        last: usize,
    ) -> Result<Walk, Self::Error> {
        let leaf = match entry {
            Entry::Page(leaf) => leaf,
            Entry::None | Entry::Zero => return Ok(Walk::Continue),
            Entry::Table(_) => unreachable!("the walker never hands a table to pte_entry"),
        };
        let nr = w.pte_batch(slot.table, slot.index, last);
        let folio = &w.folios[leaf.folio];
        if folio.is_large() && (nr as u64) < folio.nr_pages() {
            if !folio.maybe_mapped_shared() && w.split_folio(leaf.folio).is_ok() {
                return Ok(Walk::Again); // The same PTE again: now a small folio.
            }
            return Ok(Walk::Advance(nr));
        }
        if (self.may_act)(folio) {
            (self.act)(w, leaf.folio, Mapped::Ptes { first: slot, nr });
        }
        Ok(Walk::Advance(nr))
    }
}
