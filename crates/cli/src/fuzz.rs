//! `thpsim fuzz`: random scenarios on tiny machines with injected
//! allocation failures, run on the model only (issue 7, item 8).
//!
//! Each scenario comes from `random::generate_flavored(Flavor::Tiny, ..)`:
//! a machine of 2 to 64 MiB, usually one or two `inject` lines at the
//! `pgtable` and `folio` points, regions of up to a few times the RAM. It
//! runs on the model with its invariant checks (every debug build; a
//! release build with `--features check-invariants`), and fails when
//!
//! - the model panics: an invariant broke (exit code 4);
//! - the backend fails (exit code 3), or the scenario does not parse (2);
//! - an operation answers an errno that Linux 6.18 never returns for it,
//!   such as a fork failing with anything but ENOMEM (exit code 1).
//!
//! Each failure is shrunk while it fails the same way and written as a
//! scenario that `thpsim run` replays. The output is the seed, one block
//! per failure and `N passed, M failed`; on a terminal, a progress line
//! goes to standard error. The same seed gives the same output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use thpsim_mm::Errno;
use thpsim_oracle::runner::RunOutcome;
use thpsim_workload::{Advice, Op, Scenario, StepKind};

use crate::backends::{quiet_panics, run_guarded, BackendFactory, BackendKind, HostBackends, RunEnd};
use crate::oracle::{has_operations, panic_site, parse_seed};
use crate::random::{self, Flavor, Generated};
use crate::run::write_out;
use crate::scenario_file::ScenarioText;
use crate::shrink::{shrink, MAX_SHRINK_RUNS};
use crate::{CliError, Status};

/// Whether this build checks the model's invariants after every operation.
pub const INVARIANT_CHECKS: bool = cfg!(any(debug_assertions, feature = "check-invariants"));

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// How many scenarios to generate and run.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub count: u32,
    /// The seed, decimal or 0x-hex. Without it, one is taken from the
    /// clock; either way it is printed first.
    #[arg(long, value_name = "S", value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// Where each shrunk failing scenario is written.
    #[arg(long, value_name = "DIR", default_value = "fuzz-failures")]
    pub out: PathBuf,
    /// Shrink and write at most this many failures of each kind (the same
    /// panic site, or the same operation answering the same wrong errno);
    /// later ones are counted and named but not written.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_per_kind: u32,
}

/// One thing wrong with a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FuzzProblem {
    /// It does not parse (a generator bug).
    BadInput { message: String },
    /// The model backend failed.
    Backend { message: String },
    /// The model panicked: an invariant broke.
    Invariant { message: String },
    /// An operation answered an errno Linux never returns for it.
    Errno { line: u32, source: String, errno: Errno, allowed: &'static [Errno] },
}

impl FuzzProblem {
    pub fn status(&self) -> Status {
        match self {
            FuzzProblem::BadInput { .. } => Status::BadInput,
            FuzzProblem::Backend { .. } => Status::Backend,
            FuzzProblem::Invariant { .. } => Status::Invariant,
            FuzzProblem::Errno { .. } => Status::Failed,
        }
    }

    /// What "the same failure" means while shrinking and when counting
    /// kinds: where the model panicked, or which operation answered which
    /// errno. `None` for input that does not parse.
    pub fn signature(&self) -> Option<String> {
        match self {
            FuzzProblem::BadInput { .. } => None,
            FuzzProblem::Backend { .. } => Some("backend".to_string()),
            FuzzProblem::Invariant { message } => Some(format!("invariant {}", panic_site(message))),
            FuzzProblem::Errno { source, errno, .. } => Some(format!("{} {errno}", operation_word(source))),
        }
    }

    /// An indented account, for the report and the written file.
    pub fn render(&self, file: &str) -> String {
        match self {
            FuzzProblem::BadInput { message } => message.lines().map(|l| format!("  {l}\n")).collect(),
            FuzzProblem::Backend { message } => format!("  the model backend failed: {message}\n"),
            FuzzProblem::Invariant { message } => format!("  the model broke an invariant: {message}\n"),
            FuzzProblem::Errno { line, source, errno, allowed } => {
                let allowed: Vec<String> = allowed.iter().map(Errno::to_string).collect();
                let allowed =
                    if allowed.is_empty() { "nothing (it cannot fail)".to_string() } else { allowed.join(", ") };
                format!("  {file}:{line}: {source}: answered {errno}; Linux answers only {allowed}\n")
            }
        }
    }
}

