//! Random scenarios for the differential fuzzer (`thpsim oracle --random`)
//! and for the model-only fuzzer of the out-of-memory paths (`thpsim fuzz`).
//!
//! A generator writes scenario *text*, one statement at a time, so that
//! every failure it finds is a file `thpsim run` and `thpsim oracle`
//! replay unchanged. Each candidate statement is checked by parsing the
//! scenario so far with it; one the parser rejects (a region that the
//! planner has dropped, a length past a region's end) is discarded and
//! another drawn, so every generated scenario parses.
//!
//! Scenarios use several processes and every operation kind the live
//! kernel runs deterministically: mmap of 4K..8M at varied alignments,
//! every madvise advice on sub-ranges, touches (read, write, zero, every=,
//! random=), fork, exit, munmap/mprotect/mremap of sub-ranges, prctl,
//! pin/unpin, shrink, observe, and `set` among knobs that are safe to
//! change on a shared machine. `khugepaged` is left out: on the live
//! kernel it also runs in the background, so its effects are not
//! reproducible step for step.
//!
//! `Flavor::Tiny` scenarios (for `thpsim fuzz`, the model only) run on a
//! machine of 2 to 64 MiB, most with one or two `inject` lines at the
//! `pgtable` and `folio` points, map regions of up to a few times the RAM,
//! move regions to 1 GiB-aligned destinations (which need new page
//! tables), fork more, and run khugepaged: every allocation path meets its
//! failure.
//!
//! Everything is drawn from a `SplitMix64` seeded with the run's seed and
//! the scenario's index: the same seed gives the same scenarios on every
//! host.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use thpsim_mm::FailPoint;
use thpsim_uapi::knob::{Knob, KnobValues, MthpSize};
use thpsim_uapi::Advice;
use thpsim_workload::{parse_scenario, RegionRef, Scenario, SplitMix64};

/// The most statements one scenario has, its opening `set`s included.
pub const MAX_RANDOM_STEPS: usize = 40;
/// The most bytes one scenario maps in all (mmaps plus mremap growth).
pub const MAX_RANDOM_BYTES: u64 = 64 << 20;
/// The most processes alive at once.
pub const MAX_RANDOM_PROCS: usize = 4;
/// Draws per statement before the generator gives up on that statement.
const MAX_ATTEMPTS: usize = 16;

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const PAGE: u64 = 4 * K;

/// The RAM every `Flavor::Oracle` scenario asks for: ample for 64 MiB per
/// scenario, so allocation failures do not depend on the host's memory.
const MACHINE: &str = "machine ram=2G";

/// The RAM sizes of `Flavor::Tiny` machines.
pub const TINY_RAM_SIZES: [u64; 11] =
    [2 * M, 3 * M, 4 * M, 6 * M, 8 * M, 12 * M, 16 * M, 24 * M, 32 * M, 48 * M, 64 * M];

/// Which scenarios a generator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// For `thpsim oracle --random`: a 2 GiB machine, no injected failures,
    /// only operations the live kernel runs reproducibly.
    Oracle,
    /// For `thpsim fuzz` (the model only): a machine from `TINY_RAM_SIZES`,
    /// usually with injected failures, regions of up to a few times the RAM,
    /// 1 GiB-aligned mmaps and mremaps, more forks, and khugepaged.
    Tiny,
}

/// The knobs the generator may set, in the order its opening `set`s
/// consider them. All are safe to change on a shared machine and are
/// restored by the Linux backend.
fn knobs() -> Vec<Knob> {
    let mut knobs = vec![Knob::Enabled, Knob::Defrag, Knob::UseZeroPage];
    knobs.extend(MthpSize::ALL.map(Knob::MthpEnabled));
    knobs.extend([Knob::KhugepagedMaxPtesNone, Knob::KhugepagedMaxPtesSwap, Knob::KhugepagedMaxPtesShared]);
    knobs
}

/// The values the generator tries for a knob: every word a word knob takes
/// (from `thpsim_uapi`), and a few telling numbers (the ends of the range
/// and the kernel's default) for a numeric one.
fn knob_values(knob: Knob) -> &'static [&'static str] {
    match (knob.values(), knob) {
        (KnobValues::OneOf(words), _) => words,
        (KnobValues::Range(..), Knob::KhugepagedMaxPtesNone) => &["0", "1", "64", "256", "511"],
        (KnobValues::Range(..), Knob::KhugepagedMaxPtesSwap) => &["0", "1", "64", "511"],
        (KnobValues::Range(..), Knob::KhugepagedMaxPtesShared) => &["0", "1", "256", "511"],
        (KnobValues::Range(..), _) => &[],
    }
}

