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
use crate::pagewalk::Slot;
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
        let locked =
            self.mm_ref(pid).vmas.find(old_addr).is_some_and(|v| v.flags.contains(crate::vma::VmFlags::LOCKED));
        let result = self.do_mremap(pid, old_addr, old_len, new_len, may_move, new_addr);
        // An mlock()ed mapping that grew has its new part populated
        // (`mm_populate()`, errors ignored).
        if let Ok(new) = result {
            if locked && new_len > old_len {
                let _ = self.mm_populate(pid, new.add(old_len), new.add(new_len), true);
            }
        }
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
        // vrm_charge(): growth of an accounted mapping is charged first.
        if expand && vma.flags.contains(crate::vma::VmFlags::ACCOUNT) {
            self.vm_enough_memory((new_len - old_len) / PAGE_SIZE)?;
        }
        if let Some(dst) = new_addr {
            self.do_munmap(pid, dst, dst.add(new_len))?;
            let mut len = old_len;
            if old_len > new_len {
                self.do_munmap(pid, old.add(new_len), old.add(old_len))?;
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
                    self.move_vma(pid, s, e.0 - s.0, e.0 - s.0, to)?;
                }
            } else {
                self.move_vma(pid, old, len, new_len, dst)?;
            }
            return Ok(dst);
        }
        if new_len <= old_len {
            if new_len < old_len {
                self.do_munmap(pid, old.add(new_len), old.add(old_len))?;
            }
            return Ok(old);
        }
        // Grow in place if the range ends the VMA and the space after is free.
        let grow_end = old.add(new_len);
        if old.add(old_len) == vma.end
            && grow_end.0 <= TASK_SIZE
            && self.mm_ref(pid).vmas.overlapping(vma.end, grow_end).next().is_none()
        {
            // vma_merge_extend(): the VMA expands (and may merge with the
            // next); an expansion registers the mm with khugepaged.
            self.mm_mut(pid).vmas.get_mut(vma.start).expect("vma").end = grow_end;
            let merged = self.vma_merge(pid, vma.start);
            self.khugepaged_enter_vma(pid, merged);
            return Ok(old);
        }
        if !may_move {
            return Err(Errno::NoMem);
        }
        let dst = self.mmap_find_free(pid, new_len).ok_or(Errno::NoMem)?;
        self.move_vma(pid, old, old_len, new_len, dst)?;
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
    /// tables moved under it, the old range unmapped. When the tables cannot
    /// all be moved (a table or a split could not be had), the entries moved
    /// so far go back, which needs no allocation because the old tables are
    /// still there, the new range is unmapped instead of the old, and the
    /// call fails with ENOMEM.
    fn move_vma(&mut self, pid: Pid, old: Vaddr, old_len: u64, new_len: u64, dst: Vaddr) -> Result<(), Errno> {
        self.split_vma_at(pid, old)?;
        self.split_vma_at(pid, old.add(old_len))?;
        let src = self.mm_ref(pid).vmas.get(old).cloned().expect("split vma");
        // copy_vma(): a VMA that never faulted takes the page offset of its
        // new address, to merge more easily there.
        let pgoff = if src.anon_vma.is_some() { src.pgoff } else { dst.vpn() };
        let new_vma = Vma { start: dst, end: dst.add(new_len), pgoff, ..src.clone() };
        self.mm_mut(pid).vmas.insert(new_vma);
        let moved = self.move_page_tables(pid, old, dst, old_len);
        if moved < old_len {
            // The kernel ignores a short move back too: what stays at the
            // destination (extents that held no entry) goes with its unmap.
            let _ = self.move_page_tables(pid, dst, old, moved);
            self.do_munmap(pid, dst, dst.add(new_len))?;
            return Err(Errno::NoMem);
        }
        // The old VMA now maps nothing; unmapping it frees its tables.
        self.do_munmap(pid, old, old.add(old_len))?;
        self.vma_merge(pid, dst);
        Ok(())
    }

    /// `move_page_tables()`: walks the old and the new range in lockstep, an
    /// extent at a time (up to the next PMD boundary of either side), with
    /// the walker's lookups, as mm/mremap.c does. Returns the bytes moved:
    /// less than `len` when a table or a split could not be had.
    fn move_page_tables(&mut self, pid: Pid, old: Vaddr, new: Vaddr, len: u64) -> u64 {
        let mut done = 0;
        while done < len {
            let (s, d) = (old.add(done), new.add(done));
            let extent = (PMD_SIZE - (s.0 & (PMD_SIZE - 1))).min(PMD_SIZE - (d.0 & (PMD_SIZE - 1))).min(len - done);
            let Some(src_pmd) = self.pmd_off(pid, s) else {
                done += extent;
                continue;
            };
            let whole = extent == PMD_SIZE;
            let dst_none = self.pmd_off(pid, d).is_none_or(|slot| self.entry(slot).is_none());
            let moved = match self.entry(src_pmd) {
                Entry::None => true,
                Entry::Page(_) | Entry::Zero if whole => match self.pmd_alloc(pid, d) {
                    Ok(dst_pmd) => {
                        self.move_huge_pmd(src_pmd, dst_pmd);
                        true
                    }
                    Err(_) => false,
                },
                // move_normal_pmd(): the whole PTE table changes hands.
                Entry::Table(t) if whole && dst_none => match self.pmd_alloc(pid, d) {
                    Ok(dst_pmd) => {
                        self.set_entry(src_pmd, Entry::None);
                        self.set_entry(dst_pmd, Entry::Table(t));
                        true
                    }
                    Err(_) => false,
                },
                // A split that fails stops the move here (the lazy-PTE
                // series: mremap moves partially, then reverts).
                Entry::Page(_) | Entry::Zero | Entry::Table(_) => {
                    self.split_huge_pmd(pid, s).is_ok() && self.move_ptes(pid, s, d, extent)
                }
            };
            if !moved {
                break;
            }
            done += extent;
        }
        self.events.emit(|| crate::events::MmEvent::TlbFlush { pid, start: old, end: old.add(len) });
        done
    }

    /// `move_ptes()`: moves entries one by one into a destination PTE table.
    /// False if the destination table cannot be allocated (nothing moved).
    /// Like the kernel, it allocates the destination table even when the
    /// extent holds no entry.
    fn move_ptes(&mut self, pid: Pid, old: Vaddr, new: Vaddr, len: u64) -> bool {
        let Some(src) = self.pte_off(pid, old) else { return true };
        let Ok(dst_pmd) = self.pmd_alloc(pid, new) else { return false };
        let Ok(dst) = self.pte_alloc(pid, dst_pmd) else { return false };
        for k in 0..len / PAGE_SIZE {
            let from = Slot { table: src.table, index: Level::Pte.index(old.add(k * PAGE_SIZE)) };
            let entry = self.entry(from);
            if !entry.is_none() {
                self.set_entry(from, Entry::None);
                self.set_entry(Slot { table: dst, index: Level::Pte.index(new.add(k * PAGE_SIZE)) }, entry);
            }
        }
        true
    }
}
