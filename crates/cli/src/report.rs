//! The reports `thpsim run` prints: smaps-style lines per region, a
//! thpmaps-style coverage block, page runs, and vmstat-style counter deltas,
//! as text or as one JSON object.
//!
//! Text is plain 80-column-friendly ASCII without colour so that it can be
//! pasted into mail; every line a kernel tool also prints keeps that tool's
//! layout (smaps `Rss:                2048 kB`, thpmaps
//! `anon-thp-pmd-aligned-2048kB:        2048 kB (100%)`, vmstat
//! `thp_split_pmd 1`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;

use serde::Serialize;
use thpsim_mm::PAGE_SIZE;
use thpsim_oracle::runner::{ExpectFailure, RunOutcome};
use thpsim_oracle::{Observation, OpResult, PageObs, PageRun, PageState, ProcObs, RegionObs, VmaObs};
use thpsim_workload::ProcId;

use crate::thpmaps::Coverage;

/// Page runs listed per region in text (unless `ReportOptions::all_runs`);
/// JSON carries every run.
pub const MAX_PAGE_RUNS_SHOWN: usize = 32;

/// Options of the observation report.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReportOptions {
    /// Print thpmaps labels whose value is zero too (thpmaps `--inc-empty`).
    pub inc_empty: bool,
    /// Leave out the per-page runs.
    pub no_pages: bool,
    /// Print every run of the observation, uncompressed and uncapped, with
    /// its folio id: the complete rendering the corpus snapshots use.
    pub all_runs: bool,
}

/// What a report needs to know about the scenario beside the outcome.
pub struct RunContext<'a> {
    pub name: &'a str,
    /// The file label used in messages (`scenarios/x.thp`).
    pub file: &'a str,
    pub backend: &'a str,
    /// Each step's source text by scenario line.
    pub sources: &'a BTreeMap<u32, String>,
}

impl RunContext<'_> {
    fn source(&self, line: u32) -> &str {
        self.sources.get(&line).map_or("", String::as_str)
    }
}

/// The whole text report of a run.
pub fn render_run(ctx: &RunContext<'_>, outcome: &RunOutcome, opts: ReportOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario {} ({}) on {}", ctx.name, ctx.file, ctx.backend);
    for (line, obs) in &outcome.observations {
        let _ = writeln!(out, "\n== {}:{line}: {}", ctx.file, ctx.source(*line));
        out.push_str(&render_observation(obs, opts));
    }
    let _ = writeln!(out, "\n== summary: after the last step");
    out.push_str(&render_observation(&outcome.final_observation, opts));
    out.push('\n');
    for (line, note) in &outcome.notes {
        let _ = writeln!(out, "note: {}:{line}: {}: {note}", ctx.file, ctx.source(*line));
    }
    out.push_str(&render_results(ctx, &outcome.results, &outcome.failures));
    out
}

/// Operation errors and failed expectations, then a one-line total.
pub fn render_results(ctx: &RunContext<'_>, results: &[(u32, OpResult)], failures: &[ExpectFailure]) -> String {
    let mut out = String::new();
    let errors: Vec<_> = results.iter().filter_map(|(line, r)| r.err().map(|e| (*line, e))).collect();
    for (line, errno) in &errors {
        let _ = writeln!(out, "{}:{line}: {}: returned {errno}", ctx.file, ctx.source(*line));
    }
    for failure in failures {
        let _ = writeln!(out, "FAILED {}:{}: {}: {}", ctx.file, failure.line, failure.source, failure.message);
    }
    let _ = writeln!(
        out,
        "{} operations ({} returned an error), {} expectations failed",
        results.len(),
        errors.len(),
        failures.len()
    );
    out
}

