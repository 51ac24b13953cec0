//! mmap, munmap and process teardown for private anonymous memory.
//!
//! Models: mm/mmap.c (`do_mmap()`, `__get_unmapped_area()` with
//! `thp_get_unmapped_area()`'s PMD alignment), mm/vma.c (`__mmap_region()`,
//! `do_vmi_align_munmap()`, `vma_adjust_trans_huge()` on VMA splits),
//! `exit_mmap()`.

use crate::errno::Errno;
use crate::mman::Prot;
use crate::pgtable::Level;
use crate::types::*;
use crate::vma::{VmFlags, Vma};
use crate::world::World;

/// The top of the mmap area that the model's top-down allocator starts
/// from when no address is given (below the stack, as `mmap_base` is).
pub const MMAP_BASE: u64 = 0x7f00_0000_0000;

/// `calc_vm_prot_bits()` for the three protection bits.
pub(crate) fn prot_to_vm_flags(prot: Prot) -> VmFlags {
    let mut f = VmFlags::default();
    if prot.read {
        f = f.union(VmFlags::READ);
    }
    if prot.write {
        f = f.union(VmFlags::WRITE);
    }
    if prot.exec {
        f = f.union(VmFlags::EXEC);
    }
    f
}

/// Validates an `(addr, len)` range as the mm system calls do; returns the
/// page-rounded end.
pub(crate) fn check_range(addr: Vaddr, len: u64) -> Result<Vaddr, Errno> {
    if !addr.is_aligned(PAGE_SIZE) {
        return Err(Errno::Inval);
    }
    let len = len.checked_add(PAGE_SIZE - 1).ok_or(Errno::Inval)? & !(PAGE_SIZE - 1);
    let end = addr.0.checked_add(len).ok_or(Errno::Inval)?;
    if end > TASK_SIZE {
        return Err(Errno::Inval);
    }
    Ok(Vaddr(end))
}

impl World {
    /// mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS [| MAP_FIXED_NOREPLACE]).
    /// With `fixed`, maps exactly at `addr` or fails with `EEXIST`; without,
    /// picks a free range top-down, PMD-aligned when `len` is a multiple of
    /// the PMD size (`thp_get_unmapped_area()`).
    pub fn mmap(&mut self, pid: Pid, addr: Option<Vaddr>, len: u64, prot: Prot) -> Result<Vaddr, Errno> {
        self.check_pid(pid)?;
        if len == 0 {
            return Err(Errno::Inval);
        }
        let len = len.checked_add(PAGE_SIZE - 1).ok_or(Errno::NoMem)? & !(PAGE_SIZE - 1);
        self.begin_op("mmap");
        let result = self.do_mmap(pid, addr, len, prot, false);
        self.end_op();
        result
    }

    /// mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED): maps
    /// exactly at `addr`, replacing whatever was mapped there (the old
    /// mappings are unmapped as munmap() would).
    pub fn mmap_fixed(&mut self, pid: Pid, addr: Vaddr, len: u64, prot: Prot) -> Result<Vaddr, Errno> {
        self.check_pid(pid)?;
        if len == 0 {
            return Err(Errno::Inval);
        }
        let len = len.checked_add(PAGE_SIZE - 1).ok_or(Errno::NoMem)? & !(PAGE_SIZE - 1);
        self.begin_op("mmap");
        let result = self.do_mmap(pid, Some(addr), len, prot, true);
        self.end_op();
        result
    }

    /// `do_mmap()` → `mmap_region()` for a private anonymous mapping.
    fn do_mmap(&mut self, pid: Pid, addr: Option<Vaddr>, len: u64, prot: Prot, replace: bool) -> Result<Vaddr, Errno> {
        let start = match addr {
            Some(a) => {
                let end = check_range(a, len)?;
                if !replace && self.mm_ref(pid).vmas.overlapping(a, end).next().is_some() {
                    return Err(Errno::Exist);
                }
                a
            }
            None => self.get_unmapped_area(pid, len).ok_or(Errno::NoMem)?,
        };
        // accountable_mapping(): a private writable mapping is charged, less
        // what it replaces that was charged already.
        let mut flags = prot_to_vm_flags(prot);
        if prot.write {
            let replaced: u64 = self
                .mm_ref(pid)
                .vmas
                .overlapping(start, start.add(len))
                .filter(|v| v.flags.contains(VmFlags::ACCOUNT))
                .map(|v| v.end.min(start.add(len)).0 - v.start.max(start).0)
                .sum();
            self.vm_enough_memory((len - replaced) / PAGE_SIZE)?;
            flags = flags.union(VmFlags::ACCOUNT);
        }
        if replace {
            self.do_munmap(pid, start, start.add(len))?;
        }
        let vma = Vma { start, end: start.add(len), flags, pgoff: start.vpn(), anon_vma: None, anon_vma_forked: false };
        self.mm_mut(pid).vmas.insert(vma);
        // __mmap_region(): a new VMA merges where it can, and the VMA that
        // results is offered to khugepaged either way.
        let merged = self.vma_merge(pid, start);
        self.khugepaged_enter_vma(pid, merged);
        Ok(start)
    }

