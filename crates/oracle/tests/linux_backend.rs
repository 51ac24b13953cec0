//! The Linux backend on the live kernel: each test runs a small scenario
//! for real and checks the observation against what ORACLE-NOTES.md says
//! this kernel does.
//!
//! Needs root, THP and PAGEMAP_SCAN. Without them a test prints why and
//! returns, except with CI=true, where it fails. Each test holds a static
//! mutex and the host lock for its whole run, so tests run one at a time
//! and no other thpsim run on the host changes the THP knobs under them.

use std::io::{BufRead, BufReader};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use thpsim_mm::Errno;
use thpsim_oracle::linux::{read_knob, HostLock, LinuxBackend, LinuxOptions, ThpSettings, DEFAULT_LOCK_PATH};
use thpsim_oracle::{Backend, Observation, PageObs, PageState, RegionRef};
use thpsim_workload::{Access, Advice, Fill, Op, PinRef, ProcId, Prot, Setting, ThpDisable, TouchPattern};

static SERIAL: Mutex<()> = Mutex::new(());

/// Test regions live in their own 512 GiB slot, away from the workers'
/// inherited memory; each test uses its own GiB of it.
const BASE: u64 = 0x2000_0000_0000;
const GIB: u64 = 1 << 30;
const PMD: u64 = 2 << 20;
const PAGE: u64 = 4096;

const P1: ProcId = ProcId(0);
const P2: ProcId = ProcId(1);

/// Whether the host can run the backend; fails under CI=true when not.
fn host_ready() -> bool {
    match LinuxBackend::check_host() {
        Ok(()) => true,
        Err(err) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but this host cannot run the Linux backend: {err}");
            }
            eprintln!("skipping a Linux backend test: {err}");
            false
        }
    }
}

/// What a test holds while it runs: this binary's tests one at a time, and
/// the host lock, so that no other thpsim run changes the THP knobs between
/// a test's "before" and "after" (each backend then runs with
/// `lock_path: None`).
struct Host {
    _lock: HostLock,
    _serial: MutexGuard<'static, ()>,
}

/// Takes the test mutex and the host lock; `None` (after saying why) when
/// the host cannot run the backend.
fn host() -> Option<Host> {
    let serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !host_ready() {
        return None;
    }
    let lock = HostLock::acquire(Path::new(DEFAULT_LOCK_PATH), Duration::from_secs(600)).expect("taking the host lock");
    Some(Host { _lock: lock, _serial: serial })
}

/// A backend plus the scenario's bookkeeping, with short helpers.
struct Run {
    backend: LinuxBackend,
}

impl Run {
    /// Starts a backend with the settings the notes were measured with
    /// (THP on MADV_HUGEPAGE, zero page on), whatever the host had.
    fn start() -> Run {
        // The test holds the host lock (see `host`).
        let options = LinuxOptions { lock_path: None, ..LinuxOptions::default() };
        let mut run = Run { backend: LinuxBackend::with_options(options).expect("starting the Linux backend") };
        for (path, value) in [
            ("enabled", "madvise"),
            ("defrag", "madvise"),
            ("use_zero_page", "1"),
            ("hugepages-2048kB/enabled", "inherit"),
            ("khugepaged/max_ptes_none", "511"),
        ] {
            run.ok(Op::Set { setting: Setting::from_sysfs(path, value).unwrap() });
        }
        run
    }

    #[track_caller]
    fn apply(&mut self, op: Op) -> Result<(), Errno> {
        self.backend.apply(&op).unwrap_or_else(|err| panic!("{op:?}: backend error: {err}"))
    }

    #[track_caller]
    fn ok(&mut self, op: Op) {
        let shown = format!("{op:?}");
        if let Err(errno) = self.apply(op) {
            panic!("{shown}: {errno}");
        }
    }

    /// Spawns `proc` and maps a 2 MiB-aligned MADV_HUGEPAGE region of `len` at `addr`.
    fn thp_region(&mut self, proc: ProcId, addr: u64, len: u64) {
        self.ok(Op::Spawn { proc });
        self.ok(Op::Mmap { proc, addr, len, prot: Prot::READ_WRITE });
        self.ok(Op::Madvise { proc, addr, len, advice: Advice::HugePage });
    }

    fn touch(&mut self, proc: ProcId, addr: u64, len: u64, access: Access) -> Result<(), Errno> {
        self.apply(Op::Touch { proc, addr, len, access, fill: Fill::NonZero, pattern: TouchPattern::All })
    }

    #[track_caller]
    fn observe(&mut self, regions: &[(ProcId, u64, u64)]) -> Observation {
        let refs: Vec<RegionRef> = regions
            .iter()
            .enumerate()
            .map(|(i, &(proc, addr, len))| RegionRef {
                proc,
                proc_name: format!("p{}", proc.0 + 1),
                name: format!("R{i}"),
                addr,
                len,
            })
            .collect();
        self.backend.observe(&refs).expect("observing")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for warning in self.backend.take_warnings() {
            eprintln!("backend warning: {warning}");
        }
    }
}

fn counter(obs: &Observation, name: &str) -> i64 {
    *obs.vmstat.get(name).unwrap_or_else(|| panic!("no vmstat counter {name} in {:?}", obs.vmstat))
}

fn mthp(obs: &Observation, key: &str) -> i64 {
    *obs.mthp.get(key).unwrap_or_else(|| panic!("no per-size stat {key} in {:?}", obs.mthp))
}