/// A generated scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub text: String,
    /// The knobs its opening `set` statements choose, by sysfs path.
    pub knobs: BTreeMap<String, String>,
    /// The machine's RAM in bytes.
    pub ram: u64,
    /// Its `inject` statements, as written.
    pub injections: Vec<String>,
}

impl Generated {
    /// `enabled=always defrag=madvise`, or `defaults`.
    pub fn knobs_line(&self) -> String {
        if self.knobs.is_empty() {
            return "defaults".to_string();
        }
        self.knobs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }

    /// `ram=8M inject pgtable nth=3; enabled=always`: the machine, the
    /// injections and the knobs the seed chose.
    pub fn setup_line(&self) -> String {
        let mut out = format!("ram={}", fmt_size(self.ram));
        for injection in &self.injections {
            let _ = write!(out, " {injection}");
        }
        let _ = write!(out, "; {}", self.knobs_line());
        out
    }
}

/// Generates scenario number `index` of the `thpsim oracle --random` run
/// seeded `seed`.
pub fn generate(seed: u64, index: u32) -> Generated {
    generate_flavored(Flavor::Oracle, seed, index)
}

/// Generates scenario number `index` of the run seeded `seed`.
pub fn generate_flavored(flavor: Flavor, seed: u64, index: u32) -> Generated {
    let mut rng = SplitMix64::new(seed ^ u64::from(index).wrapping_mul(0xa076_1d64_78bd_642f));
    // Discard one draw so that seeds differing in one bit start apart.
    rng.next_u64();
    Gen::new(rng, flavor, seed, index).run()
}

struct Gen {
    rng: SplitMix64,
    flavor: Flavor,
    ram: u64,
    /// The most bytes the scenario maps in all (mmaps plus mremap growth).
    max_bytes: u64,
    injections: Vec<String>,
    /// Statements so far, without the trailing newline.
    lines: Vec<String>,
    knobs: BTreeMap<String, String>,
    /// The scenario as parsed after the last accepted statement.
    parsed: Option<Scenario>,
    /// Live process names.
    live: Vec<String>,
    next_proc: u32,
    next_region: u32,
    /// Pins held, by name.
    pins: Vec<String>,
    next_pin: u32,
    mapped_bytes: u64,
}

