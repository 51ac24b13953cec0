//! Random operations where memory runs out: machines of 2 MiB to 256 MiB of
//! RAM, and allocation failures injected at the named points
//! (`FailPoint::PageTable`, `FailPoint::Folio`), armed per case and re-armed
//! mid-sequence (issue 7, item 8).
//!
//! `random_ops_on_tiny_machines_with_failure_injection` checks that every
//! call answers with an errno the kernel can return for that call, that
//! nothing panics (the model checks every invariant after every operation),
//! that every page is back in the allocator once every process exited, and
//! that the failure paths were really taken: in a good share of cases an
//! injected failure happened and some call returned `ENOMEM`.
//!
//! `event_stream_agrees_with_the_counters` runs the same kind of sequences
//! with the event stream on and compares, after every operation, the drained
//! `MmEvent`s with the counter deltas (the pairs are listed on
//! `check_events_against_counters`).
//!
//! Both use a fixed seed and a fixed number of cases: a failure replays.
//! `THPSIM_OOM_CASES=n` runs n cases instead (for long release runs).

use std::cell::RefCell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use thpsim_mm::world::PGD_ALLOCATION_ORDER;
use thpsim_mm::*;

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

/// Address windows the operations work in: a 64 MiB arena at 32 TiB, one at
/// the next 1 GiB (a PUD entry of its own: its first use allocates a PMD
/// table) and one 512 GiB further (a PGD entry of its own: a PUD table too).
/// mremap moves regions between them, to 1 GiB-aligned destinations.
const WINDOWS: [u64; 3] = [0x2000_0000_0000, 0x2000_0000_0000 + G, 0x2000_0000_0000 + 512 * G];
/// Each window holds 8 slots of 8 MiB, so operations collide often.
const SLOTS: u64 = 8;
const SLOT: u64 = 8 * M;

/// RAM sizes a case picks from: the tiny ones of this test and the larger
/// ones of `random_ops.rs`.
const RAM_SIZES: [u64; 7] = [2 * M, 4 * M, 8 * M, 16 * M, 64 * M, 128 * M, 256 * M];

/// A page-aligned address: `WINDOWS[window] + off`.
#[derive(Clone, Copy, Debug)]
struct At {
    window: usize,
    off: u64,
}

impl At {
    fn vaddr(self) -> Vaddr {
        Vaddr(WINDOWS[self.window] + self.off)
    }
}

/// The start of a range an operation acts on.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// A fixed address, mapped or not.
    At(At),
    /// Page `page` (modulo its length) of the process's `vma`-th VMA
    /// (modulo their number), so most operations find memory to act on.
    InVma { vma: usize, page: u64 },
}

impl Start {
    fn vaddr(self, w: &World, pid: Pid) -> Vaddr {
        match self {
            Start::At(at) => at.vaddr(),
            Start::InVma { vma, page } => {
                let vmas: Vec<(Vaddr, u64)> =
                    w.mm(pid).expect("live process").vmas().iter().map(|v| (v.start, v.len() / PAGE_SIZE)).collect();
                match vmas.get(vma % vmas.len().max(1)) {
                    Some(&(start, pages)) => start.add(page % pages * PAGE_SIZE),
                    None => Vaddr(WINDOWS[0] + page * PAGE_SIZE),
                }
            }
        }
    }
}

/// Where mremap puts the region.
#[derive(Clone, Copy, Debug)]
enum Dest {
    /// In place only (no MREMAP_MAYMOVE).
    InPlace,
    /// MREMAP_MAYMOVE: in place if it fits, elsewhere otherwise.
    MayMove,
    /// MREMAP_MAYMOVE | MREMAP_FIXED.
    Fixed(At),
}

/// How a failure-injection point is armed.
#[derive(Clone, Copy, Debug)]
enum Arm {
    /// `FailAttr::nth(n)`: the n-th allocation from now fails, once.
    Nth(u64),
    /// `FailAttr::random(percent, seed)`.
    Random(u32, u64),
}

impl Arm {
    fn attr(self) -> FailAttr {
        match self {
            Arm::Nth(n) => FailAttr::nth(n),
            Arm::Random(percent, seed) => FailAttr::random(percent, seed),
        }
    }
}

