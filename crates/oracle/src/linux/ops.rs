//! Performing each `Op`: system calls through the process's worker, THP
//! knobs through sysfs, khugepaged and shrinker steps on the host.

use std::io;

use thpsim_mm::Errno;
use thpsim_workload::{Access, Advice, Fill, Op, ProcId, Prot, Setting};

use super::executor::Worker;
use super::protocol::{self, Cmd, MAX_RUNS_PER_MSG};
use super::{io_error, khugepaged, procfs, sysfs, LinuxBackend, Proc, PAGE_SIZE};
use crate::{BackendError, OpResult};
use thpsim_mm::mman::NONZERO_FILL;

impl LinuxBackend {
    fn proc_mut(&mut self, proc: ProcId) -> Result<&mut Proc, BackendError> {
        self.procs.get_mut(&proc).ok_or_else(|| BackendError::Executor(format!("p{} is not running", proc.0 + 1)))
    }

    /// Calls into a process's worker and turns the reply into the kernel's answer.
    fn call(&mut self, op: &Op, proc: ProcId, cmd: Cmd, args: [u64; 7]) -> Result<(OpResult, u64), BackendError> {
        let reply = self.proc_mut(proc)?.worker.call(cmd, args, &[])?;
        Ok((errno_result(op, reply.status)?, reply.value))
    }

    pub(super) fn apply_op(&mut self, op: &Op) -> Result<OpResult, BackendError> {
        match *op {
            Op::Set { setting } => self.set(setting),
            Op::Spawn { proc } => self.spawn(proc),
            Op::Fork { parent, child } => self.fork(op, parent, child),
            Op::Exit { proc } => {
                let entry = self
                    .procs
                    .remove(&proc)
                    .ok_or_else(|| BackendError::Executor(format!("p{} is not running", proc.0 + 1)))?;
                self.pins.retain(|_, owner| *owner != proc);
                entry.worker.exit()?;
                Ok(Ok(()))
            }
            Op::Mmap { proc, addr, len, prot } => {
                Ok(self.call(op, proc, Cmd::Mmap, [addr, len, prot_word(prot), 0, 0, 0, 0])?.0)
            }
            Op::MmapFixed { proc, addr, len, prot } => {
                Ok(self.call(op, proc, Cmd::Mmap, [addr, len, prot_word(prot), 1, 0, 0, 0])?.0)
            }
            Op::Mlock { proc, addr, len } => Ok(self.call(op, proc, Cmd::Mlock, [addr, len, 0, 0, 0, 0, 0])?.0),
            Op::Munlock { proc, addr, len } => Ok(self.call(op, proc, Cmd::Munlock, [addr, len, 0, 0, 0, 0, 0])?.0),
            Op::MremapInPlace { proc, old_addr, old_len, new_len } => {
                let args = [old_addr, old_len, new_len, 0, 0, 1, 0];
                Ok(self.call(op, proc, Cmd::Mremap, args)?.0)
            }
            Op::Munmap { proc, addr, len } => Ok(self.call(op, proc, Cmd::Munmap, [addr, len, 0, 0, 0, 0, 0])?.0),
            Op::Mprotect { proc, addr, len, prot } => {
                Ok(self.call(op, proc, Cmd::Mprotect, [addr, len, prot_word(prot), 0, 0, 0, 0])?.0)
            }
            Op::Mremap { proc, old_addr, old_len, new_len, new_addr } => {
                let args = [old_addr, old_len, new_len, new_addr.is_some() as u64, new_addr.unwrap_or(0), 0, 0];
                let (result, moved_to) = self.call(op, proc, Cmd::Mremap, args)?;
                if result.is_ok() && new_addr.is_none() && moved_to != old_addr {
                    self.warnings.push(format!(
                        "mremap of {old_addr:#x} moved it to {moved_to:#x}, an address the kernel chose and the model cannot know"
                    ));
                }
                Ok(result)
            }
            Op::Madvise { proc, addr, len, advice } => {
                // These act only on folios on the LRU; the model has no
                // per-CPU batches, so drain them (see `drain_lru_batches`).
                if matches!(advice, Advice::Free | Advice::Cold | Advice::PageOut) {
                    procfs::drain_lru_batches().map_err(io_error("draining the LRU batches"))?;
                }
                Ok(self.call(op, proc, Cmd::Madvise, [addr, len, advice.code() as u64, 0, 0, 0, 0])?.0)
            }
            Op::Touch { proc, addr, len, access, fill, pattern } => {
                let first_page = addr & !(PAGE_SIZE - 1);
                let nr_pages = (addr + len).div_ceil(PAGE_SIZE) - first_page / PAGE_SIZE;
                let addrs: Vec<u64> = pattern
                    .page_indices(if len == 0 { 0 } else { nr_pages })
                    .into_iter()
                    .map(|i| (first_page + i * PAGE_SIZE).max(addr))
                    .collect();
                self.touch(op, proc, &addrs, access, fill)
            }
            Op::Prctl { proc, disable } => {
                let (arg2, arg3) = disable.prctl_args();
                Ok(self.call(op, proc, Cmd::Prctl, [arg2, arg3, 0, 0, 0, 0, 0])?.0)
            }
            // io_uring pins with FOLL_LONGTERM either way. For anonymous
            // memory outside ZONE_MOVABLE and CMA (all of it on this host)
            // a long-term pin differs from a short one only in that it would
            // first migrate the pages out of those zones.
            Op::Pin { proc, pin, addr, len, longterm: _ } => {
                if self.pins.contains_key(&pin) {
                    return Err(BackendError::Executor(format!("pin {} is already held", pin.0)));
                }
                let (result, _) = self.call(op, proc, Cmd::Pin, [u64::from(pin.0), addr, len, 0, 0, 0, 0])?;
                if result.is_ok() {
                    self.pins.insert(pin, proc);
                }
                Ok(result)
            }
            Op::Unpin { pin } => {
                let Some(proc) = self.pins.remove(&pin) else {
                    return Ok(Err(Errno::Inval));
                };
                Ok(self.call(op, proc, Cmd::Unpin, [u64::from(pin.0), 0, 0, 0, 0, 0, 0])?.0)
            }
            Op::Khugepaged { full_scans } => self.khugepaged(full_scans),
            Op::Shrink => {
                procfs::drop_caches().map_err(io_error("running the shrinkers"))?;
                Ok(Ok(()))
            }
        }
    }