/// `fork` for `p2 = fork p1`, `touch` for `p1: touch A write`.
fn operation_word(source: &str) -> String {
    let after_colon = source.split_once(": ").map_or(source, |(_, rest)| rest);
    let words: Vec<&str> = after_colon.split_whitespace().collect();
    match words.as_slice() {
        [_, "=", "fork", ..] => "fork".to_string(),
        [_, "=", op, ..] => op.to_string(),
        [op, ..] => op.to_string(),
        [] => String::new(),
    }
}

/// The errnos Linux 6.18 can return for `op` as scenarios issue it (valid,
/// page-aligned ranges of private anonymous memory; no mlock, no rlimits).
/// An empty list: the call cannot fail. (The same table as the model's
/// `random_ops_oom` test, for scenario operations.)
pub fn errnos_linux_can_return(op: &Op) -> &'static [Errno] {
    use Errno::*;
    match op {
        // Writes of values the kernel accepts.
        Op::Set { .. } => &[],
        // fork(): dup_mm() failing is ENOMEM (EAGAIN needs RLIMIT_NPROC);
        // starting a process is a fork too.
        Op::Spawn { .. } | Op::Fork { .. } => &[NoMem],
        // MAP_FIXED_NOREPLACE over a mapping, or no memory for the VMA.
        Op::Mmap { .. } => &[Exist, NoMem],
        // MAP_FIXED: unmapping the old range or no memory for the VMA.
        Op::MmapFixed { .. } => &[NoMem],
        // __split_vma() can fail with ENOMEM.
        Op::Munmap { .. } => &[NoMem],
        // A hole (ENOMEM), no memory to populate (EAGAIN), PROT_NONE (ENOMEM).
        Op::Mlock { .. } => &[NoMem, Again],
        Op::Munlock { .. } => &[NoMem],
        // No room to grow in place, or no memory.
        Op::MremapInPlace { .. } => &[Fault, Inval, NoMem],
        // A hole in the range, or no memory to split a VMA.
        Op::Mprotect { .. } => &[NoMem],
        // No VMA at the old address (EFAULT), overlapping ranges (EINVAL),
        // no room or no memory (ENOMEM).
        Op::Mremap { .. } => &[Fault, Inval, NoMem],
        Op::Madvise { advice, .. } => match advice {
            // madvise_populate(): no VMA or OOM, incompatible VMA, SIGSEGV.
            Advice::PopulateRead | Advice::PopulateWrite => &[NoMem, Inval, Fault],
            // madvise_collapse_errno().
            Advice::Collapse => &[NoMem, Inval, Again, Busy],
            // can_madv_lru_vma(): an mlock()ed VMA refuses these with EINVAL.
            Advice::DontNeed | Advice::Free | Advice::Cold | Advice::PageOut => &[NoMem, Inval],
            // A hole in the range, or no memory to split a VMA.
            _ => &[NoMem],
        },
        // A user access: VM_FAULT_OOM or VM_FAULT_SIGSEGV.
        Op::Touch { .. } => &[NoMem, Fault],
        // pin_user_pages(): no VMA or no permission (EFAULT), OOM (ENOMEM).
        Op::Pin { .. } => &[NoMem, Fault],
        // The backend's answer for a pin that was never taken (its `pin`
        // failed): thpsim's convention, since no system call unpins by name.
        Op::Unpin { .. } => &[Inval],
        Op::Exit { .. } | Op::Prctl { .. } | Op::Khugepaged { .. } | Op::Shrink => &[],
    }
}