/// One observation: per process `VmPTE`, per region smaps lines of its
/// VMAs, page runs and thpmaps coverage; then counter deltas.
pub fn render_observation(obs: &Observation, opts: ReportOptions) -> String {
    let mut out = String::new();
    for proc in &obs.procs {
        let _ = writeln!(out, "{} VmPTE: {} kB", proc.name, proc.vm_pte_kb);
        for region in &proc.regions {
            let _ = writeln!(
                out,
                "{} {} {:#x}-{:#x} ({} kB)",
                proc.name,
                region.name,
                region.addr,
                region.addr + region.len,
                region.len / 1024
            );
            for vma in &region.vmas {
                out.push_str(&render_smaps(vma));
            }
            if opts.all_runs {
                out.push_str(&render_all_runs(region));
            } else if !opts.no_pages {
                out.push_str(&render_pages(region));
            }
            for line in Coverage::of_region(region).render(opts.inc_empty) {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out.push_str(&render_counters(obs));
    out
}

/// A VMA as smaps prints it: the header line, then the fields thpsim
/// observes, each label padded to 16 columns and the value to 8.
pub fn render_smaps(vma: &VmaObs) -> String {
    let flag = |name: &str, c: char| {
        if vma.vm_flags.iter().any(|f| f == name) {
            c
        } else {
            '-'
        }
    };
    let mut out = format!(
        "{:08x}-{:08x} {}{}{}p 00000000 00:00 0\n",
        vma.start,
        vma.end,
        flag("rd", 'r'),
        flag("wr", 'w'),
        flag("ex", 'x')
    );
    let kb_fields = [
        ("Size:", (vma.end - vma.start) / 1024),
        ("Rss:", vma.rss_kb),
        ("Pss:", vma.pss_kb),
        ("Shared_Clean:", vma.shared_clean_kb),
        ("Shared_Dirty:", vma.shared_dirty_kb),
        ("Private_Clean:", vma.private_clean_kb),
        ("Private_Dirty:", vma.private_dirty_kb),
        ("Anonymous:", vma.anonymous_kb),
        ("LazyFree:", vma.lazyfree_kb),
        ("AnonHugePages:", vma.anon_huge_pages_kb),
        ("Swap:", vma.swap_kb),
    ];
    for (label, kb) in kb_fields {
        let _ = writeln!(out, "{label:<16}{kb:>8} kB");
    }
    let _ = writeln!(out, "{:<16}{:>8}", "THPeligible:", u8::from(vma.thp_eligible));
    let _ = writeln!(out, "VmFlags: {}", vma.vm_flags.join(" "));
    out
}

/// How a page looks, without its folio id, so that runs compress.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PageLook {
    state: PageState,
    order: u8,
    pmd_mapped: bool,
    mapcount: u64,
    exclusive: bool,
    zero_page: bool,
    lru: bool,
    swapbacked: bool,
    swapcache: bool,
}

impl PageLook {
    fn of(page: &PageObs) -> Self {
        PageLook {
            state: page.state,
            order: page.order,
            pmd_mapped: page.pmd_mapped,
            mapcount: page.mapcount,
            exclusive: page.exclusive,
            zero_page: page.zero_page,
            lru: page.lru,
            swapbacked: page.swapbacked,
            swapcache: page.swapcache,
        }
    }

    fn describe(&self) -> String {
        let mut words = vec![match self.state {
            PageState::None => return "none".to_string(),
            PageState::Present => "present".to_string(),
            PageState::Swapped => return "swapped".to_string(),
        }];
        if self.zero_page {
            words.push("zero_page".to_string());
        }
        words.push(format!("order={}", self.order));
        if self.pmd_mapped {
            words.push("pmd_mapped".to_string());
        }
        words.push(format!("mapcount={}", self.mapcount));
        if self.exclusive {
            words.push("exclusive".to_string());
        }
        // kpageflags bits only where they are not what a mapped anonymous
        // folio usually shows (lru swapbacked !swapcache).
        if !self.zero_page {
            for (set, usual, name) in
                [(self.lru, true, "lru"), (self.swapbacked, true, "swapbacked"), (self.swapcache, false, "swapcache")]
            {
                if set != usual {
                    words.push(format!("{}{name}", if set { "" } else { "!" }));
                }
            }
        }
        words.join(" ")
    }
}

/// The region's pages as runs that look alike:
/// `pages +0x0..+0x200000 (512 in 1 folio): present order=9 pmd_mapped mapcount=1 exclusive`.
pub fn render_pages(region: &RegionObs) -> String {
    // Neighbouring runs that look alike (they differ in folio) are merged.
    let mut runs: Vec<(Range<u64>, PageLook, BTreeSet<u32>)> = Vec::new();
    for run in &region.runs {
        let look = PageLook::of(&run.page);
        match runs.last_mut() {
            Some((range, last, folios)) if range.end == run.first && *last == look => {
                range.end += run.nr_pages;
                folios.extend(run.page.folio);
            }
            _ => runs.push((run.range(), look, run.page.folio.into_iter().collect())),
        }
    }
    let mut out = String::new();
    for (range, look, folios) in runs.iter().take(MAX_PAGE_RUNS_SHOWN) {
        let nr = range.end - range.start;
        let count = match folios.len() {
            0 => format!("{nr}"),
            1 => format!("{nr} in 1 folio"),
            n => format!("{nr} in {n} folios"),
        };
        let _ = writeln!(
            out,
            "pages +{:#x}..+{:#x} ({count}): {}",
            range.start * PAGE_SIZE,
            range.end * PAGE_SIZE,
            look.describe()
        );
    }
    if runs.len() > MAX_PAGE_RUNS_SHOWN {
        let _ = writeln!(out, "pages ... {} more runs", runs.len() - MAX_PAGE_RUNS_SHOWN);
    }
    out
}

/// Every run of the region as the observation holds it, with its folio:
/// `pages +0x0..+0x200000 (512 in folio #0): present order=9 pmd_mapped mapcount=1 exclusive`.
pub fn render_all_runs(region: &RegionObs) -> String {
    let mut out = String::new();
    for run in &region.runs {
        let count = match run.page.folio {
            Some(id) => format!("{} in folio #{id}", run.nr_pages),
            None => format!("{}", run.nr_pages),
        };
        let _ = writeln!(
            out,
            "pages +{:#x}..+{:#x} ({count}): {}",
            run.first * PAGE_SIZE,
            (run.first + run.nr_pages) * PAGE_SIZE,
            PageLook::of(&run.page).describe()
        );
    }
    out
}

/// Non-zero counter deltas, vmstat-style: `thp_split_pmd 1`, and the
/// per-size stats under their sysfs path `hugepages-64kB/stats/split 1`.
pub fn render_counters(obs: &Observation) -> String {
    let mut out = String::new();
    let vmstat: Vec<_> = obs.vmstat.iter().filter(|(_, v)| **v != 0).collect();
    let mthp: Vec<_> = obs.mthp.iter().filter(|(_, v)| **v != 0).collect();
    if vmstat.is_empty() && mthp.is_empty() {
        out.push_str("counters: no change\n");
        return out;
    }
    out.push_str("counters (deltas since the start):\n");
    for (name, value) in vmstat {
        let _ = writeln!(out, "{name} {value}");
    }
    for (key, value) in mthp {
        let _ = writeln!(out, "{} {value}", mthp_path(key));
    }
    out
}

/// `"64kB/split"` → `hugepages-64kB/stats/split`.
pub fn mthp_path(key: &str) -> String {
    match key.split_once('/') {
        Some((size, stat)) => format!("hugepages-{size}/stats/{stat}"),
        None => key.to_string(),
    }
}

/// Every region's coverage summed (thpmaps `--rollup`).
pub fn rollup(obs: &Observation) -> Coverage {
    let mut total = Coverage::default();
    for region in obs.procs.iter().flat_map(|p| &p.regions) {
        total.add(&Coverage::of_region(region));
    }
    total
}

/// The rollup as thpmaps prints it.
pub fn render_rollup(obs: &Observation, opts: ReportOptions) -> String {
    let mut out = String::new();
    for line in rollup(obs).render(opts.inc_empty) {
        let _ = writeln!(out, "{line}");
    }
    out
}

fn op_result_name(result: &OpResult) -> String {
    match result {
        Ok(()) => "ok".to_string(),
        Err(errno) => errno.to_string(),
    }
}

#[derive(Serialize)]
struct CoverageJson<'a> {
    proc: &'a str,
    region: &'a str,
    anon_kb: u64,
    /// thpmaps label → kB, non-zero labels only.
    labels: BTreeMap<String, u64>,
}

fn coverage_json(obs: &Observation) -> Vec<CoverageJson<'_>> {
    let mut out = Vec::new();
    for proc in &obs.procs {
        for region in &proc.regions {
            let cov = Coverage::of_region(region);
            out.push(CoverageJson {
                proc: &proc.name,
                region: &region.name,
                anon_kb: cov.anon_kb,
                labels: cov.labels().into_iter().filter(|&(_, kb)| kb != 0).collect(),
            });
        }
    }
    out
}

