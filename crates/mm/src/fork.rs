//! fork(): duplicating an address space, sharing anonymous folios
//! copy-on-write.
//!
//! Models: kernel/fork.c (`dup_mm()`, `dup_mmap()`), mm/memory.c
//! (`copy_page_range()`, `copy_pmd_range()`, `copy_pte_range()`,
//! `copy_present_ptes()`, `copy_present_page()`), mm/huge_memory.c
//! (`copy_huge_pmd()`), mm/khugepaged.c (`khugepaged_fork()`).
//! PMD mappings stay PMD-mapped and shared, write-protected on both sides;
//! pages a pinned folio maps exclusively are copied for the child at once.

use crate::errno::Errno;
use crate::events::MmEvent;
use crate::gfp::Gfp;
use crate::pagewalk::{Slot, Walk, WalkOps};
use crate::pgtable::{Entry, Leaf, Level};
use crate::rmap::RmapLevel;
use crate::types::*;
use crate::vma::{VmFlags, Vma};
use crate::world::World;

impl World {
    /// fork(): returns the child's pid. On `ENOMEM` the half-built child is
    /// torn down, as `dup_mmap()` failing does.
    pub fn fork(&mut self, parent: Pid) -> Result<Pid, Errno> {
        self.check_pid(parent)?;
        self.begin_op("fork");
        let family = self.mm_ref(parent).family;
        let child = match self.mm_alloc(family) {
            Ok(c) => c,
            Err(e) => {
                self.end_op();
                return Err(e);
            }
        };
        let (thp_disable, registered) = {
            let p = self.mm_ref(parent);
            (p.thp_disable, p.khugepaged_registered)
        };
        self.mm_mut(child).thp_disable = thp_disable;
        if registered {
            self.khugepaged_register(child);
        }
        let vmas: Vec<Vma> = self.mm_ref(parent).vmas.iter().cloned().collect();
        let mut result = Ok(child);
        for vma in vmas {
            if vma.flags.contains(VmFlags::DONTFORK) {
                continue;
            }
            // dup_mmap(): the child's VMA is not mlock()ed; a VM_WIPEONFORK
            // VMA starts empty, without an anon_vma, and nothing is copied.
            let wipe = vma.flags.contains(VmFlags::WIPEONFORK);
            let anon_vma = vma.anon_vma.filter(|_| !wipe).map(|_| self.new_anon_vma());
            let flags = vma.flags.without(VmFlags::LOCKED);
            self.mm_mut(child).vmas.insert(Vma { flags, anon_vma, anon_vma_forked: anon_vma.is_some(), ..vma.clone() });
            if anon_vma.is_some() {
                if let Err(e) = self.copy_page_range(parent, child, &vma) {
                    result = Err(e);
                    break;
                }
            }
        }
        self.events.emit(|| MmEvent::TlbFlush { pid: parent, start: Vaddr(0), end: Vaddr(TASK_SIZE) });
        if result.is_err() {
            self.end_op();
            self.exit(child).expect("tear down a half-forked child");
            return result;
        }
        self.end_op();
        result
    }

    /// `copy_page_range()` for one VMA. Like the kernel's
    /// `copy_p4d_range()`/`copy_pud_range()`/`copy_pmd_range()`, the child
    /// gets a PUD (PMD) table wherever the parent has one over the VMA, even
    /// if the entries under it that the VMA covers are all none.
    fn copy_page_range(&mut self, src: Pid, dst: Pid, vma: &Vma) -> Result<(), Errno> {
        self.walk(src, vma.start, vma.end, &mut CopyOps { src, dst, vma, dst_pte: None })
    }