/// Every page of a region, one by one.
fn pages(obs: &Observation, proc: usize, region: usize) -> Vec<PageObs> {
    obs.procs[proc].regions[region].pages().copied().collect()
}

/// The backend saw no other process change `nr_anon_transparent_hugepages`.
#[track_caller]
fn assert_no_host_noise(run: &Run) {
    let noise: Vec<&String> = run.backend.warnings().iter().filter(|w| w.starts_with("host noise")).collect();
    assert!(noise.is_empty(), "{noise:?}");
}

fn region_base(test: u64) -> u64 {
    BASE + test * GIB
}

/// Attempts per check before a failure counts.
const ATTEMPTS: u32 = 3;

/// Runs a check up to `ATTEMPTS` times, each with a fresh backend. Layouts
/// are deterministic, but the counters are system-wide: other processes on
/// a shared host (a build, or anything that got THPs while a test set
/// `enabled=always`) move them too. ORACLE-NOTES repeats each measurement
/// three times for the same reason. A real divergence fails every attempt.
fn with_retries(check: impl Fn()) {
    for attempt in 1..ATTEMPTS {
        if catch_unwind(AssertUnwindSafe(&check)).is_ok() {
            return;
        }
        eprintln!("attempt {attempt} of {ATTEMPTS} failed; retrying (host-wide counters are shared)");
    }
    check();
}

// 0     2M
// |AAAAA|    one write fault: one PMD-mapped order-9 folio
#[test]
fn write_fault_maps_one_pmd_thp() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(1);
        let mut run = Run::start();
        run.thp_region(P1, a, PMD);
        run.ok(Op::Touch {
            proc: P1,
            addr: a,
            len: PAGE,
            access: Access::Write,
            fill: Fill::NonZero,
            pattern: TouchPattern::All,
        });
        let obs = run.observe(&[(P1, a, PMD)]);

        let region = &obs.procs[0].regions[0];
        // One PMD-mapped THP: one run of 512 pages.
        assert_eq!(region.runs.len(), 1, "{:?}", region.runs);
        assert_eq!(region.pages().count(), 512);
        for (i, page) in region.pages().enumerate() {
            assert_eq!(page.state, PageState::Present, "page {i}");
            assert_eq!(page.folio, Some(0), "page {i}");
            assert_eq!(page.order, 9, "page {i}");
            assert!(page.pmd_mapped, "page {i}");
            assert_eq!(page.mapcount, 1, "page {i}");
            assert!(page.exclusive, "page {i}");
            assert!(!page.zero_page, "page {i}");
        }
        assert_eq!(region.vmas.len(), 1);
        let vma = &region.vmas[0];
        assert_eq!((vma.start, vma.end), (a, a + PMD));
        assert_eq!((vma.rss_kb, vma.anonymous_kb, vma.anon_huge_pages_kb), (2048, 2048, 2048));
        assert!(vma.thp_eligible);
        assert_eq!(vma.vm_flags, vec!["ac", "hg", "rd", "wr"]);
        assert_eq!(counter(&obs, "thp_fault_alloc"), 1);
        assert_eq!(counter(&obs, "thp_fault_fallback"), 0);
        assert_eq!(mthp(&obs, "2048kB/anon_fault_alloc"), 1);
        assert_eq!(mthp(&obs, "2048kB/nr_anon"), 1);
        assert_no_host_noise(&run);
        // A PUD table and a PMD table for the region's own 512 GiB slot, plus
        // the PTE table deposited under the PMD THP.
        assert_eq!(obs.procs[0].vm_pte_kb, 12, "VmPTE: PUD + PMD + deposited PTE table");
    });
}

// Two THPs: the deposit shows as one PTE table per THP.
#[test]
fn vm_pte_counts_one_deposited_table_per_thp() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(2);
        let mut run = Run::start();
        run.thp_region(P1, a, 2 * PMD);
        run.touch(P1, a, 2 * PMD, Access::Write).unwrap();
        let obs = run.observe(&[(P1, a, 2 * PMD)]);
        assert!(pages(&obs, 0, 0).iter().all(|p| p.pmd_mapped && p.order == 9));
        assert_eq!(pages(&obs, 0, 0)[511].folio, Some(0));
        assert_eq!(pages(&obs, 0, 0)[512].folio, Some(1));
        assert_eq!(counter(&obs, "thp_fault_alloc"), 2);
        assert_eq!(obs.procs[0].vm_pte_kb, 16, "VmPTE: PUD + PMD + two deposited PTE tables");
    });
}

#[test]
fn read_fault_maps_the_huge_zero_page() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(3);
        let mut run = Run::start();
        run.thp_region(P1, a, PMD);
        run.touch(P1, a, PMD, Access::Read).unwrap();
        let obs = run.observe(&[(P1, a, PMD)]);
        for (i, page) in pages(&obs, 0, 0).iter().enumerate() {
            assert_eq!(page.state, PageState::Present, "page {i}");
            assert!(page.zero_page, "page {i}");
            assert_eq!(page.folio, None, "page {i}");
            assert_eq!(page.order, 9, "page {i}");
            assert!(page.pmd_mapped, "page {i}");
            assert_eq!(page.mapcount, 0, "page {i}");
        }
        let vma = &obs.procs[0].regions[0].vmas[0];
        assert_eq!(vma.rss_kb, 0);
        assert_eq!(vma.anon_huge_pages_kb, 0);
        assert_eq!(counter(&obs, "thp_fault_alloc"), 0);

        // 6.18: a write fault on the huge zero PMD allocates a fresh THP.
        run.touch(P1, a, PAGE, Access::Write).unwrap();
        let obs = run.observe(&[(P1, a, PMD)]);
        assert!(pages(&obs, 0, 0).iter().all(|p| p.pmd_mapped && p.order == 9 && !p.zero_page && p.folio == Some(0)));
        assert_eq!(counter(&obs, "thp_fault_alloc"), 1);
        assert_eq!(counter(&obs, "thp_split_pmd"), 0);
    });
}

