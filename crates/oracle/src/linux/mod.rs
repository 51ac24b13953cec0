//! The Linux backend: runs a scenario's operations for real on the host
//! kernel and reports what memory looks like, in the same `Observation` the
//! model produces.
//!
//! Each scenario process is a real process, a *worker* (worker.rs), driven
//! by this controller over a socket (protocol.rs, executor.rs). Workers map
//! memory at the scenario's exact addresses (MAP_FIXED_NOREPLACE), so
//! observations compare with the model's address for address. An
//! observation reads smaps, `VmPTE`, pagemap, kpageflags, kpagecount and
//! `PAGEMAP_SCAN` per process (procfs.rs, pagemap_scan.rs), and /proc/vmstat
//! and the per-size stats as deltas since the backend started.
//!
//! The host is shared, so the backend: takes an exclusive `flock` on a lock
//! file for its lifetime; saves every THP knob and restores it on drop, on
//! the first error, on SIGINT/SIGTERM/SIGHUP/SIGQUIT, and at the next start
//! after a SIGKILL (sysfs.rs, signals.rs); keeps khugepaged asleep except in
//! the scenario's khugepaged steps, and warns when `pages_collapsed` moved
//! during any other step (khugepaged.rs).
//!
//! What differs from a fresh process: a worker is forked from the
//! controller, so it also maps the controller's memory. Scenario addresses
//! must lie away from it (e.g. 0x2000_0000_0000 and up, their own 512 GiB
//! slot, so that they share no page-table page with it). `vm_pte_kb` is
//! `VmPTE` minus the worker's own page tables, measured when it started
//! (after faulting in all its file mappings, so that it stays constant); a
//! forked child is taken to own as many as its parent, which fork copies.

#![deny(clippy::undocumented_unsafe_blocks)]

mod executor;
mod khugepaged;
mod pagemap_scan;
mod procfs;
mod protocol;
mod signals;
mod sys;
mod sysfs;
mod worker;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thpsim_mm::Errno;
use thpsim_workload::{Access, Fill, Op, PinRef, ProcId, Prot, ThpDisable};

use crate::{
    normalise_folios, Backend, BackendError, Observation, OpResult, PageObs, PageState, ProcObs,
    RegionObs, RegionRef, VmaObs, MTHP_SIZES_KB, MTHP_STATS, VMSTAT_COUNTERS,
};
use executor::Worker;
use procfs::{Kpages, PM_MMAP_EXCLUSIVE, PM_PFN_MASK, PM_PRESENT, PM_SWAP};
use protocol::{Cmd, MAX_RUNS_PER_MSG};
use sysfs::SettingsGuard;

pub use sysfs::{read_knob, ThpSettings, THP_ROOT};

/// The byte a `Fill::NonZero` store writes at the first byte of each page.
pub const NONZERO_FILL: u8 = 0x5a;

/// The base page size; the backend refuses hosts with another.
const PAGE_SIZE: u64 = 4096;

/// The smaps `VmFlags` mnemonics an observation carries.
const MODELLED_VM_FLAGS: [&str; 6] = ["rd", "wr", "ex", "hg", "nh", "dc"];

/// Where and how long the backend waits for the host.
#[derive(Clone, Debug)]
pub struct LinuxOptions {
    /// The lock file; one Linux backend per host at a time.
    pub lock_path: PathBuf,
    /// Where the saved THP settings are kept while a scenario runs, so that
    /// the next start can restore them after a SIGKILL.
    pub saved_settings_path: PathBuf,
    /// How long to wait for another backend to release the lock.
    pub lock_wait: Duration,
    /// A khugepaged step fails when `full_scans` stops moving this long.
    pub khugepaged_stall_timeout: Duration,
}

impl Default for LinuxOptions {
    fn default() -> Self {
        LinuxOptions {
            lock_path: PathBuf::from("/run/thpsim-oracle.lock"),
            saved_settings_path: PathBuf::from("/run/thpsim-oracle.settings"),
            lock_wait: Duration::from_secs(300),
            khugepaged_stall_timeout: Duration::from_secs(60),
        }
    }
}

