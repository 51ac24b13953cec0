//! `thpsim oracle --side-by-side`: both backends' numbers at every observe
//! point, agreeing or not, as a model-vs-linux table the way linux-mm cover
//! letters show results (a Markdown pipe table in plain 80-column text, the
//! model, the baseline, first, and Linux's value also as a change against
//! it), and as JSON.
//!
//! The rows are what a reader compares first: per process `VmPTE`; per
//! region the smaps sums over its VMAs (Rss, Pss, Private_Dirty,
//! AnonHugePages, LazyFree, Swap), its VMA count, present and PMD-mapped
//! pages, and folios per order; then every counter that moved on either
//! side (vmstat, khugepaged, per-size stats).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use thpsim_oracle::runner::RunOutcome;
use thpsim_oracle::{Observation, PageState};
use thpsim_workload::Scenario;

/// One row: a name and both sides' values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub name: String,
    pub model: i64,
    pub linux: i64,
}

/// The rows of one observe point (an `observe` step, or the end).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PointTable {
    /// The scenario line of the `observe` step; `None` after the last step.
    pub line: Option<u32>,
    /// The step as written, or "after the last step".
    pub step: String,
    pub rows: Vec<Row>,
}

/// The tables of every observe point both runs reached.
pub fn tables(scenario: &Scenario, model: &RunOutcome, linux: &RunOutcome) -> Vec<PointTable> {
    let mut out = Vec::new();
    for ((line, m), (_, l)) in model.observations.iter().zip(&linux.observations) {
        let step = scenario.steps.iter().find(|s| s.line == *line).map_or(String::new(), |s| s.source.clone());
        out.push(PointTable { line: Some(*line), step, rows: rows(m, l) });
    }
    out.push(PointTable {
        line: None,
        step: "after the last step".to_string(),
        rows: rows(&model.final_observation, &linux.final_observation),
    });
    out
}

/// The named numbers of one observation, in a fixed order.
fn numbers(obs: &Observation) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for proc in &obs.procs {
        out.push((format!("{} VmPTE kB", proc.name), proc.vm_pte_kb as i64));
        for region in &proc.regions {
            let end = region.addr + region.len;
            let vmas: Vec<_> = region.vmas.iter().filter(|v| v.start < end && v.end > region.addr).collect();
            let at = format!("{} {}", proc.name, region.name);
            let sum = |f: fn(&thpsim_oracle::VmaObs) -> u64| vmas.iter().map(|v| f(v)).sum::<u64>() as i64;
            out.push((format!("{at} VMAs"), vmas.len() as i64));
            out.push((format!("{at} Rss kB"), sum(|v| v.rss_kb)));
            out.push((format!("{at} Pss kB"), sum(|v| v.pss_kb)));
            out.push((format!("{at} Private_Dirty kB"), sum(|v| v.private_dirty_kb)));
            out.push((format!("{at} AnonHugePages kB"), sum(|v| v.anon_huge_pages_kb)));
            out.push((format!("{at} LazyFree kB"), sum(|v| v.lazyfree_kb)));
            out.push((format!("{at} Swap kB"), sum(|v| v.swap_kb)));
            let (mut present, mut pmd) = (0u64, 0u64);
            let mut folios: BTreeMap<u8, BTreeSet<u32>> = BTreeMap::new();
            for run in &region.runs {
                if run.page.state == PageState::Present {
                    present += run.nr_pages;
                    if run.page.pmd_mapped {
                        pmd += run.nr_pages;
                    }
                    if let Some(folio) = run.page.folio {
                        folios.entry(run.page.order).or_default().insert(folio);
                    }
                }
            }
            out.push((format!("{at} present pages"), present as i64));
            out.push((format!("{at} PMD-mapped pages"), pmd as i64));
            for (order, set) in folios {
                out.push((format!("{at} folios order={order}"), set.len() as i64));
            }
        }
    }
    for (name, v) in &obs.vmstat {
        out.push((name.clone(), *v));
    }
    for (key, v) in &obs.mthp {
        let shown = match key.split_once('/') {
            Some((size, stat)) => format!("hugepages-{size}/{stat}"),
            None => key.clone(),
        };
        out.push((shown, *v));
    }
    out
}

/// Both sides' numbers by name, in the model's order then Linux's extras;
/// counters that are zero on both sides are left out.
fn rows(model: &Observation, linux: &Observation) -> Vec<Row> {
    let m = numbers(model);
    let l: BTreeMap<String, i64> = numbers(linux).into_iter().collect();
    let counters: BTreeSet<String> = model.vmstat.keys().cloned().collect();
    let is_counter = |name: &str| counters.contains(name) || name.starts_with("hugepages-");
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for (name, mv) in &m {
        seen.insert(name.clone());
        let lv = l.get(name).copied().unwrap_or(0);
        rows.push(Row { name: name.clone(), model: *mv, linux: lv });
    }
    for (name, lv) in numbers(linux) {
        if !seen.contains(&name) {
            rows.push(Row { name, model: 0, linux: lv });
        }
    }
    rows.retain(|r| !(is_counter(&r.name) && r.model == 0 && r.linux == 0));
    rows
}

/// The tables as text: one Markdown pipe table per point, within 80
/// columns, with a `*` on each row where the sides differ.
pub fn render(file: &str, tables: &[PointTable]) -> String {
    const NAME: usize = 40;
    let mut out = String::new();
    for t in tables {
        match t.line {
            Some(line) => {
                let _ = writeln!(out, "  {file}:{line}: {}", t.step);
            }
            None => {
                let _ = writeln!(out, "  {file}: {}", t.step);
            }
        }
        let _ = writeln!(out, "  | {:<NAME$} | {:>8} | {:>8} | {:>8} |", "", "model", "linux", "change");
        let _ = writeln!(out, "  |{}|{}:|{}:|{}:|", "-".repeat(NAME + 2), "-".repeat(9), "-".repeat(9), "-".repeat(9));
        for r in &t.rows {
            let mut name = r.name.clone();
            if name.chars().count() > NAME {
                name = format!("{}…", name.chars().take(NAME - 1).collect::<String>());
            }
            let change = r.linux - r.model;
            let mark = if change != 0 { "*" } else { " " };
            let _ = writeln!(out, "  | {name:<NAME$} | {:>8} | {:>8} | {:>+8}{mark}|", r.model, r.linux, change);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fit_in_80_columns_and_mark_differences() {
        let tables = vec![PointTable {
            line: Some(7),
            step: "observe p1 A".into(),
            rows: vec![
                Row { name: "p1 A Rss kB".into(), model: 2048, linux: 2048 },
                Row { name: "thp_fault_alloc".into(), model: 1, linux: 3 },
                Row { name: "a name far too long to fit into its column of forty chars".into(), model: 0, linux: 0 },
            ],
        }];
        let text = render("t.thp", &tables);
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.contains("| p1 A Rss kB"), "{text}");
        assert!(text.lines().any(|l| l.contains("thp_fault_alloc") && l.ends_with("+2*|")), "{text}");
        assert!(text.lines().any(|l| l.contains("p1 A Rss kB") && l.ends_with("+0 |")), "{text}");
    }
}