    /// `copy_present_page()`: the child gets its own copy of a page the
    /// parent may have pinned.
    fn copy_present_page(&mut self, dst: Pid, vma: &Vma, addr: Vaddr, leaf: Leaf, dst_pte: Slot) -> Result<(), Errno> {
        let family = self.mm_ref(dst).family;
        let new = self.folio_alloc(Order::BASE, Gfp::HIGHUSER_MOVABLE, family)?;
        self.folios[new].index = vma.linear_page_index(addr);
        let word = self.folios[leaf.folio].word(leaf.page as u64);
        self.folios[new].set_word(0, word);
        self.folios[new].refcount = 1;
        self.folio_add_new_anon_rmap(new, dst, RmapLevel::Pte);
        let writable = vma.writable();
        // copy_present_page(): the copy's PTE is dirty, writable if the VMA is.
        self.set_entry(dst_pte, Entry::Page(Leaf { folio: new, page: 0, writable, dirty: true, young: true }));
        self.events.emit(|| MmEvent::Copied { bytes: PAGE_SIZE });
        Ok(())
    }
}

/// The walk of `copy_page_range()` over the parent's tables.
struct CopyOps<'v> {
    src: Pid,
    dst: Pid,
    vma: &'v Vma,
    /// The child's PTE table for the parent's PTE table being copied.
    dst_pte: Option<PtId>,
}

impl WalkOps<World> for CopyOps<'_> {
    type Error = Errno;

    /// `copy_p4d_range()`/`copy_pud_range()`/`copy_pmd_range()`: the child
    /// gets the table level by level (`pud_alloc()`, `pmd_alloc()`), and a PTE
    /// table for each of the parent's (`copy_pte_range()`'s `pte_alloc()`).
    fn table(&mut self, w: &mut World, level: Level, _: Slot, start: Vaddr, _: Vaddr) -> Result<Walk, Errno> {
        match level {
            Level::Pgd => {
                let pgd = w.mm_ref(self.dst).pgd;
                let slot = Slot { table: pgd, index: Level::Pgd.index(start) };
                if w.entry(slot).is_none() {
                    w.install_table(self.dst, slot, Level::Pud)?;
                }
            }
            Level::Pud => {
                w.pmd_alloc(self.dst, start)?;
            }
            Level::Pmd => {
                let dst_pmd = w.pmd_alloc(self.dst, start)?;
                self.dst_pte = Some(w.pte_alloc(self.dst, dst_pmd)?);
            }
            Level::Pte => unreachable!("no table entries in a PTE table"),
        }
        Ok(Walk::Continue)
    }

    /// A PMD leaf is shared (`copy_huge_pmd()`); a pinned exclusive THP has
    /// had the parent's PMD split, and is copied page by page as a table.
    fn pmd_leaf(&mut self, w: &mut World, slot: Slot, _: Entry, start: Vaddr, _: Vaddr) -> Result<Walk, Errno> {
        Ok(if w.copy_huge_pmd(self.src, self.dst, start, slot)? { Walk::Skip } else { Walk::Again })
    }

    /// `copy_present_ptes()`: shares the page write-protected, or copies it
    /// when the parent may have pinned it (`copy_present_page()`).
    fn pte_entry(&mut self, w: &mut World, slot: Slot, entry: Entry, addr: Vaddr, _: usize) -> Result<Walk, Errno> {
        let dst_pte = Slot { table: self.dst_pte.expect("table() ran for this PTE table"), index: slot.index };
        match entry {
            Entry::None => {}
            Entry::Zero => w.set_entry(dst_pte, Entry::Zero),
            Entry::Page(leaf) => {
                let page = leaf.page as u64;
                if w.folio_try_dup_anon_rmap_ptes(leaf.folio, page, 1, self.src, self.dst).is_ok() {
                    w.folios[leaf.folio].refcount += 1;
                    let wp = Leaf { writable: false, ..leaf };
                    w.set_entry(slot, Entry::Page(wp));
                    w.set_entry(dst_pte, Entry::Page(Leaf { young: false, ..wp }));
                } else {
                    w.copy_present_page(self.dst, self.vma, addr, leaf, dst_pte)?;
                }
                w.mm_mut(self.dst).rss_anon += 1;
            }
            Entry::Table(t) => unreachable!("the walker never hands a table {t:?} to pte_entry"),
        }
        Ok(Walk::Continue)
    }
}