/// One scenario process.
struct Proc {
    worker: Worker,
    /// The worker's own page tables, in kB (see the module docs).
    vm_pte_base_kb: u64,
}

/// Runs scenarios on the live kernel. See the module docs.
pub struct LinuxBackend {
    options: LinuxOptions,
    procs: BTreeMap<ProcId, Proc>,
    /// The pin's process.
    pins: BTreeMap<PinRef, ProcId>,
    /// Keeps an mm on khugepaged's list (see khugepaged.rs).
    sentinel: Option<Worker>,
    settings: Option<SettingsGuard>,
    /// `khugepaged/pages_to_scan` as the scenario set it; used in its
    /// khugepaged steps. (Its `scan_sleep_millisecs` is accepted and
    /// otherwise ignored: khugepaged runs only in those steps.)
    scenario_pages_to_scan: Option<String>,
    /// `PR_GET_THP_DISABLE` of the controller before the backend set it.
    controller_thp_disable: Option<libc::c_int>,
    base_vmstat: BTreeMap<String, i64>,
    base_mthp: BTreeMap<String, i64>,
    kpages: Option<Kpages>,
    warnings: Vec<String>,
    /// Set after the first `BackendError`: the host was cleaned up and the
    /// backend refuses further work.
    failed: Option<String>,
    lock: Option<File>,
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
    let context = context.into();
    move |source| BackendError::Io { context, source }
}

fn precondition(what: impl Into<String>) -> BackendError {
    BackendError::Precondition(what.into())
}

impl LinuxBackend {
    /// Checks that this host can run the backend: root, 4 KiB pages, THP
    /// sysfs, readable /proc/kpageflags and /proc/kpagecount, and the
    /// `PAGEMAP_SCAN` ioctl (Linux 6.7+).
    pub fn check_host() -> Result<(), BackendError> {
        let euid = sys::geteuid();
        if euid != 0 {
            return Err(precondition(format!(
                "the Linux backend must run as root (effective uid is {euid})"
            )));
        }
        let page_size = sys::page_size();
        if page_size != PAGE_SIZE {
            return Err(precondition(format!(
                "the host's page size is {page_size} bytes, not 4096"
            )));
        }
        if !Path::new(THP_ROOT).join("enabled").exists() {
            return Err(precondition(format!(
                "{THP_ROOT}/enabled does not exist: no transparent hugepage support"
            )));
        }
        for path in ["/proc/kpageflags", "/proc/kpagecount"] {
            let mut word = [0u8; 8];
            let readable = File::open(path).and_then(|f| {
                use std::os::unix::fs::FileExt;
                f.read_exact_at(&mut word, 0)
            });
            if let Err(err) = readable {
                return Err(precondition(format!("{path} is not readable: {err}")));
            }
        }
        match pagemap_scan::available() {
            Ok(true) => {}
            Ok(false) => {
                return Err(precondition(
                    "the PAGEMAP_SCAN ioctl is missing (needs Linux 6.7 or later)",
                ))
            }
            Err(err) => return Err(precondition(format!("probing PAGEMAP_SCAN failed: {err}"))),
        }
        for path in ["/proc/sys/vm/stat_refresh", "/proc/sys/vm/drop_caches"] {
            if !Path::new(path).exists() {
                return Err(precondition(format!("{path} does not exist")));
            }
        }
        Ok(())
    }

    /// Starts a backend with the default options.
    pub fn new() -> Result<LinuxBackend, BackendError> {
        LinuxBackend::with_options(LinuxOptions::default())
    }

