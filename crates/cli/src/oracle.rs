//! `thpsim oracle`: scenarios on the model and on the live kernel, compared.
//!
//! A scenario passes when both backends run it to the end, every
//! expectation holds on both, and `diff_outcomes` finds no divergence under
//! the live-kernel `DiffPolicy`. The last line of the text output is
//! `N passed, M failed`, which CI parses.
//!
//! With `--random N`, scenarios come from `random::generate` instead; each
//! failure is shrunk (while it still parses and fails the same way) and
//! written as a scenario file that `thpsim oracle FILE` replays.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use serde_json::json;
use thpsim_mm::Policy;
use thpsim_oracle::diff::{diff_outcomes, DiffPolicy, Divergence};
use thpsim_oracle::runner::{ExpectFailure, RunOutcome};
use thpsim_workload::{Op, Scenario, StepKind};

use crate::backends::{quiet_panics, run_guarded, BackendFactory, BackendKind, HostBackends, RunEnd};
use crate::random::{self, Generated};
use crate::run::write_out;
use crate::scenario_file::{collect, parse_policy_arg, ScenarioText};
use crate::shrink::{shrink, MAX_SHRINK_RUNS};
use crate::{CliError, Status};

#[derive(Debug, Args)]
pub struct OracleArgs {
    /// Scenario files, or directories searched recursively for `.thp` files.
    #[arg(required_unless_present = "random", conflicts_with = "random")]
    pub paths: Vec<PathBuf>,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Generate this many random scenarios instead of reading files.
    #[arg(long, value_name = "N")]
    pub random: Option<u32>,
    /// The seed of --random, decimal or 0x-hex. Without it, one is taken
    /// from the clock; either way it is printed first.
    #[arg(long, value_name = "S", requires = "random", value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// Where --random writes each shrunk failing scenario (created if
    /// missing; relative to the current directory, under `target/` so that
    /// a checkout gets no untracked folder).
    #[arg(long, value_name = "DIR", default_value = "target/oracle-failures", requires = "random")]
    pub out: PathBuf,
    /// Compare every counter exactly, including those the live kernel moves
    /// for reasons outside the scenario (see `thpsim_oracle::diff::DiffPolicy`).
    #[arg(long, conflicts_with_all = ["noisy_host", "quiet_host"])]
    pub exact: bool,
    /// Other processes on this host may fault or split THPs meanwhile (a
    /// shared machine): Linux's system-wide event counters need only reach
    /// the model's, and gauges are not compared; no counter fails because
    /// Linux counted more. Per-process pages, folios, smaps fields, VmPTE
    /// and errnos stay exact. The default of --random, whose knobs let
    /// every process on the host fault THPs.
    #[arg(long, conflicts_with = "quiet_host")]
    pub noisy_host: bool,
    /// Nothing else on this host faults or splits THPs: compare the
    /// system-wide counters as for scenario files (the default there), also
    /// with --random.
    #[arg(long)]
    pub quiet_host: bool,
    /// Re-run a scenario that diverged (or failed an expectation on Linux
    /// only) up to this many times; it passes if a re-run agrees exactly.
    /// The model is deterministic, so only the live kernel's system-wide
    /// noise can change between runs: a real divergence fails every time.
    /// The report says when a retry was needed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// Set a policy (a proposal switch of the model), overriding the
    /// scenario's `policy` statement; repeatable. The live kernel runs only
    /// Linux 6.18's values (see docs/scenario.md).
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_policy_arg)]
    pub policy: Vec<Policy>,
    /// Print both sides' numbers at every observe point (and after the last
    /// step), agreeing or not: a model-vs-linux table per point (in --json,
    /// a `side_by_side` list). Scenarios files only.
    #[arg(long, conflicts_with = "random")]
    pub side_by_side: bool,
}

/// Parses `123` or `0x7b`.
pub fn parse_seed(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => text.replace('_', "").parse(),
    };
    parsed.map_err(|_| format!("expected a seed such as 42 or 0x7e57, found {text:?}"))
}

