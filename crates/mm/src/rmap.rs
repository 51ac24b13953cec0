//! Reverse-map accounting: adding and removing PTE and PMD mappings of
//! anonymous folios, with every mapcount, the `MM_ID` owner slots, the
//! node counters and deferred-split queueing that go with them; and the
//! reverse walk that finds every mapping of a folio.
//!
//! Models: mm/rmap.c (`folio_add_new_anon_rmap()`, `__folio_add_rmap()`,
//! `__folio_remove_rmap()`, `__folio_try_dup_anon_rmap()`,
//! `rmap_walk_anon()`) and include/linux/rmap.h
//! (`folio_add_return_large_mapcount()`, `folio_sub_return_large_mapcount()`).
//! The kernel's `CONFIG_PAGE_MAPCOUNT=y` variant, as on our machines.

use crate::errno::Errno;
use crate::folio::Folio;
use crate::pagewalk::{Ro, Slot, Walk, WalkOps};
use crate::pgtable::Entry;
use crate::stats::MthpStat;
use crate::types::*;
use crate::world::World;

/// The level a mapping is made at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmapLevel {
    Pte,
    Pmd,
}

/// One mapping of a folio found by a reverse walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub pid: Pid,
    /// The address of the mapped page (PTE) or of the folio (PMD).
    pub addr: Vaddr,
    pub level: RmapLevel,
    /// The page of the folio (0 for a PMD mapping).
    pub page: u64,
}

/// `folio_add_return_large_mapcount()`: the `MM_ID` owner slots.
fn mm_id_add(folio: &mut Folio, mm_id: MmId, diff: u32) {
    let before = folio.large_mapcount;
    folio.large_mapcount += diff;
    if !folio.is_large() {
        return;
    }
    if folio.mm_ids[0] == Some(mm_id) {
        folio.mm_id_mapcount[0] += diff;
    } else if folio.mm_ids[1] == Some(mm_id) {
        folio.mm_id_mapcount[1] += diff;
    } else if folio.mm_ids[0].is_none() {
        folio.mm_ids[0] = Some(mm_id);
        folio.mm_id_mapcount[0] = diff;
        // Mappings from an mm that lost its slot may still exist.
        if before != 0 {
            folio.maybe_mapped_shared = true;
        }
    } else if folio.mm_ids[1].is_none() {
        folio.mm_ids[1] = Some(mm_id);
        folio.mm_id_mapcount[1] = diff;
        folio.maybe_mapped_shared = true;
    } else {
        // Both slots taken by other mms: this mm is untracked, and the
        // folio is certainly shared.
        folio.maybe_mapped_shared = true;
    }
}

/// `folio_sub_return_large_mapcount()`.
fn mm_id_sub(folio: &mut Folio, mm_id: MmId, diff: u32) {
    folio.large_mapcount = folio.large_mapcount.checked_sub(diff).expect("large_mapcount underflow");
    if !folio.is_large() {
        return;
    }
    let new = folio.large_mapcount;
    for slot in 0..2 {
        if folio.mm_ids[slot] == Some(mm_id) {
            if folio.mm_id_mapcount[slot] >= diff {
                folio.mm_id_mapcount[slot] -= diff;
                if folio.mm_id_mapcount[slot] > 0 {
                    return;
                }
            }
            // Went to zero (or below: mappings added while untracked):
            // free the slot.
            folio.mm_id_mapcount[slot] = 0;
            folio.mm_ids[slot] = None;
            break;
        }
    }
    // One slot owning every mapping means the folio is exclusive again;
    // an unmapped folio (both slots free, count 0) counts as exclusive too.
    let owns_all = |slot: usize| folio.mm_id_mapcount[slot] == new && (folio.mm_ids[slot].is_some() || new == 0);
    if owns_all(0) || owns_all(1) {
        folio.maybe_mapped_shared = false;
    }
}

impl World {
    fn mm_id_of(&self, pid: Pid) -> MmId {
        self.mm_ref(pid).mm_id
    }

    /// Maps a fresh folio for the first time (`folio_add_new_anon_rmap()`
    /// with `RMAP_EXCLUSIVE`): by one PMD, or by PTEs over all its pages.
    /// The caller has set the refcount.
    pub(crate) fn folio_add_new_anon_rmap(&mut self, id: FolioId, pid: Pid, level: RmapLevel) {
        let mm_id = self.mm_id_of(pid);
        let folio = &mut self.folios[id];
        assert_eq!(folio.large_mapcount, 0, "{id:?}: new anon rmap on a mapped folio");
        let nr = folio.nr_pages();
        match level {
            RmapLevel::Pmd => {
                folio.entire_mapcount = 1;
                folio.anon_exclusive.set(0, true);
                mm_id_add(folio, mm_id, 1);
                self.stats.nr_anon_thps += nr as i64;
            }
            RmapLevel::Pte => {
                if folio.is_large() {
                    for p in 0..nr {
                        *folio.page_pte_mapcount_mut(p) = 1;
                        folio.anon_exclusive.set(p, true);
                    }
                    folio.nr_pages_mapped = nr as u32;
                } else {
                    folio.anon_exclusive.set(0, true);
                    folio.nr_pages_mapped = 1;
                }
                mm_id_add(folio, mm_id, nr as u32);
            }
        }
        let order = folio.order;
        if order.is_large() {
            self.stats.mthp(order, MthpStat::NrAnon, 1);
        }
        self.stats.nr_anon_mapped += nr as i64;
    }