    /// Checks the host, takes the lock, saves the THP settings, quiets
    /// khugepaged, and reads the counters' baseline.
    pub fn with_options(options: LinuxOptions) -> Result<LinuxBackend, BackendError> {
        LinuxBackend::check_host()?;
        let lock = acquire_lock(&options.lock_path, options.lock_wait)?;
        let warnings =
            sysfs::recover_stale(&options.saved_settings_path).map_err(io_error(format!(
                "restoring settings from {}",
                options.saved_settings_path.display()
            )))?;
        let settings = SettingsGuard::save(Some(options.saved_settings_path.clone()))
            .map_err(io_error("saving the THP settings"))?;
        // From here on, dropping `backend` (also on an error below) undoes
        // everything done so far.
        let mut backend = LinuxBackend {
            options,
            procs: BTreeMap::new(),
            pins: BTreeMap::new(),
            sentinel: None,
            settings: Some(settings),
            scenario_pages_to_scan: None,
            controller_thp_disable: None,
            base_vmstat: BTreeMap::new(),
            base_mthp: BTreeMap::new(),
            kpages: None,
            warnings,
            failed: None,
            lock: Some(lock),
        };
        backend.start()?;
        Ok(backend)
    }

    fn start(&mut self) -> Result<(), BackendError> {
        // No THP in the controller's own memory, which every worker inherits:
        // a worker's write to an inherited THP would split it and move the
        // scenario's counters.
        let before = sys::get_thp_disable().map_err(io_error("prctl(PR_GET_THP_DISABLE)"))?;
        sys::set_thp_disable(true, 0)
            .map_err(io_error("prctl(PR_SET_THP_DISABLE) on the controller"))?;
        self.controller_thp_disable = Some(before);

        khugepaged::quiet().map_err(io_error("quieting khugepaged"))?;
        let mut sentinel = Worker::spawn("sentinel")?;
        let reply = sentinel.call(Cmd::Sentinel, [0; 7], &[])?;
        if reply.status != 0 {
            self.warnings.push(format!(
                "the khugepaged sentinel could not map its THP ({}); khugepaged may wake when a scenario process first registers",
                io::Error::from_raw_os_error(reply.status as i32)
            ));
        } else {
            let thp_kb: u64 = procfs::read_smaps(sentinel.pid)
                .map_err(io_error("reading the sentinel's smaps"))?
                .iter()
                .map(|vma| vma.anon_huge_pages_kb)
                .sum();
            if thp_kb == 0 {
                self.warnings.push(
                    "the khugepaged sentinel got no THP (THP disabled?); khugepaged may wake when a scenario process first registers"
                        .to_string(),
                );
            }
        }
        self.sentinel = Some(sentinel);
        if !khugepaged::wait_idle(Duration::from_secs(5)) {
            self.warnings
                .push("khugepaged did not go idle within 5 s of being quieted".to_string());
        }
        self.kpages = Some(Kpages::open().map_err(io_error("opening /proc/kpageflags"))?);
        self.refresh_stats();
        self.base_vmstat = procfs::read_vmstat().map_err(io_error("reading /proc/vmstat"))?;
        self.base_mthp = sysfs::read_mthp_stats(MTHP_SIZES_KB, MTHP_STATS)
            .map_err(io_error("reading the per-size THP stats"))?;
        Ok(())
    }

    /// Warnings about the run so far: background khugepaged activity,
    /// surprises that do not stop the scenario, clean-up problems.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Returns the warnings and forgets them.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The host pid of a scenario process, while it runs.
    pub fn pid(&self, proc: ProcId) -> Option<i32> {
        self.procs.get(&proc).map(|p| p.worker.pid)
    }

    fn refresh_stats(&mut self) {
        if let Err(err) = procfs::stat_refresh() {
            self.warnings
                .push(format!("stat_refresh failed, nr_* counters may lag: {err}"));
        }
    }

    fn usable(&self) -> Result<(), BackendError> {
        match &self.failed {
            Some(first) => Err(BackendError::Executor(format!(
                "the Linux backend stopped after an earlier error: {first}"
            ))),
            None => Ok(()),
        }
    }

    /// Cleans up the host after an error, so nothing stays changed even if
    /// the caller exits without dropping the backend.
    fn fail(&mut self, err: BackendError) -> BackendError {
        if self.failed.is_none() {
            self.failed = Some(err.to_string());
            self.shutdown();
        }
        err
    }

