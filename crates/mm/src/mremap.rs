//! mremap() for private anonymous memory.
//!
//! Models: mm/mremap.c: shrinking, growing in place, and `move_vma()` with
//! `move_page_tables()`: a PMD leaf moves whole with its deposit when source
//! and destination are PMD-aligned (`move_huge_pmd()`); a whole PTE table
//! moves as one when both are aligned (`move_normal_pmd()`,
//! `CONFIG_HAVE_MOVE_PMD`); otherwise PMD leaves are split and PTEs move one
//! by one (`move_ptes()`). Folios keep their index and the new VMA keeps the
//! page offset, so reverse mapping still finds them.
//! Not modelled: moving whole PUD tables (`move_normal_pud()`), uffd.

use crate::errno::Errno;
use crate::mmap::check_range;
use crate::pgtable::{Entry, Level};
use crate::types::*;
use crate::vma::Vma;
use crate::world::World;

impl World {
    /// mremap(old_addr, old_len, new_len, MREMAP_MAYMOVE [| MREMAP_FIXED, new_addr]).
    pub fn mremap(
        &mut self,
        pid: Pid,
        old_addr: Vaddr,
        old_len: u64,
        new_len: u64,
        may_move: bool,
        new_addr: Option<Vaddr>,
    ) -> Result<Vaddr, Errno> {
        self.check_pid(pid)?;
        if !old_addr.is_aligned(PAGE_SIZE) || new_len == 0 || (new_addr.is_some() && !may_move) {
            return Err(Errno::Inval);
        }
        let old_end = check_range(old_addr, old_len)?;
        let old_len = old_end.0 - old_addr.0;
        let new_len = new_len.checked_add(PAGE_SIZE - 1).ok_or(Errno::Inval)? & !(PAGE_SIZE - 1);
        self.begin_op("mremap");
        let result = self.do_mremap(pid, old_addr, old_len, new_len, may_move, new_addr);
        self.end_op();
        result
    }

    /// The order of Linux 6.17+ (`do_mremap()`, `check_prep_vma()`): a VMA
    /// must exist at `old` (else `EFAULT`) before anything is unmapped; a
    /// call that expands or moves also needs the kept part of the old range
    /// inside that VMA, except a fixed move of the same length, which may
    /// span several VMAs (`remap_move()`). A shrink or same-size call
    /// without a destination only unmaps the tail.
    fn do_mremap(
        &mut self,
        pid: Pid,
        old: Vaddr,
        old_len: u64,
        new_len: u64,
        may_move: bool,
        new_addr: Option<Vaddr>,
    ) -> Result<Vaddr, Errno> {
        if let Some(dst) = new_addr {
            let dst_end = check_range(dst, new_len)?;
            if dst < old.add(old_len) && old < dst_end {
                return Err(Errno::Inval);
            }
        }
        let vma = self.mm_ref(pid).vmas.find(old).cloned().ok_or(Errno::Fault)?;
        let expand = new_len > old_len;
        let multi_vma_move = new_addr.is_some() && new_len == old_len;
        if (new_addr.is_some() || expand) && !multi_vma_move && old_len.min(new_len) > vma.end.0 - old.0 {
            return Err(Errno::Fault);
        }
        if let Some(dst) = new_addr {
            self.do_munmap(pid, dst, dst.add(new_len));
            let mut len = old_len;
            if old_len > new_len {
                self.do_munmap(pid, old.add(new_len), old.add(old_len));
                len = new_len;
            }
            if multi_vma_move {
                // Each VMA of the range moves to the same offset in the destination.
                let pieces: Vec<(Vaddr, Vaddr)> = self
                    .mm_ref(pid)
                    .vmas
                    .overlapping(old, old.add(len))
                    .map(|v| (v.start.max(old), v.end.min(old.add(len))))
                    .collect();
                for (s, e) in pieces {
                    let to = dst.add(s.0 - old.0);
                    self.move_vma(pid, s, e.0 - s.0, e.0 - s.0, to);
                }
            } else {
                self.move_vma(pid, old, len, new_len, dst);
            }
            return Ok(dst);
        }
        if new_len <= old_len {
            if new_len < old_len {
                self.do_munmap(pid, old.add(new_len), old.add(old_len));
            }
            return Ok(old);
        }
        // Grow in place if the range ends the VMA and the space after is free.
        let grow_end = old.add(new_len);
        if old.add(old_len) == vma.end
            && grow_end.0 <= TASK_SIZE
            && self.mm_ref(pid).vmas.overlapping(vma.end, grow_end).next().is_none()
        {
            self.mm_mut(pid).vmas.get_mut(vma.start).expect("vma").end = grow_end;
            self.mm_mut(pid).vmas.merge_around(vma.start);
            return Ok(old);
        }
        if !may_move {
            return Err(Errno::NoMem);
        }
        let dst = self.mmap_find_free(pid, new_len).ok_or(Errno::NoMem)?;
        self.move_vma(pid, old, old_len, new_len, dst);
        Ok(dst)
    }