    fn set(&mut self, setting: Setting) -> Result<OpResult, BackendError> {
        // A hand-built setting may hold a value the kernel refuses; answer
        // as the kernel's store would, without writing.
        if !setting.in_range() {
            return Ok(Err(Errno::Inval));
        }
        match setting {
            // Held back: writing either would wake khugepaged. The scenario's
            // khugepaged steps use its pages_to_scan.
            Setting::KhugepagedScanSleepMillisecs(_) => Ok(Ok(())),
            Setting::KhugepagedPagesToScan(n) => {
                self.scenario_pages_to_scan = Some(n.to_string());
                Ok(Ok(()))
            }
            _ => {
                let path = setting.knob().path();
                let Some(settings) = self.settings.as_mut() else {
                    return Err(BackendError::Executor("the THP settings are no longer saved".into()));
                };
                // A knob this host lacks (a per-size directory of another
                // page size) is refused as the shell would refuse the write.
                if !sysfs::is_writable_knob(&path) || settings.track(&path).is_err() {
                    return Ok(Err(Errno::Inval));
                }
                Ok(match sysfs::write_knob(&path, &setting.value()) {
                    Ok(()) => Ok(()),
                    Err(_) => Err(Errno::Inval),
                })
            }
        }
    }

    fn spawn(&mut self, proc: ProcId) -> Result<OpResult, BackendError> {
        if self.procs.contains_key(&proc) {
            return Err(BackendError::Executor(format!("p{} is already running", proc.0 + 1)));
        }
        let mut worker = Worker::spawn(&format!("p{}", proc.0 + 1))?;
        if let Some(memcg) = &self.memcg {
            memcg
                .add(worker.pid)
                .map_err(io_error(format!("moving {} into the scenario's memory cgroup", worker.label)))?;
        }
        populate_file_mappings(&mut worker)?;
        let vm_pte_base_kb = worker.vm_pte_kb()?;
        self.procs.insert(proc, Proc { worker, vm_pte_base_kb });
        Ok(Ok(()))
    }