    /// Kills every worker, restores the THP settings and the controller's
    /// THP state, removes the signal handlers, releases the lock. Idempotent.
    fn shutdown(&mut self) {
        let procs = std::mem::take(&mut self.procs);
        for (_, proc) in procs.into_iter().rev() {
            if let Err(err) = proc.worker.kill() {
                self.warnings.push(format!("killing a worker: {err}"));
            }
        }
        self.pins.clear();
        if let Some(sentinel) = self.sentinel.take() {
            if let Err(err) = sentinel.kill() {
                self.warnings
                    .push(format!("killing the khugepaged sentinel: {err}"));
            }
        }
        if let Some(mut settings) = self.settings.take() {
            let errors = settings.restore();
            self.warnings.extend(errors);
            // Dropping the guard removes the signal handlers.
        }
        if let Some(before) = self.controller_thp_disable.take() {
            let restored = match before {
                0 => sys::set_thp_disable(false, 0),
                1 => sys::set_thp_disable(true, 0),
                _ => sys::set_thp_disable(true, sys::PR_THP_DISABLE_EXCEPT_ADVISED),
            };
            if let Err(err) = restored {
                self.warnings.push(format!(
                    "could not restore the controller's PR_SET_THP_DISABLE ({before}): {err}"
                ));
            }
        }
        self.lock = None;
    }

    fn proc_mut(&mut self, proc: ProcId) -> Result<&mut Proc, BackendError> {
        self.procs
            .get_mut(&proc)
            .ok_or_else(|| BackendError::Executor(format!("p{} is not running", proc.0 + 1)))
    }

    /// Calls into a process's worker and turns the reply into the kernel's answer.
    fn call(
        &mut self,
        op: &Op,
        proc: ProcId,
        cmd: Cmd,
        args: [u64; 7],
    ) -> Result<(OpResult, u64), BackendError> {
        let reply = self.proc_mut(proc)?.worker.call(cmd, args, &[])?;
        Ok((errno_result(op, reply.status)?, reply.value))
    }

    fn apply_op(&mut self, op: &Op) -> Result<OpResult, BackendError> {
        match *op {
            Op::Set {
                ref path,
                ref value,
            } => self.set(path, value),
            Op::Spawn { proc } => self.spawn(proc),
            Op::Fork { parent, child } => self.fork(op, parent, child),
            Op::Exit { proc } => {
                let entry = self.procs.remove(&proc).ok_or_else(|| {
                    BackendError::Executor(format!("p{} is not running", proc.0 + 1))
                })?;
                self.pins.retain(|_, owner| *owner != proc);
                entry.worker.exit()?;
                Ok(Ok(()))
            }
            Op::Mmap {
                proc,
                addr,
                len,
                prot,
            } => Ok(self
                .call(
                    op,
                    proc,
                    Cmd::Mmap,
                    [addr, len, prot_word(prot), 0, 0, 0, 0],
                )?
                .0),
            Op::Munmap { proc, addr, len } => Ok(self
                .call(op, proc, Cmd::Munmap, [addr, len, 0, 0, 0, 0, 0])?
                .0),
            Op::Mprotect {
                proc,
                addr,
                len,
                prot,
            } => Ok(self
                .call(
                    op,
                    proc,
                    Cmd::Mprotect,
                    [addr, len, prot_word(prot), 0, 0, 0, 0],
                )?
                .0),
            Op::Mremap {
                proc,
                old_addr,
                old_len,
                new_len,
                new_addr,
            } => {
                let args = [
                    old_addr,
                    old_len,
                    new_len,
                    new_addr.is_some() as u64,
                    new_addr.unwrap_or(0),
                    0,
                    0,
                ];
                let (result, moved_to) = self.call(op, proc, Cmd::Mremap, args)?;
                if result.is_ok() && new_addr.is_none() && moved_to != old_addr {
                    self.warnings.push(format!(
                        "mremap of {old_addr:#x} moved it to {moved_to:#x}, an address the kernel chose and the model cannot know"
                    ));
                }
                Ok(result)
            }
            Op::Madvise {
                proc,
                addr,
                len,
                advice,
            } => Ok(self
                .call(
                    op,
                    proc,
                    Cmd::Madvise,
                    [addr, len, advice.code() as u64, 0, 0, 0, 0],
                )?
                .0),
            Op::Touch {
                proc,
                addr,
                len,
                access,
                fill,
                pattern,
            } => {
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
                let (arg2, arg3) = match disable {
                    ThpDisable::Off => (0, 0),
                    ThpDisable::All => (1, 0),
                    ThpDisable::ExceptAdvised => (1, sys::PR_THP_DISABLE_EXCEPT_ADVISED),
                };
                Ok(self
                    .call(op, proc, Cmd::Prctl, [arg2, arg3, 0, 0, 0, 0, 0])?
                    .0)
            }
            Op::Pin {
                proc,
                pin,
                addr,
                len,
                longterm: _,
            } => {
                if self.pins.contains_key(&pin) {
                    return Err(BackendError::Executor(format!(
                        "pin {} is already held",
                        pin.0
                    )));
                }
                let (result, _) = self.call(
                    op,
                    proc,
                    Cmd::Pin,
                    [u64::from(pin.0), addr, len, 0, 0, 0, 0],
                )?;
                if result.is_ok() {
                    self.pins.insert(pin, proc);
                }
                Ok(result)
            }
            Op::Unpin { pin } => {
                let Some(proc) = self.pins.remove(&pin) else {
                    return Ok(Err(Errno::Inval));
                };
                Ok(self
                    .call(op, proc, Cmd::Unpin, [u64::from(pin.0), 0, 0, 0, 0, 0, 0])?
                    .0)
            }
            Op::Khugepaged { full_scans } => self.khugepaged(full_scans),
            Op::Shrink => {
                procfs::drop_caches().map_err(io_error("running the shrinkers"))?;
                Ok(Ok(()))
            }
        }
    }

