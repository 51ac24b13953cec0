//! `thpsim bench`: timings, one JSON object per line with `--json`
//! (`{"name": ..., "value": ..., "unit": ...}`, in the spirit of
//! `perf stat -j`), or aligned text.
//!
//! Without arguments, the model's own benchmarks (`model_bench.rs`); with
//! `--scenario FILE`, that scenario timed on the model and on the live
//! kernel, with the ratio of the two wall times.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::backends::{run_guarded_timed, BackendFactory, BackendKind, HostBackends, RunEnd};
use crate::run::write_out;
use crate::scenario_file::ScenarioText;
use crate::{CliError, Status};

/// The most repeats `--repeat` allows.
pub const MAX_REPEATS: u32 = 1000;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Instead of the model's benchmarks, time this scenario on the model
    /// and on the live kernel, and print both wall times and their ratio.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Runs per backend; the median wall time is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=MAX_REPEATS as i64))]
    pub repeat: u32,
}

/// One measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchResult {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

impl BenchResult {
    fn render(&self, json: bool) -> String {
        if json {
            // serde_json cannot fail on this shape; fall back to text if it ever does.
            serde_json::to_string(self).map_or_else(|_| self.render(false), |line| format!("{line}\n"))
        } else {
            format!("{:<48} {:>14.3} {}\n", self.name, self.value, self.unit)
        }
    }
}

/// The model's own benchmarks.
fn model_benchmarks() -> Vec<BenchResult> {
    crate::model_bench::model_benchmarks()
}

pub fn main(args: &BenchArgs) -> Result<Status, CliError> {
    let stdout = std::io::stdout();
    bench_with(args, &HostBackends, &mut stdout.lock())
}

/// `thpsim bench` with the backends and output given.
pub fn bench_with(args: &BenchArgs, factory: &dyn BackendFactory, out: &mut dyn Write) -> Result<Status, CliError> {
    let results = match &args.scenario {
        Some(path) => time_scenario(&ScenarioText::read(path)?, args.repeat, factory)?,
        None => model_benchmarks(),
    };
    for result in results {
        write_out(out, &result.render(args.json))?;
    }
    Ok(Status::Ok)
}

/// Times a scenario `repeat` times on each backend: the median wall times
/// in milliseconds and the ratio linux/model.
pub fn time_scenario(
    file: &ScenarioText,
    repeat: u32,
    factory: &dyn BackendFactory,
) -> Result<Vec<BenchResult>, CliError> {
    let scenario = file.parse().map_err(CliError::bad_input)?;
    let mut medians = Vec::new();
    for kind in [BackendKind::Model, BackendKind::Linux] {
        let mut times = Vec::new();
        for _ in 0..repeat {
            match run_guarded_timed(factory, kind, &scenario) {
                (RunEnd::Done(_), elapsed) => times.push(elapsed),
                (RunEnd::Backend(err), _) => {
                    return Err(CliError::backend(anyhow::Error::new(err).context(format!(
                        "{}: the {} backend failed",
                        file.label,
                        kind.name()
                    ))))
                }
                (RunEnd::Invariant(message), _) => {
                    return Err(CliError::invariant(format!("{}: {message}", file.label)))
                }
            }
        }
        medians.push(median(&mut times));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (model, linux) = (medians[0], medians[1]);
    let name = |what: &str| format!("scenario.{}.{what}", scenario.name);
    let mut results = vec![
        BenchResult { name: name("model.wall"), value: ms(model), unit: "ms" },
        BenchResult { name: name("linux.wall"), value: ms(linux), unit: "ms" },
    ];
    if model > Duration::ZERO {
        results.push(BenchResult {
            name: name("linux_over_model"),
            value: linux.as_secs_f64() / model.as_secs_f64(),
            unit: "ratio",
        });
    }
    Ok(results)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_render_as_json_lines_and_text() {
        let result = BenchResult { name: "scenario.x.model.wall".into(), value: 1.5, unit: "ms" };
        assert_eq!(result.render(true), "{\"name\":\"scenario.x.model.wall\",\"value\":1.5,\"unit\":\"ms\"}\n");
        assert_eq!(result.render(false), "scenario.x.model.wall                                     1.500 ms\n");
    }

    #[test]
    fn a_scenario_is_timed_on_both_backends() {
        let dir = std::env::temp_dir().join(format!("thpsim-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("touch.thp");
        std::fs::write(&path, "p1: A = mmap 8M\np1: touch A write\n").unwrap();
        let args = BenchArgs { json: true, scenario: Some(path), repeat: 2 };
        let mut out = Vec::new();
        let status = bench_with(&args, &crate::fake::ToyBackends::default(), &mut out).unwrap();
        assert_eq!(status, Status::Ok);
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["scenario.touch.model.wall", "scenario.touch.linux.wall", "scenario.touch.linux_over_model"]
        );
        assert_eq!(lines[0]["unit"], "ms");
        assert!(lines[2]["value"].as_f64().is_some_and(|r| r > 0.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(&mut [ms(4), ms(1)]), ms(4));
        assert_eq!(median(&mut []), Duration::ZERO);
    }
}