/// The run as one JSON object: operation results, observations (page runs,
/// never one entry per page) with thpmaps coverage, failed expectations.
#[derive(Serialize)]
pub struct RunJson<'a> {
    scenario: &'a str,
    file: &'a str,
    backend: &'a str,
    results: Vec<ResultJson<'a>>,
    observations: Vec<ObservationStepJson<'a>>,
    #[serde(rename = "final")]
    final_observation: ObservationStepJson<'a>,
    failures: &'a [ExpectFailure],
    /// Notes the runner added, such as a process whose fork failed.
    notes: Vec<NoteJson<'a>>,
    /// thpmaps `--rollup` over the final observation, if asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollup: Option<Coverage>,
}

#[derive(Serialize)]
struct NoteJson<'a> {
    line: u32,
    note: &'a str,
}

#[derive(Serialize)]
struct ResultJson<'a> {
    line: u32,
    source: &'a str,
    result: String,
}

#[derive(Serialize)]
struct ObservationStepJson<'a> {
    line: Option<u32>,
    source: Option<&'a str>,
    observation: ObservationJson<'a>,
    coverage: Vec<CoverageJson<'a>>,
}

/// An `Observation` as JSON, its page runs left out with `--no-pages`.
#[derive(Serialize)]
struct ObservationJson<'a> {
    procs: Vec<ProcJson<'a>>,
    vmstat: &'a BTreeMap<String, i64>,
    mthp: &'a BTreeMap<String, i64>,
}

