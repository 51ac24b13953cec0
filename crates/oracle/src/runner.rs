//! Runs a scenario's steps on one backend and records what happened.
//!
//! The same runner drives the model and the live kernel, so the two
//! `RunOutcome`s it produces line up step for step and `diff` can compare
//! them. A failed expectation is recorded and the run goes on, as a kernel
//! selftest reports every failed check rather than stopping at the first;
//! only a `BackendError` (the host or the executor failed) stops a run.

use serde::Serialize;
use thpsim_workload::{Expectation, Op, RegionRef, Scenario, StepKind};

use crate::{Backend, BackendError, Observation, OpResult};

/// An expectation that did not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExpectFailure {
    /// The scenario line of the `expect` step.
    pub line: u32,
    /// The step's text as written in the scenario.
    pub source: String,
    /// Why it failed, from `check_expectation`.
    pub message: String,
}

/// Everything one backend reported while running a scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunOutcome {
    /// Each operation's result with the scenario line of its step, in order.
    pub results: Vec<(u32, OpResult)>,
    /// Each `observe` step's observation with its line, in order.
    pub observations: Vec<(u32, Observation)>,
    /// The expectations that failed, in order.
    pub failures: Vec<ExpectFailure>,
    /// An observation of every region, taken after the last step.
    pub final_observation: Observation,
}

/// Runs every step of `scenario` on `backend`, in order, and takes a final
/// observation of every region still alive after the last step.
///
/// Operations record their result (an errno is a result, not an error);
/// `observe` steps record their observation; `expect` steps observe and
/// record a failure if the expectation does not hold, then go on.
pub fn run_scenario(scenario: &Scenario, backend: &mut dyn Backend) -> Result<RunOutcome, BackendError> {
    run_scenario_with(scenario, backend, crate::expect::check_expectation)
}

/// `run_scenario` with the expectation checker given, for tests that check
/// the runner without the expectation language.
pub fn run_scenario_with(
    scenario: &Scenario,
    backend: &mut dyn Backend,
    check: impl Fn(&Expectation, &Observation, &OpResult) -> Result<(), String>,
) -> Result<RunOutcome, BackendError> {
    let mut runner = Runner::new(backend);
    for step in &scenario.steps {
        match &step.kind {
            StepKind::Op(op) => runner.op(step.line, op)?,
            StepKind::Observe(regions) => runner.observe(step.line, regions)?,
            StepKind::Expect { expectation, regions } => {
                runner.expect(step.line, &step.source, regions, |obs, last| check(expectation, obs, last))?
            }
        }
    }
    runner.finish(&scenario.final_regions)
}

/// Applies steps to a backend one at a time and collects a `RunOutcome`.
///
/// `run_scenario` walks a parsed scenario through it; it is public so that a
/// caller holding operations rather than scenario text (a generator, a test)
/// records outcomes in exactly the same shape.
pub struct Runner<'b> {
    backend: &'b mut dyn Backend,
    outcome: RunOutcome,
    /// The result of the most recent operation, which an `expect` of an
    /// errno checks; `Ok` before the first operation.
    last: OpResult,
}

impl<'b> Runner<'b> {
    pub fn new(backend: &'b mut dyn Backend) -> Self {
        Runner { backend, outcome: RunOutcome::default(), last: Ok(()) }
    }

    /// Applies one operation and records its result.
    pub fn op(&mut self, line: u32, op: &Op) -> Result<(), BackendError> {
        let result = self.backend.apply(op)?;
        self.last = result;
        self.outcome.results.push((line, result));
        Ok(())
    }

    /// Observes the regions and records the observation.
    pub fn observe(&mut self, line: u32, regions: &[RegionRef]) -> Result<(), BackendError> {
        let observation = self.backend.observe(regions)?;
        self.outcome.observations.push((line, observation));
        Ok(())
    }