// p1 |AAAAA|  PMD-mapped, then shared with p2 by fork
// p2 |A4AAA|  p2 writes page 1: its PMD is split, page 1 copied
#[test]
fn child_write_after_fork_splits_only_the_childs_pmd() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(4);
        let mut run = Run::start();
        run.thp_region(P1, a, PMD);
        run.touch(P1, a, PMD, Access::Write).unwrap();
        run.ok(Op::Fork { parent: P1, child: P2 });
        let obs = run.observe(&[(P1, a, PMD), (P2, a, PMD)]);
        assert!(pages(&obs, 0, 0).iter().all(|p| p.pmd_mapped && p.mapcount == 2 && p.folio == Some(0)));
        assert!(pages(&obs, 1, 0).iter().all(|p| p.pmd_mapped && p.mapcount == 2 && p.folio == Some(0)));
        assert_eq!(obs.procs[1].vm_pte_kb, 12, "the child copies PUD, PMD and the deposited table");

        run.touch(P2, a + PAGE, PAGE, Access::Write).unwrap();
        let obs = run.observe(&[(P1, a, PMD), (P2, a, PMD)]);
        let (parent, child) = (pages(&obs, 0, 0), pages(&obs, 1, 0));
        assert!(parent.iter().all(|p| p.pmd_mapped && p.order == 9 && p.folio == Some(0)));
        for (i, page) in child.iter().enumerate() {
            if i == 1 {
                assert_eq!((page.order, page.folio, page.mapcount, page.pmd_mapped), (0, Some(1), 1, false), "page 1");
                assert!(page.exclusive);
            } else {
                assert_eq!(
                    (page.order, page.folio, page.mapcount, page.pmd_mapped),
                    (9, Some(0), 2, false),
                    "page {i}"
                );
            }
        }
        // The parent's page 1 is now mapped by its PMD only.
        assert_eq!(parent[1].mapcount, 1);
        assert_eq!(obs.procs[1].regions[0].vmas[0].anon_huge_pages_kb, 0);
        assert_eq!(obs.procs[0].regions[0].vmas[0].anon_huge_pages_kb, 2048);
        assert_eq!(counter(&obs, "thp_split_pmd"), 1);
        assert_eq!(counter(&obs, "thp_deferred_split_page"), 0);
        // One folio, PMD-mapped by the parent and PTE-mapped by the child,
        // counts once in nr_anon_transparent_hugepages: no foreign THPs.
        assert_eq!(counter(&obs, "nr_anon_transparent_hugepages"), 1);
        assert_no_host_noise(&run);

        // The child exits: the parent's folio is mapped once again.
        let child_pid = run.backend.pid(P2).unwrap();
        run.ok(Op::Exit { proc: P2 });
        assert!(!Path::new(&format!("/proc/{child_pid}")).exists(), "the child's process is gone");
        let obs = run.observe(&[(P1, a, PMD)]);
        assert_eq!(obs.procs.len(), 1);
        assert!(pages(&obs, 0, 0).iter().all(|p| p.pmd_mapped && p.mapcount == 1));
    });
}

// |AAAA AAA|  munmap of one page: PMD split, folio queued for deferred split;
//             the shrinker then splits it into 511 order-0 pages.
#[test]
fn munmap_inside_a_thp_defers_the_split_to_the_shrinker() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(5);
        let mut run = Run::start();
        run.thp_region(P1, a, PMD);
        run.touch(P1, a, PMD, Access::Write).unwrap();
        run.ok(Op::Munmap { proc: P1, addr: a + 100 * PAGE, len: PAGE });
        let obs = run.observe(&[(P1, a, PMD)]);
        assert_eq!(counter(&obs, "thp_split_pmd"), 1);
        assert_eq!(counter(&obs, "thp_deferred_split_page"), 1);
        assert_eq!(counter(&obs, "thp_split_page"), 0);
        assert_eq!(mthp(&obs, "2048kB/nr_anon_partially_mapped"), 1);
        assert_eq!(obs.procs[0].regions[0].vmas.len(), 2);
        for (i, page) in pages(&obs, 0, 0).iter().enumerate() {
            if i == 100 {
                assert_eq!(page.state, PageState::None);
            } else {
                assert_eq!((page.order, page.pmd_mapped, page.folio), (9, false, Some(0)), "page {i}");
            }
        }

        run.ok(Op::Shrink);
        let obs = run.observe(&[(P1, a, PMD)]);
        assert_eq!(counter(&obs, "thp_split_page"), 1);
        assert_eq!(mthp(&obs, "2048kB/nr_anon_partially_mapped"), 0);
        let present: Vec<PageObs> = pages(&obs, 0, 0).into_iter().filter(|p| p.state == PageState::Present).collect();
        assert_eq!(present.len(), 511);
        assert!(present.iter().all(|p| p.order == 0 && !p.pmd_mapped && p.mapcount == 1));
        let mut folios: Vec<u32> = present.iter().map(|p| p.folio.unwrap()).collect();
        folios.dedup();
        assert_eq!(folios.len(), 511, "511 distinct order-0 folios");
    });
}