#[derive(Serialize)]
struct ProcJson<'a> {
    proc: ProcId,
    name: &'a str,
    vm_pte_kb: u64,
    regions: Vec<RegionJson<'a>>,
}

#[derive(Serialize)]
struct RegionJson<'a> {
    name: &'a str,
    addr: u64,
    len: u64,
    vmas: &'a [VmaObs],
    #[serde(skip_serializing_if = "Option::is_none")]
    runs: Option<&'a [PageRun]>,
}

fn observation_json(obs: &Observation, no_pages: bool) -> ObservationJson<'_> {
    fn region(r: &RegionObs, no_pages: bool) -> RegionJson<'_> {
        RegionJson {
            name: &r.name,
            addr: r.addr,
            len: r.len,
            vmas: &r.vmas,
            runs: (!no_pages).then_some(r.runs.as_slice()),
        }
    }
    fn proc(p: &ProcObs, no_pages: bool) -> ProcJson<'_> {
        ProcJson {
            proc: p.proc,
            name: &p.name,
            vm_pte_kb: p.vm_pte_kb,
            regions: p.regions.iter().map(|r| region(r, no_pages)).collect(),
        }
    }
    ObservationJson {
        procs: obs.procs.iter().map(|p| proc(p, no_pages)).collect(),
        vmstat: &obs.vmstat,
        mthp: &obs.mthp,
    }
}