    /// Observes the regions and records a failure if `check` rejects the
    /// observation (given with the last operation's result).
    pub fn expect(
        &mut self,
        line: u32,
        source: &str,
        regions: &[RegionRef],
        check: impl FnOnce(&Observation, &OpResult) -> Result<(), String>,
    ) -> Result<(), BackendError> {
        let observation = self.backend.observe(regions)?;
        if let Err(message) = check(&observation, &self.last) {
            self.outcome.failures.push(ExpectFailure { line, source: source.to_string(), message });
        }
        Ok(())
    }

    /// Takes the final observation of `regions` and returns the outcome.
    pub fn finish(mut self, regions: &[RegionRef]) -> Result<RunOutcome, BackendError> {
        self.outcome.final_observation = self.backend.observe(regions)?;
        Ok(self.outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProcObs, RegionObs};
    use thpsim_mm::Errno;
    use thpsim_workload::parse_scenario;

    /// Counts operations; `munmap` fails with EINVAL; observations carry the
    /// regions asked for and the number of operations so far.
    #[derive(Default)]
    struct Counting {
        ops: i64,
    }

    impl Backend for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn apply(&mut self, op: &Op) -> Result<OpResult, BackendError> {
            self.ops += 1;
            Ok(match op {
                Op::Munmap { .. } => Err(Errno::Inval),
                _ => Ok(()),
            })
        }
        fn observe(&mut self, regions: &[RegionRef]) -> Result<Observation, BackendError> {
            let procs = regions
                .iter()
                .map(|r| ProcObs {
                    proc: r.proc,
                    name: r.proc_name.clone(),
                    vm_pte_kb: 0,
                    regions: vec![RegionObs { name: r.name.clone(), addr: r.addr, len: r.len, ..RegionObs::default() }],
                })
                .collect();
            Ok(Observation { procs, vmstat: [("ops".to_string(), self.ops)].into(), ..Observation::default() })
        }
    }

    const SCENARIO: &str = "\
machine ram=1G
p1: A = mmap 2M
observe
p1: munmap A 4K
expect ok
expect vmstat thp_split_pmd +1
p1: B = mmap 4K
";

    #[test]
    fn runs_every_step_and_records_failures_without_stopping() {
        let scenario = parse_scenario("t.thp", SCENARIO).unwrap();
        // The checker fails `expect ok` after the failed munmap, and accepts
        // everything else.
        let check = |e: &Expectation, _: &Observation, last: &OpResult| match (e, last) {
            (Expectation::Ok, Err(errno)) => Err(format!("returned {errno}")),
            _ => Ok(()),
        };
        let outcome = run_scenario_with(&scenario, &mut Counting::default(), check).unwrap();
        // Line 2 spawns p1 and maps A: two operations on one line.
        let lines: Vec<u32> = outcome.results.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 2, 4, 7]);
        assert_eq!(outcome.results[2].1, Err(Errno::Inval));
        assert_eq!(outcome.observations.len(), 1);
        assert_eq!(outcome.observations[0].0, 3);
        assert_eq!(outcome.observations[0].1.vmstat["ops"], 2);
        assert_eq!(
            outcome.failures,
            vec![ExpectFailure { line: 5, source: "expect ok".into(), message: "returned EINVAL".into() }]
        );
        // The final observation covers both regions, after every operation.
        let names: Vec<&str> = outcome.final_observation.procs.iter().map(|p| p.regions[0].name.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
        assert_eq!(outcome.final_observation.vmstat["ops"], 4);
    }

    struct Broken;

    impl Backend for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        fn apply(&mut self, _: &Op) -> Result<OpResult, BackendError> {
            Err(BackendError::Executor("gone".into()))
        }
        fn observe(&mut self, _: &[RegionRef]) -> Result<Observation, BackendError> {
            Ok(Observation::default())
        }
    }

    #[test]
    fn a_backend_error_stops_the_run() {
        let scenario = parse_scenario("t.thp", SCENARIO).unwrap();
        let err = run_scenario_with(&scenario, &mut Broken, |_, _, _| Ok(())).unwrap_err();
        assert_eq!(err.to_string(), "executor failed: gone");
    }
}
