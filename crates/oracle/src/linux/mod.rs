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
//! file for its lifetime (lock.rs; or runs under a `HostLock` its caller
//! holds across many backends); saves every THP knob and restores it on
//! drop, on the first error, on SIGINT/SIGTERM/SIGHUP/SIGQUIT, and at the
//! next start after a SIGKILL (sysfs.rs, signals.rs); keeps khugepaged
//! asleep except in the scenario's khugepaged steps, and warns when
//! `pages_collapsed` moved during any other step (khugepaged.rs).
//! System-wide counters also carry other processes' THP activity; an
//! observation warns when `nr_anon_transparent_hugepages` moved by more
//! than the scenario's own PMD-mapped THPs (observe.rs). Warnings come out
//! through `Backend::take_warnings`.
//!
//! What differs from a fresh process: a worker is forked from the
//! controller, so it also maps the controller's memory. Scenario addresses
//! must lie away from it (e.g. 0x2000_0000_0000 and up, their own 512 GiB
//! slot, so that they share no page-table page with it). `vm_pte_kb` is
//! `VmPTE` minus the worker's own page tables, measured when it started
//! (after faulting in all its file mappings, so that it stays constant); a
//! forked child is taken to own as many as its parent, which fork copies.

#![deny(clippy::undocumented_unsafe_blocks)]

mod cgroup;
mod executor;
mod khugepaged;
mod lock;
mod model_only;
mod observe;
mod ops;
mod pagemap_scan;
mod procfs;
mod protocol;
mod signals;
mod sys;
mod sysfs;
mod teardown;
mod worker;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thpsim_workload::{Op, PinRef, ProcId};

use crate::{Backend, BackendError, Observation, OpResult, RegionRef, MTHP_SIZES_KB, MTHP_STATS};
use executor::Worker;
pub use model_only::{check_policy, refuse_model_only, ModelOnly};
use procfs::Kpages;
use protocol::Cmd;
use sysfs::SettingsGuard;

pub use cgroup::{remove_stale as remove_stale_cgroups, MEMCG_ROOT};
pub use lock::{HostLock, DEFAULT_LOCK_PATH};
pub use sysfs::{read_knob, restore_saved_file, RestoredKnob, ThpSettings, THP_ROOT};

/// The base page size; the backend refuses hosts with another.
const PAGE_SIZE: u64 = 4096;

/// Where and how long the backend waits for the host.
#[derive(Clone, Debug)]
pub struct LinuxOptions {
    /// The lock file; one Linux backend per host at a time. `None`: the
    /// caller holds a `HostLock` for the whole life of the backend.
    pub lock_path: Option<PathBuf>,
    /// Where the saved THP settings are kept while a scenario runs, so that
    /// the next start can restore them after a SIGKILL.
    pub saved_settings_path: PathBuf,
    /// How long to wait for another backend to release the lock.
    pub lock_wait: Duration,
    /// A khugepaged step fails when `full_scans` stops moving this long.
    pub khugepaged_stall_timeout: Duration,
    /// How long the end of a run waits for the THP gauges to come back to
    /// their values at its start, once its processes are gone (teardown.rs).
    pub teardown_timeout: Duration,
    /// The scenario's `machine ram=`: its processes run in a memory cgroup
    /// with this limit (cgroup.rs). `None`: no limit.
    pub ram_limit: Option<u64>,
    /// Where the cgroup v1 memory controller is mounted.
    pub memcg_root: PathBuf,
}