/// The first operation that answered an errno Linux never returns for it.
/// ESRCH is right for an operation in a process whose fork failed: the
/// runner answers it and leaves a note on the line.
fn first_wrong_errno(scenario: &Scenario, outcome: &RunOutcome) -> Option<FuzzProblem> {
    let ops = scenario.steps.iter().filter_map(|step| match &step.kind {
        StepKind::Op(op) => Some((step, op)),
        _ => None,
    });
    for ((step, op), &(line, result)) in ops.zip(&outcome.results) {
        let Err(errno) = result else {
            continue;
        };
        if errno == Errno::Srch && outcome.notes.iter().any(|(l, _)| *l == line) {
            continue;
        }
        let allowed = errnos_linux_can_return(op);
        if !allowed.contains(&errno) {
            return Some(FuzzProblem::Errno { line, source: step.source.clone(), errno, allowed });
        }
    }
    None
}

/// The verdict on one scenario.
#[derive(Clone, Debug)]
pub struct FuzzResult {
    pub problem: Option<FuzzProblem>,
    /// Operations that answered ENOMEM.
    pub nr_enomem: usize,
}

/// Parses and runs one scenario on the model, and checks its answers.
pub fn check_text(file: &ScenarioText, factory: &dyn BackendFactory) -> FuzzResult {
    let scenario = match file.parse() {
        Ok(scenario) => scenario,
        Err(err) => {
            return FuzzResult { problem: Some(FuzzProblem::BadInput { message: err.to_string() }), nr_enomem: 0 }
        }
    };
    match run_guarded(factory, BackendKind::Model, &scenario) {
        RunEnd::Done(outcome) => FuzzResult {
            problem: first_wrong_errno(&scenario, &outcome),
            nr_enomem: outcome.results.iter().filter(|(_, r)| *r == Err(Errno::NoMem)).count(),
        },
        RunEnd::Backend(err) => {
            FuzzResult { problem: Some(FuzzProblem::Backend { message: err.to_string() }), nr_enomem: 0 }
        }
        RunEnd::Invariant(message) => FuzzResult { problem: Some(FuzzProblem::Invariant { message }), nr_enomem: 0 },
    }
}

pub fn main(args: &FuzzArgs) -> Result<Status, CliError> {
    let stdout = std::io::stdout();
    let progress = std::io::stderr().is_terminal();
    fuzz_with(args, &HostBackends, &mut stdout.lock(), progress)
}

/// `thpsim fuzz` with the backends and output given; `progress` draws a
/// progress line on standard error.
pub fn fuzz_with(
    args: &FuzzArgs,
    factory: &dyn BackendFactory,
    out: &mut dyn Write,
    progress: bool,
) -> Result<Status, CliError> {
    let seed = args.seed.unwrap_or_else(crate::oracle::clock_seed);
    let checks = if INVARIANT_CHECKS {
        "invariant checks on"
    } else {
        "invariant checks OFF: build with --features check-invariants"
    };
    write_out(
        out,
        &format!("seed {seed:#x} (replay: thpsim fuzz --count {} --seed {seed:#x}); {checks}\n", args.count),
    )?;
    let mut progress = progress.then(Progress::new);
    let (mut passed, mut failed, mut status) = (0u32, 0u32, Status::Ok);
    let mut nr_out_of_memory = 0u32;
    // Failures written so far, by signature: how many and the first file.
    let mut kinds: BTreeMap<String, (u32, PathBuf)> = BTreeMap::new();
    for index in 0..args.count {
        let generated = random::generate_flavored(Flavor::Tiny, seed, index);
        let name = format!("fuzz-{seed:#x}-{index:05}");
        let file = ScenarioText { label: format!("{name}.thp"), text: generated.text.clone(), overrides: Vec::new() };
        quiet_panics(true);
        let result = check_text(&file, factory);
        quiet_panics(false);
        if let Some(progress) = &mut progress {
            progress.tick(index + 1, args.count, failed + u32::from(result.problem.is_some()));
        }
        nr_out_of_memory += u32::from(result.nr_enomem > 0);
        let Some(problem) = result.problem else {
            passed += 1;
            continue;
        };
        failed += 1;
        status = status.worst(problem.status());
        let mut text = format!("FAIL {name} {}\n{}", generated.setup_line(), problem.render(&file.label));
        let signature = problem.signature();
        let seen = signature.as_ref().and_then(|s| kinds.get(s)).cloned();
        match seen {
            Some((count, first)) if count >= args.max_per_kind => {
                let _ = writeln!(text, "  the same failure as {} (not written)", first.display());
            }
            _ => {
                let written = shrink_and_write(&problem, &generated, &name, &args.out, factory)?;
                let _ = writeln!(
                    text,
                    "  shrunk from {} to {} statements in {} runs{}: {}",
                    written.before,
                    written.after,
                    written.runs,
                    if written.failed_again { "" } else { " (it did not fail again)" },
                    written.path.display()
                );
                if let Some(signature) = signature {
                    kinds.entry(signature).or_insert((0, written.path)).0 += 1;
                }
            }
        }
        if let Some(progress) = &mut progress {
            progress.clear();
        }
        write_out(out, &text)?;
    }
    if let Some(progress) = &mut progress {
        progress.clear();
    }
    write_out(
        out,
        &format!("{nr_out_of_memory} of {} scenarios ran out of memory (an operation answered ENOMEM)\n", args.count),
    )?;
    write_out(out, &format!("{passed} passed, {failed} failed\n"))?;
    Ok(status)
}