#[test]
fn mmap_over_a_mapping_answers_eexist() {
    let Some(_host) = host() else { return };
    let a = region_base(6);
    let mut run = Run::start();
    run.ok(Op::Spawn { proc: P1 });
    run.ok(Op::Mmap { proc: P1, addr: a, len: PMD, prot: Prot::READ_WRITE });
    assert_eq!(run.apply(Op::Mmap { proc: P1, addr: a + PAGE, len: PAGE, prot: Prot::READ }), Err(Errno::Exist));
    assert_eq!(run.apply(Op::Munmap { proc: P1, addr: a + 1, len: PAGE }), Err(Errno::Inval));
}

#[test]
fn touching_what_the_process_may_not_access_answers_efault() {
    let Some(_host) = host() else { return };
    let a = region_base(7);
    let mut run = Run::start();
    run.ok(Op::Spawn { proc: P1 });
    run.ok(Op::Mmap { proc: P1, addr: a, len: PMD, prot: Prot::READ });
    // Unmapped, read-only for a store, PROT_NONE: EFAULT. Like a program
    // touching pages in order, the pages before the first forbidden one
    // are touched, none after it.
    assert_eq!(run.touch(P1, a + PMD, PAGE, Access::Read), Err(Errno::Fault));
    assert_eq!(run.touch(P1, a, PMD, Access::Write), Err(Errno::Fault));
    run.ok(Op::Mprotect { proc: P1, addr: a + PAGE, len: PAGE, prot: Prot::NONE });
    assert_eq!(run.touch(P1, a, 4 * PAGE, Access::Read), Err(Errno::Fault));
    let obs = run.observe(&[(P1, a, PMD)]);
    let touched = pages(&obs, 0, 0);
    assert!(touched[0].state == PageState::Present && touched[0].zero_page, "page 0 was read: {:?}", touched[0]);
    assert!(touched[1..].iter().all(|p| p.state == PageState::None), "nothing after the PROT_NONE page was touched");
    // Reading what is readable works; the worker is still alive.
    run.touch(P1, a + 2 * PAGE, PAGE, Access::Read).unwrap();
    let obs = run.observe(&[(P1, a, PMD)]);
    assert_eq!(pages(&obs, 0, 0)[2].state, PageState::Present);
    assert!(pages(&obs, 0, 0)[2].zero_page);
    assert_eq!(obs.procs[0].regions[0].vmas.len(), 3);
}

// A pin (io_uring fixed buffer, FOLL_PIN | FOLL_LONGTERM) keeps the folio
// from being split, and MADV_COLLAPSE answers EAGAIN; unpinned, both work.
//
// A |AAAA AAA|  pinned, munmap of one page: the shrinker cannot split it
// B |BBBBBBBB|  pinned, PTE-mapped by an mprotect round trip: no collapse
#[test]
fn a_pin_blocks_split_and_collapse() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(8);
        let b = a + PMD;
        let (pin_a, pin_b) = (PinRef(0), PinRef(1));
        let mut run = Run::start();
        run.thp_region(P1, a, 2 * PMD);
        run.touch(P1, a, 2 * PMD, Access::Write).unwrap();
        run.ok(Op::Pin { proc: P1, pin: pin_a, addr: a, len: PMD, longterm: true });
        run.ok(Op::Pin { proc: P1, pin: pin_b, addr: b, len: PMD, longterm: false });
        run.ok(Op::Munmap { proc: P1, addr: a + 100 * PAGE, len: PAGE });
        run.ok(Op::Mprotect { proc: P1, addr: b + 7 * PAGE, len: PAGE, prot: Prot::READ });
        run.ok(Op::Mprotect { proc: P1, addr: b + 7 * PAGE, len: PAGE, prot: Prot::READ_WRITE });
        run.ok(Op::Shrink);
        let obs = run.observe(&[(P1, a, PMD), (P1, b, PMD)]);
        assert_eq!(counter(&obs, "thp_split_pmd"), 2, "munmap and mprotect still split the PMDs");
        assert_eq!(counter(&obs, "thp_deferred_split_page"), 1);
        assert_eq!(counter(&obs, "thp_split_page"), 0, "the pinned folio is not split");
        assert!(counter(&obs, "thp_split_page_failed") >= 1, "the shrinker tried and failed");
        assert!(pages(&obs, 0, 0).iter().filter(|p| p.state == PageState::Present).all(|p| p.order == 9));
        assert!(pages(&obs, 0, 1).iter().all(|p| p.order == 9 && !p.pmd_mapped));
        assert_eq!(obs.procs[0].regions[1].vmas.len(), 1, "the VMA merged back");
        assert_eq!(run.apply(Op::Madvise { proc: P1, addr: b, len: PMD, advice: Advice::Collapse }), Err(Errno::Again));

        run.ok(Op::Unpin { pin: pin_a });
        run.ok(Op::Unpin { pin: pin_b });
        assert_eq!(run.apply(Op::Unpin { pin: pin_a }), Err(Errno::Inval), "a pin is released once");
        run.ok(Op::Shrink);
        run.ok(Op::Madvise { proc: P1, addr: b, len: PMD, advice: Advice::Collapse });
        let obs = run.observe(&[(P1, a, PMD), (P1, b, PMD)]);
        assert_eq!(counter(&obs, "thp_split_page"), 1, "unpinned, the shrinker splits A");
        assert!(pages(&obs, 0, 0).iter().filter(|p| p.state == PageState::Present).all(|p| p.order == 0));
        assert!(pages(&obs, 0, 1).iter().all(|p| p.order == 9 && p.pmd_mapped), "B collapsed");
        assert_eq!(counter(&obs, "thp_collapse_alloc"), 1);
    });
}