impl Default for LinuxOptions {
    fn default() -> Self {
        LinuxOptions {
            lock_path: Some(PathBuf::from(DEFAULT_LOCK_PATH)),
            saved_settings_path: PathBuf::from("/run/thpsim-oracle.settings"),
            lock_wait: Duration::from_secs(300),
            khugepaged_stall_timeout: Duration::from_secs(60),
            teardown_timeout: Duration::from_secs(5),
            ram_limit: None,
            memcg_root: PathBuf::from(MEMCG_ROOT),
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
    /// The THP gauges at the baseline (teardown.rs).
    base_gauges: BTreeMap<String, i64>,
    kpages: Option<Kpages>,
    /// `nr_anon_transparent_hugepages` moved by other processes, as last
    /// reported (see `observe.rs`).
    foreign_thps: i64,
    warnings: Vec<String>,
    /// Set after the first `BackendError`: the host was cleaned up and the
    /// backend refuses further work.
    failed: Option<String>,
    /// The memory cgroup of `ram=`, if asked for.
    memcg: Option<cgroup::MemCgroup>,
    lock: Option<HostLock>,
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
            return Err(precondition(format!("the Linux backend must run as root (effective uid is {euid})")));
        }
        let page_size = sys::page_size();
        if page_size != PAGE_SIZE {
            return Err(precondition(format!("the host's page size is {page_size} bytes, not 4096")));
        }
        if !Path::new(THP_ROOT).join("enabled").exists() {
            return Err(precondition(format!("{THP_ROOT}/enabled does not exist: no transparent hugepage support")));
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
            Ok(false) => return Err(precondition("the PAGEMAP_SCAN ioctl is missing (needs Linux 6.7 or later)")),
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
        let lock = match &options.lock_path {
            Some(path) => Some(HostLock::acquire(path, options.lock_wait)?),
            None => None,
        };
        let mut warnings = sysfs::recover_stale(&options.saved_settings_path)
            .map_err(io_error(format!("restoring settings from {}", options.saved_settings_path.display())))?;
        let stale = cgroup::remove_stale(&options.memcg_root)
            .map_err(io_error(format!("removing memory cgroups left under {}", options.memcg_root.display())))?;
        if !stale.is_empty() {
            warnings.push(format!("removed memory cgroups left by a run that did not finish: {}", stale.join(", ")));
        }
        let memcg = match options.ram_limit {
            None => None,
            Some(ram) => {
                if !options.memcg_root.join("memory.limit_in_bytes").exists() {
                    return Err(precondition(format!(
                        "machine ram= needs the cgroup v1 memory controller at {}, which this host lacks",
                        options.memcg_root.display()
                    )));
                }
                Some(cgroup::MemCgroup::create(&options.memcg_root, ram).map_err(io_error(format!(
                    "making a memory cgroup under {} with a limit of {ram} bytes",
                    options.memcg_root.display()
                )))?)
            }
        };
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
            base_gauges: BTreeMap::new(),
            kpages: None,
            foreign_thps: 0,
            warnings,
            failed: None,
            memcg,
            lock,
        };
        backend.start()?;
        Ok(backend)
    }