/// A shrunk failing scenario, as written.
struct Written {
    path: PathBuf,
    /// Whether the written file failed again, the same way, when re-run.
    failed_again: bool,
    /// Statements (lines other than comments) before and after shrinking.
    before: usize,
    after: usize,
    runs: usize,
}

/// Shrinks a failing scenario while it fails with the same signature,
/// re-runs the result once, and writes it to `dir` with that run's report
/// as comments at the end.
fn shrink_and_write(
    problem: &FuzzProblem,
    generated: &Generated,
    name: &str,
    dir: &Path,
    factory: &dyn BackendFactory,
) -> Result<Written, CliError> {
    let path = dir.join(format!("{name}.thp"));
    let label = path.display().to_string();
    let signature = problem.signature();
    let (text, runs) = match &signature {
        Some(signature) => {
            quiet_panics(true);
            let shrunk = shrink(&generated.text, MAX_SHRINK_RUNS, |candidate| {
                let file = ScenarioText { label: label.clone(), text: candidate.to_string(), overrides: Vec::new() };
                has_operations(&file)
                    && check_text(&file, factory).problem.and_then(|p| p.signature()).as_ref() == Some(signature)
            });
            quiet_panics(false);
            (shrunk.text, shrunk.runs)
        }
        None => (generated.text.clone(), 0),
    };
    // A one-line header, so that the lines of the re-run's report are the
    // file's lines.
    let scenario = format!("# replay: thpsim run {label}\n{text}");
    quiet_panics(true);
    let rerun =
        check_text(&ScenarioText { label: label.clone(), text: scenario.clone(), overrides: Vec::new() }, factory);
    quiet_panics(false);
    let failed_again = rerun.problem.as_ref().and_then(FuzzProblem::signature) == signature;
    let report = match (&rerun.problem, failed_again) {
        (Some(again), true) => again.render(&label),
        _ => format!(
            "{}  (the generated scenario's problem; this file did not fail the same way when re-run)\n",
            problem.render(&format!("{name}.thp"))
        ),
    };
    let mut written_text = scenario;
    written_text.push_str("\n# What thpsim fuzz found with this file:\n");
    for line in report.lines() {
        let _ = writeln!(written_text, "# {line}");
    }
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, &written_text))
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(CliError::bad_input)?;
    Ok(Written { path, failed_again, before: statements(&generated.text), after: statements(&text), runs })
}

/// Lines other than comments and blank lines.
fn statements(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).count()
}

/// A progress line on standard error, redrawn at most ten times a second.
struct Progress {
    start: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    fn new() -> Self {
        Progress { start: Instant::now(), drawn: None }
    }