// 4K pages first (no MADV_HUGEPAGE yet), then MADV_HUGEPAGE and one
// khugepaged full scan: collapsed into a PMD THP.
#[test]
fn khugepaged_step_collapses_a_populated_block() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(9);
        let mut run = Run::start();
        run.ok(Op::Spawn { proc: P1 });
        run.ok(Op::Mmap { proc: P1, addr: a, len: PMD, prot: Prot::READ_WRITE });
        run.touch(P1, a, PMD, Access::Write).unwrap();
        let obs = run.observe(&[(P1, a, PMD)]);
        assert!(pages(&obs, 0, 0).iter().all(|p| p.order == 0));
        let collapsed_before = read_knob("khugepaged/pages_collapsed").unwrap().parse::<u64>().unwrap();
        run.ok(Op::Madvise { proc: P1, addr: a, len: PMD, advice: Advice::HugePage });
        let obs = run.observe(&[(P1, a, PMD)]);
        assert!(pages(&obs, 0, 0).iter().all(|p| p.order == 0), "khugepaged stayed quiet");
        run.ok(Op::Khugepaged { full_scans: 1 });
        let obs = run.observe(&[(P1, a, PMD)]);
        assert!(pages(&obs, 0, 0).iter().all(|p| p.order == 9 && p.pmd_mapped && p.folio == Some(0)));
        assert_eq!(counter(&obs, "thp_collapse_alloc"), 1);
        let collapsed_after = read_knob("khugepaged/pages_collapsed").unwrap().parse::<u64>().unwrap();
        assert_eq!(collapsed_after, collapsed_before + 1);
        assert_eq!(read_knob("khugepaged/scan_sleep_millisecs").unwrap(), "3600000", "quiet again");
    });
}

#[test]
fn prctl_except_advised_keeps_thp_only_where_asked() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(10);
        let (advised, plain) = (a, a + PMD);
        let mut run = Run::start();
        run.ok(Op::Set { setting: Setting::from_sysfs("enabled", "always").unwrap() });
        run.ok(Op::Spawn { proc: P1 });
        run.ok(Op::Prctl { proc: P1, disable: ThpDisable::ExceptAdvised });
        run.ok(Op::Mmap { proc: P1, addr: a, len: 2 * PMD, prot: Prot::READ_WRITE });
        run.ok(Op::Madvise { proc: P1, addr: advised, len: PMD, advice: Advice::HugePage });
        run.touch(P1, a, 2 * PMD, Access::Write).unwrap();
        let obs = run.observe(&[(P1, advised, PMD), (P1, plain, PMD)]);
        assert!(pages(&obs, 0, 0).iter().all(|p| p.order == 9 && p.pmd_mapped));
        assert!(pages(&obs, 0, 1).iter().all(|p| p.order == 0));
        // `enabled=always` is system-wide: other processes on the host fault
        // THPs too while it is set, so the counter can only be checked softly.
        assert!(counter(&obs, "thp_fault_alloc") >= 1, "{:?}", obs.vmstat);
    });
}

// Under enabled=always every anonymous mapping of the worker could get a
// THP; the worker touches none of its own memory after it starts, so the
// region's THP is its only one.
#[test]
fn worker_memory_gets_no_thp_under_enabled_always() {
    let Some(_host) = host() else { return };
    let a = region_base(14);
    let mut run = Run::start();
    run.ok(Op::Set { setting: Setting::from_sysfs("enabled", "always").unwrap() });
    run.ok(Op::Spawn { proc: P1 });
    run.ok(Op::Mmap { proc: P1, addr: a, len: PMD, prot: Prot::READ_WRITE });
    run.touch(P1, a, PMD, Access::Write).unwrap();
    run.ok(Op::Fork { parent: P1, child: P2 });
    run.touch(P2, a, PAGE, Access::Write).unwrap();
    for proc in [P1, P2] {
        let pid = run.backend.pid(proc).unwrap();
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
        let thp_kb: u64 = rollup
            .lines()
            .find_map(|l| l.strip_prefix("AnonHugePages:"))
            .and_then(|v| v.split_whitespace().next())
            .map(|v| v.parse().unwrap())
            .unwrap();
        let expected = if proc == P1 { 2048 } else { 0 };
        assert_eq!(thp_kb, expected, "p{}: AnonHugePages of the whole process", proc.0 + 1);
    }
}

