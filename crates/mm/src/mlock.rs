//! mlock() and munlock() of private anonymous memory: `VM_LOCKED` on the
//! VMAs of a range (splitting and merging them), and the population of the
//! locked range.
//!
//! Models: mm/mlock.c (`do_mlock()`, `apply_vma_lock_flags()`,
//! `mlock_fixup()`, `__mlock_posix_error_return()`) and mm/gup.c
//! (`__mm_populate()`, `populate_vma_page_range()`).
//! Not modelled: the unevictable LRU and the mlock count of folios (the
//! model has no LRU yet), `RLIMIT_MEMLOCK` (the model runs as root, with
//! CAP_IPC_LOCK), MLOCK_ONFAULT, mlockall().

use crate::errno::Errno;
use crate::mmap::check_range;
use crate::types::*;
use crate::vma::VmFlags;
use crate::world::World;

impl World {
    /// mlock(addr, len): locks the VMAs of the page-rounded range, then
    /// faults every page in. A hole in the range is ENOMEM (the VMAs before
    /// it stay locked); population failing for lack of memory is EAGAIN and
    /// on a PROT_NONE VMA ENOMEM, with the range left locked, as
    /// `__mlock_posix_error_return()` maps them.
    pub fn mlock(&mut self, pid: Pid, addr: Vaddr, len: u64) -> Result<(), Errno> {
        self.check_pid(pid)?;
        let (start, end) = lock_range(addr, len)?;
        if start == end {
            return Ok(());
        }
        self.begin_op("mlock");
        let result = self.apply_vma_lock_flags(pid, start, end, true).and_then(|()| {
            self.mm_populate(pid, start, end, false).map_err(|e| match e {
                Errno::Fault => Errno::NoMem,
                Errno::NoMem => Errno::Again,
                other => other,
            })
        });
        self.end_op();
        result
    }

    /// munlock(addr, len): clears `VM_LOCKED` over the range; the pages stay.
    pub fn munlock(&mut self, pid: Pid, addr: Vaddr, len: u64) -> Result<(), Errno> {
        self.check_pid(pid)?;
        let (start, end) = lock_range(addr, len)?;
        if start == end {
            return Ok(());
        }
        self.begin_op("munlock");
        let result = self.apply_vma_lock_flags(pid, start, end, false);
        self.end_op();
        result
    }

    /// `apply_vma_lock_flags()`: sets or clears `VM_LOCKED` VMA by VMA,
    /// splitting at the ends and merging after; a hole ends it with ENOMEM.
    fn apply_vma_lock_flags(&mut self, pid: Pid, start: Vaddr, end: Vaddr, lock: bool) -> Result<(), Errno> {
        let result = self.modify_vma_flags(pid, start, end, true, |f| {
            if lock {
                f.union(VmFlags::LOCKED)
            } else {
                f.without(VmFlags::LOCKED)
            }
        });
        self.merge_range(pid, Vaddr(start.0.saturating_sub(PAGE_SIZE)), end.add(PAGE_SIZE));
        result.map(|_| ())
    }

    /// `__mm_populate()`: faults in every page of the VMAs inside the range
    /// as `populate_vma_page_range()` does: a write fault where the mapping
    /// is private and writable (breaking COW), a forced read otherwise; a
    /// PROT_NONE VMA is EFAULT. Stops at the first error unless
    /// `ignore_errors` (then it goes on at the next VMA).
    pub(crate) fn mm_populate(&mut self, pid: Pid, start: Vaddr, end: Vaddr, ignore_errors: bool) -> Result<(), Errno> {
        let pieces: Vec<(Vaddr, Vaddr, VmFlags)> = self
            .mm_ref(pid)
            .vmas
            .overlapping(start, end)
            .map(|v| (v.start.max(start), v.end.min(end), v.flags))
            .collect();
        'vmas: for (s, e, flags) in pieces {
            let accessible =
                flags.contains(VmFlags::READ) || flags.contains(VmFlags::WRITE) || flags.contains(VmFlags::EXEC);
            if !accessible {
                if ignore_errors {
                    continue;
                }
                return Err(Errno::Fault);
            }
            let write = flags.contains(VmFlags::WRITE);
            let mut a = s;
            while a < e {
                if let Err(err) = self.gup_fault_flags(pid, a, write, !write) {
                    if ignore_errors {
                        continue 'vmas;
                    }
                    return Err(err);
                }
                a = a.add(PAGE_SIZE);
            }
        }
        Ok(())
    }
}

/// `do_mlock()`'s range: the start rounded down to a page, the length
/// grown by the start's offset and rounded up.
fn lock_range(addr: Vaddr, len: u64) -> Result<(Vaddr, Vaddr), Errno> {
    let start = addr.align_down(PAGE_SIZE);
    let len = len.checked_add(addr.0 - start.0).ok_or(Errno::Inval)?;
    let end = check_range(start, len)?;
    Ok((start, end))
}
