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
            let anon_vma = vma.anon_vma.map(|_| self.new_anon_vma());
            self.mm_mut(child).vmas.insert(Vma { anon_vma, anon_vma_forked: anon_vma.is_some(), ..vma.clone() });
            if vma.anon_vma.is_some() {
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
        let (spgd, dpgd) = (self.mm_ref(src).pgd, self.mm_ref(dst).pgd);
        let next_boundary = |a: Vaddr, size: u64| a.align_down(size).add(size).min(vma.end);
        let mut addr = vma.start;
        while addr < vma.end {
            let pgd_end = next_boundary(addr, PGDIR_SIZE);
            let gi = Level::Pgd.index(addr);
            if let Entry::Table(spud) = self.pt[spgd].entries[gi] {
                let dpud = self.ensure_table(dst, dpgd, gi, Level::Pud)?;
                let mut a = addr;
                while a < pgd_end {
                    let pud_end = next_boundary(a, PUD_SIZE);
                    let ui = Level::Pud.index(a);
                    if let Entry::Table(spmd) = self.pt[spud].entries[ui] {
                        self.ensure_table(dst, dpud, ui, Level::Pmd)?;
                        let mut b = a;
                        while b < pud_end {
                            let next = next_boundary(b, PMD_SIZE);
                            match self.pt[spmd].entries[Level::Pmd.index(b)] {
                                Entry::None => {}
                                Entry::Page(_) | Entry::Zero => {
                                    if !self.copy_huge_pmd(src, dst, b, spmd, Level::Pmd.index(b))? {
                                        // A pinned exclusive THP: the source PMD was
                                        // split; copy it page by page.
                                        self.copy_pte_range(src, dst, vma, b, next)?;
                                    }
                                }
                                Entry::Table(_) => self.copy_pte_range(src, dst, vma, b, next)?,
                            }
                            b = next;
                        }
                    }
                    a = pud_end;
                }
            }
            addr = pgd_end;
        }
        Ok(())
    }

    /// The table under `parent[index]`, allocating it if the entry is none.
    fn ensure_table(&mut self, pid: Pid, parent: PtId, index: usize, level: Level) -> Result<PtId, Errno> {
        match self.pt[parent].entries[index] {
            Entry::Table(t) => Ok(t),
            _ => Ok(self.install_table(pid, parent, index, level)?),
        }
    }

    /// `copy_huge_pmd()`: shares a PMD leaf with the child. Returns false
    /// (having split the source PMD) when the folio may be pinned and must
    /// be copied instead.
    fn copy_huge_pmd(&mut self, src: Pid, dst: Pid, addr: Vaddr, spmd: PtId, si: usize) -> Result<bool, Errno> {
        let (dpmd, di) = self.pmd_alloc(dst, addr)?;
        let table = self.alloc_pt_page(dst, Level::Pte)?;
        match self.pt[spmd].entries[si] {
            Entry::Zero => {
                let hz = self.huge_zero.as_mut().expect("huge zero PMD without the folio");
                if !std::mem::replace(&mut self.mms[dst.index()].as_mut().expect("mm").huge_zero_ref, true) {
                    hz.refcount += 1;
                }
                self.pt[dpmd].deposit.push(table);
                self.pt[dpmd].set(di, Entry::Zero);
            }
            Entry::Page(leaf) => {
                if self.folio_try_dup_anon_rmap_pmd(leaf.folio, src, dst).is_err() {
                    self.free_pt_page(dst, Level::Pte, table);
                    self.split_huge_pmd(src, addr);
                    return Ok(false);
                }
                self.folios[leaf.folio].refcount += 1;
                let wp = Leaf { writable: false, ..leaf };
                self.pt[spmd].entries[si] = Entry::Page(wp);
                self.pt[dpmd].deposit.push(table);
                self.pt[dpmd].set(di, Entry::Page(Leaf { young: false, ..wp }));
                self.mm_mut(dst).rss_anon += Order::PMD.nr_pages();
            }
            other => panic!("copy_huge_pmd on {other:?}"),
        }
        Ok(true)
    }

    /// `copy_pte_range()` over `[start, end)` within one PMD.
    fn copy_pte_range(&mut self, src: Pid, dst: Pid, vma: &Vma, start: Vaddr, end: Vaddr) -> Result<(), Errno> {
        let Some((spte, _)) = self.walk_pte(src, start) else { return Ok(()) };
        let (dpmd, di) = self.pmd_alloc(dst, start)?;
        let dpte = self.pte_alloc(dst, dpmd, di)?;
        let first = Level::Pte.index(start);
        let last = first + ((end.0 - start.0) / PAGE_SIZE) as usize;
        for i in first..last {
            match self.pt[spte].entries[i] {
                Entry::None => {}
                Entry::Zero => self.pt[dpte].set(i, Entry::Zero),
                Entry::Page(leaf) => {
                    let addr = start.align_down(PMD_SIZE).add(i as u64 * PAGE_SIZE);
                    let page = leaf.page as u64;
                    if self.folio_try_dup_anon_rmap_ptes(leaf.folio, page, 1, src, dst).is_ok() {
                        self.folios[leaf.folio].refcount += 1;
                        let wp = Leaf { writable: false, ..leaf };
                        self.pt[spte].entries[i] = Entry::Page(wp);
                        self.pt[dpte].set(i, Entry::Page(Leaf { young: false, ..wp }));
                    } else {
                        self.copy_present_page(dst, vma, addr, leaf, dpte, i)?;
                    }
                    self.mm_mut(dst).rss_anon += 1;
                }
                Entry::Table(_) => panic!("table entry in a PTE table"),
            }
        }
        Ok(())
    }

    /// `copy_present_page()`: the child gets its own copy of a page the
    /// parent may have pinned.
    fn copy_present_page(
        &mut self,
        dst: Pid,
        vma: &Vma,
        addr: Vaddr,
        leaf: Leaf,
        dpte: PtId,
        i: usize,
    ) -> Result<(), Errno> {
        let family = self.mm_ref(dst).family;
        let new = self.folio_alloc(Order::BASE, Gfp::HIGHUSER_MOVABLE, family)?;
        self.folios[new].index = vma.linear_page_index(addr);
        let data = self.folios[leaf.folio].written.get(leaf.page as u64);
        self.folios[new].written.set(0, data);
        self.folios[new].refcount = 1;
        self.folio_add_new_anon_rmap(new, dst, RmapLevel::Pte);
        let writable = vma.writable();
        self.pt[dpte].set(i, Entry::Page(Leaf { folio: new, page: 0, writable, dirty: writable, young: true }));
        self.events.emit(|| MmEvent::Copied { bytes: PAGE_SIZE });
        Ok(())
    }
}