// VmPTE counts the scenario's page tables only, and stays exact over many
// steps: unmapping everything brings it back to 0.
#[test]
fn vm_pte_returns_to_zero_when_the_scenario_unmaps_everything() {
    let Some(_host) = host() else { return };
    let a = region_base(15);
    let mut run = Run::start();
    run.thp_region(P1, a, 4 * PMD);
    run.touch(P1, a, 4 * PMD, Access::Write).unwrap();
    run.ok(Op::Mprotect { proc: P1, addr: a + PAGE, len: PAGE, prot: Prot::READ });
    run.touch(P1, a + PMD, PMD, Access::Read).unwrap();
    run.ok(Op::Madvise { proc: P1, addr: a + 2 * PMD, len: PMD, advice: Advice::DontNeed });
    run.ok(Op::Fork { parent: P1, child: P2 });
    run.touch(P2, a + 3 * PMD, PMD, Access::Write).unwrap();
    let obs = run.observe(&[]);
    // 0     2M    4M    6M    8M
    // |PPPPP|HHHHH|     |HHHHH|   P: PTE-mapped (mprotect split it), H: PMD THP,
    //                             block 2 zapped by MADV_DONTNEED.
    // A PUD and a PMD table, block 0's PTE table (the deposited one, put to
    // use by the split), and the tables deposited under blocks 1 and 3.
    assert_eq!(obs.procs[0].vm_pte_kb, 4 + 4 + 4 + 2 * 4, "p1");
    for proc in [P1, P2] {
        run.ok(Op::Munmap { proc, addr: a, len: 4 * PMD });
    }
    let obs = run.observe(&[]);
    assert_eq!((obs.procs[0].vm_pte_kb, obs.procs[1].vm_pte_kb), (0, 0));
}

// Splitting a THP whose subpages hold only zeroes maps the zero page
// instead of them: the outcome depends on page contents.
#[test]
fn split_maps_zero_filled_subpages_to_the_zero_page() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(16);
        let mut run = Run::start();
        run.thp_region(P1, a, PMD);
        run.ok(Op::Touch {
            proc: P1,
            addr: a,
            len: PMD,
            access: Access::Write,
            fill: Fill::Zero,
            pattern: TouchPattern::All,
        });
        run.ok(Op::Touch {
            proc: P1,
            addr: a,
            len: PMD,
            access: Access::Write,
            fill: Fill::NonZero,
            pattern: TouchPattern::EveryNth(4),
        });
        run.ok(Op::Munmap { proc: P1, addr: a + PMD - PAGE, len: PAGE });
        run.ok(Op::Shrink);
        let obs = run.observe(&[(P1, a, PMD)]);
        assert_eq!(counter(&obs, "thp_split_page"), 1);
        for (i, page) in pages(&obs, 0, 0).iter().enumerate().take(511) {
            if i % 4 == 0 {
                assert!(!page.zero_page && page.order == 0 && page.folio.is_some(), "page {i} holds data");
            } else {
                assert!(page.zero_page && page.folio.is_none(), "page {i} held only zeroes: {page:?}");
            }
        }
    });
}

#[test]
fn an_empty_fork_owns_no_page_tables() {
    let Some(_host) = host() else { return };
    let mut run = Run::start();
    run.ok(Op::Spawn { proc: P1 });
    run.ok(Op::Fork { parent: P1, child: P2 });
    let obs = run.observe(&[]);
    assert_eq!(obs.procs.len(), 2);
    assert_eq!((obs.procs[0].name.as_str(), obs.procs[1].name.as_str()), ("p1", "p2"));
    assert_eq!((obs.procs[0].vm_pte_kb, obs.procs[1].vm_pte_kb), (0, 0));
}

#[test]
fn set_refuses_values_the_kernel_refuses() {
    // A typed `Knob` cannot name a path outside the THP directory, a counter
    // or a stat: `Setting::from_sysfs` refuses them before any backend runs.
    for path in [
        "../../../../proc/sys/vm/drop_caches",
        "khugepaged/../../enabled",
        "no_such_knob",
        "khugepaged/full_scans",
        "hugepages-2048kB/stats/split",
        "khugepaged",
    ] {
        assert!(Setting::from_sysfs(path, "1").is_err(), "{path}");
    }
    let Some(_host) = host() else { return };
    let mut run = Run::start();
    assert_eq!(run.apply(Op::Set { setting: Setting::KhugepagedMaxPtesNone(512) }), Err(Errno::Inval));
    assert_eq!(run.apply(Op::Set { setting: Setting::KhugepagedPagesToScan(0) }), Err(Errno::Inval));
}

/// Every knob a scenario might change, set to something else.
fn change_everything(run: &mut Run) {
    for (path, value) in [
        ("enabled", "always"),
        ("defrag", "never"),
        ("use_zero_page", "0"),
        ("shrink_underused", "0"),
        ("hugepages-64kB/enabled", "always"),
        ("hugepages-2048kB/enabled", "never"),
        ("khugepaged/max_ptes_none", "17"),
        ("khugepaged/max_ptes_shared", "3"),
        ("khugepaged/pages_to_scan", "777"),
        ("khugepaged/scan_sleep_millisecs", "5"),
    ] {
        run.ok(Op::Set { setting: Setting::from_sysfs(path, value).unwrap() });
    }
}

fn assert_no_workers(pids: &[i32]) {
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} is still there");
    }
}

#[test]
fn settings_and_processes_are_restored_after_drop() {
    let Some(_host) = host() else { return };
    let before = ThpSettings::read().unwrap();
    let mut pids = Vec::new();
    {
        let mut run = Run::start();
        change_everything(&mut run);
        run.thp_region(P1, region_base(11), PMD);
        run.ok(Op::Fork { parent: P1, child: P2 });
        pids.extend([run.backend.pid(P1).unwrap(), run.backend.pid(P2).unwrap()]);
        assert_ne!(ThpSettings::read().unwrap(), before);
    }
    assert_eq!(ThpSettings::read().unwrap(), before);
    assert_no_workers(&pids);
    assert!(!Path::new("/run/thpsim-oracle.settings").exists(), "the saved-settings file is removed");
}