/// One call into the model. Process arguments index the live processes,
/// modulo their number.
#[derive(Clone, Copy, Debug)]
enum Op {
    Spawn,
    Fork(usize),
    Exit(usize),
    Mmap(usize, At, u64),
    Munmap(usize, Start, u64),
    Mprotect(usize, Start, u64, Prot),
    /// Process, old range, new length, destination.
    Mremap(usize, Start, u64, u64, Dest),
    Madvise(usize, Start, u64, Advice),
    Touch(usize, Start, u64, Access, Fill),
    Pin(usize, Start, u64),
    Unpin(usize),
    Prctl(usize, ThpDisable),
    Khugepaged,
    DropCaches,
    Knob(usize),
    Inject(FailPoint, Arm),
}

const ADVICES: [Advice; 12] = [
    Advice::Normal,
    Advice::DontNeed,
    Advice::Free,
    Advice::HugePage,
    Advice::NoHugePage,
    Advice::Collapse,
    Advice::Cold,
    Advice::PageOut,
    Advice::PopulateRead,
    Advice::PopulateWrite,
    Advice::DontFork,
    Advice::DoFork,
];

const KNOBS: [(&str, &str); 16] = [
    ("enabled", "always"),
    ("enabled", "madvise"),
    ("hugepages-64kB/enabled", "always"),
    ("hugepages-16kB/enabled", "inherit"),
    ("hugepages-32kB/enabled", "always"),
    ("hugepages-128kB/enabled", "always"),
    ("hugepages-256kB/enabled", "inherit"),
    ("hugepages-512kB/enabled", "always"),
    ("hugepages-1024kB/enabled", "always"),
    ("hugepages-64kB/enabled", "never"),
    ("use_zero_page", "0"),
    ("use_zero_page", "1"),
    ("khugepaged/max_ptes_none", "0"),
    ("defrag", "always"),
    ("defrag", "madvise"),
    ("khugepaged/max_ptes_none", "511"),
];

fn window() -> impl Strategy<Value = usize> {
    prop_oneof![8 => Just(0usize), 2 => Just(1usize), 1 => Just(2usize)]
}

/// A page-aligned range: inside a VMA of the process three times out of
/// four, anywhere in a window otherwise.
fn range() -> impl Strategy<Value = (Start, u64)> {
    let start = prop_oneof![
        3 => (0..8usize, 0..1024u64).prop_map(|(vma, page)| Start::InVma { vma, page }),
        1 => (window(), 0..SLOTS * SLOT / 4096).prop_map(|(window, page)| Start::At(At { window, off: page * 4096 })),
    ];
    (start, prop_oneof![1..8u64, 1..1024u64, Just(512u64), Just(1024u64)]).prop_map(|(start, n)| (start, n * 4096))
}

/// The start of a region to map: a slot start, sometimes shifted off PMD
/// alignment.
fn slot_start() -> impl Strategy<Value = At> {
    (window(), 0..SLOTS, prop_oneof![3 => Just(0u64), 1 => (1..512u64).prop_map(|p| p * 4096)])
        .prop_map(|(window, slot, shift)| At { window, off: slot * SLOT + shift })
}

fn dest() -> impl Strategy<Value = Dest> {
    prop_oneof![
        1 => Just(Dest::InPlace),
        2 => Just(Dest::MayMove),
        2 => (window(), 0..SLOTS * SLOT / 4096).prop_map(|(window, p)| Dest::Fixed(At { window, off: p * 4096 })),
        // A 1 GiB-aligned destination, in a PUD entry (or PGD entry) of its own.
        2 => (1..3usize).prop_map(|window| Dest::Fixed(At { window, off: 0 })),
    ]
}

fn arm() -> impl Strategy<Value = Arm> {
    prop_oneof![(1..32u64).prop_map(Arm::Nth), (1..40u32, any::<u64>()).prop_map(|(p, s)| Arm::Random(p, s))]
}

