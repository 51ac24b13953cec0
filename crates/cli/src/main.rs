//! `thpsim`: run THP scenarios on the model of Linux mm and on the live
//! kernel, and compare the two.
//!
//! Exit codes (distinct per failure class, so scripts and CI can tell them
//! apart):
//! 0 success; 1 an expectation failed or the model diverged from Linux;
//! 2 bad input (a scenario that does not parse, a missing file, a bad
//! argument); 3 a backend failed (the host lacks something, the executor
//! died); 4 the model broke one of its invariants (a bug in the model).

#![forbid(unsafe_code)]

mod backends;
mod bench;
#[cfg(test)]
mod corpus;
mod examples;
#[cfg(test)]
mod fake;
mod fuzz;
mod model_bench;
mod oracle;
mod random;
mod report;
mod run;
mod scenario_file;
mod shrink;
mod side_by_side;
mod thpmaps;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run THP scenarios on a model of Linux mm and on the live kernel.
#[derive(Debug, Parser)]
#[command(name = "thpsim", version, propagate_version = true)]
#[command(after_help = "Start with:  thpsim run --example")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario and print what memory looks like at each `observe`
    /// and after the last step.
    ///
    /// Each region is shown with smaps-style lines, its pages as runs, and
    /// a thpmaps-style coverage block; counters as vmstat-style deltas.
    /// Exit code 1 if an expectation failed, 2 on a bad scenario, 3 if the
    /// backend failed, 4 if the model broke an invariant.
    Run(run::RunArgs),
    /// Run scenarios on the model and on the live kernel and compare them.
    ///
    /// Prints `PASS name` or `FAIL name` (with the first divergence and any
    /// failed expectation) per scenario, then `N passed, M failed`. With
    /// `--random N` it generates N scenarios from a seed instead, shrinks
    /// every failure and writes it as a scenario file to replay.
    /// Exit code 0 if all passed; otherwise the most serious class seen:
    /// 4 invariant broken, 3 backend failed, 2 bad input, 1 diverged or an
    /// expectation failed.
    Oracle(oracle::OracleArgs),
    /// Benchmarks, one JSON object per line with --json:
    /// `{"name": ..., "value": ..., "unit": ...}`.
    ///
    /// Without arguments, the model's own benchmarks. With --scenario, that
    /// scenario timed on the model and on the live kernel instead: both
    /// wall times and their ratio.
    Bench(bench::BenchArgs),
    /// Run random scenarios on tiny machines with injected allocation
    /// failures, on the model only, and check its invariants and errnos.
    ///
    /// Each scenario gets a machine of 2 to 64 MiB, usually `inject` lines
    /// at the `pgtable` and `folio` points, and regions of up to a few
    /// times its RAM, so that the out-of-memory paths run. A scenario fails
    /// if the model panics (an invariant broke), the backend fails, or an
    /// operation answers an errno Linux never returns for it (a fork
    /// failing with anything but ENOMEM). Each failure is shrunk and
    /// written as a scenario file that `thpsim run` replays. Prints the
    /// seed first, each failure, then `N passed, M failed`; a progress line
    /// on a terminal. Build with `--features check-invariants` for the
    /// invariant checks in a release build (debug builds always check).
    /// Exit code 0 if all passed; otherwise the most serious class seen:
    /// 4 invariant broken, 3 backend failed, 2 bad input, 1 a wrong errno.
    Fuzz(fuzz::FuzzArgs),
    /// Write back the THP settings a killed live run left changed.
    ///
    /// A Linux backend saves every THP knob to /run/thpsim-oracle.settings
    /// before changing any and removes the file when it has restored them;
    /// after a SIGKILL the file stays, and the next live run restores it
    /// first. This does the same at once, under the host lock, and prints
    /// each knob as `name: was -> restored`. Exit code 0, or 3 if a knob
    /// could not be written.
    Restore(backends::RestoreArgs),
}

/// Failure classes, by exit code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    #[default]
    Ok = 0,
    Failed = 1,
    BadInput = 2,
    Backend = 3,
    Invariant = 4,
}

impl Status {
    /// The more serious of two statuses, for a run of many scenarios.
    pub fn worst(self, other: Status) -> Status {
        self.max(other)
    }
}

/// An error at the binary's edge, with the exit status it maps to.
#[derive(Debug)]
pub struct CliError {
    pub status: Status,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn bad_input(error: impl Into<anyhow::Error>) -> Self {
        CliError { status: Status::BadInput, error: error.into() }
    }
    pub fn backend(error: impl Into<anyhow::Error>) -> Self {
        CliError { status: Status::Backend, error: error.into() }
    }
    pub fn invariant(message: String) -> Self {
        CliError { status: Status::Invariant, error: anyhow::anyhow!("the model broke an invariant: {message}") }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::main(&args),
        Command::Oracle(args) => oracle::main(&args),
        Command::Bench(args) => bench::main(&args),
        Command::Fuzz(args) => fuzz::main(&args),
        Command::Restore(args) => backends::restore_main(&args, &mut std::io::stdout().lock()),
    };
    match result {
        Ok(status) => ExitCode::from(status as u8),
        Err(err) => {
            // A parse error prints its own `file:line:column: error:` and caret.
            if err.error.downcast_ref::<thpsim_workload::ParseError>().is_some() {
                eprintln!("{}", err.error);
            } else {
                eprintln!("error: {:#}", err.error);
            }
            ExitCode::from(err.status as u8)
        }
    }
}