    fn mmap_find_free(&self, pid: Pid, len: u64) -> Option<Vaddr> {
        let mut top = crate::mmap::MMAP_BASE;
        for v in self.mm_ref(pid).vmas.iter().collect::<Vec<_>>().into_iter().rev() {
            if v.start.0 >= top {
                continue;
            }
            if top - v.end.0 >= len && top >= len {
                return Some(Vaddr((top - len) & !(PAGE_SIZE - 1)));
            }
            top = v.start.0;
        }
        top.checked_sub(len).map(Vaddr)
    }

    /// `move_vma()`: a new VMA at `dst` with the old page offset, the page
    /// tables moved under it, the old range unmapped.
    fn move_vma(&mut self, pid: Pid, old: Vaddr, old_len: u64, new_len: u64, dst: Vaddr) {
        self.split_vma_at(pid, old);
        self.split_vma_at(pid, old.add(old_len));
        let src = self.mm_ref(pid).vmas.get(old).cloned().expect("split vma");
        let new_vma = Vma { start: dst, end: dst.add(new_len), pgoff: src.pgoff, ..src.clone() };
        self.mm_mut(pid).vmas.insert(new_vma);
        self.move_page_tables(pid, old, dst, old_len);
        // The old VMA now maps nothing; unmapping it frees its tables.
        self.do_munmap(pid, old, old.add(old_len));
        self.mm_mut(pid).vmas.merge_around(dst);
    }

    /// `move_page_tables()`.
    fn move_page_tables(&mut self, pid: Pid, old: Vaddr, new: Vaddr, len: u64) {
        let mut done = 0;
        while done < len {
            let (s, d) = (old.add(done), new.add(done));
            // The extent stops at the next PMD boundary of either side.
            let extent = (PMD_SIZE - (s.0 & (PMD_SIZE - 1))).min(PMD_SIZE - (d.0 & (PMD_SIZE - 1))).min(len - done);
            let Some((spmd, si)) = self.walk_pmd(pid, s) else {
                done += extent;
                continue;
            };
            let whole = extent == PMD_SIZE;
            match self.pt[spmd].entries[si] {
                Entry::None => {}
                Entry::Page(_) | Entry::Zero if whole => {
                    let (dpmd, di) = self.pmd_alloc(pid, d).expect("page-table allocation in mremap");
                    let entry = self.pt[spmd].entries[si];
                    let table = self.pt[spmd].deposit.pop().expect("deposit");
                    self.pt[spmd].set(si, Entry::None);
                    self.pt[dpmd].deposit.push(table);
                    self.pt[dpmd].set(di, entry);
                }
                Entry::Table(t)
                    if whole && self.walk_pmd(pid, d).is_none_or(|(p, i)| self.pt[p].entries[i].is_none()) =>
                {
                    let (dpmd, di) = self.pmd_alloc(pid, d).expect("page-table allocation in mremap");
                    self.pt[spmd].set(si, Entry::None);
                    self.pt[dpmd].set(di, Entry::Table(t));
                }
                _ => {
                    self.split_huge_pmd(pid, s);
                    self.move_ptes(pid, s, d, extent);
                }
            }
            done += extent;
        }
        self.events.emit(|| crate::events::MmEvent::TlbFlush { pid, start: old, end: old.add(len) });
    }

    /// `move_ptes()`: moves entries one by one into a destination PTE table.
    fn move_ptes(&mut self, pid: Pid, old: Vaddr, new: Vaddr, len: u64) {
        let Some((spte, _)) = self.walk_pte(pid, old) else { return };
        let (dpmd, di) = self.pmd_alloc(pid, new).expect("page-table allocation in mremap");
        let dpte = self.pte_alloc(pid, dpmd, di).expect("page-table allocation in mremap");
        for k in 0..len / PAGE_SIZE {
            let si = Level::Pte.index(old.add(k * PAGE_SIZE));
            let entry = self.pt[spte].entries[si];
            if !entry.is_none() {
                self.pt[spte].set(si, Entry::None);
                self.pt[dpte].set(Level::Pte.index(new.add(k * PAGE_SIZE)), entry);
            }
        }
    }
}