fn fail_point() -> impl Strategy<Value = FailPoint> {
    prop_oneof![Just(FailPoint::PageTable), Just(FailPoint::Folio)]
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..4usize;
    let prot = prop_oneof![Just(Prot::NONE), Just(Prot::READ), Just(Prot::READ_WRITE)];
    let len = prop_oneof![Just(2 * M), Just(4 * M), Just(M), Just(3 * M + 4096), Just(64 * K)];
    let new_len = prop_oneof![Just(0u64), Just(4096u64), Just(2 * M)];
    let thp_disable = prop_oneof![Just(ThpDisable::Off), Just(ThpDisable::All), Just(ThpDisable::ExceptAdvised)];
    prop_oneof![
        1 => Just(Op::Spawn),
        2 => p.clone().prop_map(Op::Fork),
        1 => p.clone().prop_map(Op::Exit),
        4 => (p.clone(), slot_start(), len).prop_map(|(p, a, l)| Op::Mmap(p, a, l)),
        2 => (p.clone(), range()).prop_map(|(p, (a, l))| Op::Munmap(p, a, l)),
        2 => (p.clone(), range(), prot).prop_map(|(p, (a, l), prot)| Op::Mprotect(p, a, l, prot)),
        // The new length is the old one, one page less, or 2 MiB more.
        2 => (p.clone(), range(), new_len, dest()).prop_map(|(p, (a, l), n, d)| {
            let new_len = match n {
                0 => l,
                4096 => l.saturating_sub(4096).max(4096),
                grow => l + grow,
            };
            Op::Mremap(p, a, l, new_len, d)
        }),
        4 => (p.clone(), range(), 0..ADVICES.len()).prop_map(|(p, (a, l), i)| Op::Madvise(p, a, l, ADVICES[i])),
        8 => (p.clone(), range(), any::<bool>(), any::<bool>()).prop_map(|(p, (a, l), w, z)| {
            let access = if w { Access::Write } else { Access::Read };
            Op::Touch(p, a, l, access, if z { Fill::Zero } else { Fill::NonZero })
        }),
        1 => (p.clone(), range()).prop_map(|(p, (a, l))| Op::Pin(p, a, l)),
        1 => p.clone().prop_map(Op::Unpin),
        1 => (p.clone(), thp_disable).prop_map(|(p, d)| Op::Prctl(p, d)),
        // MADV_COLLAPSE over a whole region, so collapses happen.
        1 => (p, 0..8usize).prop_map(|(p, vma)| Op::Madvise(p, Start::InVma { vma, page: 0 }, 4 * M, Advice::Collapse)),
        1 => Just(Op::Khugepaged),
        1 => Just(Op::DropCaches),
        2 => (0..KNOBS.len()).prop_map(Op::Knob),
        1 => (fail_point(), arm()).prop_map(|(point, arm)| Op::Inject(point, arm)),
    ]
}

/// One random case: the machine, the points armed at boot, the operations.
#[derive(Clone, Debug)]
struct Case {
    ram_bytes: u64,
    armed: Vec<(FailPoint, Arm)>,
    ops: Vec<Op>,
}

/// A case on a machine of `ram`; up to four knobs are written at boot.
fn case(ram: impl Strategy<Value = u64>) -> impl Strategy<Value = Case> {
    let boot_knobs = prop::collection::vec((0..KNOBS.len()).prop_map(Op::Knob), 0..5);
    // A third of the cases inject nothing, so memory also runs out for real.
    let injection = prop_oneof![1 => Just(false), 2 => Just(true)];
    let armed = prop::collection::vec((fail_point(), arm()), 0..3);
    let ops = (boot_knobs, prop::collection::vec(op(), 1..80)).prop_map(|(mut knobs, ops)| {
        knobs.extend(ops);
        knobs
    });
    (ram, injection, armed, ops).prop_map(|(ram_bytes, injection, armed, ops)| {
        if injection {
            Case { ram_bytes, armed, ops }
        } else {
            let ops = ops.into_iter().filter(|op| !matches!(op, Op::Inject(..))).collect();
            Case { ram_bytes, armed: Vec::new(), ops }
        }
    })
}

