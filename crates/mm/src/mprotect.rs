//! mprotect() and prctl(PR_SET_THP_DISABLE).
//!
//! Models: mm/mprotect.c (`do_mprotect_pkey()`, `mprotect_fixup()`,
//! `change_pte_range()`, `can_change_pte_writable()`), mm/huge_memory.c
//! (`change_huge_pmd()`, `can_change_pmd_writable()`), kernel/sys.c
//! (`prctl_set_thp_disable()`, Linux 6.18 with PR_THP_DISABLE_EXCEPT_ADVISED).

use crate::errno::Errno;
use crate::mman::{Prot, ThpDisable};
use crate::mmap::{check_range, prot_to_vm_flags};
use crate::pagewalk::{Slot, Walk, WalkOps};
use crate::pgtable::{Entry, Leaf};
use crate::types::*;
use crate::vma::{VmFlags, Vma};
use crate::world::World;

impl World {
    /// Applies `f` to the flags of every VMA piece in `[start, end)`,
    /// splitting VMAs at the boundaries first and merging afterwards
    /// (`vma_modify_flags()`). Fails with `ENOMEM` if part of the range is
    /// unmapped, after changing the mapped parts before the hole, as the
    /// kernel does.
    ///
    /// mprotect stops at the first hole (`do_mprotect_pkey()`); madvise goes
    /// on past holes (`madvise_walk_vmas()`): `stop_at_hole` chooses.
    pub(crate) fn modify_vma_flags(
        &mut self,
        pid: Pid,
        start: Vaddr,
        end: Vaddr,
        stop_at_hole: bool,
        f: impl Fn(VmFlags) -> VmFlags,
    ) -> Result<Vec<(Vaddr, Vaddr)>, Errno> {
        let (pieces, result) = self.modify_vma_flags_with(pid, start, end, stop_at_hole, |v| f(v.flags));
        result.map(|()| pieces.into_iter().map(|(s, e, _)| (s, e)).collect())
    }

    /// `modify_vma_flags()` with the new flags computed from the whole VMA.
    /// Returns the pieces handled (each saying whether its flags changed),
    /// also when a hole ends the walk, and the call's result.
    #[allow(clippy::type_complexity)]
    pub(crate) fn modify_vma_flags_with(
        &mut self,
        pid: Pid,
        start: Vaddr,
        end: Vaddr,
        stop_at_hole: bool,
        f: impl Fn(&Vma) -> VmFlags,
    ) -> (Vec<(Vaddr, Vaddr, bool)>, Result<(), Errno>) {
        let mut pieces = Vec::new();
        let mut cursor = start;
        let mut hole = false;
        for vstart in self.mm_ref(pid).vmas.starts_overlapping(start, end) {
            let vma = self.mm_ref(pid).vmas.get(vstart).expect("vma").clone();
            if vma.start > cursor {
                hole = true;
                if stop_at_hole {
                    return (pieces, Err(Errno::NoMem));
                }
            }
            let (s, e) = (vma.start.max(start), vma.end.min(end));
            let flags = f(&vma);
            let changed = flags != vma.flags;
            if changed {
                // A VMA that cannot be split stays as it is: ENOMEM.
                if let Err(e) = self.split_vma_at(pid, s).and_then(|()| self.split_vma_at(pid, e)) {
                    return (pieces, Err(e));
                }
                self.mm_mut(pid).vmas.get_mut(s).expect("split vma").flags = flags;
            }
            pieces.push((s, e, changed));
            cursor = e;
        }
        let result = if hole || cursor < end { Err(Errno::NoMem) } else { Ok(()) };
        (pieces, result)
    }

    /// Merges the VMA starting at `start` with its neighbours where they are
    /// compatible; a merge that happens registers the mm with khugepaged if
    /// the merged VMA is eligible (`vma_merge_existing_range()` and
    /// `vma_merge_new_range()` call `khugepaged_enter_vma()`). Returns the
    /// start of the resulting VMA.
    pub(crate) fn vma_merge(&mut self, pid: Pid, start: Vaddr) -> Vaddr {
        let before = self.mm_ref(pid).vmas.get(start).map(|v| (v.start, v.end));
        let merged = self.mm_mut(pid).vmas.merge_around(start);
        let after = self.mm_ref(pid).vmas.get(merged).map(|v| (v.start, v.end));
        if before != after {
            self.khugepaged_enter_vma(pid, merged);
        }
        merged
    }

    /// Merges the VMAs in `[start, end)` with their neighbours where they can.
    pub(crate) fn merge_range(&mut self, pid: Pid, start: Vaddr, end: Vaddr) {
        let mut addr = start;
        while addr < end {
            let Some(vstart) = self.mm_ref(pid).vmas.find(addr).map(|v| v.start) else {
                match self.mm_ref(pid).vmas.next(addr) {
                    Some(n) if n.start < end => {
                        addr = n.start;
                        continue;
                    }
                    _ => break,
                }
            };
            let merged = self.vma_merge(pid, vstart);
            addr = self.mm_ref(pid).vmas.get(merged).expect("merged vma").end;
        }
    }

