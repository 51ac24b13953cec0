//! The scenario corpus as snapshot tests: every `scenarios/**/*.thp` runs on
//! the model, and its whole report (`thpsim run --all-runs`: observations
//! with every page run and its folio, counter deltas, operation errors,
//! failed expectations) must equal the `.expected` file beside it.
//! `UPDATE_EXPECT=1 cargo test -p thpsim corpus` rewrites the snapshots.
//!
//! This is the regression net for refactoring the model: a change in what
//! the model does shows up as a diff of a snapshot, named by its scenario.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use crate::backends::{run_guarded, BackendKind, HostBackends, RunEnd};
use crate::report::{render_run, ReportOptions, RunContext};
use crate::scenario_file::{collect, sources, ScenarioText};

/// The workspace's root: scenarios are labelled relative to it, so the
/// snapshots do not depend on where the tree is checked out.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The complete report of `path` on the model, labelled `label`; an error
/// says why the scenario could not run, or which of its expectations failed.
fn snapshot(path: &Path, label: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let file = ScenarioText { label: label.to_string(), text, overrides: Vec::new() };
    let scenario = file.parse().map_err(|e| e.to_string())?;
    let outcome = match run_guarded(&HostBackends, BackendKind::Model, &scenario) {
        RunEnd::Done(outcome) => outcome,
        RunEnd::Backend(err) => return Err(format!("the model backend failed: {err}")),
        RunEnd::Invariant(message) => return Err(format!("a model invariant broke: {message}")),
    };
    let sources = sources(&scenario);
    let ctx = RunContext { name: &scenario.name, file: label, backend: "model", sources: &sources };
    let opts = ReportOptions { all_runs: true, ..ReportOptions::default() };
    let report = render_run(&ctx, &outcome, opts);
    if let Some(failure) = outcome.failures.first() {
        return Err(format!(
            "{} expectation(s) failed on the model, first at line {}: {}: {}",
            outcome.failures.len(),
            failure.line,
            failure.source,
            failure.message
        ));
    }
    Ok(report)
}

#[test]
fn scenario_corpus_matches_its_snapshots() {
    let root = workspace_root();
    let files = collect(&[root.join("scenarios")]).unwrap_or_else(|e| panic!("{:#}", e.error));
    assert!(files.len() >= 100, "only {} scenarios found under {}", files.len(), root.display());
    let mut failed = Vec::new();
    for path in &files {
        let label = path.strip_prefix(&root).unwrap_or(path).display().to_string();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| match snapshot(path, &label) {
            Ok(report) => {
                expect_test::expect_file![path.with_extension("expected")].assert_eq(&report);
                Ok(())
            }
            Err(why) => Err(why),
        }));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failed.push(format!("{label}: {why}")),
            Err(_) => failed.push(format!("{label}: the snapshot differs (diff above)")),
        }
    }
    assert!(failed.is_empty(), "{} of {} scenarios failed:\n{}", failed.len(), files.len(), failed.join("\n"));
}

#[test]
fn a_failed_expectation_fails_the_snapshot() {
    let dir = std::env::temp_dir().join(format!("thpsim-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wrong.thp");
    std::fs::write(&path, "p1: A = mmap 16K\np1: touch A write\nexpect p1 A Rss 4kB\n").unwrap();
    let err = snapshot(&path, "wrong.thp").unwrap_err();
    assert_eq!(err, "1 expectation(s) failed on the model, first at line 3: expect p1 A Rss 4kB: expected p1 A Rss 4 kB, found 16 kB");
    std::fs::write(&path, "p1: A = mmap 16K\np1: touch A write\nexpect p1 A Rss 16kB\n").unwrap();
    let report = snapshot(&path, "wrong.thp").unwrap();
    assert!(report.starts_with("scenario wrong (wrong.thp) on model\n"), "{report}");
    assert!(report.contains("pages +0x0..+0x1000 (1 in folio #0): present order=0 mapcount=1 exclusive\n"), "{report}");
    assert!(
        report.contains("pages +0x3000..+0x4000 (1 in folio #3): present order=0 mapcount=1 exclusive\n"),
        "{report}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