    fn start(&mut self) -> Result<(), BackendError> {
        // No THP in the controller's own memory, which every worker inherits:
        // a worker's write to an inherited THP would split it and move the
        // scenario's counters.
        let before = sys::get_thp_disable().map_err(io_error("prctl(PR_GET_THP_DISABLE)"))?;
        sys::set_thp_disable(true, 0).map_err(io_error("prctl(PR_SET_THP_DISABLE) on the controller"))?;
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
            // Registered now, for as long as it lives; from here on nothing
            // of it is THP-eligible (see khugepaged.rs).
            let block = reply.value;
            sentinel.call(Cmd::Munmap, [block, 2 << 20, 0, 0, 0, 0, 0], &[])?;
            let nohugepage = libc::MADV_NOHUGEPAGE as u64;
            sentinel.call(
                Cmd::Madvise,
                [PAGE_SIZE, observe::USER_SPACE_END - PAGE_SIZE, nohugepage, 0, 0, 0, 0],
                &[],
            )?;
        }
        self.sentinel = Some(sentinel);
        if !khugepaged::wait_idle(Duration::from_secs(5)) {
            self.warnings.push("khugepaged did not go idle within 5 s of being quieted".to_string());
        }
        match khugepaged::seek_pass_boundary(Duration::from_secs(10)) {
            Ok(true) => {}
            Ok(false) => self.warnings.push(
                "khugepaged did not reach the end of a pass within 10 s: a khugepaged step may scan from inside another mm"
                    .to_string(),
            ),
            Err(err) => return Err(io_error("moving khugepaged to the start of a pass")(err)),
        }
        self.kpages = Some(Kpages::open().map_err(io_error("opening /proc/kpageflags"))?);
        // Drain the system-wide deferred-split queue before the baseline, so
        // a scenario's `shrink` does not split other processes' folios
        // queued before it started (their counters would move as its own).
        procfs::drop_caches().map_err(io_error("draining the deferred-split queue"))?;
        // A previous run's asynchronous teardown (another thpsim build, or a
        // run killed with SIGKILL) must not land after the baseline.
        let (gauges, settled) = teardown::wait_stable(Duration::from_secs(2));
        if !settled {
            self.warnings.push("the THP gauges kept moving for 2 s before the baseline (host noise)".to_string());
        }
        self.base_gauges = gauges.map_err(io_error("reading the THP gauges"))?;
        self.refresh_stats();
        self.base_vmstat = procfs::read_vmstat().map_err(io_error("reading /proc/vmstat"))?;
        self.base_mthp =
            sysfs::read_mthp_stats(MTHP_SIZES_KB, MTHP_STATS).map_err(io_error("reading the per-size THP stats"))?;
        Ok(())
    }

    /// Warnings about the run so far: background khugepaged activity,
    /// surprises that do not stop the scenario, clean-up problems.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The host pid of a scenario process, while it runs.
    pub fn pid(&self, proc: ProcId) -> Option<i32> {
        self.procs.get(&proc).map(|p| p.worker.pid)
    }

    fn refresh_stats(&mut self) {
        if let Err(err) = procfs::stat_refresh() {
            self.warnings.push(format!("stat_refresh failed, nr_* counters may lag: {err}"));
        }
    }

    fn usable(&self) -> Result<(), BackendError> {
        match &self.failed {
            Some(first) => {
                Err(BackendError::Executor(format!("the Linux backend stopped after an earlier error: {first}")))
            }
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

    /// A worker that died while its memory cgroup's OOM killer killed
    /// something: say so, since that is the kernel's answer to `ram=`.
    fn explain_oom(&self, err: BackendError) -> BackendError {
        let Some(memcg) = &self.memcg else { return err };
        match memcg.oom_kills() {
            Ok(kills) if kills > 0 => BackendError::Executor(format!(
                "the memory cgroup's OOM killer killed {kills} scenario process(es): they needed more than machine ram={} \
                 (the live kernel answers a fault over the limit with an OOM kill, not ENOMEM; see docs/fidelity.md): {err}",
                memcg.limit().unwrap_or(0)
            )),
            _ => err,
        }
    }

    /// Kills every worker, restores the THP settings and the controller's
    /// THP state, removes the signal handlers, releases the lock. Idempotent.
    fn shutdown(&mut self) {
        let procs = std::mem::take(&mut self.procs);
        let had_procs = !procs.is_empty();
        for (_, proc) in procs.into_iter().rev() {
            // A worker told to exit first releases its pins with
            // IORING_UNREGISTER_BUFFERS, which unpins at once; a killed one
            // leaves them to the ring's exit work, which runs after the
            // process is gone and would free the pinned folios in the next
            // scenario's counters. After an error, kill: the worker may
            // not answer.
            let ended = if self.failed.is_none() { proc.worker.exit() } else { proc.worker.kill() };
            if let Err(err) = ended {
                self.warnings.push(format!("ending a worker: {err}"));
            }
        }
        self.pins.clear();
        if let Some(sentinel) = self.sentinel.take() {
            if let Err(err) = sentinel.kill() {
                self.warnings.push(format!("killing the khugepaged sentinel: {err}"));
            }
        }
        if let Some(mut settings) = self.settings.take() {
            let errors = settings.restore();
            self.warnings.extend(errors);
            // Dropping the guard removes the signal handlers.
        }
        if let Some(mut memcg) = self.memcg.take() {
            if let Err(err) = memcg.remove() {
                self.warnings.push(format!("removing the scenario's memory cgroup: {err}"));
            }
        }
        // Before the lock goes to the next scenario: wait until this one's
        // memory is really gone (item 6 of issue 8).
        if had_procs && !self.base_gauges.is_empty() {
            match teardown::wait_settled(&self.base_gauges, self.options.teardown_timeout) {
                Ok(()) => {}
                Err(left) => self.warnings.push(left),
            }
        }
        if let Some(before) = self.controller_thp_disable.take() {
            let restored = match before {
                0 => sys::set_thp_disable(false, 0),
                1 => sys::set_thp_disable(true, 0),
                _ => sys::set_thp_disable(true, thpsim_uapi::mman::PR_THP_DISABLE_EXCEPT_ADVISED as libc::c_ulong),
            };
            if let Err(err) = restored {
                self.warnings.push(format!("could not restore the controller's PR_SET_THP_DISABLE ({before}): {err}"));
            }
        }
        self.lock = None;
    }
}

impl Backend for LinuxBackend {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn apply(&mut self, op: &Op) -> Result<OpResult, BackendError> {
        self.usable()?;
        let watch = !matches!(op, Op::Khugepaged { .. });
        let before = khugepaged::counter("pages_collapsed").ok();
        let result = self.apply_op(op).map_err(|err| self.explain_oom(err));
        if watch {
            let after = khugepaged::counter("pages_collapsed").ok();
            if let (Some(before), Some(after)) = (before, after) {
                if after != before {
                    self.warnings.push(format!(
                        "noise: khugepaged collapsed {} PMD(s) in the background during {op:?} (pages_collapsed {before} -> {after})",
                        after.abs_diff(before)
                    ));
                }
            }
        }
        result.map_err(|err| self.fail(err))
    }

    fn read_words(&mut self, proc: ProcId, addr: u64, nr_pages: u64) -> Result<crate::WordsRead, BackendError> {
        self.usable()?;
        self.read_words_inner(proc, addr, nr_pages).map_err(|err| self.fail(err))
    }

    fn observe(&mut self, regions: &[RegionRef]) -> Result<Observation, BackendError> {
        self.usable()?;
        self.observe_inner(regions).map_err(|err| self.fail(err))
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
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