#[test]
fn settings_and_processes_are_restored_after_a_panic() {
    let Some(_host) = host() else { return };
    let before = ThpSettings::read().unwrap();
    let mut pids = Vec::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut run = Run::start();
        change_everything(&mut run);
        run.thp_region(P1, region_base(12), PMD);
        pids.push(run.backend.pid(P1).unwrap());
        panic!("a test failing half-way");
    }));
    assert!(outcome.is_err());
    assert_eq!(ThpSettings::read().unwrap(), before);
    assert_no_workers(&pids);
}

#[test]
fn an_error_shuts_the_backend_down_at_once() {
    let Some(_host) = host() else { return };
    let before = ThpSettings::read().unwrap();
    let mut run = Run::start();
    change_everything(&mut run);
    run.ok(Op::Spawn { proc: P1 });
    let pid = run.backend.pid(P1).unwrap();
    // An operation on a process that does not exist is the caller's bug.
    assert!(run.backend.apply(&Op::Munmap { proc: P2, addr: BASE, len: PAGE }).is_err());
    assert_eq!(ThpSettings::read().unwrap(), before, "restored before the backend is dropped");
    assert_no_workers(&[pid]);
    assert!(run.backend.apply(&Op::Spawn { proc: P2 }).is_err(), "no more work after an error");
}

/// Set in the environment of the helper process the signal tests start.
const HELPER_ENV: &str = "THPSIM_LINUX_SIGNAL_HELPER";

/// Not a test by itself: the body of the process the signal tests start
/// (this test binary again, with `HELPER_ENV` set). It changes every knob,
/// starts two workers with a THP, says READY and waits to be signalled.
#[test]
fn signal_helper_process() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let mut run = Run::start();
    change_everything(&mut run);
    let a = region_base(13);
    run.thp_region(P1, a, PMD);
    run.touch(P1, a, PMD, Access::Write).unwrap();
    run.ok(Op::Fork { parent: P1, child: P2 });
    println!("READY {} {}", run.backend.pid(P1).unwrap(), run.backend.pid(P2).unwrap());
    std::thread::sleep(Duration::from_secs(120));
}

/// `pid` and its live (not zombie) descendants.
fn process_tree(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; a zombie has no memory left to matter.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let (Some(state), Some(ppid)) = (rest.next(), rest.next()) else {
            continue;
        };
        if state != "Z" {
            parents.push((child, ppid.parse().unwrap_or(0)));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|&&(_, p)| p == parent).map(|&(c, _)| c));
        i += 1;
    }
    tree
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()) != Some("Z"))
}

/// Starts the helper, waits for READY, sends `signal`, and returns the
/// helper's exit status once it is gone and its workers are gone.
fn signal_the_helper(signal: Signal) -> std::process::ExitStatus {
    let exe = std::env::current_exe().unwrap();
    // `ulimit -c 0`: SIGQUIT's default action dumps core.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -c 0; exec \"$0\" \"$@\"")
        .arg(exe)
        .args(["--exact", "signal_helper_process", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // libtest prints `test signal_helper_process ... ` first, on the same line.
    let ready = loop {
        match lines.next() {
            Some(Ok(line)) => match line.find("READY ") {
                Some(at) => break line[at..].to_string(),
                None => continue,
            },
            other => panic!("the helper ended before it was ready: {other:?}, {:?}", child.wait()),
        }
    };
    let workers: Vec<i32> = ready.split_whitespace().skip(1).map(|p| p.parse().unwrap()).collect();
    // The helper's workers: the sentinel, p1, and p1's child p2.
    let tree = process_tree(child.id() as i32);
    assert!(tree.len() >= 4 && workers.iter().all(|w| tree.contains(w)), "{tree:?} {workers:?}");
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = child.wait().unwrap();
    // Workers see their socket close and exit on their own after SIGKILL;
    // give them a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tree.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<i32> = tree.iter().copied().filter(|&pid| alive(pid)).collect();
    assert_eq!(left, Vec::<i32>::new(), "the helper {tree:?} and its workers are gone");
    status
}

#[test]
fn settings_are_restored_on_sigint_sigterm_sighup_sigquit() {
    use std::os::unix::process::ExitStatusExt;
    let Some(_host) = host() else { return };
    let before = ThpSettings::read().unwrap();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        let status = signal_the_helper(signal);
        assert_eq!(status.signal(), Some(signal as i32), "{signal}: the helper dies of the signal itself");
        assert_eq!(ThpSettings::read().unwrap(), before, "{signal}: settings restored");
        assert!(!Path::new("/run/thpsim-oracle.settings").exists(), "{signal}: saved-settings file removed");
    }
}

#[test]
fn settings_left_by_a_sigkill_are_restored_at_the_next_start() {
    let Some(_host) = host() else { return };
    let before = ThpSettings::read().unwrap();
    signal_the_helper(Signal::SIGKILL);
    assert_ne!(ThpSettings::read().unwrap(), before, "nothing can restore on SIGKILL");
    assert!(Path::new("/run/thpsim-oracle.settings").exists(), "the saved settings are left behind");
    let restored_at_start;
    {
        let run = Run::start();
        restored_at_start = run.backend.warnings().iter().any(|w| w.contains("did not finish"));
    }
    assert!(restored_at_start, "the next backend says it restored a killed run's settings");
    assert_eq!(ThpSettings::read().unwrap(), before);
}

fn nr_anon_2048kb() -> i64 {
    let text = read_knob("hugepages-2048kB/stats/nr_anon").expect("reading hugepages-2048kB/stats/nr_anon");
    text.parse().unwrap()
}

// A |AAAAAAAA|...  16 PMD THPs, each pinned by an io_uring fixed buffer of
//                  its own ring, still pinned when the run ends: once the
//                  backend is dropped (and has released the host), the
//                  folios are freed already, not later by the rings' exit
//                  work in the next scenario's counters. Repeated, since
//                  that work usually wins the race.
#[test]
fn pinned_thps_are_freed_before_the_backend_lets_go() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(17);
        const N: u64 = 16;
        for _ in 0..5 {
            let before = nr_anon_2048kb();
            let mut run = Run::start();
            run.thp_region(P1, a, N * PMD);
            run.touch(P1, a, N * PMD, Access::Write).unwrap();
            for i in 0..N {
                run.ok(Op::Pin { proc: P1, pin: PinRef(i as u32), addr: a + i * PMD, len: PMD, longterm: true });
            }
            let obs = run.observe(&[(P1, a, N * PMD)]);
            assert_eq!(mthp(&obs, "2048kB/nr_anon"), N as i64);
            drop(run);
            // No sleep: the drop itself waits.
            assert_eq!(nr_anon_2048kb(), before, "pinned THPs outlived their backend");
        }
    });
}