/// One thing wrong with a scenario.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// It does not parse.
    BadInput { message: String },
    /// A backend could not be made or failed mid-run.
    Backend { backend: &'static str, message: String },
    /// The model panicked.
    Invariant { message: String },
    /// The backends disagree; `source` is the diverging step's text.
    Diverged { divergence: Divergence, source: Option<String> },
    /// An expectation failed on one backend.
    ExpectFailed { backend: &'static str, failure: ExpectFailure },
}

impl Problem {
    fn status(&self) -> Status {
        match self {
            Problem::BadInput { .. } => Status::BadInput,
            Problem::Backend { .. } => Status::Backend,
            Problem::Invariant { .. } => Status::Invariant,
            Problem::Diverged { .. } | Problem::ExpectFailed { .. } => Status::Failed,
        }
    }

    /// What "the same failure" means while shrinking; `None` for a failure
    /// that a shrunk scenario must not be allowed to turn into.
    fn signature(&self) -> Option<String> {
        match self {
            Problem::BadInput { .. } => None,
            Problem::Backend { backend, .. } => Some(format!("backend {backend}")),
            Problem::Invariant { message } => Some(format!("invariant {}", panic_site(message))),
            Problem::Diverged { divergence, .. } => Some(divergence.signature.clone()),
            Problem::ExpectFailed { backend, .. } => Some(format!("expect {backend}")),
        }
    }
}

/// Where a caught panic was raised (`crates/mm/src/invariants.rs:42`), which
/// names the broken invariant better than its message, whose ids and
/// addresses change as a scenario shrinks; without a location, the message
/// with its digits removed.
pub(crate) fn panic_site(message: &str) -> String {
    match message.rsplit_once(" (at ") {
        Some((_, at)) => at.trim_end_matches(')').to_string(),
        None => message.lines().next().unwrap_or("").chars().filter(|c| !c.is_ascii_digit()).collect(),
    }
}

/// The verdict on one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub file: String,
    pub problems: Vec<Problem>,
    /// Re-runs needed before the backends agreed (`--retries`).
    pub retried: u32,
    /// Both sides' numbers per observe point, when both runs finished
    /// (printed with `--side-by-side`).
    #[serde(skip)]
    pub side_by_side: Vec<crate::side_by_side::PointTable>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn status(&self) -> Status {
        self.problems.iter().map(Problem::status).fold(Status::Ok, Status::worst)
    }

    fn signature(&self) -> Option<String> {
        self.problems.first().and_then(Problem::signature)
    }

    /// `PASS name`, or `FAIL name` and an indented account of each problem.
    pub fn render(&self) -> String {
        if self.passed() {
            if self.retried > 0 {
                return format!(
                    "PASS {} (agreed on re-run {}: the live kernel was noisy before)\n",
                    self.name, self.retried
                );
            }
            return format!("PASS {}\n", self.name);
        }
        let mut out = format!("FAIL {}\n", self.name);
        for problem in &self.problems {
            match problem {
                Problem::BadInput { message } => {
                    for line in message.lines() {
                        let _ = writeln!(out, "  {line}");
                    }
                }
                Problem::Backend { backend, message } => {
                    let _ = writeln!(out, "  the {backend} backend failed: {message}");
                }
                Problem::Invariant { message } => {
                    let _ = writeln!(out, "  the model broke an invariant: {message}");
                }
                Problem::Diverged { divergence, source } => {
                    let at = match (divergence.at.line(), source) {
                        (Some(line), Some(source)) => format!("{}:{line}: {source}", self.file),
                        (Some(line), None) => format!("{}:{line}", self.file),
                        (None, _) => format!("{}: after the last step", self.file),
                    };
                    let _ = writeln!(out, "  diverged at {at}");
                    for detail in &divergence.details {
                        let _ = writeln!(out, "    {detail}");
                    }
                    if divergence.omitted > 0 {
                        let _ = writeln!(out, "    ... and {} more", divergence.omitted);
                    }
                }
                Problem::ExpectFailed { backend, failure } => {
                    let _ = writeln!(
                        out,
                        "  {backend}: {}:{}: {}: {}",
                        self.file, failure.line, failure.source, failure.message
                    );
                }
            }
        }
        out
    }
}

