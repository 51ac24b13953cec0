//! `thpsim run`: one scenario on one backend, reported.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::backends::{run_guarded, BackendFactory, BackendKind, HostBackends, RunEnd};
use crate::report::{render_rollup, render_run, run_json, ReportOptions, RunContext};
use crate::scenario_file::{parse_policy_arg, sources, ScenarioText};
use crate::{examples, CliError, Status};
use thpsim_mm::Policy;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario file (`.thp`).
    #[arg(required_unless_present = "example", conflicts_with = "example")]
    pub file: Option<PathBuf>,
    /// Run the built-in example instead: a THP, a fork, and the child's
    /// write to one of its pages.
    #[arg(long)]
    pub example: bool,
    /// Which backend runs the scenario.
    #[arg(long, value_enum, default_value_t = BackendKind::Model)]
    pub backend: BackendKind,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print thpmaps labels whose value is zero too (thpmaps --inc-empty).
    #[arg(long)]
    pub inc_empty: bool,
    /// Leave out the runs of pages under each region (text and JSON).
    #[arg(long)]
    pub no_pages: bool,
    /// Print every page run as the observation holds it, with its folio
    /// id, uncapped: the rendering of the corpus snapshots
    /// (`scenarios/**/*.expected`).
    #[arg(long, conflicts_with = "no_pages")]
    pub all_runs: bool,
    /// End with one thpmaps block summed over every region (thpmaps --rollup).
    #[arg(long)]
    pub rollup: bool,
    /// Set a policy (a proposal switch of the model), overriding the
    /// scenario's `policy` statement; repeatable. The Linux backend runs
    /// only Linux 6.18's values.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_policy_arg)]
    pub policy: Vec<Policy>,
}

pub fn main(args: &RunArgs) -> Result<Status, CliError> {
    let stdout = std::io::stdout();
    run_with(args, &HostBackends, &mut stdout.lock())
}

/// `thpsim run` with the backends and output given.
pub fn run_with(args: &RunArgs, factory: &dyn BackendFactory, out: &mut dyn Write) -> Result<Status, CliError> {
    let file = match &args.file {
        Some(path) => ScenarioText::read(path)?,
        None => examples::fork_child_write(),
    };
    let file = file.with_overrides(&args.policy);
    let scenario = file.parse().map_err(CliError::bad_input)?;
    if args.backend == BackendKind::Linux {
        thpsim_oracle::linux::refuse_model_only(&scenario)
            .map_err(|err| CliError::bad_input(anyhow::anyhow!("{}: {err}", file.label)))?;
    }
    let outcome = match run_guarded(factory, args.backend, &scenario) {
        RunEnd::Done(outcome) => outcome,
        RunEnd::Backend(err) => {
            return Err(CliError::backend(anyhow::Error::new(err).context(format!(
                "{}: the {} backend failed",
                file.label,
                args.backend.name()
            ))))
        }
        RunEnd::Invariant(message) => return Err(CliError::invariant(format!("{}: {message}", file.label))),
    };
    let sources = sources(&scenario);
    let ctx = RunContext { name: &scenario.name, file: &file.label, backend: args.backend.name(), sources: &sources };
    let opts = ReportOptions { inc_empty: args.inc_empty, no_pages: args.no_pages, all_runs: args.all_runs };
    let text = if args.json {
        let mut value = run_json(&ctx, &outcome, opts);
        if args.rollup {
            value.rollup = Some(crate::report::rollup(&outcome.final_observation));
        }
        let mut text =
            serde_json::to_string(&value).context("cannot serialise the report").map_err(CliError::bad_input)?;
        text.push('\n');
        text
    } else {
        let mut text = render_run(&ctx, &outcome, opts);
        if args.rollup {
            text.push_str("\n== rollup: every region after the last step\n");
            text.push_str(&render_rollup(&outcome.final_observation, opts));
        }
        text
    };
    write_out(out, &text)?;
    Ok(if outcome.failures.is_empty() { Status::Ok } else { Status::Failed })
}