/// The run as one JSON object; `opts.no_pages` leaves the page runs out.
pub fn run_json<'a>(ctx: &RunContext<'a>, outcome: &'a RunOutcome, opts: ReportOptions) -> RunJson<'a> {
    let sources = ctx.sources;
    let source = move |line: u32| sources.get(&line).map_or("", String::as_str);
    let observation = |line: Option<u32>, obs: &'a Observation| ObservationStepJson {
        line,
        source: line.map(source),
        observation: observation_json(obs, opts.no_pages),
        coverage: coverage_json(obs),
    };
    RunJson {
        scenario: ctx.name,
        file: ctx.file,
        backend: ctx.backend,
        results: outcome
            .results
            .iter()
            .map(|(line, r)| ResultJson { line: *line, source: source(*line), result: op_result_name(r) })
            .collect(),
        observations: outcome.observations.iter().map(|(l, o)| observation(Some(*l), o)).collect(),
        final_observation: observation(None, &outcome.final_observation),
        failures: &outcome.failures,
        notes: outcome.notes.iter().map(|(line, note)| NoteJson { line: *line, note }).collect(),
        rollup: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thpsim_mm::Errno;
    use thpsim_oracle::runs_of_pages;

    fn thp_page(folio: u32, pmd_mapped: bool, mapcount: u64) -> PageObs {
        PageObs {
            state: PageState::Present,
            folio: Some(folio),
            order: 9,
            pmd_mapped,
            mapcount,
            exclusive: mapcount == 1,
            zero_page: false,
            lru: true,
            swapbacked: true,
            swapcache: false,
        }
    }

    /// p1 and p2 after fork, and p2's write of one page: p1 still maps the
    /// THP by its PMD, p2 maps 511 of its pages by PTEs and one copy.
    fn fork_child_write() -> Observation {
        let vma = |anon_huge_pages_kb| VmaObs {
            start: 0x20_0000,
            end: 0x40_0000,
            rss_kb: 2048,
            anonymous_kb: 2048,
            anon_huge_pages_kb,
            swap_kb: 0,
            thp_eligible: true,
            vm_flags: vec!["rd".into(), "wr".into(), "hg".into()],
            ..VmaObs::default()
        };
        let region = |pages: Vec<PageObs>, vma| RegionObs {
            name: "A".into(),
            addr: 0x20_0000,
            len: 0x20_0000,
            vmas: vec![vma],
            runs: runs_of_pages(&pages),
        };
        let p1_pages = (0..512).map(|_| thp_page(0, true, 2)).collect();
        let mut p2_pages: Vec<PageObs> = (0..512).map(|_| thp_page(0, false, 2)).collect();
        p2_pages[1] = PageObs { order: 0, folio: Some(1), mapcount: 1, exclusive: true, ..p2_pages[1] };
        Observation {
            procs: vec![
                ProcObs {
                    proc: ProcId(0),
                    name: "p1".into(),
                    vm_pte_kb: 8,
                    regions: vec![region(p1_pages, vma(2048))],
                },
                ProcObs { proc: ProcId(1), name: "p2".into(), vm_pte_kb: 8, regions: vec![region(p2_pages, vma(0))] },
            ],
            vmstat: [("thp_fault_alloc", 1), ("thp_split_pmd", 1), ("thp_split_page", 0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            mthp: [("2048kB/anon_fault_alloc", 1)].into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            contents: Vec::new(),
        }
    }

    #[test]
    fn observation_report_golden() {
        let text = render_observation(&fork_child_write(), ReportOptions::default());
        let expected = "\
p1 VmPTE: 8 kB
p1 A 0x200000-0x400000 (2048 kB)
00200000-00400000 rw-p 00000000 00:00 0
Size:               2048 kB
Rss:                2048 kB
Pss:                   0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Anonymous:          2048 kB
LazyFree:              0 kB
AnonHugePages:      2048 kB
Swap:                  0 kB
THPeligible:           1
VmFlags: rd wr hg
pages +0x0..+0x200000 (512 in 1 folio): present order=9 pmd_mapped mapcount=2
anon-thp-pmd-aligned-2048kB:        2048 kB (100%)
p2 VmPTE: 8 kB
p2 A 0x200000-0x400000 (2048 kB)
00200000-00400000 rw-p 00000000 00:00 0
Size:               2048 kB
Rss:                2048 kB
Pss:                   0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Anonymous:          2048 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
Swap:                  0 kB
THPeligible:           1
VmFlags: rd wr hg
pages +0x0..+0x1000 (1 in 1 folio): present order=9 mapcount=2
pages +0x1000..+0x2000 (1 in 1 folio): present order=0 mapcount=1 exclusive
pages +0x2000..+0x200000 (510 in 1 folio): present order=9 mapcount=2
anon-thp-pte-partial:               2044 kB (100%)
counters (deltas since the start):
thp_fault_alloc 1
thp_split_pmd 1
hugepages-2048kB/stats/anon_fault_alloc 1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn results_report_lists_errors_and_failures() {
        let sources: BTreeMap<u32, String> =
            [(4, "p1: madvise A collapse".to_string()), (9, "expect p1 A AnonHugePages 2048kB".to_string())].into();
        let ctx = RunContext { name: "x", file: "x.thp", backend: "model", sources: &sources };
        let failures =
            vec![ExpectFailure { line: 9, source: sources[&9].clone(), message: "AnonHugePages is 0 kB".to_string() }];
        let text = render_results(&ctx, &[(3, Ok(())), (4, Err(Errno::Inval))], &failures);
        assert_eq!(
            text,
            "x.thp:4: p1: madvise A collapse: returned EINVAL\n\
             FAILED x.thp:9: expect p1 A AnonHugePages 2048kB: AnonHugePages is 0 kB\n\
             2 operations (1 returned an error), 1 expectations failed\n"
        );
    }

    #[test]
    fn json_report_carries_coverage_and_results() {
        let sources = BTreeMap::new();
        let ctx = RunContext { name: "x", file: "x.thp", backend: "model", sources: &sources };
        let outcome = RunOutcome {
            results: vec![(3, Err(Errno::NoMem))],
            observations: vec![],
            failures: vec![],
            final_observation: fork_child_write(),
            notes: vec![(4, "p2 does not exist".into())],
        };
        let value = serde_json::to_value(run_json(&ctx, &outcome, ReportOptions::default())).unwrap();
        assert_eq!(value["results"][0]["result"], "ENOMEM");
        assert_eq!(value["notes"][0]["note"], "p2 does not exist");
        assert_eq!(value["final"]["coverage"][0]["labels"]["anon-thp-pmd-aligned-2048kB"], 2048);
        assert_eq!(value["final"]["coverage"][1]["labels"]["anon-thp-pte-partial"], 2044);
        assert_eq!(value["final"]["observation"]["vmstat"]["thp_split_pmd"], 1);
    }
}