/// The errnos Linux 6.18 can return for `op` with the arguments this test
/// passes (valid, page-aligned ranges; private anonymous memory; no mlock,
/// no rlimits). `None` means the call cannot fail.
fn errnos_linux_can_return(op: &Op) -> &'static [Errno] {
    use Errno::*;
    match op {
        // fork(): dup_mm() failing is ENOMEM (EAGAIN needs RLIMIT_NPROC).
        Op::Spawn | Op::Fork(_) => &[NoMem],
        // MAP_FIXED_NOREPLACE over a mapping, or no memory for the VMA.
        Op::Mmap(..) => &[Exist, NoMem],
        // __split_vma() can fail with ENOMEM.
        Op::Munmap(..) => &[NoMem],
        // A hole in the range, or no memory to split a VMA.
        Op::Mprotect(..) => &[NoMem],
        // No VMA at the old address (EFAULT), overlapping ranges (EINVAL),
        // no room or no memory (ENOMEM).
        Op::Mremap(..) => &[Fault, Inval, NoMem],
        Op::Madvise(_, _, _, advice) => match advice {
            // madvise_populate(): no VMA or OOM, incompatible VMA, SIGSEGV.
            Advice::PopulateRead | Advice::PopulateWrite => &[NoMem, Inval, Fault],
            // madvise_collapse_errno().
            Advice::Collapse => &[NoMem, Inval, Again, Busy],
            // A hole in the range, or no memory to split a VMA.
            _ => &[NoMem],
        },
        // A user access: VM_FAULT_OOM or VM_FAULT_SIGSEGV.
        Op::Touch(..) => &[NoMem, Fault],
        // pin_user_pages(): no VMA or no permission (EFAULT), OOM (ENOMEM).
        Op::Pin(..) => &[NoMem, Fault],
        Op::Exit(_) | Op::Unpin(_) | Op::Prctl(..) | Op::Khugepaged | Op::DropCaches | Op::Knob(_) | Op::Inject(..) => {
            &[]
        }
    }
}

/// What one case did, for the figures.
#[derive(Clone, Copy, Debug, Default)]
struct CaseReport {
    armed: bool,
    /// Failures injected, at both points.
    injected: u64,
    /// ENOMEM answers of every kind (a hole in a range included).
    enomem: u64,
    /// ENOMEM answers caused by a failed allocation: during the call an
    /// injected failure happened, or the call is one whose only ENOMEM is a
    /// failed allocation (spawn, fork, a touch, a pin).
    enomem_alloc: u64,
    /// Of those, the ones where nothing was injected during the call: the
    /// machine really ran short.
    enomem_short: u64,
}

/// A machine, its live processes and pins, driven by `Op`s.
struct Harness {
    w: World,
    procs: Vec<Pid>,
    pins: Vec<PinId>,
    report: CaseReport,
}

impl Harness {
    fn boot(case: &Case, events: bool) -> Harness {
        let mut w = World::new(Machine { ram_bytes: case.ram_bytes }, Config::default());
        if events {
            w.events_mut().enable();
        }
        for &(point, arm) in &case.armed {
            w.inject(point, arm.attr());
        }
        let mut h = Harness { w, procs: Vec::new(), pins: Vec::new(), report: CaseReport::default() };
        h.report.armed = !case.armed.is_empty();
        // The first process may itself fail to start on a tiny machine.
        h.apply(&Op::Spawn);
        h
    }

    fn pick(&self, i: usize) -> Option<Pid> {
        self.procs.get(i % self.procs.len().max(1)).copied()
    }