    fn fork(&mut self, op: &Op, parent: ProcId, child: ProcId) -> Result<OpResult, BackendError> {
        if self.procs.contains_key(&child) {
            return Err(BackendError::Executor(format!("p{} is already running", child.0 + 1)));
        }
        let parent_proc = self.proc_mut(parent)?;
        let vm_pte_base_kb = parent_proc.vm_pte_base_kb;
        let mut worker = match parent_proc.worker.fork(&format!("p{}", child.0 + 1))? {
            Ok(worker) => worker,
            Err(errno) => return errno_result(op, i64::from(errno)),
        };
        populate_file_mappings(&mut worker)?;
        self.procs.insert(child, Proc { worker, vm_pte_base_kb });
        Ok(Ok(()))
    }

    /// `Backend::read_words`: one load per page start, in order, through
    /// the worker; a page no mapping lets the process read ends it with
    /// EFAULT (checked against its maps first, so the worker never faults).
    pub(super) fn read_words_inner(
        &mut self,
        proc: ProcId,
        addr: u64,
        nr_pages: u64,
    ) -> Result<crate::WordsRead, BackendError> {
        let worker = &mut self.proc_mut(proc)?.worker;
        let maps = procfs::read_maps(worker.pid).map_err(io_error(format!("reading the maps of {}", worker.label)))?;
        let readable = |addr: u64| match maps.partition_point(|vma| vma.end <= addr) {
            i if i < maps.len() && maps[i].start <= addr => maps[i].read || maps[i].write || maps[i].exec,
            _ => false,
        };
        let mut read = crate::WordsRead::default();
        for i in 0..nr_pages {
            let page = addr + i * PAGE_SIZE;
            if !readable(page) {
                read.error = Some(Errno::Fault);
                break;
            }
            let reply = worker.call(Cmd::ReadWord, [page, 0, 0, 0, 0, 0, 0], &[])?;
            if reply.status != 0 {
                return Err(BackendError::Executor(format!(
                    "{} could not load the word at {page:#x} (status {})",
                    worker.label, reply.status
                )));
            }
            read.words.push(reply.value);
        }
        Ok(read)
    }

    fn touch(
        &mut self,
        op: &Op,
        proc: ProcId,
        addrs: &[u64],
        access: Access,
        fill: Fill,
    ) -> Result<OpResult, BackendError> {
        let write = access == Access::Write;
        let worker = &mut self.proc_mut(proc)?.worker;
        // A worker must never fault with SIGSEGV: check each access against
        // its maps first. Like a program touching pages in order, it touches
        // every page before the first one it may not access, then the
        // operation answers EFAULT (as the model does).
        let maps = procfs::read_maps(worker.pid).map_err(io_error(format!("reading the maps of {}", worker.label)))?;
        let accessible = |addr: u64| match maps.partition_point(|vma| vma.end <= addr) {
            // x86 lets any accessible mapping be read (access_error() in
            // arch/x86/mm/fault.c); stores need VM_WRITE.
            i if i < maps.len() && maps[i].start <= addr => {
                let vma = &maps[i];
                if write {
                    vma.write
                } else {
                    vma.read || vma.write || vma.exec
                }
            }
            _ => false,
        };
        let allowed = addrs.iter().take_while(|&&a| accessible(a)).count();
        let fault = allowed < addrs.len();
        let addrs = &addrs[..allowed];
        // A byte at each page's start, or a pattern word: the word for page
        // i of the touched range (from `base`) is `pattern_word(tag, i)`.
        let (value, pattern, tag) = match fill {
            Fill::NonZero => (NONZERO_FILL, 0, 0),
            Fill::Zero => (0, 0, 0),
            Fill::Pattern(tag) => (0, 1, tag),
        };
        let base = match op {
            Op::Touch { addr, .. } => *addr,
            _ => addrs.first().copied().unwrap_or(0),
        };
        let runs = protocol::compress_runs(addrs);
        for chunk in runs.chunks(MAX_RUNS_PER_MSG) {
            let payload: Vec<u64> = chunk.iter().flatten().copied().collect();
            let args = [write as u64, u64::from(value), chunk.len() as u64, pattern, tag, base, 0];
            let reply = worker.call(Cmd::Touch, args, &payload)?;
            let result = errno_result(op, reply.status)?;
            if result.is_err() {
                return Ok(result);
            }
        }
        Ok(if fault { Err(Errno::Fault) } else { Ok(()) })
    }