    /// mprotect(addr, len, prot).
    pub fn mprotect(&mut self, pid: Pid, addr: Vaddr, len: u64, prot: Prot) -> Result<(), Errno> {
        self.check_pid(pid)?;
        let end = check_range(addr, len)?;
        if end == addr {
            return Ok(());
        }
        self.begin_op("mprotect");
        let prot_flags = prot_to_vm_flags(prot);
        let mask = VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC);
        // VM_ACCOUNT as mprotect_fixup() keeps it: added when a mapping
        // becomes writable, dropped when an anonymous VMA that never faulted
        // (no anon_vma) becomes read-only. The flags then decide merges.
        let new_flags = move |f: VmFlags, has_anon_vma: bool| {
            let mut n = f.without(mask).union(prot_flags);
            if prot.write {
                n = n.union(VmFlags::ACCOUNT);
            } else if !has_anon_vma {
                n = n.without(VmFlags::ACCOUNT);
            }
            n
        };
        // mprotect_fixup(): a piece that becomes writable without having been
        // charged is charged now; a charge that fails ends the call with
        // ENOMEM there, the pieces before it changed.
        let limit = if prot.write { self.first_uncharged_piece_over_limit(pid, addr, end) } else { None };
        let (pieces, mut result) = self
            .modify_vma_flags_with(pid, addr, limit.unwrap_or(end), true, |v| new_flags(v.flags, v.anon_vma.is_some()));
        if limit.is_some() && result.is_ok() {
            result = Err(Errno::NoMem);
        }
        for (s, e, changed) in pieces {
            // mprotect_fixup() returns early when the flags do not change.
            if changed {
                self.change_protection(pid, s, e, prot.write);
            }
        }
        self.merge_range(pid, Vaddr(addr.0.saturating_sub(PAGE_SIZE)), end.add(PAGE_SIZE));
        self.end_op();
        result
    }

    /// The start of the first VMA piece of `[start, end)` that mprotect would
    /// charge (it is neither accounted nor writable) and whose charge
    /// `vm_enough_memory()` refuses.
    fn first_uncharged_piece_over_limit(&self, pid: Pid, start: Vaddr, end: Vaddr) -> Option<Vaddr> {
        self.mm_ref(pid)
            .vmas
            .overlapping(start, end)
            .filter(|v| !v.flags.contains(VmFlags::ACCOUNT) && !v.flags.contains(VmFlags::WRITE))
            .map(|v| (v.start.max(start), v.end.min(end)))
            .find(|(s, e)| self.vm_enough_memory((e.0 - s.0) / PAGE_SIZE).is_err())
            .map(|(s, _)| s)
    }

    /// `change_protection()`: write-protects entries, or makes writable the
    /// ones whose page is AnonExclusive (`can_change_pte_writable()`,
    /// `can_change_pmd_writable()`). The range is whole VMAs, so a PMD leaf
    /// is never partly inside; if one were, it would be split first, and a
    /// split that fails leaves it as it was (the lazy-PTE series retries
    /// there).
    fn change_protection(&mut self, pid: Pid, start: Vaddr, end: Vaddr, writable: bool) {
        let Ok(()) = self.walk(pid, start, end, &mut ChangeProtOps { pid, writable });
    }

    /// prctl(PR_SET_THP_DISABLE, ...). Inherited by fork.
    pub fn prctl_set_thp_disable(&mut self, pid: Pid, disable: ThpDisable) -> Result<(), Errno> {
        self.check_pid(pid)?;
        self.mm_mut(pid).thp_disable = disable;
        Ok(())
    }
}

/// The walk of `change_protection()`.
struct ChangeProtOps {
    pid: Pid,
    writable: bool,
}

impl WalkOps<World> for ChangeProtOps {
    type Error = std::convert::Infallible;

    /// `change_pmd_range()`: a leaf wholly inside is changed in place
    /// (`change_huge_pmd()`), one partly inside is split first.
    fn pmd_leaf(&mut self, w: &mut World, slot: Slot, _: Entry, start: Vaddr, end: Vaddr) -> Result<Walk, Self::Error> {
        if end.0 - start.0 == PMD_SIZE {
            w.change_huge_pmd(slot, self.writable);
            return Ok(Walk::Skip);
        }
        Ok(if w.split_huge_pmd(self.pid, start).is_ok() { Walk::Again } else { Walk::Skip })
    }

    /// `change_pte_range()`.
    fn pte_entry(&mut self, w: &mut World, slot: Slot, entry: Entry, _: Vaddr, _: usize) -> Result<Walk, Self::Error> {
        match entry {
            Entry::Page(leaf) => {
                let w_ok = self.writable && leaf.dirty && w.folios[leaf.folio].anon_exclusive.get(leaf.page as u64);
                w.set_entry(slot, Entry::Page(Leaf { writable: w_ok, ..leaf }));
            }
            Entry::None | Entry::Zero => {}
            Entry::Table(t) => unreachable!("the walker never hands a table {t:?} to pte_entry"),
        }
        Ok(Walk::Continue)
    }
}