    /// Adds PTE mappings of pages `first..first + nr` of an existing folio
    /// (`folio_add_anon_rmap_ptes()`).
    pub(crate) fn folio_add_anon_rmap_ptes(&mut self, id: FolioId, first: u64, nr: u64, pid: Pid, exclusive: bool) {
        let mm_id = self.mm_id_of(pid);
        let folio = &mut self.folios[id];
        let mut newly_mapped = 0;
        for p in first..first + nr {
            let became_mapped = if folio.is_large() {
                let c = folio.page_pte_mapcount_mut(p);
                *c += 1;
                if *c == 1 {
                    folio.nr_pages_mapped += 1;
                    folio.entire_mapcount == 0
                } else {
                    false
                }
            } else {
                folio.nr_pages_mapped = 1;
                folio.large_mapcount == 0
            };
            if became_mapped {
                newly_mapped += 1;
            }
            if exclusive {
                folio.anon_exclusive.set(p, true);
            }
        }
        mm_id_add(folio, mm_id, nr as u32);
        self.stats.nr_anon_mapped += newly_mapped;
    }

    /// Removes PTE mappings of pages `first..first + nr`
    /// (`folio_remove_rmap_ptes()`), queueing a partially mapped large
    /// folio for deferred split. Does not drop references.
    pub(crate) fn folio_remove_rmap_ptes(&mut self, id: FolioId, first: u64, nr: u64, pid: Pid) {
        let mm_id = self.mm_id_of(pid);
        let folio = &mut self.folios[id];
        let mut unmapped = 0i64;
        for p in first..first + nr {
            if folio.is_large() {
                let c = folio.page_pte_mapcount_mut(p);
                *c = c.checked_sub(1).unwrap_or_else(|| panic!("{id:?} page {p}: PTE mapcount underflow"));
                if *c == 0 {
                    folio.nr_pages_mapped -= 1;
                    if folio.entire_mapcount == 0 {
                        unmapped += 1;
                    }
                }
            } else if folio.large_mapcount == 1 {
                folio.nr_pages_mapped = 0;
                unmapped += 1;
            }
            // A page that loses its last mapping is no longer exclusive to
            // anyone; a page mapped elsewhere keeps its bit as the kernel does.
        }
        mm_id_sub(folio, mm_id, nr as u32);
        if folio.is_large() && folio.nr_pages_mapped == 0 {
            folio.trim_page_mapcounts();
        }
        let partially_mapped = unmapped > 0 && (folio.nr_pages_mapped > 0 || folio.entire_mapcount > 0);
        let large = folio.is_large();
        self.stats.nr_anon_mapped -= unmapped;
        if partially_mapped && large && !self.folios[id].deferred.partially_mapped {
            self.deferred_split_folio(id, true);
        }
    }

    /// Removes a PMD mapping (`folio_remove_rmap_pmd()`).
    pub(crate) fn folio_remove_rmap_pmd(&mut self, id: FolioId, pid: Pid) {
        let mm_id = self.mm_id_of(pid);
        let folio = &mut self.folios[id];
        folio.entire_mapcount = folio.entire_mapcount.checked_sub(1).expect("entire_mapcount underflow");
        mm_id_sub(folio, mm_id, 1);
        let mut partially_mapped = false;
        if folio.entire_mapcount == 0 {
            let nr_pmdmapped = folio.nr_pages() as i64;
            let unmapped = nr_pmdmapped - folio.nr_pages_mapped as i64;
            self.stats.nr_anon_thps -= nr_pmdmapped;
            self.stats.nr_anon_mapped -= unmapped;
            partially_mapped = unmapped > 0 && unmapped < nr_pmdmapped;
        }
        if partially_mapped && !self.folios[id].deferred.partially_mapped {
            self.deferred_split_folio(id, true);
        }
    }

    /// Duplicates mappings of pages `first..first + nr` into a child at
    /// fork (`folio_try_dup_anon_rmap_ptes()`): fails with `Busy` when an
    /// exclusive page may be pinned, so the caller copies it instead;
    /// otherwise clears AnonExclusive and adds the child's mappings.
    pub(crate) fn folio_try_dup_anon_rmap_ptes(
        &mut self,
        id: FolioId,
        first: u64,
        nr: u64,
        src: Pid,
        dst: Pid,
    ) -> Result<(), Errno> {
        let maybe_pinned = self.mm_ref(src).has_pinned && self.folios[id].maybe_dma_pinned();
        let folio = &self.folios[id];
        if maybe_pinned && (first..first + nr).any(|p| folio.anon_exclusive.get(p)) {
            return Err(Errno::Busy);
        }
        let mm_id = self.mm_id_of(dst);
        let folio = &mut self.folios[id];
        for p in first..first + nr {
            folio.anon_exclusive.set(p, false);
            if folio.is_large() {
                *folio.page_pte_mapcount_mut(p) += 1;
            }
        }
        mm_id_add(folio, mm_id, nr as u32);
        Ok(())
    }