/// Parses and runs one scenario on both backends, and compares them.
pub fn check_text(file: &ScenarioText, factory: &dyn BackendFactory, policy: &DiffPolicy) -> CaseResult {
    let fallback_name = Path::new(&file.label).file_stem().map_or(file.label.clone(), |s| s.to_string_lossy().into());
    let scenario = match file.parse() {
        Ok(scenario) => scenario,
        Err(err) => {
            return CaseResult {
                name: fallback_name,
                file: file.label.clone(),
                problems: vec![Problem::BadInput { message: err.to_string() }],
                retried: 0,
                side_by_side: Vec::new(),
            }
        }
    };
    if let Err(err) = thpsim_oracle::linux::refuse_model_only(&scenario) {
        return CaseResult {
            name: scenario.name.clone(),
            file: file.label.clone(),
            problems: vec![Problem::BadInput { message: format!("{}: {err}", file.label) }],
            retried: 0,
            side_by_side: Vec::new(),
        };
    }
    let (problems, side_by_side) = check_scenario(&scenario, factory, policy);
    CaseResult { name: scenario.name.clone(), file: file.label.clone(), problems, retried: 0, side_by_side }
}

/// `check_text`, re-run up to `retries` times while the only problems are
/// ones the live kernel's noise can cause.
pub fn check_text_retrying(
    file: &ScenarioText,
    factory: &dyn BackendFactory,
    policy: &DiffPolicy,
    retries: u32,
) -> CaseResult {
    let mut result = check_text(file, factory, policy);
    let noise_only = |r: &CaseResult| {
        r.problems.iter().all(|p| match p {
            Problem::Diverged { .. } => true,
            Problem::ExpectFailed { backend, .. } => *backend == "linux",
            _ => false,
        })
    };
    let mut retried = 0;
    while !result.passed() && retried < retries && noise_only(&result) {
        retried += 1;
        let again = check_text(file, factory, policy);
        if again.passed() {
            return CaseResult { retried, ..again };
        }
        result = again;
    }
    result
}

fn check_scenario(
    scenario: &Scenario,
    factory: &dyn BackendFactory,
    policy: &DiffPolicy,
) -> (Vec<Problem>, Vec<crate::side_by_side::PointTable>) {
    let mut problems = Vec::new();
    let outcome = |kind: BackendKind, problems: &mut Vec<Problem>| -> Option<RunOutcome> {
        match run_guarded(factory, kind, scenario) {
            RunEnd::Done(outcome) => Some(outcome),
            RunEnd::Backend(err) => {
                problems.push(Problem::Backend { backend: kind.name(), message: err.to_string() });
                None
            }
            RunEnd::Invariant(message) => {
                problems.push(Problem::Invariant { message });
                None
            }
        }
    };
    let model = outcome(BackendKind::Model, &mut problems);
    let linux = outcome(BackendKind::Linux, &mut problems);
    if let (Some(model), Some(linux)) = (&model, &linux) {
        if let Some(divergence) = diff_outcomes(model, linux, policy) {
            let source = divergence
                .at
                .line()
                .and_then(|line| scenario.steps.iter().find(|s| s.line == line))
                .map(|s| s.source.clone());
            problems.push(Problem::Diverged { divergence, source });
        }
    }
    for (kind, outcome) in [(BackendKind::Model, &model), (BackendKind::Linux, &linux)] {
        for failure in outcome.iter().flat_map(|o| &o.failures) {
            problems.push(Problem::ExpectFailed { backend: kind.name(), failure: failure.clone() });
        }
    }
    let tables = match (&model, &linux) {
        (Some(model), Some(linux)) => crate::side_by_side::tables(scenario, model, linux),
        _ => Vec::new(),
    };
    (problems, tables)
}