impl Gen {
    fn new(mut rng: SplitMix64, flavor: Flavor, seed: u64, index: u32) -> Self {
        let (lines, ram, max_bytes) = match flavor {
            Flavor::Oracle => (
                vec![format!("# thpsim oracle --random: seed {seed:#x}, scenario {index}"), MACHINE.to_string()],
                2 << 30,
                MAX_RANDOM_BYTES,
            ),
            Flavor::Tiny => {
                let ram = TINY_RAM_SIZES[rng.below(TINY_RAM_SIZES.len() as u64) as usize];
                (
                    vec![
                        format!("# thpsim fuzz: seed {seed:#x}, scenario {index}"),
                        format!("machine ram={}", fmt_size(ram)),
                    ],
                    ram,
                    tiny_max_bytes(ram),
                )
            }
        };
        Gen {
            rng,
            flavor,
            ram,
            max_bytes,
            injections: Vec::new(),
            lines,
            knobs: BTreeMap::new(),
            parsed: None,
            live: Vec::new(),
            next_proc: 1,
            next_region: 0,
            pins: Vec::new(),
            next_pin: 1,
            mapped_bytes: 0,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n.max(1))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn statements(&self) -> usize {
        self.lines.iter().filter(|l| !l.starts_with('#') && !l.starts_with("machine")).count()
    }

    fn text_with(&self, extra: Option<&str>) -> String {
        let mut text = String::new();
        for line in self.lines.iter().map(String::as_str).chain(extra) {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Appends `line` if the scenario still parses with it.
    fn try_push(&mut self, line: String) -> bool {
        match parse_scenario("random.thp", &self.text_with(Some(&line))) {
            Ok(scenario) => {
                self.parsed = Some(scenario);
                self.lines.push(line);
                true
            }
            Err(_) => false,
        }
    }

    fn run(mut self) -> Generated {
        if self.flavor == Flavor::Tiny {
            self.injections();
        }
        // Knobs first, in the table's order; `enabled` most often, since it
        // decides the most.
        for knob in knobs() {
            if self.chance(if knob == Knob::Enabled { 60 } else { 25 }) {
                let value = *self.pick(knob_values(knob));
                if self.try_push(format!("set {knob} = {value}")) {
                    self.knobs.insert(knob.path(), value.to_string());
                }
            }
        }
        // The first process and its first region.
        let first = self.mmap_line(Some("p1".to_string()));
        if let Some((line, len)) = first {
            if self.try_push(line) {
                self.live.push("p1".to_string());
                self.next_proc = 2;
                self.mapped_bytes += len;
            }
        }
        let target = self.statements() + 8 + self.below(MAX_RANDOM_STEPS as u64) as usize;
        while self.statements() < target.min(MAX_RANDOM_STEPS) {
            let mut accepted = false;
            for _ in 0..MAX_ATTEMPTS {
                if self.step() {
                    accepted = true;
                    break;
                }
            }
            if !accepted {
                break;
            }
        }
        Generated { text: self.text_with(None), knobs: self.knobs, ram: self.ram, injections: self.injections }
    }

    /// No injection in one scenario of eight (the machine's size alone
    /// makes it run short), one point in about half, both in the rest.
    fn injections(&mut self) {
        let points: Vec<FailPoint> = match self.below(8) {
            0 => Vec::new(),
            1..=4 => vec![if self.chance(50) { FailPoint::PageTable } else { FailPoint::Folio }],
            _ => FailPoint::ALL.to_vec(),
        };
        for point in points {
            let line = self.inject_line(point.name());
            if self.try_push(line.clone()) {
                self.injections.push(line);
            }
        }
    }

    /// `inject <point>` with fail_page_alloc's attributes: the n-th
    /// allocation (usually an early one), a probability with an optional
    /// interval and limit, every interval-th a few times, or every one.
    fn inject_line(&mut self, point: &str) -> String {
        let mut line = format!("inject {point}");
        match self.below(20) {
            0..=7 => {
                let nth = if self.chance(60) { 1 + self.below(12) } else { 1 + self.below(400) };
                let _ = write!(line, " nth={nth}");
            }
            8..=14 => {
                let _ = write!(line, " probability={}", 1 + self.below(40));
                if self.chance(30) {
                    let _ = write!(line, " interval={}", 1 + self.below(4));
                }
                if self.chance(50) {
                    let _ = write!(line, " times={}", 1 + self.below(8));
                }
                let _ = write!(line, " seed={}", self.below(1 << 16));
            }
            15..=18 => {
                let _ = write!(line, " interval={} times={}", 1 + self.below(32), 1 + self.below(4));
            }
            _ => {}
        }
        line
    }

    /// Draws one statement and appends it if it parses.
    fn step(&mut self) -> bool {
        // Tiny scenarios also run khugepaged and fork more often.
        let roll = match self.flavor {
            Flavor::Oracle => self.below(100),
            Flavor::Tiny => self.below(112),
        };
        match roll {
            0..=29 => self.touch(),
            30..=43 => self.madvise(),
            44..=52 => self.new_region(),
            53 => self.mmap_fixed(),
            54..=57 => self.fork(),
            58..=59 => self.exit(),
            60..=62 => self.munmap(),
            // mlock()ed folios are unevictable and fork treats them in ways the
            // model does not follow yet (docs/fidelity.md): not generated.
            63..=64 => self.madvise(),
            65..=69 => self.mprotect(),
            70..=74 => self.mremap(),
            75..=77 => self.prctl(),
            78..=81 => self.pin(),
            82..=84 => self.unpin(),
            85..=89 => self.try_push("shrink".to_string()),
            90..=94 => self.observe(),
            95..=99 => self.set(),
            100..=105 => {
                let scans = *self.pick(&["", " 1", " 2", " 4"]);
                self.try_push(format!("khugepaged{scans}"))
            }
            _ => self.fork(),
        }
    }

    /// The regions of live processes, from the last parse.
    fn regions(&self) -> Vec<RegionRef> {
        self.parsed.as_ref().map(|s| s.final_regions.clone()).unwrap_or_default()
    }

    fn pick_region(&mut self) -> Option<RegionRef> {
        let regions = self.regions();
        if regions.is_empty() {
            return None;
        }
        Some(self.pick(&regions).clone())
    }

    /// A sub-range of a region: `A`, `A+off`, `A+off len` or `A len`, with
    /// offsets and lengths biased towards PMD boundaries and single pages.
    /// Returns the text and the range's length in bytes.
    fn sub_range(&mut self, region: &RegionRef) -> (String, u64) {
        let pages = region.len / PAGE;
        let offset = match self.below(6) {
            0 | 1 => 0,
            2 => (self.below(region.len / (2 * M) + 1) * 2 * M).min(region.len - PAGE),
            3 => PAGE * self.below(pages.min(16)),
            _ => PAGE * self.below(pages),
        };
        let rest = region.len - offset;
        let len = match self.below(6) {
            0 | 1 => None,
            2 => Some(PAGE),
            3 => Some((2 * M).min(rest)),
            _ => Some(PAGE * (1 + self.below(rest / PAGE))),
        };
        let mut out = region.name.clone();
        if offset > 0 {
            let _ = write!(out, "+{}", fmt_size(offset));
        }
        if let Some(len) = len {
            let _ = write!(out, " {}", fmt_size(len));
        }
        (out, len.unwrap_or(rest))
    }

    fn region_len(&mut self) -> u64 {
        if self.flavor == Flavor::Tiny {
            // Up to three times the RAM, so that touching it runs short.
            let ram = self.ram;
            return match self.below(12) {
                0 => PAGE * (1 + self.below(16)),
                1 => 64 * K,
                2 => 2 * M,
                3 => 2 * M + PAGE,
                4 => 4 * M,
                5 => ram / 2,
                6 => ram,
                7 => 2 * ram,
                8 => 3 * ram,
                _ => PAGE * (1 + self.below(3 * ram / PAGE)),
            };
        }
        match self.below(8) {
            0 => PAGE * (1 + self.below(16)),
            1 => 64 * K,
            2 => 2 * M,
            3 => 2 * M + PAGE,
            4 => 4 * M,
            5 => 8 * M,
            _ => PAGE * (1 + self.below(8 * M / PAGE)),
        }
    }

    /// `pN: A = mmap <len> [prot=] [align= [offset=]]` and its length.
    fn mmap_line(&mut self, proc: Option<String>) -> Option<(String, u64)> {
        let proc = match proc {
            Some(proc) => proc,
            None if self.live.is_empty() => return None,
            None => self.pick(&self.live.clone()).clone(),
        };
        let len = self.region_len();
        if self.mapped_bytes + len > self.max_bytes {
            return None;
        }
        let name = region_name(self.next_region);
        self.next_region += 1;
        let mut line = format!("{proc}: {name} = mmap {}", fmt_size(len));
        // Now and then a mapping that cannot be written (or read): touches
        // of it fail, and both backends must say how.
        match self.below(40) {
            0 | 1 => line.push_str(" prot=r"),
            2 => line.push_str(" prot=none"),
            _ => {}
        }
        match self.below(6) {
            0 => {}
            1 => line.push_str(" align=4K"),
            2 => line.push_str(" align=64K"),
            3 => {
                let offset = PAGE * (1 + self.below(511));
                let _ = write!(line, " align=2M offset={}", fmt_size(offset));
            }
            4 => {
                let offset = 64 * K * (1 + self.below(31));
                let _ = write!(line, " align=2M offset={}", fmt_size(offset));
            }
            _ => line.push_str(" align=1M"),
        }
        // A region alone in its PUD entry (and now and then its PGD entry)
        // needs new page tables before its first fault.
        if self.flavor == Flavor::Tiny && self.chance(20) {
            line.push_str(if self.chance(80) { " align=1G" } else { " align=512G" });
            // `align=` may be given once: keep the last.
            line = dedupe_align(&line);
        }
        Some((line, len))
    }

    /// A region in a live process, or now and then in a new process (which
    /// its first statement creates).
    fn new_region(&mut self) -> bool {
        let fresh = self.live.len() < MAX_RANDOM_PROCS && self.chance(15);
        let proc = fresh.then(|| format!("p{}", self.next_proc));
        let Some((line, len)) = self.mmap_line(proc.clone()) else {
            return false;
        };
        if !self.try_push(line) {
            return false;
        }
        self.mapped_bytes += len;
        if let Some(proc) = proc {
            self.next_proc += 1;
            self.live.push(proc);
        }
        true
    }

    /// A region and the process that has it: `pN: <op> <range> ...`.
    fn ranged(&mut self, op: &str, tail: &str) -> bool {
        let Some(region) = self.pick_region() else {
            return false;
        };
        let (range, _) = self.sub_range(&region);
        self.try_push(format!("{}: {op} {range}{tail}", region.proc_name))
    }

    fn touch(&mut self) -> bool {
        let access = if self.chance(70) { "write" } else { "read" };
        let mut tail = format!(" {access}");
        if access == "write" && self.chance(10) {
            tail.push_str(" zero");
        } else if access == "write" && self.chance(10) {
            let tag = *self.pick(&["T", "U", "7"]);
            let _ = write!(tail, " pattern={tag}");
        }
        match self.below(10) {
            0 | 1 => {
                let n = 1 + self.below(16);
                let _ = write!(tail, " every={n}");
            }
            2 => {
                let n = 1 + self.below(8);
                let seed = self.below(1000);
                let _ = write!(tail, " random={n} seed={seed}");
            }
            _ => {}
        }
        self.ranged("touch", &tail)
    }

    /// Every advice, MADV_HUGEPAGE a third of the time: it is the one that
    /// makes THPs under the default `enabled=madvise`.
    fn madvise(&mut self) -> bool {
        let mut advice = if self.chance(35) { "hugepage" } else { *self.pick(Advice::NAMES) };
        // MADV_FREE's lazyfree state after re-writes and COW is an open
        // divergence (docs/fidelity.md); the corpus covers MADV_FREE itself.
        if advice == Advice::Free.name() {
            advice = Advice::Cold.name();
        }
        self.ranged("madvise", &format!(" {advice}"))
    }

    fn munmap(&mut self) -> bool {
        self.ranged("munmap", "")
    }

    /// mlock (which faults the range in) or munlock of a sub-range. Not
    /// drawn until mlocked folios follow the kernel (see `step`).
    #[allow(dead_code)]
    fn mlock(&mut self) -> bool {
        let op = if self.chance(60) { "mlock" } else { "munlock" };
        self.ranged(op, "")
    }

    /// `pN: B = mmap <len> at=A+off fixed`: MAP_FIXED over part of a region.
    fn mmap_fixed(&mut self) -> bool {
        let Some(region) = self.pick_region() else {
            return false;
        };
        let pages = region.len / PAGE;
        let offset = PAGE * self.below(pages);
        let len = PAGE * (1 + self.below((region.len - offset) / PAGE));
        let name = region_name(self.next_region);
        let line = format!(
            "{}: {name} = mmap {} at={}+{} fixed",
            region.proc_name,
            fmt_size(len),
            region.name,
            fmt_size(offset)
        );
        if self.try_push(line) {
            self.next_region += 1;
            true
        } else {
            false
        }
    }

    fn mprotect(&mut self) -> bool {
        let prot = *self.pick(&["none", "r", "rw", "rw", "rw"]);
        self.ranged("mprotect", &format!(" {prot}"))
    }

    /// `pN: B = mremap A[+off] [old len] <new len> [align=2M [offset=]]`.
    fn mremap(&mut self) -> bool {
        let Some(region) = self.pick_region() else {
            return false;
        };
        let (range, old_len) = self.sub_range(&region);
        let new_len = match self.below(4) {
            0 => PAGE * (1 + self.below(old_len / PAGE)),
            1 => 2 * M,
            2 => old_len + 2 * M,
            _ => old_len,
        };
        let growth = new_len.saturating_sub(old_len);
        if self.mapped_bytes + growth > self.max_bytes {
            return false;
        }
        let name = region_name(self.next_region);
        let mut line = format!("{}: {name} = mremap {range}", region.proc_name);
        // A range written without a length takes the new length as the
        // only one; with a length, the new length follows it.
        let _ = write!(line, " {}", fmt_size(new_len));
        match self.below(4) {
            0 => line.push_str(" align=2M"),
            1 => {
                let offset = PAGE * (1 + self.below(511));
                let _ = write!(line, " align=2M offset={}", fmt_size(offset));
            }
            // Without MREMAP_MAYMOVE: a growth past the guard gap is ENOMEM.
            2 if self.chance(50) => line.push_str(" inplace"),
            _ => {}
        }
        // A destination at a fresh 1 GiB boundary needs a new PMD table (a
        // new PUD table too at 512 GiB), whose allocation may fail.
        if self.flavor == Flavor::Tiny && self.chance(40) {
            line.push_str(if self.chance(85) { " align=1G" } else { " align=512G" });
            line = dedupe_align(&line);
        }
        if self.try_push(line) {
            self.next_region += 1;
            self.mapped_bytes += growth;
            true
        } else {
            false
        }
    }

    fn fork(&mut self) -> bool {
        if self.live.is_empty() || self.live.len() >= MAX_RANDOM_PROCS {
            return false;
        }
        let parent = self.pick(&self.live.clone()).clone();
        let child = format!("p{}", self.next_proc);
        if self.try_push(format!("{child} = fork {parent}")) {
            self.next_proc += 1;
            self.live.push(child);
            true
        } else {
            false
        }
    }

    fn exit(&mut self) -> bool {
        if self.live.len() < 2 {
            return false;
        }
        let index = self.below(self.live.len() as u64) as usize;
        let proc = self.live[index].clone();
        let line = if self.chance(50) { format!("exit {proc}") } else { format!("{proc}: exit") };
        if self.try_push(line) {
            self.live.remove(index);
            // The parser releases the exited process's pins.
            self.pins.retain(|pin| pin_holder_alive(pin, &self.live));
            true
        } else {
            false
        }
    }

    fn prctl(&mut self) -> bool {
        if self.live.is_empty() {
            return false;
        }
        let proc = self.pick(&self.live.clone()).clone();
        let mode = *self.pick(&["all", "except_advised", "off"]);
        self.try_push(format!("{proc}: prctl thp_disable {mode}"))
    }

    fn pin(&mut self) -> bool {
        let Some(region) = self.pick_region() else {
            return false;
        };
        let (range, _) = self.sub_range(&region);
        let name = format!("P{}_{}", self.next_pin, region.proc_name);
        let longterm = if self.chance(50) { " longterm" } else { "" };
        if self.try_push(format!("{}: pin {name} = {range}{longterm}", region.proc_name)) {
            self.next_pin += 1;
            self.pins.push(name);
            true
        } else {
            false
        }
    }

    fn unpin(&mut self) -> bool {
        if self.pins.is_empty() {
            return false;
        }
        let index = self.below(self.pins.len() as u64) as usize;
        let name = self.pins[index].clone();
        if self.try_push(format!("unpin {name}")) {
            self.pins.remove(index);
            true
        } else {
            false
        }
    }

    fn observe(&mut self) -> bool {
        if self.chance(50) || self.live.is_empty() {
            return self.try_push("observe".to_string());
        }
        let proc = self.pick(&self.live.clone()).clone();
        self.try_push(format!("observe {proc}"))
    }

    fn set(&mut self) -> bool {
        let knob = *self.pick(&knobs());
        let value = *self.pick(knob_values(knob));
        self.try_push(format!("set {knob} = {value}"))
    }
}

/// The byte budget of a `Flavor::Tiny` scenario on `ram` bytes of RAM.
pub fn tiny_max_bytes(ram: u64) -> u64 {
    8 * ram + 16 * M
}

/// `line` with only its last `align=` option (and no `offset=` if an
/// earlier `align=` had one).
fn dedupe_align(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let last = words.iter().rposition(|w| w.starts_with("align="));
    words
        .iter()
        .enumerate()
        .filter(|&(i, w)| !(w.starts_with("align=") || w.starts_with("offset=")) || Some(i) == last)
        .map(|(_, w)| *w)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Pins are named `P<n>_<holder>` so that an exit can drop its own.
fn pin_holder_alive(pin: &str, live: &[String]) -> bool {
    pin.split_once('_').is_some_and(|(_, holder)| live.iter().any(|p| p == holder))
}

/// `A`..`Z`, then `A1`, `B1`, ...
fn region_name(n: u32) -> String {
    let letter = char::from(b'A' + (n % 26) as u8);
    match n / 26 {
        0 => letter.to_string(),
        round => format!("{letter}{round}"),
    }
}

/// A size in the largest binary unit that divides it: `4K`, `2M`, `2052K`.
pub fn fmt_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    for (unit, suffix) in [(1 << 30, "G"), (M, "M"), (K, "K")] {
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use thpsim_workload::{Op, StepKind};

    /// Seeds the tests use; each must generate a valid scenario.
    const FIXED_SEEDS: &[u64] = &[0, 1, 0x7e57, 0xdead_beef, u64::MAX];

    #[test]
    fn same_seed_gives_the_same_scenarios() {
        for &seed in FIXED_SEEDS {
            for index in 0..5 {
                assert_eq!(generate(seed, index), generate(seed, index), "seed {seed:#x} scenario {index}");
            }
        }
        assert_ne!(generate(1, 0).text, generate(2, 0).text);
        assert_ne!(generate(1, 0).text, generate(1, 1).text);
    }

    #[test]
    fn every_generated_scenario_parses_and_stays_in_bounds() {
        for &seed in FIXED_SEEDS {
            for index in 0..40 {
                let generated = generate(seed, index);
                let scenario = parse_scenario("random.thp", &generated.text)
                    .unwrap_or_else(|err| panic!("seed {seed:#x} scenario {index}:\n{err}\n{}", generated.text));
                let statements =
                    generated.text.lines().filter(|l| !l.starts_with('#') && !l.starts_with("machine")).count();
                assert!(statements <= MAX_RANDOM_STEPS, "seed {seed:#x} scenario {index}: {statements} statements");
                let mut mapped = 0;
                for step in &scenario.steps {
                    match &step.kind {
                        StepKind::Op(Op::Mmap { len, .. }) => mapped += len,
                        StepKind::Op(Op::Mremap { old_len, new_len, .. }) => mapped += new_len.saturating_sub(*old_len),
                        _ => {}
                    }
                }
                assert!(mapped <= MAX_RANDOM_BYTES, "seed {seed:#x} scenario {index}: {mapped} bytes");
                assert!(scenario.steps.len() > 3, "seed {seed:#x} scenario {index} is trivial:\n{}", generated.text);
            }
        }
    }

    #[test]
    fn generated_scenarios_use_every_operation_kind() {
        let mut seen: BTreeMap<&'static str, u32> = BTreeMap::new();
        let mut advices = BTreeMap::new();
        for index in 0..200 {
            let scenario = parse_scenario("random.thp", &generate(0x7e57, index).text).unwrap();
            for step in &scenario.steps {
                let kind = match &step.kind {
                    StepKind::Op(op) => match op {
                        Op::Set { .. } => "set",
                        Op::Spawn { .. } => "spawn",
                        Op::Fork { .. } => "fork",
                        Op::Exit { .. } => "exit",
                        Op::Mmap { .. } => "mmap",
                        Op::MmapFixed { .. } => "mmap fixed",
                        Op::Mlock { .. } => "mlock",
                        Op::Munlock { .. } => "munlock",
                        Op::MremapInPlace { .. } => "mremap inplace",
                        Op::Munmap { .. } => "munmap",
                        Op::Mprotect { .. } => "mprotect",
                        Op::Mremap { .. } => "mremap",
                        Op::Madvise { advice, .. } => {
                            *advices.entry(format!("{advice:?}")).or_insert(0) += 1;
                            "madvise"
                        }
                        Op::Touch { .. } => "touch",
                        Op::Prctl { .. } => "prctl",
                        Op::Pin { .. } => "pin",
                        Op::Unpin { .. } => "unpin",
                        Op::Khugepaged { .. } => "khugepaged",
                        Op::Shrink => "shrink",
                    },
                    StepKind::Observe(_) => "observe",
                    StepKind::Expect { .. } => "expect",
                };
                *seen.entry(kind).or_insert(0) += 1;
            }
        }
        for kind in [
            "set",
            "spawn",
            "fork",
            "exit",
            "mmap",
            "mmap fixed",
            "munmap",
            "mprotect",
            "mremap",
            "mremap inplace",
            "madvise",
            "touch",
            "prctl",
            "pin",
            "unpin",
            "shrink",
            "observe",
        ] {
            assert!(seen.get(kind).is_some_and(|&n| n > 0), "no {kind} in 200 scenarios: {seen:?}");
        }
        // Every advice but MADV_FREE (not drawn, see `madvise`).
        assert_eq!(advices.len(), Advice::ALL.len() - 1, "advices seen: {advices:?}");
        assert!(!advices.contains_key("free"), "MADV_FREE drawn: {advices:?}");
    }

    #[test]
    fn tiny_scenarios_parse_inject_failures_and_stay_in_bounds() {
        let n = 200;
        let (mut injected, mut both, mut gig_moves, mut khugepaged) = (0, 0, 0, 0);
        let mut sizes = std::collections::BTreeSet::new();
        for &seed in FIXED_SEEDS {
            for index in 0..n {
                let generated = generate_flavored(Flavor::Tiny, seed, index);
                let scenario = parse_scenario("tiny.thp", &generated.text)
                    .unwrap_or_else(|err| panic!("seed {seed:#x} scenario {index}:\n{err}\n{}", generated.text));
                assert!(TINY_RAM_SIZES.contains(&scenario.machine.ram), "{}", generated.text);
                assert_eq!(scenario.machine.ram, generated.ram);
                sizes.insert(generated.ram);
                assert_eq!(scenario.injections.len(), generated.injections.len(), "{}", generated.text);
                injected += usize::from(!scenario.injections.is_empty());
                both += usize::from(scenario.injections.len() == 2);
                let mut mapped = 0;
                for step in &scenario.steps {
                    match &step.kind {
                        StepKind::Op(Op::Mmap { len, .. }) => mapped += len,
                        StepKind::Op(Op::Mremap { old_len, new_len, new_addr, .. }) => {
                            mapped += new_len.saturating_sub(*old_len);
                            gig_moves += usize::from(new_addr.is_some_and(|a| a % (1 << 30) == 0));
                        }
                        StepKind::Op(Op::Khugepaged { .. }) => khugepaged += 1,
                        _ => {}
                    }
                }
                assert!(mapped <= tiny_max_bytes(generated.ram), "seed {seed:#x} scenario {index}: {mapped} bytes");
                assert!(scenario.steps.len() > 3, "seed {seed:#x} scenario {index} is trivial:\n{}", generated.text);
            }
        }
        let total = FIXED_SEEDS.len() * n as usize;
        // One scenario in eight goes without injection.
        assert!(injected * 100 >= total * 80, "{injected} of {total} scenarios inject failures");
        assert!(both * 100 >= total * 30, "{both} of {total} scenarios inject at both points");
        assert_eq!(sizes.len(), TINY_RAM_SIZES.len(), "RAM sizes seen: {sizes:?}");
        assert!(gig_moves > 0 && khugepaged > 0, "{gig_moves} mremaps to 1G, {khugepaged} khugepaged steps");
        // The oracle's scenarios stay as they were: 2 GiB, no injection.
        let oracle = generate(1, 0);
        assert!(oracle.text.contains("\nmachine ram=2G\n") && !oracle.text.contains("inject"));
    }

    #[test]
    fn a_later_align_replaces_an_earlier_one() {
        assert_eq!(dedupe_align("p1: A = mmap 4M align=2M offset=4K align=1G"), "p1: A = mmap 4M align=1G");
        assert_eq!(dedupe_align("p1: A = mmap 4M align=1G"), "p1: A = mmap 4M align=1G");
    }

    #[test]
    fn every_knob_value_the_generator_tries_is_one_the_kernel_accepts() {
        for knob in knobs() {
            assert!(!knob_values(knob).is_empty(), "{knob}");
            for value in knob_values(knob) {
                assert!(knob.parse(value).is_ok(), "{knob} = {value}");
            }
        }
    }

    #[test]
    fn knobs_line_names_the_chosen_knobs() {
        let generated = generate(0x7e57, 0);
        for (knob, value) in &generated.knobs {
            assert!(generated.text.contains(&format!("set {knob} = {value}\n")));
        }
        let none = Generated { text: String::new(), knobs: BTreeMap::new(), ram: 2 << 30, injections: Vec::new() };
        assert_eq!(none.knobs_line(), "defaults");
    }

    #[test]
    fn sizes_and_names() {
        assert_eq!(fmt_size(4096), "4K");
        assert_eq!(fmt_size(2 * M + PAGE), "2052K");
        assert_eq!(fmt_size(8 * M), "8M");
        assert_eq!(region_name(0), "A");
        assert_eq!(region_name(27), "B1");
    }
}