    fn set(&mut self, path: &str, value: &str) -> Result<OpResult, BackendError> {
        if !sysfs::is_safe_knob_path(path) {
            return Ok(Err(Errno::Inval));
        }
        let number = value.trim().parse::<u32>().ok();
        match path {
            // Held back: writing either would wake khugepaged. The scenario's
            // khugepaged steps use its pages_to_scan.
            "khugepaged/scan_sleep_millisecs" => Ok(if number.is_some() {
                Ok(())
            } else {
                Err(Errno::Inval)
            }),
            "khugepaged/pages_to_scan" => match number {
                Some(n) if n > 0 => {
                    self.scenario_pages_to_scan = Some(n.to_string());
                    Ok(Ok(()))
                }
                _ => Ok(Err(Errno::Inval)),
            },
            _ => {
                let Some(settings) = self.settings.as_mut() else {
                    return Err(BackendError::Executor(
                        "the THP settings are no longer saved".into(),
                    ));
                };
                if settings.track(path).is_err() {
                    return Ok(Err(Errno::Inval));
                }
                Ok(match sysfs::write_knob(path, value) {
                    Ok(()) => Ok(()),
                    Err(_) => Err(Errno::Inval),
                })
            }
        }
    }

    fn spawn(&mut self, proc: ProcId) -> Result<OpResult, BackendError> {
        if self.procs.contains_key(&proc) {
            return Err(BackendError::Executor(format!(
                "p{} is already running",
                proc.0 + 1
            )));
        }
        let mut worker = Worker::spawn(&format!("p{}", proc.0 + 1))?;
        populate_file_mappings(&mut worker)?;
        let vm_pte_base_kb = worker.vm_pte_kb()?;
        self.procs.insert(
            proc,
            Proc {
                worker,
                vm_pte_base_kb,
            },
        );
        Ok(Ok(()))
    }