/// Writes a report; a closed pipe (`thpsim run x | head`) is not an error
/// worth a message.
pub fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(err) => Err(CliError::bad_input(anyhow::Error::new(err).context("cannot write the report"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Bug, ToyBackends};

    fn args(file: Option<PathBuf>) -> RunArgs {
        RunArgs {
            example: file.is_none(),
            file,
            backend: BackendKind::Model,
            json: false,
            inc_empty: false,
            no_pages: false,
            all_runs: false,
            rollup: false,
            policy: Vec::new(),
        }
    }

    fn run(args: &RunArgs, toys: ToyBackends) -> (Result<Status, CliError>, String) {
        let mut out = Vec::new();
        let status = run_with(args, &toys, &mut out);
        (status, String::from_utf8(out).unwrap())
    }

    fn scenario_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("thpsim-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn report_golden() {
        let path = scenario_file(
            "two_pages.thp",
            "p1: A = mmap 16K\np1: touch A write 2\nexpect p1 A Rss 8kB\nobserve\np2 = fork p1\n",
        );
        let (status, out) = run(&args(Some(path.clone())), ToyBackends::default());
        assert_eq!(status.unwrap(), Status::Ok);
        let file = path.display();
        let expected = format!(
            "\
scenario two_pages ({file}) on model

== {file}:4: observe
p1 VmPTE: 0 kB
p1 A 0x200000000000-0x200000004000 (16 kB)
200000000000-200000004000 rw-p 00000000 00:00 0
Size:                 16 kB
Rss:                   8 kB
Pss:                   0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Anonymous:             8 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
Swap:                  0 kB
THPeligible:           0
VmFlags: rd wr
pages +0x0..+0x2000 (2 in 2 folios): present order=0 mapcount=1 exclusive
pages +0x2000..+0x4000 (2): none
counters (deltas since the start):
nr_anon_pages 2

== summary: after the last step
p1 VmPTE: 0 kB
p1 A 0x200000000000-0x200000004000 (16 kB)
200000000000-200000004000 rw-p 00000000 00:00 0
Size:                 16 kB
Rss:                   8 kB
Pss:                   0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Anonymous:             8 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
Swap:                  0 kB
THPeligible:           0
VmFlags: rd wr
pages +0x0..+0x2000 (2 in 2 folios): present order=0 mapcount=2
pages +0x2000..+0x4000 (2): none
p2 VmPTE: 0 kB
p2 A 0x200000000000-0x200000004000 (16 kB)
200000000000-200000004000 rw-p 00000000 00:00 0
Size:                 16 kB
Rss:                   8 kB
Pss:                   0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Anonymous:             8 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
Swap:                  0 kB
THPeligible:           0
VmFlags: rd wr
pages +0x0..+0x2000 (2 in 2 folios): present order=0 mapcount=2
pages +0x2000..+0x4000 (2): none
counters (deltas since the start):
nr_anon_pages 2

4 operations (0 returned an error), 0 expectations failed
"
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn the_example_fails_its_expectations_on_a_backend_without_thp() {
        let (status, out) = run(&args(None), ToyBackends::default());
        assert_eq!(status.unwrap(), Status::Failed);
        assert!(out.starts_with("scenario fork_child_write (scenarios/examples/fork_child_write.thp) on model\n"));
        assert!(
            out.contains(
                "FAILED scenarios/examples/fork_child_write.thp:13: expect p1 A page present order=9 pmd pages=all: "
            ),
            "{out}"
        );
        assert!(out.ends_with("expectations failed\n"), "{out}");
    }

    #[test]
    fn json_is_one_object() {
        let mut a = args(None);
        a.json = true;
        a.rollup = true;
        let (_, out) = run(&a, ToyBackends::default());
        assert_eq!(out.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["scenario"], "fork_child_write");
        assert_eq!(value["backend"], "model");
        assert!(value["failures"].as_array().is_some_and(|f| !f.is_empty()));
        assert!(value["rollup"]["anon_kb"].as_u64().is_some_and(|kb| kb > 0));
    }

    #[test]
    fn json_carries_page_runs_unless_no_pages() {
        let path = scenario_file("runs.thp", "p1: A = mmap 1G\np1: touch A+8K write 2\n");
        let mut a = args(Some(path));
        a.json = true;
        let (_, out) = run(&a, ToyBackends::default());
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        let region = &value["final"]["observation"]["procs"][0]["regions"][0];
        // A hole, two one-page folios, a hole: four runs for 262144 pages.
        let runs = region["runs"].as_array().expect("runs");
        let shape: Vec<(u64, u64)> =
            runs.iter().map(|r| (r["first"].as_u64().unwrap(), r["nr_pages"].as_u64().unwrap())).collect();
        assert_eq!(shape, vec![(0, 2), (2, 1), (3, 1), (4, 262140)]);
        assert_eq!(runs[1]["page"]["state"], "Present");
        assert_eq!(runs[2]["page"]["folio"], 1);

        a.no_pages = true;
        let (_, out) = run(&a, ToyBackends::default());
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        let region = &value["final"]["observation"]["procs"][0]["regions"][0];
        assert!(region.get("runs").is_none(), "{region}");
        assert_eq!(region["len"], 1u64 << 30);
    }

    #[test]
    fn a_broken_invariant_is_its_own_error() {
        let path = scenario_file("mprotect.thp", "p1: A = mmap 2M\np1: mprotect A r\n");
        crate::backends::quiet_panics(true);
        let (status, _) = run(&args(Some(path)), ToyBackends { model: Some(Bug::PanicOnMprotect), linux: None });
        crate::backends::quiet_panics(false);
        let err = status.unwrap_err();
        assert_eq!(err.status, Status::Invariant);
        assert!(format!("{:#}", err.error).contains("toy invariant: mprotect is not allowed here"));
    }
}