pub fn main(args: &OracleArgs) -> Result<Status, CliError> {
    let stdout = std::io::stdout();
    oracle_with(args, &HostBackends, &mut stdout.lock())
}

/// `thpsim oracle` with the backends and output given.
pub fn oracle_with(args: &OracleArgs, factory: &dyn BackendFactory, out: &mut dyn Write) -> Result<Status, CliError> {
    let policy = diff_policy(args);
    match args.random {
        Some(n) => random_mode(args, n, factory, &policy, out),
        None => files_mode(args, factory, &policy, out),
    }
}

/// The counters' comparison: `--exact`, `--noisy-host` or `--quiet-host`
/// as given; otherwise a noisy host for `--random` (its knobs set THP sizes
/// to `always`, so every other process on the host faults THPs and moves
/// the system-wide counters) and the live-kernel policy for files.
pub fn diff_policy(args: &OracleArgs) -> DiffPolicy {
    if args.exact {
        DiffPolicy::exact()
    } else if args.noisy_host || (args.random.is_some() && !args.quiet_host) {
        DiffPolicy::noisy_host()
    } else {
        DiffPolicy::linux_oracle()
    }
}

fn files_mode(
    args: &OracleArgs,
    factory: &dyn BackendFactory,
    policy: &DiffPolicy,
    out: &mut dyn Write,
) -> Result<Status, CliError> {
    let files = collect(&args.paths)?;
    if files.is_empty() {
        return Err(CliError::bad_input(anyhow::anyhow!("no .thp scenario files found")));
    }
    let mut tally = Tally::default();
    for path in files {
        let result = match ScenarioText::read(&path) {
            Ok(file) => check_text_retrying(&file.with_overrides(&args.policy), factory, policy, args.retries),
            Err(err) => CaseResult {
                name: path.display().to_string(),
                file: path.display().to_string(),
                problems: vec![Problem::BadInput { message: format!("{:#}", err.error) }],
                retried: 0,
                side_by_side: Vec::new(),
            },
        };
        let line = match (args.json, args.side_by_side) {
            (true, false) => json_line(&result, None, None),
            (true, true) => {
                let mut value: serde_json::Value =
                    serde_json::from_str(&json_line(&result, None, None)).unwrap_or_default();
                value["side_by_side"] = json!(result.side_by_side);
                format!("{value}\n")
            }
            (false, false) => result.render(),
            (false, true) => {
                format!("{}{}", result.render(), crate::side_by_side::render(&result.file, &result.side_by_side))
            }
        };
        write_out(out, &line)?;
        tally.add(&result);
    }
    write_out(out, &tally.render(args.json))?;
    Ok(tally.status)
}