    /// `__vm_enough_memory()` with `vm.overcommit_memory = 0` (the heuristic
    /// `OVERCOMMIT_GUESS`, Linux's default): a charge of `pages` fails with
    /// ENOMEM only if it alone exceeds all RAM and swap. RAM is the machine's
    /// managed pages (`totalram_pages()`); the model has no swap yet.
    pub(crate) fn vm_enough_memory(&self, pages: u64) -> Result<(), Errno> {
        let total_swap_pages = 0;
        if pages > self.buddy.nr_total_pages() + total_swap_pages {
            return Err(Errno::NoMem);
        }
        Ok(())
    }

    /// A top-down search for a free range below `MMAP_BASE`.
    fn get_unmapped_area(&self, pid: Pid, len: u64) -> Option<Vaddr> {
        let align = if len.is_multiple_of(PMD_SIZE) { PMD_SIZE } else { PAGE_SIZE };
        let mut top = MMAP_BASE;
        let vmas: Vec<(u64, u64)> = self.mm_ref(pid).vmas.iter().map(|v| (v.start.0, v.end.0)).collect();
        for &(s, e) in vmas.iter().rev().filter(|(s, _)| *s < MMAP_BASE) {
            let cand = top.checked_sub(len)? & !(align - 1);
            if cand >= e {
                return Some(Vaddr(cand));
            }
            top = top.min(s);
        }
        let cand = top.checked_sub(len)? & !(align - 1);
        (cand >= PAGE_SIZE * 16).then_some(Vaddr(cand))
    }

    /// Splits the VMA straddling `addr` there, splitting a PMD leaf that
    /// straddles the new boundary first (`__split_vma()` →
    /// `vma_adjust_trans_huge()` → `split_huge_pmd_if_needed()`). A PMD split
    /// that fails leaves the VMA whole and the call fails with ENOMEM, as the
    /// lazy-PTE series has every VMA split, shrink and merge do.
    pub(crate) fn split_vma_at(&mut self, pid: Pid, addr: Vaddr) -> Result<(), Errno> {
        let Some(vma) = self.mm_ref(pid).vmas.find(addr) else { return Ok(()) };
        if vma.start == addr {
            return Ok(());
        }
        let block = addr.align_down(PMD_SIZE);
        if !addr.is_aligned(PMD_SIZE) && block >= vma.start && block.0 + PMD_SIZE <= vma.end.0 {
            self.split_huge_pmd(pid, addr)?;
        }
        self.mm_mut(pid).vmas.split_at(addr);
        Ok(())
    }

    /// munmap(addr, len).
    pub fn munmap(&mut self, pid: Pid, addr: Vaddr, len: u64) -> Result<(), Errno> {
        self.check_pid(pid)?;
        if len == 0 {
            return Err(Errno::Inval);
        }
        let end = check_range(addr, len)?;
        self.begin_op("munmap");
        let result = self.do_munmap(pid, addr, end);
        self.end_op();
        result
    }

    /// `do_vmi_munmap()`: removes every mapping in `[start, end)`. Fails with
    /// ENOMEM, unmapping nothing, when a VMA at either end cannot be split.
    pub(crate) fn do_munmap(&mut self, pid: Pid, start: Vaddr, end: Vaddr) -> Result<(), Errno> {
        if self.mm_ref(pid).vmas.overlapping(start, end).next().is_none() {
            return Ok(());
        }
        self.split_vma_at(pid, start)?;
        self.split_vma_at(pid, end)?;
        for vstart in self.mm_ref(pid).vmas.starts_overlapping(start, end) {
            let vma = self.mm_mut(pid).vmas.remove(vstart).expect("vma");
            self.zap_range(pid, vma.start, vma.end);
        }
        let floor = self.mm_ref(pid).vmas.prev(start).map_or(Vaddr(0), |v| v.end);
        let ceiling = self.mm_ref(pid).vmas.next(end).map_or(Vaddr(0), |v| v.start);
        self.free_pgtables(pid, start, end, floor, ceiling);
        Ok(())
    }

    /// The process exits: `exit_mmap()` unmaps everything and frees the page
    /// tables; the PGD, the mm id and the huge zero reference go with the mm.
    /// Pins it took stay until unpinned, keeping their folios alive.
    pub fn exit(&mut self, pid: Pid) -> Result<(), Errno> {
        self.check_pid(pid)?;
        self.begin_op("exit");
        let vmas: Vec<(Vaddr, Vaddr)> = self.mm_ref(pid).vmas.iter().map(|v| (v.start, v.end)).collect();
        for (s, e) in vmas {
            self.mm_mut(pid).vmas.remove(s);
            self.zap_range(pid, s, e);
        }
        self.free_pgtables(pid, Vaddr(0), Vaddr(TASK_SIZE), Vaddr(0), Vaddr(0));
        self.mm_put_huge_zero_folio(pid);
        self.khugepaged_exit(pid);
        let mm = self.mms[pid.index()].take().expect("mm");
        let pgd = self.pt.remove(mm.pgd);
        assert_eq!(pgd.nr_used, 0, "{pid:?}: PGD still has {} entries at exit", pgd.nr_used);
        assert_eq!(mm.nr_ptes + mm.nr_pmds + mm.nr_puds, 0, "{pid:?}: page tables leaked at exit: {mm:?}");
        assert_eq!(mm.rss_anon, 0, "{pid:?}: rss {} left at exit", mm.rss_anon);
        self.buddy.free(pgd.pfn, crate::world::PGD_ALLOCATION_ORDER);
        self.stats.nr_page_table_pages -= crate::world::PGD_ALLOCATION_ORDER.nr_pages() as i64;
        let _ = Level::Pgd;
        self.end_op();
        Ok(())
    }
}
