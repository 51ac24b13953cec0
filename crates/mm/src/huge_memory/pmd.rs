//! What zap, fork, mremap, mprotect and MADV_FREE do to a PMD leaf: the
//! huge-entry halves of those walks.
//!
//! Models: mm/huge_memory.c (Linux 6.18): `zap_huge_pmd()`,
//! `copy_huge_pmd()`, `move_huge_pmd()`, `change_huge_pmd()`,
//! `madvise_free_huge_pmd()`.

use crate::errno::Errno;
use crate::pagewalk::Slot;
use crate::pgtable::{Entry, Leaf};
use crate::types::*;
use crate::world::World;

impl World {
    /// `zap_huge_pmd()`: unmaps a whole PMD leaf and frees its deposit.
    pub(crate) fn zap_huge_pmd(&mut self, pid: Pid, pmd: Slot) {
        let entry = self.entry(pmd);
        self.set_entry(pmd, Entry::None);
        self.zap_deposited_table(pid, pmd.table);
        match entry {
            Entry::Page(leaf) => {
                self.mm_mut(pid).rss_anon -= Order::PMD.nr_pages();
                self.folio_remove_rmap_pmd(leaf.folio, pid);
                self.folio_put_refs(leaf.folio, 1);
            }
            Entry::Zero => {}
            Entry::None | Entry::Table(_) => panic!("zap_huge_pmd on {entry:?}"),
        }
    }

    /// `copy_huge_pmd()`: shares the PMD leaf `src_pmd` (mapping `addr`) with
    /// the child, write-protected on both sides. Returns false, having split
    /// the source PMD, when the folio may be pinned: fork then copies it page
    /// by page. Fails with ENOMEM when a table cannot be allocated, or when
    /// the split of a pinned folio's PMD fails (the lazy-PTE series' answer).
    pub(crate) fn copy_huge_pmd(&mut self, src: Pid, dst: Pid, addr: Vaddr, src_pmd: Slot) -> Result<bool, Errno> {
        let dst_pmd = self.pmd_alloc(dst, addr)?;
        let table = self.prealloc_deposit(dst)?;
        match self.entry(src_pmd) {
            Entry::Zero => {
                self.mm_dup_huge_zero_folio(dst);
                self.deposit(dst_pmd.table, table);
                self.set_entry(dst_pmd, Entry::Zero);
            }
            Entry::Page(leaf) => {
                if self.folio_try_dup_anon_rmap_pmd(leaf.folio, src, dst).is_err() {
                    self.free_prealloc(dst, table);
                    self.split_huge_pmd(src, addr)?;
                    return Ok(false);
                }
                self.folios[leaf.folio].refcount += 1;
                let wp = Leaf { writable: false, ..leaf };
                self.set_entry(src_pmd, Entry::Page(wp));
                self.deposit(dst_pmd.table, table);
                self.set_entry(dst_pmd, Entry::Page(Leaf { young: false, ..wp }));
                self.mm_mut(dst).rss_anon += Order::PMD.nr_pages();
            }
            other @ (Entry::None | Entry::Table(_)) => panic!("copy_huge_pmd on {other:?}"),
        }
        Ok(true)
    }

    /// `move_huge_pmd()`: moves a PMD leaf, with its deposit, to a none PMD
    /// slot of the same mm.
    pub(crate) fn move_huge_pmd(&mut self, from: Slot, to: Slot) {
        let entry = self.entry(from);
        debug_assert!(matches!(entry, Entry::Page(_) | Entry::Zero), "move_huge_pmd of {entry:?}");
        debug_assert!(self.entry(to).is_none(), "move_huge_pmd onto {:?}", self.entry(to));
        self.set_entry(from, Entry::None);
        self.move_deposit(from.table, to.table);
        self.set_entry(to, entry);
    }

    /// `change_huge_pmd()`: write-protects a PMD leaf, or makes it writable
    /// when the folio is exclusive (`can_change_pmd_writable()`). The huge
    /// zero folio stays read-only.
    pub(crate) fn change_huge_pmd(&mut self, pmd: Slot, writable: bool) {
        match self.entry(pmd) {
            Entry::Page(leaf) => {
                let w = writable && self.folios[leaf.folio].anon_exclusive.get(0);
                self.set_entry(pmd, Entry::Page(Leaf { writable: w, ..leaf }));
            }
            Entry::Zero => {}
            other @ (Entry::None | Entry::Table(_)) => panic!("change_huge_pmd on {other:?}"),
        }
    }

    /// `madvise_free_huge_pmd()` for a folio wholly inside the range: marks
    /// it lazyfree and its PMD clean and old.
    pub(crate) fn madvise_free_huge_pmd(&mut self, pmd: Slot) {
        match self.entry(pmd) {
            Entry::Page(leaf) => {
                self.mark_lazyfree(leaf.folio);
                self.set_entry(pmd, Entry::Page(Leaf { dirty: false, young: false, ..leaf }));
            }
            other @ (Entry::None | Entry::Table(_) | Entry::Zero) => panic!("madvise_free_huge_pmd on {other:?}"),
        }
    }
}