fn random_mode(
    args: &OracleArgs,
    n: u32,
    factory: &dyn BackendFactory,
    policy: &DiffPolicy,
    out: &mut dyn Write,
) -> Result<Status, CliError> {
    let seed = args.seed.unwrap_or_else(clock_seed);
    let header = if args.json {
        format!("{}\n", json!({ "seed": format!("{seed:#x}"), "scenarios": n }))
    } else {
        format!("seed {seed:#x} (replay: thpsim oracle --random {n} --seed {seed:#x})\n")
    };
    write_out(out, &header)?;
    preflight(factory)?;
    let mut tally = Tally::default();
    for index in 0..n {
        let generated = random::generate(seed, index);
        let name = format!("seed-{seed:#x}-{index:03}");
        if !args.json {
            write_out(out, &format!("{name} knobs: {}\n", generated.knobs_line()))?;
        }
        let file =
            ScenarioText { label: format!("{name}.thp"), text: generated.text.clone(), overrides: args.policy.clone() };
        let result = check_text_retrying(&file, factory, policy, args.retries);
        let text = if result.passed() {
            if args.json {
                json_line(&result, Some(&generated), None)
            } else {
                result.render()
            }
        } else {
            let written = shrink_and_write(&result, &generated, &name, &args.out, factory, policy)?;
            // Report the shrunk scenario, whose lines and path the reader can
            // open, when it still fails; otherwise the generated one.
            let shown = written.result.as_ref().unwrap_or(&result);
            if args.json {
                json_line(shown, Some(&generated), Some(&written))
            } else {
                let mut text = shown.render();
                let _ = writeln!(
                    text,
                    "  shrunk from {} to {} statements in {} runs{}: {}",
                    written.before,
                    written.after,
                    written.runs,
                    if written.result.is_some() { "" } else { " (it did not fail again)" },
                    written.path.display()
                );
                text
            }
        };
        write_out(out, &text)?;
        tally.add(&result);
    }
    write_out(out, &tally.render(args.json))?;
    Ok(tally.status)
}

/// Checks that both backends run a one-page scenario, so that a host where
/// the live kernel cannot be driven (not root, a kernel without
/// PAGEMAP_SCAN) stops the fuzzer at once instead of failing, and
/// shrinking, every scenario for the same reason.
fn preflight(factory: &dyn BackendFactory) -> Result<(), CliError> {
    let file = ScenarioText {
        label: "preflight.thp".to_string(),
        text: "p1: A = mmap 4K\np1: touch A write\n".to_string(),
        overrides: Vec::new(),
    };
    let scenario = file.parse().map_err(CliError::bad_input)?;
    for kind in [BackendKind::Model, BackendKind::Linux] {
        match run_guarded(factory, kind, &scenario) {
            RunEnd::Done(_) => {}
            RunEnd::Backend(err) => {
                return Err(CliError::backend(
                    anyhow::Error::new(err)
                        .context(format!("the {} backend cannot run a one-page scenario", kind.name())),
                ))
            }
            RunEnd::Invariant(message) => return Err(CliError::invariant(format!("a one-page scenario: {message}"))),
        }
    }
    Ok(())
}

/// A shrunk failing scenario, as written.
struct Written {
    path: PathBuf,
    /// The shrunk scenario's own verdict, if it failed again when re-run.
    result: Option<CaseResult>,
    /// Statements (lines other than comments) before and after shrinking.
    before: usize,
    after: usize,
    runs: usize,
}

/// Shrinks a failing generated scenario, re-runs the result once for a
/// report whose lines match the file, and writes it to `dir` with that
/// report as a comment at the top.
fn shrink_and_write(
    result: &CaseResult,
    generated: &Generated,
    name: &str,
    dir: &Path,
    factory: &dyn BackendFactory,
    policy: &DiffPolicy,
) -> Result<Written, CliError> {
    let path = dir.join(format!("{name}.thp"));
    let label = path.display().to_string();
    let (text, runs) = match result.signature() {
        Some(signature) => {
            quiet_panics(true);
            let shrunk = shrink(&generated.text, MAX_SHRINK_RUNS, |candidate| {
                let file = ScenarioText { label: label.clone(), text: candidate.to_string(), overrides: Vec::new() };
                has_operations(&file)
                    && check_text(&file, factory, policy).signature().as_deref() == Some(signature.as_str())
            });
            quiet_panics(false);
            (shrunk.text, shrunk.runs)
        }
        None => (generated.text.clone(), 0),
    };
    // A one-line header, so that the lines of the re-run's report are the
    // file's lines; the report itself goes at the end.
    // The replay compares counters as this run did.
    let flag = if *policy == DiffPolicy::noisy_host() {
        "--noisy-host "
    } else if *policy == DiffPolicy::exact() {
        "--exact "
    } else {
        ""
    };
    let scenario = format!("# replay: thpsim oracle {flag}{label}\n{text}");
    // Shrinking and the re-run leave out `--policy`: the oracle runs only
    // baseline values, which change nothing.
    let rerun = check_text(
        &ScenarioText { label: label.clone(), text: scenario.clone(), overrides: Vec::new() },
        factory,
        policy,
    );
    let final_result = (!rerun.passed()).then_some(rerun);
    let report = match &final_result {
        Some(rerun) => rerun.render(),
        None => {
            format!("{}(the lines above are the generated scenario's; this one passed when re-run)\n", result.render())
        }
    };
    let mut written_text = scenario;
    written_text.push_str("\n# What thpsim oracle reported for this file:\n");
    for line in report.lines() {
        let _ = writeln!(written_text, "# {line}");
    }
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, &written_text))
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(CliError::bad_input)?;
    Ok(Written { path, result: final_result, before: statements(&generated.text), after: statements(&text), runs })
}