// A |.   .   .   .   |  four 2 MiB blocks with one 4K page each, max_ptes_none=0:
//                       each `khugepaged 1` scans each block exactly once
//                       (thp_scan_exceed_none_pte +4 per step), also when
//                       the previous run left khugepaged's cursor elsewhere.
#[test]
fn one_khugepaged_step_is_one_pass() {
    let Some(_host) = host() else { return };
    with_retries(|| {
        let a = region_base(18);
        for _ in 0..2 {
            let mut run = Run::start();
            run.ok(Op::Set { setting: Setting::from_sysfs("khugepaged/max_ptes_none", "0").unwrap() });
            run.ok(Op::Spawn { proc: P1 });
            run.ok(Op::Mmap { proc: P1, addr: a, len: 4 * PMD, prot: Prot::READ_WRITE });
            for block in 0..4 {
                run.touch(P1, a + block * PMD, PAGE, Access::Write).unwrap();
            }
            run.ok(Op::Madvise { proc: P1, addr: a, len: 4 * PMD, advice: Advice::HugePage });
            run.ok(Op::Khugepaged { full_scans: 1 });
            let obs = run.observe(&[(P1, a, 4 * PMD)]);
            assert_eq!(counter(&obs, "thp_scan_exceed_none_pte"), 4, "one pass scans each block once");
            run.ok(Op::Khugepaged { full_scans: 1 });
            let obs = run.observe(&[(P1, a, 4 * PMD)]);
            assert_eq!(counter(&obs, "thp_scan_exceed_none_pte"), 8, "two passes twice");
            assert_eq!(counter(&obs, "thp_collapse_alloc"), 0);
            assert_eq!(read_knob("khugepaged/pages_to_scan").unwrap(), "1", "quiet again after the step");
        }
    });
}

// A |AAAAAAAAAAAAAAAA|  128 MiB of 4K pages written under ram=64M: the
//                      scenario's memory cgroup OOM-kills the worker (no
//                      swap, nothing to reclaim); the backend says so and
//                      removes the group.
#[test]
fn ram_is_a_memory_cgroup_limit() {
    let Some(_host) = host() else { return };
    let memcg = Path::new(thpsim_oracle::linux::MEMCG_ROOT);
    if !memcg.join("memory.limit_in_bytes").exists() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true but {} is missing", memcg.display());
        eprintln!("skipping: no cgroup v1 memory controller at {}", memcg.display());
        return;
    }
    let group = memcg.join(format!("thpsim-oracle-{}", std::process::id()));
    let a = region_base(19);
    let options = LinuxOptions { lock_path: None, ram_limit: Some(64 << 20), ..LinuxOptions::default() };
    let mut backend = LinuxBackend::with_options(options).expect("starting the Linux backend");
    assert!(group.is_dir(), "the scenario's memory cgroup exists while it runs");
    assert_eq!(std::fs::read_to_string(group.join("memory.limit_in_bytes")).unwrap().trim(), "67108864");
    backend.apply(&Op::Spawn { proc: P1 }).unwrap().unwrap();
    let pid = backend.pid(P1).unwrap();
    let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l.trim() == pid.to_string()), "the worker runs in the group: {procs:?}");
    backend.apply(&Op::Mmap { proc: P1, addr: a, len: 128 << 20, prot: Prot::READ_WRITE }).unwrap().unwrap();
    let touched = backend.apply(&Op::Touch {
        proc: P1,
        addr: a,
        len: 128 << 20,
        access: Access::Write,
        fill: Fill::NonZero,
        pattern: TouchPattern::All,
    });
    let err = touched.expect_err("over the limit the worker is OOM-killed").to_string();
    assert!(err.contains("OOM killer"), "{err}");
    drop(backend);
    assert!(!group.exists(), "the group is removed");
}