    /// `folio_try_dup_anon_rmap_pmd()`.
    pub(crate) fn folio_try_dup_anon_rmap_pmd(&mut self, id: FolioId, src: Pid, dst: Pid) -> Result<(), Errno> {
        let maybe_pinned = self.mm_ref(src).has_pinned && self.folios[id].maybe_dma_pinned();
        if self.folios[id].anon_exclusive.get(0) {
            if maybe_pinned {
                return Err(Errno::Busy);
            }
            self.folios[id].anon_exclusive.set(0, false);
        }
        let mm_id = self.mm_id_of(dst);
        let folio = &mut self.folios[id];
        folio.entire_mapcount += 1;
        mm_id_add(folio, mm_id, 1);
        Ok(())
    }

    /// Every mapping of a folio (`rmap_walk_anon()`): the mms of the folio's
    /// family, their VMAs whose page offsets cover the folio's index, and
    /// the entries there that map it (`page_vma_mapped_walk()`), in mm, VMA
    /// and address order.
    pub(crate) fn rmap_walk(&self, id: FolioId) -> Vec<Mapping> {
        let folio = &self.folios[id];
        let (index, nr, family) = (folio.index, folio.nr_pages(), folio.family);
        let mut ops = RmapOps { folio: id, pid: Pid(0), found: Vec::new() };
        for mm in self.mms.iter().flatten().filter(|m| m.family == family) {
            ops.pid = mm.pid;
            for vma in mm.vmas.iter() {
                let vma_pages = vma.len() >> PAGE_SHIFT;
                let lo = index.max(vma.pgoff);
                let hi = (index + nr).min(vma.pgoff + vma_pages);
                if lo >= hi {
                    continue;
                }
                let start = vma.address_of_index(lo).expect("index inside vma");
                let end = start.add((hi - lo) * PAGE_SIZE);
                let Ok(()) = self.walk_ro(mm.pid, start, end, &mut ops);
            }
        }
        ops.found
    }
}

/// The walk of `rmap_walk()` over one VMA's part of a folio's range.
struct RmapOps {
    folio: FolioId,
    pid: Pid,
    found: Vec<Mapping>,
}

impl WalkOps<Ro<'_>> for RmapOps {
    type Error = std::convert::Infallible;

    fn pmd_leaf(&mut self, _: &mut Ro<'_>, _: Slot, entry: Entry, start: Vaddr, _: Vaddr) -> Result<Walk, Self::Error> {
        match entry {
            Entry::Page(leaf) if leaf.folio == self.folio => self.found.push(Mapping {
                pid: self.pid,
                addr: start.align_down(PMD_SIZE),
                level: RmapLevel::Pmd,
                page: 0,
            }),
            Entry::Page(_) | Entry::Zero | Entry::None | Entry::Table(_) => {}
        }
        Ok(Walk::Skip)
    }

    fn pte_entry(&mut self, _: &mut Ro<'_>, _: Slot, entry: Entry, addr: Vaddr, _: usize) -> Result<Walk, Self::Error> {
        match entry {
            Entry::Page(leaf) if leaf.folio == self.folio => {
                self.found.push(Mapping { pid: self.pid, addr, level: RmapLevel::Pte, page: leaf.page as u64 })
            }
            Entry::Page(_) | Entry::Zero | Entry::None | Entry::Table(_) => {}
        }
        Ok(Walk::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn large() -> Folio {
        Folio::new(Pfn(0), Order::PMD, 0, 0)
    }

    #[test]
    fn second_mm_marks_shared_and_last_unmap_clears_it() {
        let mut f = large();
        mm_id_add(&mut f, MmId(1), 512);
        assert!(!f.maybe_mapped_shared);
        mm_id_add(&mut f, MmId(2), 1);
        assert!(f.maybe_mapped_shared);
        mm_id_sub(&mut f, MmId(2), 1);
        assert!(!f.maybe_mapped_shared, "slot 0 owns all mappings again");
        assert_eq!(f.large_mapcount, 512);
        mm_id_sub(&mut f, MmId(1), 512);
        assert_eq!(f.mm_ids, [None, None]);
    }

    #[test]
    fn third_mm_keeps_shared_until_one_slot_owns_all() {
        let mut f = large();
        mm_id_add(&mut f, MmId(1), 1);
        mm_id_add(&mut f, MmId(2), 1);
        mm_id_add(&mut f, MmId(3), 1);
        mm_id_sub(&mut f, MmId(2), 1);
        assert!(f.maybe_mapped_shared, "mm 3 is untracked: still shared");
        mm_id_sub(&mut f, MmId(3), 1);
        assert!(!f.maybe_mapped_shared);
    }
}