    fn fork(&mut self, op: &Op, parent: ProcId, child: ProcId) -> Result<OpResult, BackendError> {
        if self.procs.contains_key(&child) {
            return Err(BackendError::Executor(format!(
                "p{} is already running",
                child.0 + 1
            )));
        }
        let parent_proc = self.proc_mut(parent)?;
        let vm_pte_base_kb = parent_proc.vm_pte_base_kb;
        let mut worker = match parent_proc.worker.fork(&format!("p{}", child.0 + 1))? {
            Ok(worker) => worker,
            Err(errno) => return errno_result(op, i64::from(errno)),
        };
        populate_file_mappings(&mut worker)?;
        self.procs.insert(
            child,
            Proc {
                worker,
                vm_pte_base_kb,
            },
        );
        Ok(Ok(()))
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
        // its maps first and answer EFAULT, touching nothing, as a program
        // that checks before it touches would see.
        let maps = procfs::read_maps(worker.pid)
            .map_err(io_error(format!("reading the maps of {}", worker.label)))?;
        for &addr in addrs {
            let vma = match maps.partition_point(|vma| vma.end <= addr) {
                i if i < maps.len() && maps[i].start <= addr => &maps[i],
                _ => return Ok(Err(Errno::Fault)),
            };
            // x86 lets any accessible mapping be read (access_error() in
            // arch/x86/mm/fault.c); stores need VM_WRITE.
            let allowed = if write {
                vma.write
            } else {
                vma.read || vma.write || vma.exec
            };
            if !allowed {
                return Ok(Err(Errno::Fault));
            }
        }
        let value = match fill {
            Fill::NonZero => NONZERO_FILL,
            Fill::Zero => 0,
        };
        let runs = protocol::compress_runs(addrs);
        for chunk in runs.chunks(MAX_RUNS_PER_MSG) {
            let payload: Vec<u64> = chunk.iter().flatten().copied().collect();
            let reply = worker.call(
                Cmd::Touch,
                [
                    write as u64,
                    u64::from(value),
                    chunk.len() as u64,
                    0,
                    0,
                    0,
                    0,
                ],
                &payload,
            )?;
            let result = errno_result(op, reply.status)?;
            if result.is_err() {
                return Ok(result);
            }
        }
        Ok(Ok(()))
    }

    fn khugepaged(&mut self, full_scans: u32) -> Result<OpResult, BackendError> {
        if khugepaged::thread_pid().is_none() {
            self.warnings.push(
                "khugepaged is not running (THP is disabled at every size): nothing to scan".into(),
            );
            return Ok(Ok(()));
        }
        let pages = self
            .scenario_pages_to_scan
            .clone()
            .unwrap_or_else(|| khugepaged::RUN_PAGES_TO_SCAN.to_string());
        match khugepaged::run_full_scans(full_scans, &pages, self.options.khugepaged_stall_timeout) {
            Ok(()) => Ok(Ok(())),
            Err(khugepaged::RunError::Io(err)) => Err(io_error("running khugepaged")(err)),
            Err(khugepaged::RunError::Stalled { from, reached, wanted, stalled }) => Err(BackendError::Executor(format!(
                "khugepaged: full_scans went from {from} to {reached}, wanted {wanted}, then did not move for {stalled:?}"
            ))),
        }
    }

    fn observe_inner(&mut self, regions: &[RegionRef]) -> Result<Observation, BackendError> {
        self.refresh_stats();
        let Some(mut kpages) = self.kpages.take() else {
            return Err(BackendError::Executor("kpageflags reader missing".into()));
        };
        kpages.clear();
        let result = self.observe_procs(&mut kpages, regions);
        self.kpages = Some(kpages);
        let (mut procs, raw) = result?;
        normalise_folios(&mut procs, &raw);

        let vmstat_now = procfs::read_vmstat().map_err(io_error("reading /proc/vmstat"))?;
        let vmstat = VMSTAT_COUNTERS
            .iter()
            .filter_map(|name| {
                Some((
                    name.to_string(),
                    vmstat_now.get(*name)? - self.base_vmstat.get(*name)?,
                ))
            })
            .collect();
        let mthp_now = sysfs::read_mthp_stats(MTHP_SIZES_KB, MTHP_STATS)
            .map_err(io_error("reading the per-size THP stats"))?;
        let mthp = mthp_now
            .iter()
            .filter_map(|(key, now)| Some((key.clone(), now - self.base_mthp.get(key)?)))
            .collect();
        Ok(Observation {
            procs,
            vmstat,
            mthp,
        })
    }