    /// Applies `op`, panicking if the model answers with an errno Linux
    /// cannot return for it.
    fn apply(&mut self, op: &Op) {
        let injected_before = self.nr_injected();
        let result: Result<(), Errno> = match *op {
            Op::Spawn => self.w.spawn().map(|p| {
                self.procs.push(p);
            }),
            Op::Fork(i) => match self.pick(i) {
                Some(p) => self.w.fork(p).map(|c| {
                    self.procs.push(c);
                }),
                None => Ok(()),
            },
            // The last process stays (it may exit at teardown), so sequences
            // keep running against a populated address space.
            Op::Exit(i) => {
                if self.procs.len() <= 1 {
                    Ok(())
                } else {
                    let p = self.procs.remove(i % self.procs.len());
                    self.w.exit(p)
                }
            }
            Op::Mmap(i, at, len) => self.with_proc(i, |w, p| w.mmap(p, Some(at.vaddr()), len, Prot::READ_WRITE)),
            Op::Munmap(i, at, len) => self.with_proc(i, |w, p| w.munmap(p, at.vaddr(w, p), len)),
            Op::Mprotect(i, at, len, prot) => self.with_proc(i, |w, p| w.mprotect(p, at.vaddr(w, p), len, prot)),
            Op::Mremap(i, at, len, new_len, dest) => self.with_proc(i, |w, p| {
                let (may_move, to) = match dest {
                    Dest::InPlace => (false, None),
                    Dest::MayMove => (true, None),
                    Dest::Fixed(to) => (true, Some(to.vaddr())),
                };
                w.mremap(p, at.vaddr(w, p), len, new_len, may_move, to)
            }),
            Op::Madvise(i, at, len, advice) => self.with_proc(i, |w, p| w.madvise(p, at.vaddr(w, p), len, advice)),
            Op::Touch(i, at, len, access, fill) => self.with_proc(i, |w, p| {
                let pages: Vec<u64> = (0..len / 4096).collect();
                w.touch_pages(p, at.vaddr(w, p), &pages, access, fill)
            }),
            Op::Pin(i, at, len) => match self.pick(i) {
                Some(p) => {
                    let addr = at.vaddr(&self.w, p);
                    self.w.pin_user_pages(p, addr, len / 4096, true).map(|pin| self.pins.push(pin))
                }
                None => Ok(()),
            },
            Op::Unpin(i) => {
                if self.pins.is_empty() {
                    Ok(())
                } else {
                    let pin = self.pins.remove(i % self.pins.len());
                    self.w.unpin(pin)
                }
            }
            Op::Prctl(i, disable) => self.with_proc(i, |w, p| w.prctl_set_thp_disable(p, disable)),
            Op::Khugepaged => {
                self.w.khugepaged_scan(1);
                Ok(())
            }
            Op::DropCaches => {
                self.w.drop_caches();
                Ok(())
            }
            Op::Knob(k) => self.w.set_knob(KNOBS[k].0, KNOBS[k].1),
            Op::Inject(point, arm) => {
                self.w.inject(point, arm.attr());
                self.report.armed = true;
                Ok(())
            }
        };
        if let Err(e) = result {
            let allowed = errnos_linux_can_return(op);
            assert!(allowed.contains(&e), "{op:?} returned {e:?}; Linux returns only {allowed:?} here");
            if e == Errno::NoMem {
                self.report.enomem += 1;
                let injected = self.nr_injected() > injected_before;
                if injected || matches!(op, Op::Spawn | Op::Fork(_) | Op::Touch(..) | Op::Pin(..)) {
                    self.report.enomem_alloc += 1;
                    self.report.enomem_short += u64::from(!injected);
                }
            }
        }
    }

    fn nr_injected(&self) -> u64 {
        FailPoint::ALL.iter().map(|&p| self.w.fault_injection().nr_injected(p)).sum()
    }