    fn khugepaged(&mut self, full_scans: u32) -> Result<OpResult, BackendError> {
        if khugepaged::thread_pid().is_none() {
            self.warnings.push("khugepaged is not running (THP is disabled at every size): nothing to scan".into());
            return Ok(Ok(()));
        }
        let pages = self.scenario_pages_to_scan.clone().unwrap_or_else(khugepaged::default_pages_to_scan);
        match khugepaged::run_full_scans(full_scans, &pages, self.options.khugepaged_stall_timeout) {
            Ok(()) => Ok(Ok(())),
            Err(khugepaged::RunError::Io(err)) => Err(io_error("running khugepaged")(err)),
            Err(khugepaged::RunError::Stalled { from, reached, wanted, stalled }) => Err(BackendError::Executor(format!(
                "khugepaged: full_scans went from {from} to {reached}, wanted {wanted}, then did not move for {stalled:?}"
            ))),
        }
    }
}

/// The kernel's answer as an `OpResult`; an errno thpsim has no name for
/// stops the scenario.
fn errno_result(op: &Op, status: i64) -> Result<OpResult, BackendError> {
    if status == 0 {
        return Ok(Ok(()));
    }
    match Errno::from_code(status as i32) {
        Some(errno) => Ok(Err(errno)),
        None => Err(BackendError::Unsupported {
            backend: "linux",
            what: format!(
                "{op:?} failed with errno {status} ({}), which thpsim_mm::Errno has no name for",
                io::Error::from_raw_os_error(status as i32)
            ),
        }),
    }
}

/// `Prot` as the request's word: the kernel's `PROT_*` bits.
fn prot_word(prot: Prot) -> u64 {
    u64::from(prot.bits())
}

/// Faults in every file mapping of a new worker (read-only, so no anonymous
/// memory is made), so the worker's own page tables are all there before
/// its `VmPTE` baseline is read and stay constant afterwards; fork does not
/// copy page tables of file mappings, so a forked worker does it too.
fn populate_file_mappings(worker: &mut Worker) -> Result<(), BackendError> {
    let maps = procfs::read_maps(worker.pid).map_err(io_error(format!("reading the maps of {}", worker.label)))?;
    for vma in maps.iter().filter(|vma| vma.inode != 0 && !vma.name.starts_with('[') && (vma.read || vma.exec)) {
        // Errors (a mapping past the end of its file) do not matter here.
        worker.call(Cmd::Populate, [vma.start, vma.end - vma.start, 0, 0, 0, 0, 0], &[])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prot_words() {
        assert_eq!(prot_word(Prot::NONE), 0);
        assert_eq!(prot_word(Prot::READ), 1);
        assert_eq!(prot_word(Prot::READ_WRITE), 3);
        assert_eq!(prot_word(Prot { read: true, write: false, exec: true }), 5);
    }
}