    #[allow(clippy::type_complexity)]
    fn observe_procs(
        &self,
        kpages: &mut Kpages,
        regions: &[RegionRef],
    ) -> Result<(Vec<ProcObs>, Vec<Vec<Vec<Option<u64>>>>), BackendError> {
        let mut procs = Vec::new();
        let mut raw = Vec::new();
        for (&id, proc) in &self.procs {
            let worker = &proc.worker;
            let mine: Vec<&RegionRef> = regions.iter().filter(|r| r.proc == id).collect();
            let name = mine
                .first()
                .map(|r| r.proc_name.clone())
                .unwrap_or_else(|| format!("p{}", id.0 + 1));
            let vm_pte_kb = worker.vm_pte_kb()?.saturating_sub(proc.vm_pte_base_kb);
            let smaps = procfs::read_smaps(worker.pid)
                .map_err(io_error(format!("reading the smaps of {}", worker.label)))?;
            let mut region_obs = Vec::new();
            let mut raw_regions = Vec::new();
            for region in mine {
                let end = region.addr + region.len;
                let vmas = smaps
                    .iter()
                    .filter(|vma| vma.start < end && vma.end > region.addr)
                    .map(|vma| VmaObs {
                        start: vma.start,
                        end: vma.end,
                        rss_kb: vma.rss_kb,
                        anonymous_kb: vma.anonymous_kb,
                        anon_huge_pages_kb: vma.anon_huge_pages_kb,
                        swap_kb: vma.swap_kb,
                        thp_eligible: vma.thp_eligible,
                        vm_flags: modelled_vm_flags(&vma.vm_flags),
                    })
                    .collect();
                let (pages, keys) = observe_pages(worker, kpages, region.addr, region.len)
                    .map_err(io_error(format!(
                        "reading the pages of {} region {}",
                        worker.label, region.name
                    )))?;
                region_obs.push(RegionObs {
                    name: region.name.clone(),
                    addr: region.addr,
                    len: region.len,
                    vmas,
                    pages,
                });
                raw_regions.push(keys);
            }
            procs.push(ProcObs {
                proc: id,
                name,
                vm_pte_kb,
                regions: region_obs,
            });
            raw.push(raw_regions);
        }
        Ok((procs, raw))
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

/// `Prot` as the request's bit word (read 1, write 2, exec 4).
fn prot_word(prot: Prot) -> u64 {
    u64::from(prot.read) | u64::from(prot.write) << 1 | u64::from(prot.exec) << 2
}

/// The `VmFlags` mnemonics thpsim models, sorted.
fn modelled_vm_flags(all: &[String]) -> Vec<String> {
    let mut flags: Vec<String> = all
        .iter()
        .filter(|f| MODELLED_VM_FLAGS.contains(&f.as_str()))
        .cloned()
        .collect();
    flags.sort();
    flags
}

/// Faults in every file mapping of a new worker (read-only, so no anonymous
/// memory is made), so the worker's own page tables are all there before
/// its `VmPTE` baseline is read and stay constant afterwards; fork does not
/// copy page tables of file mappings, so a forked worker does it too.
fn populate_file_mappings(worker: &mut Worker) -> Result<(), BackendError> {
    let maps = procfs::read_maps(worker.pid)
        .map_err(io_error(format!("reading the maps of {}", worker.label)))?;
    for vma in maps
        .iter()
        .filter(|vma| vma.inode != 0 && !vma.name.starts_with('[') && (vma.read || vma.exec))
    {
        // Errors (a mapping past the end of its file) do not matter here.
        worker.call(
            Cmd::Populate,
            [vma.start, vma.end - vma.start, 0, 0, 0, 0, 0],
            &[],
        )?;
    }
    Ok(())
}

/// pagemap, kpageflags, kpagecount and PAGEMAP_SCAN for each base page of
/// [addr, addr + len); also the raw folio keys (head PFNs).
fn observe_pages(
    worker: &Worker,
    kpages: &mut Kpages,
    addr: u64,
    len: u64,
) -> io::Result<(Vec<PageObs>, Vec<Option<u64>>)> {
    let start = addr & !(PAGE_SIZE - 1);
    let end = (addr + len).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let nr_pages = (end - start) / PAGE_SIZE;
    let entries = procfs::read_pagemap(&worker.pagemap, start, nr_pages)?;
    let huge = pagemap_scan::pmd_mapped_ranges(&worker.pagemap, start, end)?;
    let mut huge = huge.iter().peekable();
    let mut pages = Vec::with_capacity(nr_pages as usize);
    let mut keys = Vec::with_capacity(nr_pages as usize);
    for (i, &entry) in entries.iter().enumerate() {
        let va = start + i as u64 * PAGE_SIZE;
        while huge.peek().is_some_and(|&&(_, range_end)| range_end <= va) {
            huge.next();
        }
        let mut page = PageObs {
            exclusive: entry & PM_MMAP_EXCLUSIVE != 0,
            ..PageObs::default()
        };
        let mut key = None;
        if entry & PM_PRESENT != 0 {
            page.state = PageState::Present;
            let pfn = entry & PM_PFN_MASK;
            if pfn == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("pagemap shows no PFN for present page {va:#x} (CAP_SYS_ADMIN needed)"),
                ));
            }
            let folio = kpages.folio_of(pfn)?;
            page.order = folio.order;
            page.zero_page = folio.zero;
            page.mapcount = kpages.mapcount(&folio, pfn)?;
            page.pmd_mapped = huge
                .peek()
                .is_some_and(|&&(range_start, _)| range_start <= va);
            if !folio.zero {
                key = Some(folio.head);
            }
        } else if entry & PM_SWAP != 0 {
            page.state = PageState::Swapped;
        }
        pages.push(page);
        keys.push(key);
    }
    Ok((pages, keys))
}