    fn tick(&mut self, done: u32, total: u32, failed: u32) {
        let now = Instant::now();
        if done != total && self.drawn.is_some_and(|at| now - at < Duration::from_millis(100)) {
            return;
        }
        self.drawn = Some(now);
        let rate = f64::from(done) / (now - self.start).as_secs_f64().max(1e-3);
        eprint!("\r\x1b[2K{done}/{total} scenarios, {failed} failed, {rate:.0}/s");
        let _ = std::io::stderr().flush();
    }

    fn clear(&mut self) {
        if self.drawn.take().is_some() {
            eprint!("\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Bug, ToyBackends};
    use thpsim_workload::parse_scenario;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("thpsim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn args(count: u32, seed: u64, out: &Path) -> FuzzArgs {
        FuzzArgs { count, seed: Some(seed), out: out.to_path_buf(), max_per_kind: 3 }
    }

    fn fuzz(args: &FuzzArgs, factory: &dyn BackendFactory) -> (Status, String) {
        let mut out = Vec::new();
        let status = fuzz_with(args, factory, &mut out, false).unwrap();
        (status, String::from_utf8(out).unwrap())
    }

    /// The files a run says it wrote.
    fn written(out: &str) -> Vec<PathBuf> {
        out.lines()
            .filter_map(|l| l.strip_prefix("  shrunk from ")?.split_once(": ").map(|(_, path)| PathBuf::from(path)))
            .collect()
    }

    fn statements_of(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect()
    }

    fn file(label: &str, text: &str) -> ScenarioText {
        ScenarioText { label: label.to_string(), text: text.to_string(), overrides: Vec::new() }
    }

    /// Measured on the first 200 scenarios of seed 0x7e57: 170 (85%) had
    /// an operation answer ENOMEM; a scenario the model panics on counts
    /// as none.
    const MIN_OUT_OF_MEMORY_PERCENT: usize = 70;

    #[test]
    fn tiny_machines_run_out_of_memory_in_most_scenarios() {
        let mut out_of_memory = 0;
        let n = 200;
        quiet_panics(true);
        for index in 0..n {
            let generated = random::generate_flavored(Flavor::Tiny, 0x7e57, index);
            let result = check_text(&file("tiny.thp", &generated.text), &HostBackends);
            out_of_memory += usize::from(result.nr_enomem > 0);
        }
        quiet_panics(false);
        assert!(
            out_of_memory * 100 >= MIN_OUT_OF_MEMORY_PERCENT * n as usize,
            "only {out_of_memory} of {n} scenarios answered ENOMEM"
        );
    }

    #[test]
    fn a_planted_invariant_break_is_shrunk_written_and_replays() {
        let dir = temp_dir("fuzz-planted");
        let toys = ToyBackends { model: Some(Bug::PanicOnMprotect), linux: None };
        let a = args(40, 0x7e57, &dir);
        let (status, out) = fuzz(&a, &toys);
        assert_eq!(status, Status::Invariant);
        assert!(
            out.starts_with("seed 0x7e57 (replay: thpsim fuzz --count 40 --seed 0x7e57); invariant checks on\n"),
            "{out}"
        );
        assert!(out.contains("  the model broke an invariant: toy invariant: mprotect is not allowed here (at "));
        let failed = out.lines().filter(|l| l.starts_with("FAIL fuzz-0x7e57-")).count();
        assert!(failed > 3, "{out}");
        assert!(out.ends_with(&format!("{} passed, {failed} failed\n", 40 - failed)), "{out}");
        // Three of a kind are shrunk and written; the rest are named only.
        let files = written(&out);
        assert_eq!(files.len(), 3, "{out}");
        assert_eq!(
            out.matches(&format!("  the same failure as {} (not written)\n", files[0].display())).count(),
            failed - 3
        );
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            let statements = statements_of(&text);
            // What the bug needs: a region, the forks that made the
            // mprotecting process if it is a child, and the mprotect.
            let (last, rest) = statements.split_last().unwrap();
            assert!(last.contains(": mprotect "), "{text}");
            assert!(rest.first().is_some_and(|l| l.contains(" = mmap ")), "{text}");
            assert!(rest[1..].iter().all(|l| l.contains(" = fork ")), "{}:\n{text}", path.display());
            assert!(
                !text.contains("\ninject ") && !text.contains("\nmachine "),
                "injections and RAM do not matter:\n{text}"
            );
            // The file fails the same way when replayed, and says so.
            let replay = check_text(&file(&path.display().to_string(), &text), &toys).problem.unwrap();
            assert_eq!(replay.status(), Status::Invariant);
            assert!(text
                .contains("# What thpsim fuzz found with this file:\n#   the model broke an invariant: toy invariant"));
        }
        // Deterministic: the same seed prints and writes the same.
        let first: Vec<String> = files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        let (_, again) = fuzz(&a, &toys);
        assert_eq!(again, out);
        let second: Vec<String> = files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        assert_eq!(first, second);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_errno_linux_never_returns_is_a_failure() {
        let dir = temp_dir("fuzz-errno");
        let toys = ToyBackends { model: Some(Bug::ForkAnswersEbusy), linux: None };
        let (status, out) = fuzz(&FuzzArgs { max_per_kind: 1, ..args(40, 0x7e57, &dir) }, &toys);
        assert_eq!(status, Status::Failed, "{out}");
        assert!(out.contains(": answered EBUSY; Linux answers only ENOMEM\n"), "{out}");
        let files = written(&out);
        assert_eq!(files.len(), 1, "{out}");
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let statements = statements_of(&text);
        // A process (its first statement creates it) and the fork.
        assert_eq!(statements.len(), 2, "{text}");
        assert!(statements[1].contains(" = fork p"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn passing_runs_print_the_seed_and_totals_only() {
        let dir = temp_dir("fuzz-pass");
        let (status, out) = fuzz(&args(25, 3, &dir), &ToyBackends::default());
        assert_eq!(status, Status::Ok);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "seed 0x3 (replay: thpsim fuzz --count 25 --seed 0x3); invariant checks on");
        assert!(lines[1].ends_with(" of 25 scenarios ran out of memory (an operation answered ENOMEM)"), "{out}");
        assert_eq!(lines[2], "25 passed, 0 failed");
        assert_eq!(lines.len(), 3);
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "nothing written");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn esrch_is_right_only_where_the_runner_answered_it() {
        let scenario = parse_scenario("t.thp", "p1: A = mmap 4K\np2 = fork p1\np2: touch A write\n").unwrap();
        let outcome = |notes: Vec<(u32, String)>, fork: Result<(), Errno>, touch: Result<(), Errno>| RunOutcome {
            results: vec![(1, Ok(())), (1, Ok(())), (2, fork), (3, touch)],
            notes,
            ..RunOutcome::default()
        };
        let note = vec![(3, "p2 does not exist".to_string())];
        assert_eq!(first_wrong_errno(&scenario, &outcome(note.clone(), Err(Errno::NoMem), Err(Errno::Srch))), None);
        assert_eq!(
            first_wrong_errno(&scenario, &outcome(Vec::new(), Ok(()), Err(Errno::Srch))),
            Some(FuzzProblem::Errno {
                line: 3,
                source: "p2: touch A write".to_string(),
                errno: Errno::Srch,
                allowed: &[Errno::NoMem, Errno::Fault]
            })
        );
        let wrong_fork = first_wrong_errno(&scenario, &outcome(note, Err(Errno::Again), Err(Errno::Srch))).unwrap();
        assert_eq!(wrong_fork.signature().as_deref(), Some("fork EAGAIN"));
        assert_eq!(wrong_fork.render("t.thp"), "  t.thp:2: p2 = fork p1: answered EAGAIN; Linux answers only ENOMEM\n");
    }

    #[test]
    fn operations_are_known_by_their_word() {
        assert_eq!(operation_word("p2 = fork p1"), "fork");
        assert_eq!(operation_word("p1: B = mremap A 4K 8K align=1G"), "mremap");
        assert_eq!(operation_word("p1: touch A write"), "touch");
        assert_eq!(operation_word("unpin P1_p1"), "unpin");
        assert_eq!(operation_word("exit p2"), "exit");
    }
}