/// Lines other than comments and blank lines.
fn statements(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).count()
}

/// Whether a scenario parses and does something beyond setting knobs and
/// creating processes: a shrunk scenario without an operation reproduces
/// nothing worth reading (a backend that cannot start fails it too).
pub(crate) fn has_operations(file: &ScenarioText) -> bool {
    file.parse().is_ok_and(|scenario| {
        scenario
            .steps
            .iter()
            .any(|step| matches!(&step.kind, StepKind::Op(op) if !matches!(op, Op::Set { .. } | Op::Spawn { .. })))
    })
}

fn json_line(result: &CaseResult, generated: Option<&Generated>, shrunk: Option<&Written>) -> String {
    let mut value = json!({
        "name": result.name,
        "file": result.file,
        "result": if result.passed() { "PASS" } else { "FAIL" },
        "problems": result.problems,
    });
    if let Some(generated) = generated {
        value["knobs"] = json!(generated.knobs);
    }
    if let Some(written) = shrunk {
        value["shrunk"] = json!({
            "path": written.path.display().to_string(),
            "statements_before": written.before,
            "statements_after": written.after,
            "runs": written.runs,
            "failed_again": written.result.is_some(),
        });
    }
    format!("{value}\n")
}

#[derive(Default)]
struct Tally {
    passed: u32,
    failed: u32,
    status: Status,
}