    fn with_proc<T>(&mut self, i: usize, f: impl FnOnce(&mut World, Pid) -> Result<T, Errno>) -> Result<(), Errno> {
        match self.pick(i) {
            Some(p) => f(&mut self.w, p).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Unpins everything, exits every process and runs the shrinkers (with
    /// the injection points still armed: teardown allocates nothing); then
    /// every page must be back in the allocator.
    fn teardown(mut self) -> CaseReport {
        for pin in std::mem::take(&mut self.pins) {
            self.w.unpin(pin).expect("unpin a live pin");
        }
        for p in std::mem::take(&mut self.procs) {
            self.w.exit(p).expect("exit a live process");
        }
        self.w.drop_caches();
        let w = &self.w;
        assert_eq!(w.folios().len(), 0, "folios leaked after every process exited");
        assert_eq!(w.page_tables().len(), 0, "page tables leaked after every process exited");
        assert_eq!(w.buddy().nr_free_pages(), w.boot_free_pages(), "pages leaked after every process exited");
        assert_eq!(w.stats().nr_page_table_pages(), 0, "nr_page_table_pages after every process exited");
        assert_eq!(w.stats().nr_anon_pages(), 0, "nr_anon_pages after every process exited");
        self.report.injected = self.nr_injected();
        self.report
    }
}

/// The figures over all cases run (shrinking runs included).
#[derive(Debug, Default)]
struct Figures {
    cases: u64,
    armed: u64,
    injected: u64,
    enomem: u64,
    enomem_alloc: u64,
    enomem_short: u64,
    /// By RAM size in MiB: cases, cases where a failed allocation gave ENOMEM.
    by_ram: BTreeMap<u64, (u64, u64)>,
}

impl Figures {
    fn add(&mut self, ram_bytes: u64, r: CaseReport) {
        self.cases += 1;
        self.armed += u64::from(r.armed);
        self.injected += u64::from(r.injected > 0);
        self.enomem += u64::from(r.enomem > 0);
        self.enomem_alloc += u64::from(r.enomem_alloc > 0);
        self.enomem_short += u64::from(r.enomem_short > 0);
        let by_ram = self.by_ram.entry(ram_bytes / M).or_default();
        by_ram.0 += 1;
        by_ram.1 += u64::from(r.enomem_alloc > 0);
    }
}

fn nr_cases(default: u32) -> u32 {
    std::env::var("THPSIM_OOM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `nr_cases` random cases from a fixed seed; `body` runs one case and
/// reports what it did. Returns the figures.
fn run_cases(
    seed: u8,
    nr_cases: u32,
    cases: impl Strategy<Value = Case>,
    body: impl Fn(&Case) -> CaseReport,
) -> Figures {
    let config = ProptestConfig {
        cases: nr_cases,
        max_shrink_iters: 4000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]));
    let figures = RefCell::new(Figures::default());
    let started = std::time::Instant::now();
    let result = runner.run(&cases, |case| {
        let report = body(&case);
        figures.borrow_mut().add(case.ram_bytes, report);
        Ok(())
    });
    let elapsed = started.elapsed().as_secs_f64();
    if let Err(e) = result {
        panic!("{e}");
    }
    let f = figures.into_inner();
    eprintln!(
        "{} cases in {elapsed:.2}s ({:.0}/s): {} armed a point, {} injected a failure, {} saw ENOMEM, \
         {} ENOMEM from a failed allocation, {} without injection; \
         by RAM MiB (cases, ENOMEM from a failed allocation): {:?}",
        f.cases,
        f.cases as f64 / elapsed,
        f.armed,
        f.injected,
        f.enomem,
        f.enomem_alloc,
        f.enomem_short,
        f.by_ram
    );
    f
}

#[test]
fn random_ops_on_tiny_machines_with_failure_injection() {
    let ram = prop_oneof![
        2 => Just(RAM_SIZES[0]),
        2 => Just(RAM_SIZES[1]),
        2 => Just(RAM_SIZES[2]),
        2 => Just(RAM_SIZES[3]),
        2 => Just(RAM_SIZES[4]),
        1 => Just(RAM_SIZES[5]),
        1 => Just(RAM_SIZES[6]),
    ];
    let figures = run_cases(0x7e, nr_cases(300), case(ram), |case| {
        let mut h = Harness::boot(case, false);
        for op in &case.ops {
            h.apply(op);
        }
        h.teardown()
    });
    // The test must keep reaching the failure paths: guard against a change
    // that quietly stops injecting or stops running out of memory.
    assert!(
        figures.injected * 3 >= figures.armed,
        "only {} of {} armed cases injected a failure",
        figures.injected,
        figures.armed
    );
    assert!(figures.armed * 2 >= figures.cases, "only {} of {} cases armed a point", figures.armed, figures.cases);
    let (alloc, short) = (figures.enomem_alloc, figures.enomem_short);
    assert!(alloc * 3 >= figures.cases, "only {alloc} of {} cases saw ENOMEM from a failed allocation", figures.cases);
    let tiny: u64 = figures.by_ram.range(..=16).map(|(_, (_, enomem))| enomem).sum();
    assert!(
        short > 0 && tiny > 0,
        "no case ran short of memory without injection ({short}), or none on a tiny machine"
    );
}

/// Counts the events for which `pred` holds.
fn count(events: &[MmEvent], pred: impl Fn(&MmEvent) -> bool) -> i64 {
    events.iter().filter(|e| pred(e)).count() as i64
}

/// Checks the events one operation emitted against the counter deltas it
/// caused. Each pair below is exact because the event and the counter are
/// emitted at the same place, on the same condition:
///
/// - `SplitPmd` = `thp_split_pmd`: both in `split_huge_pmd()`, after it found
///   a PMD leaf to split; it cannot fail (the deposit becomes the table).
/// - `SplitFolio { order: PMD }` = `thp_split_page`, and `SplitFolio { order }`
///   = the `split` mTHP stat of that order (2..=8): `split_folio()` counts on
///   success, and only a successful split emits the event.
/// - `Collapse` = `thp_collapse_alloc`: `collapse_huge_page()` counts once the
///   THP is allocated and cannot fail after that, ending with the event.
///   `KhugepagedScanPmd { status: "succeeded" }` is emitted for the same
///   collapses, and `status: "alloc_huge_page_failed"` for each
///   `thp_collapse_alloc_failed`.
/// - `KhugepagedScanPmd { status: "exceed_none_pte" }` = `thp_scan_exceed_none_pte`
///   and `"exceed_shared_pte"` = `thp_scan_exceed_share_pte`: counted where
///   the scan stops with that status, which the tracepoint then reports.
/// - khugepaged's `pages_collapsed` grows by the `Collapse` events of a
///   khugepaged pass, and not at all in any other operation (MADV_COLLAPSE).
/// - `Migrate { order }`, in pages, = `pgmigrate_success`: compaction counts
///   and emits per moved folio.
/// - `PtAlloc` − `PtFree` = the change of `nr_page_table_pages`, less the
///   PGDs of processes started or ended: `alloc_pt_page()`/`free_pt_page()`
///   account and emit together; the PGD (`mm_alloc()`, `exit()`) is
///   accounted without an event: `PtLevel::Pgd` is never emitted, so a cost
///   model misses the PGD allocation of fork and spawn (reported, not a panic).
/// - `Zeroed { bytes: PMD_SIZE }` = `thp_fault_alloc` + `thp_zero_page_alloc`:
///   only a fresh PMD THP (`map_anon_folio_pmd()`) and the huge zero folio
///   clear 2 MiB; PTE-level faults clear at most an mTHP of order 8.
/// - `Fault { order }` for mTHP orders 2..=8 = that order's
///   `anon_fault_alloc`: `do_anonymous_page()` counts and emits once per
///   folio mapped. For the PMD order the stat equals `thp_fault_alloc`.
///
/// Not exact, so not checked: `Fault { order: PMD }` (also emitted for the
/// huge zero folio and for reusing an exclusive THP), `Fault` against
/// `pgfault` (GUP faults emit events but do not count, failed faults count
/// without an event), `fallback` against `anon_fault_fallback` (one event per
/// fault, one count per order tried), `Copied` and `TlbFlush` (no counter).
///
/// Returns each pair's name with the count both sides agreed on.
fn check_events_against_counters(
    op: &Op,
    before: &Stats,
    after: &Stats,
    events: &[MmEvent],
    nr_mm_delta: i64,
) -> Vec<(String, i64)> {
    let ev = |e: VmEvent| after.event(e) as i64 - before.event(e) as i64;
    let mthp = |o: u8, s: MthpStat| after.mthp_stat(Order::new(o), s) - before.mthp_stat(Order::new(o), s);
    let scan =
        |status: &str| count(events, |e| matches!(e, MmEvent::KhugepagedScanPmd { status: s, .. } if *s == status));
    let pairs: Vec<(&str, i64, i64)> = vec![
        (
            "SplitPmd vs thp_split_pmd",
            count(events, |e| matches!(e, MmEvent::SplitPmd { .. })),
            ev(VmEvent::ThpSplitPmd),
        ),
        (
            "SplitFolio{PMD} vs thp_split_page",
            count(events, |e| matches!(e, MmEvent::SplitFolio { order, .. } if *order == Order::PMD)),
            ev(VmEvent::ThpSplitPage),
        ),
        (
            "Collapse vs thp_collapse_alloc",
            count(events, |e| matches!(e, MmEvent::Collapse { .. })),
            ev(VmEvent::ThpCollapseAlloc),
        ),
        ("scan succeeded vs thp_collapse_alloc", scan("succeeded"), ev(VmEvent::ThpCollapseAlloc)),
        (
            "scan alloc_huge_page_failed vs thp_collapse_alloc_failed",
            scan("alloc_huge_page_failed"),
            ev(VmEvent::ThpCollapseAllocFailed),
        ),
        (
            "scan exceed_none_pte vs thp_scan_exceed_none_pte",
            scan("exceed_none_pte"),
            ev(VmEvent::ThpScanExceedNonePte),
        ),
        (
            "scan exceed_shared_pte vs thp_scan_exceed_share_pte",
            scan("exceed_shared_pte"),
            ev(VmEvent::ThpScanExceedSharePte),
        ),
        (
            "Collapse in khugepaged vs pages_collapsed",
            if matches!(op, Op::Khugepaged) { count(events, |e| matches!(e, MmEvent::Collapse { .. })) } else { 0 },
            (after.khugepaged_pages_collapsed() - before.khugepaged_pages_collapsed()) as i64,
        ),
        (
            "Migrate pages vs pgmigrate_success",
            events.iter().map(|e| if let MmEvent::Migrate { order } = e { order.nr_pages() as i64 } else { 0 }).sum(),
            ev(VmEvent::PgmigrateSuccess),
        ),
        (
            "PtAlloc - PtFree + PGD pages vs nr_page_table_pages",
            count(events, |e| matches!(e, MmEvent::PtAlloc { .. }))
                - count(events, |e| matches!(e, MmEvent::PtFree { .. }))
                + nr_mm_delta * PGD_ALLOCATION_ORDER.nr_pages() as i64,
            after.nr_page_table_pages() - before.nr_page_table_pages(),
        ),
        (
            "Zeroed{2M} vs thp_fault_alloc + thp_zero_page_alloc",
            count(events, |e| matches!(e, MmEvent::Zeroed { bytes } if *bytes == PMD_SIZE)),
            ev(VmEvent::ThpFaultAlloc) + ev(VmEvent::ThpZeroPageAlloc),
        ),
        ("anon_fault_alloc{PMD} vs thp_fault_alloc", mthp(9, MthpStat::AnonFaultAlloc), ev(VmEvent::ThpFaultAlloc)),
    ];
    let mut pairs: Vec<(String, i64, i64)> = pairs.into_iter().map(|(what, e, c)| (what.to_string(), e, c)).collect();
    for o in 2..=8u8 {
        pairs.push((
            format!("Fault{{order {o}}} vs anon_fault_alloc{{{o}}}"),
            count(events, |e| matches!(e, MmEvent::Fault { order, .. } if order.get() == o)),
            mthp(o, MthpStat::AnonFaultAlloc),
        ));
        pairs.push((
            format!("SplitFolio{{order {o}}} vs split{{{o}}}"),
            count(events, |e| matches!(e, MmEvent::SplitFolio { order, .. } if order.get() == o)),
            mthp(o, MthpStat::Split),
        ));
    }
    for (what, from_events, from_counters) in &pairs {
        assert_eq!(
            from_events, from_counters,
            "{op:?}: {what}: events say {from_events}, counters {from_counters}\n{events:#?}"
        );
    }
    pairs.into_iter().map(|(what, n, _)| (what, n)).collect()
}

#[test]
fn event_stream_agrees_with_the_counters() {
    let totals: RefCell<BTreeMap<String, i64>> = RefCell::default();
    // Larger machines mostly, so THP faults, collapses and compaction happen.
    let ram =
        prop_oneof![1 => Just(RAM_SIZES[1]), 1 => Just(RAM_SIZES[3]), 2 => Just(RAM_SIZES[4]), 2 => Just(RAM_SIZES[5])];
    run_cases(0xe7, nr_cases(200), case(ram), |case| {
        let mut h = Harness::boot(case, true);
        h.w.events_mut().drain();
        for op in &case.ops {
            let before = h.w.stats().clone();
            let nr_mm_before = h.w.live_pids().len() as i64;
            h.apply(op);
            let events = h.w.events_mut().drain();
            let nr_mm_delta = h.w.live_pids().len() as i64 - nr_mm_before;
            for (what, n) in check_events_against_counters(op, &before, h.w.stats(), &events, nr_mm_delta) {
                *totals.borrow_mut().entry(what).or_default() += n;
            }
        }
        h.teardown()
    });
    let totals = totals.into_inner();
    eprintln!("events per pair over all cases: {totals:#?}");
    // A pair that never saw an event compared 0 with 0: the sequences must
    // reach every path whose pair is checked. Two exceptions: splits of one
    // mTHP order are rare, so the orders count together; and compaction
    // (`Migrate`) seldom succeeds in these sequences, so it is checked when it
    // happens but not required (a gap to close with a fragmenting workload).
    let mthp_splits: i64 = totals.iter().filter(|(what, _)| what.starts_with("SplitFolio{order")).map(|(_, n)| n).sum();
    assert!(mthp_splits > 0, "no mTHP split was ever checked");
    let never: Vec<&String> = totals
        .iter()
        .filter(|(what, n)| **n == 0 && !what.starts_with("SplitFolio{order") && !what.starts_with("Migrate"))
        .map(|(what, _)| what)
        .collect();
    assert!(never.is_empty(), "these pairs were never exercised: {never:?}");
}