/// Takes the host-wide lock, waiting up to `wait` for another backend.
fn acquire_lock(path: &Path, wait: Duration) -> Result<File, BackendError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| precondition(format!("cannot open the lock file {}: {e}", path.display())))?;
    let deadline = Instant::now() + wait;
    loop {
        match sys::try_lock_exclusive(file.as_fd()) {
            Ok(true) => break,
            Ok(false) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(false) => {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                return Err(precondition(format!(
                    "another thpsim Linux backend (pid {}) holds {} and did not release it within {wait:?}",
                    holder.trim(),
                    path.display()
                )));
            }
            Err(e) => return Err(precondition(format!("flock {}: {e}", path.display()))),
        }
    }
    // Who holds it, for the message above; the lock is what counts.
    let _ = file
        .set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

impl Backend for LinuxBackend {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn apply(&mut self, op: &Op) -> Result<OpResult, BackendError> {
        self.usable()?;
        let watch = !matches!(op, Op::Khugepaged { .. });
        let before = khugepaged::counter("pages_collapsed").ok();
        let result = self.apply_op(op);
        if watch {
            let after = khugepaged::counter("pages_collapsed").ok();
            if let (Some(before), Some(after)) = (before, after) {
                if after != before {
                    self.warnings.push(format!(
                        "noise: khugepaged collapsed {} PMD(s) in the background during {op:?} (pages_collapsed {before} -> {after})",
                        after - before
                    ));
                }
            }
        }
        result.map_err(|err| self.fail(err))
    }

    fn observe(&mut self, regions: &[RegionRef]) -> Result<Observation, BackendError> {
        self.usable()?;
        self.observe_inner(regions).map_err(|err| self.fail(err))
    }
}

impl Drop for LinuxBackend {
    fn drop(&mut self) {
        let seen = self.warnings.len();
        self.shutdown();
        // Nobody is left to read these: a worker left running or a THP knob
        // left changed must not go unnoticed.
        for warning in &self.warnings[seen..] {
            eprintln!("thpsim linux backend: {warning}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prot_words() {
        assert_eq!(prot_word(Prot::NONE), 0);
        assert_eq!(prot_word(Prot::READ), 1);
        assert_eq!(prot_word(Prot::READ_WRITE), 3);
        assert_eq!(
            prot_word(Prot {
                read: true,
                write: false,
                exec: true
            }),
            5
        );
    }

    #[test]
    fn vm_flags_are_filtered_and_sorted() {
        let all: Vec<String> = "rd wr mr mw me ac sd hg"
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(modelled_vm_flags(&all), vec!["hg", "rd", "wr"]);
    }
}