impl Tally {
    fn add(&mut self, result: &CaseResult) {
        if result.passed() {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        self.status = self.status.worst(result.status());
    }

    fn render(&self, json: bool) -> String {
        if json {
            format!("{}\n", json!({ "passed": self.passed, "failed": self.failed }))
        } else {
            format!("{} passed, {} failed\n", self.passed, self.failed)
        }
    }
}

/// A seed for `--random` without `--seed`: the clock, mixed.
pub(crate) fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    thpsim_workload::SplitMix64::new(nanos ^ u64::from(std::process::id())).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Bug, ToyBackends};

    const PASSES: &str = "\
machine ram=1G
p1: A = mmap 2M
p1: touch A write 4
p2 = fork p1
p2: touch A+16K write 1
observe
";

    const DIVERGES: &str = "\
p1: A = mmap 2M
p1: touch A write 4
p2 = fork p1
shrink
observe p2
";

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("thpsim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn args(paths: Vec<PathBuf>) -> OracleArgs {
        OracleArgs {
            paths,
            json: false,
            random: None,
            seed: None,
            out: PathBuf::new(),
            exact: false,
            noisy_host: false,
            quiet_host: false,
            retries: 0,
            policy: Vec::new(),
            side_by_side: false,
        }
    }

    fn run(args: &OracleArgs, toys: ToyBackends) -> (Status, String) {
        let mut out = Vec::new();
        let status = oracle_with(args, &toys, &mut out).unwrap();
        (status, String::from_utf8(out).unwrap())
    }

    #[test]
    fn random_compares_counters_as_a_shared_host_allows_unless_told() {
        let files = args(vec![PathBuf::from("x.thp")]);
        assert_eq!(diff_policy(&files), DiffPolicy::linux_oracle());
        let random = OracleArgs { random: Some(3), ..args(vec![]) };
        assert_eq!(diff_policy(&random), DiffPolicy::noisy_host());
        assert_eq!(diff_policy(&OracleArgs { exact: true, ..args(vec![]) }), DiffPolicy::exact());
        assert_eq!(diff_policy(&OracleArgs { quiet_host: true, ..random }), DiffPolicy::linux_oracle());
        assert_eq!(diff_policy(&OracleArgs { noisy_host: true, ..files }), DiffPolicy::noisy_host());
    }

    #[test]
    fn random_failures_go_under_target_by_default() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            oracle: OracleArgs,
        }
        let cli = Cli::parse_from(["thpsim", "--random", "3"]);
        assert_eq!(cli.oracle.out, PathBuf::from("target/oracle-failures"));
    }

    #[test]
    fn files_pass_fail_and_the_totals_line() {
        let dir = temp_dir("oracle-files");
        std::fs::write(dir.join("a_passes.thp"), PASSES).unwrap();
        std::fs::write(dir.join("b_diverges.thp"), DIVERGES).unwrap();
        let toys = ToyBackends { model: None, linux: Some(Bug::SplitPmdOnShrinkAfterFork) };
        let (status, out) = run(&args(vec![dir.clone()]), toys);
        let file = dir.join("b_diverges.thp").display().to_string();
        assert_eq!(
            out,
            format!(
                "PASS a_passes\n\
                 FAIL b_diverges\n\
                 \x20 diverged at {file}:5: observe p2\n\
                 \x20   vmstat thp_split_pmd: model +0, linux +1\n\
                 1 passed, 1 failed\n"
            )
        );
        assert_eq!(status, Status::Failed);

        let (status, out) = run(&args(vec![dir.join("a_passes.thp")]), toys);
        assert_eq!((status, out.as_str()), (Status::Ok, "PASS a_passes\n1 passed, 0 failed\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_input_and_broken_invariants_fail_with_their_class() {
        let dir = temp_dir("oracle-bad");
        std::fs::write(dir.join("bad.thp"), "p1: A = mmap 2MB\n").unwrap();
        std::fs::write(dir.join("mprotect.thp"), "p1: A = mmap 2M\np1: mprotect A r\n").unwrap();
        let toys = ToyBackends { model: Some(Bug::PanicOnMprotect), linux: None };
        quiet_panics(true);
        let (status, out) = run(&args(vec![dir.clone()]), toys);
        quiet_panics(false);
        let bad = dir.join("bad.thp").display().to_string();
        assert!(out.starts_with(&format!("FAIL bad\n  {bad}:1:14: error: expected a size")), "{out}");
        assert!(
            out.contains(
                "FAIL mprotect\n  the model broke an invariant: toy invariant: mprotect is not allowed here (at "
            ),
            "{out}"
        );
        assert!(out.ends_with("0 passed, 2 failed\n"), "{out}");
        assert_eq!(status, Status::Invariant);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn json_lines_end_with_the_totals() {
        let dir = temp_dir("oracle-json");
        std::fs::write(dir.join("d.thp"), DIVERGES).unwrap();
        let mut a = args(vec![dir.clone()]);
        a.json = true;
        let toys = ToyBackends { model: None, linux: Some(Bug::SplitPmdOnShrinkAfterFork) };
        let (_, out) = run(&a, toys);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["result"], "FAIL");
        assert_eq!(lines[0]["problems"][0]["kind"], "diverged");
        assert_eq!(lines[0]["problems"][0]["divergence"]["at"]["observe"], 5);
        assert_eq!(lines[1], json!({ "passed": 0, "failed": 1 }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn random_json_lines_carry_the_seed_knobs_and_shrunk_file() {
        let dir = temp_dir("oracle-random-json");
        let toys = ToyBackends { model: None, linux: Some(Bug::SplitPmdOnShrinkAfterFork) };
        // The toy's bug is an extra event, which a noisy host would allow.
        let a = OracleArgs {
            random: Some(12),
            seed: Some(0x7e57),
            out: dir.clone(),
            json: true,
            quiet_host: true,
            ..args(vec![])
        };
        let (_, out) = run(&a, toys);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0], json!({ "seed": "0x7e57", "scenarios": 12 }));
        assert_eq!(lines.len(), 14);
        let failed: Vec<&serde_json::Value> = lines.iter().filter(|l| l["result"] == "FAIL").collect();
        assert!(!failed.is_empty());
        for line in &failed {
            assert!(line["knobs"].is_object());
            assert_eq!(line["shrunk"]["statements_after"], 3);
            assert_eq!(line["shrunk"]["failed_again"], true);
            assert_eq!(line["file"], line["shrunk"]["path"]);
        }
        assert_eq!(lines[13]["failed"], failed.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn random_failures_are_shrunk_written_and_replay() {
        let dir = temp_dir("oracle-random");
        let toys = ToyBackends { model: None, linux: Some(Bug::SplitPmdOnShrinkAfterFork) };
        let a = OracleArgs { random: Some(12), seed: Some(0x7e57), out: dir.clone(), quiet_host: true, ..args(vec![]) };
        let (status, out) = run(&a, toys);
        assert!(
            out.starts_with("seed 0x7e57 (replay: thpsim oracle --random 12 --seed 0x7e57)\nseed-0x7e57-000 knobs: ")
        );
        assert!(out.ends_with(" failed\n"));
        let written: Vec<PathBuf> = out
            .lines()
            .filter_map(|l| l.strip_prefix("  shrunk from ")?.split_once(": ").map(|(_, path)| path))
            .map(PathBuf::from)
            .collect();
        assert!(!written.is_empty(), "no failure among 12 scenarios:\n{out}");
        assert_eq!(status, Status::Failed);
        for path in &written {
            let text = std::fs::read_to_string(path).unwrap();
            let statements: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
            // What the bug needs: a process, a fork and a shrink; knob,
            // machine and observe lines go.
            assert_eq!(statements.len(), 3, "{}:\n{text}", path.display());
            assert!(statements.iter().any(|l| l.contains("fork")), "{text}");
            assert!(statements.contains(&"shrink"), "{text}");
            // The file replays as the same failure.
            let (status, replay) = run(&args(vec![path.clone()]), toys);
            assert_eq!(status, Status::Failed);
            assert!(replay.contains("vmstat thp_split_pmd: model +0, linux +1"), "{replay}");
            // The report at the end of the file is what replaying it prints,
            // lines and all.
            let (_, report) = text.split_once("# What thpsim oracle reported for this file:\n").unwrap();
            let report: String = report.lines().map(|l| format!("{}\n", l.strip_prefix("# ").unwrap())).collect();
            assert_eq!(format!("{report}0 passed, 1 failed\n"), replay);
        }
        // Deterministic: the same seed writes the same files.
        let first: Vec<String> = written.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        let (_, again) = run(&a, toys);
        assert_eq!(again, out);
        let second: Vec<String> = written.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        assert_eq!(first, second);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broken_invariant_is_known_by_where_it_broke() {
        assert_eq!(
            panic_site("folio 3: entire_mapcount is 1 but 0 PMDs map it (at crates/mm/src/invariants.rs:42)"),
            "crates/mm/src/invariants.rs:42"
        );
        assert_eq!(panic_site("folio 3 of 0x200"), "folio  of x");
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Ok(42));
        assert_eq!(parse_seed("0x7e57"), Ok(0x7e57));
        assert_eq!(parse_seed("0xdead_beef"), Ok(0xdead_beef));
        assert!(parse_seed("seven").is_err());
    }
}
