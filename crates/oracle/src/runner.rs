//! Runs a scenario's steps on one backend and records what happened.
//!
//! The same runner drives the model and the live kernel, so the two
//! `RunOutcome`s it produces line up step for step and `diff` can compare
//! them. A failed expectation is recorded and the run goes on, as a kernel
//! selftest reports every failed check rather than stopping at the first;
//! only a `BackendError` (the host or the executor failed) stops a run.

use std::collections::BTreeMap;

use serde::Serialize;
use thpsim_mm::Errno;
use thpsim_workload::{Expectation, Op, ProcId, RegionRef, Scenario, StepKind};

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
    /// What the runner decided on its own, with the line of the step:
    /// an operation on a process that does not exist (its fork failed)
    /// answered ESRCH without reaching the backend.
    pub notes: Vec<(u32, String)>,
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
    let mut runner = Runner::new(backend).with_names(&scenario.procs);
    for step in &scenario.steps {
        match &step.kind {
            StepKind::Op(op) => runner.op(step.line, op)?,
            StepKind::Observe(regions) => runner.observe(step.line, regions)?,
            StepKind::Expect { expectation, regions } => {
                let reads = content_reads(expectation, regions);
                runner.expect_reading(step.line, &step.source, regions, &reads, |obs, last| {
                    check(expectation, obs, last)
                })?
            }
        }
    }
    runner.finish(&scenario.final_regions)
}

/// The (process, address, pages) a `content` expectation reads back.
fn content_reads(expectation: &Expectation, regions: &[RegionRef]) -> Vec<(ProcId, u64, u64)> {
    match expectation {
        Expectation::Content { at, len, .. } => regions
            .iter()
            .find(|r| r.proc == at.proc && r.name == at.region)
            .map(|r| vec![(at.proc, r.addr + at.offset, len / 4096)])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
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
    /// Scenario names of the processes, by `ProcId`, for notes.
    names: Vec<String>,
    /// Processes the scenario names but that do not exist, because the
    /// fork (or start) that should have made them failed: why, for notes.
    absent: BTreeMap<ProcId, String>,
}

impl<'b> Runner<'b> {
    pub fn new(backend: &'b mut dyn Backend) -> Self {
        Runner { backend, outcome: RunOutcome::default(), last: Ok(()), names: Vec::new(), absent: BTreeMap::new() }
    }

    /// Names processes in notes as the scenario does (`p{n}` otherwise).
    pub fn with_names(mut self, names: &[String]) -> Self {
        self.names = names.to_vec();
        self
    }

    fn name(&self, proc: ProcId) -> String {
        self.names.get(proc.0 as usize).cloned().unwrap_or_else(|| format!("p{}", proc.0 + 1))
    }

    /// Applies one operation and records its result.
    ///
    /// As in the kernel, a process whose fork failed never exists: an
    /// operation in it (or a fork of it) answers ESRCH, as a system call on a
    /// pid that does not exist would, without reaching the backend, so both
    /// backends answer alike and the run goes on. A note says why.
    pub fn op(&mut self, line: u32, op: &Op) -> Result<(), BackendError> {
        let acting = match *op {
            Op::Fork { parent, .. } => Some(parent),
            _ => op.proc(),
        };
        let result = match acting.and_then(|proc| self.absent.get(&proc).map(|why| (proc, why.clone()))) {
            Some((proc, why)) => {
                let note = format!("{} does not exist: {why}; the operation answers ESRCH", self.name(proc));
                self.outcome.notes.push((line, note));
                Err(Errno::Srch)
            }
            None => self.backend.apply(op)?,
        };
        match (op, result) {
            (&Op::Fork { child, .. }, Err(errno)) => {
                self.absent.insert(child, format!("its fork at line {line} failed with {errno}"));
            }
            (&Op::Spawn { proc }, Err(errno)) => {
                self.absent.insert(proc, format!("its start at line {line} failed with {errno}"));
            }
            _ => {}
        }
        self.last = result;
        self.outcome.results.push((line, result));
        Ok(())
    }

    /// The regions of processes that exist.
    fn present(&self, regions: &[RegionRef]) -> Vec<RegionRef> {
        regions.iter().filter(|r| !self.absent.contains_key(&r.proc)).cloned().collect()
    }

    /// Observes the regions and records the observation.
    pub fn observe(&mut self, line: u32, regions: &[RegionRef]) -> Result<(), BackendError> {
        let observation = self.backend.observe(&self.present(regions))?;
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
        let observation = self.backend.observe(&self.present(regions))?;
        if let Err(message) = check(&observation, &self.last) {
            self.outcome.failures.push(ExpectFailure { line, source: source.to_string(), message });
        }
        Ok(())
    }

    /// `expect`, after reading back the words of `reads` (process, first
    /// page, pages) into the observation's `contents`: the loads happen
    /// before the rest is observed, so the observation shows what they
    /// faulted in. A process that does not exist reads nothing.
    pub fn expect_reading(
        &mut self,
        line: u32,
        source: &str,
        regions: &[RegionRef],
        reads: &[(ProcId, u64, u64)],
        check: impl FnOnce(&Observation, &OpResult) -> Result<(), String>,
    ) -> Result<(), BackendError> {
        let mut contents = Vec::new();
        for &(proc, addr, nr_pages) in reads {
            if self.absent.contains_key(&proc) {
                continue;
            }
            let read = self.backend.read_words(proc, addr, nr_pages)?;
            contents.push(crate::ContentObs { proc, addr, read });
        }
        let mut observation = self.backend.observe(&self.present(regions))?;
        observation.contents = contents;
        if let Err(message) = check(&observation, &self.last) {
            self.outcome.failures.push(ExpectFailure { line, source: source.to_string(), message });
        }
        Ok(())
    }

    /// Takes the final observation of `regions` and returns the outcome.
    pub fn finish(mut self, regions: &[RegionRef]) -> Result<RunOutcome, BackendError> {
        self.outcome.final_observation = self.backend.observe(&self.present(regions))?;
        Ok(self.outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProcObs, RegionObs};
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

    /// Forks fail with ENOMEM; observations list the processes asked about.
    struct NoFork {
        applied: Vec<Op>,
        observed_procs: Vec<Vec<ProcId>>,
    }

    impl Backend for NoFork {
        fn name(&self) -> &'static str {
            "nofork"
        }
        fn apply(&mut self, op: &Op) -> Result<OpResult, BackendError> {
            self.applied.push(op.clone());
            Ok(match op {
                Op::Fork { .. } => Err(Errno::NoMem),
                _ => Ok(()),
            })
        }
        fn observe(&mut self, regions: &[RegionRef]) -> Result<Observation, BackendError> {
            self.observed_procs.push(regions.iter().map(|r| r.proc).collect());
            Ok(Observation::default())
        }
    }

    #[test]
    fn a_process_whose_fork_failed_does_not_exist_and_the_run_goes_on() {
        let scenario = parse_scenario(
            "t.thp",
            "machine ram=2M\np1: A = mmap 4M\np1: touch A write\nchild = fork p1\nchild: touch A write\n\
             expect errno ESRCH\ngrandchild = fork child\ngrandchild: munmap A\nobserve\nchild: exit\np1: touch A\n",
        )
        .unwrap();
        let mut backend = NoFork { applied: Vec::new(), observed_procs: Vec::new() };
        let outcome = run_scenario(&scenario, &mut backend).unwrap();
        let results: Vec<(u32, OpResult)> = outcome.results.clone();
        assert_eq!(
            results,
            [
                (2, Ok(())),
                (2, Ok(())),
                (3, Ok(())),
                (4, Err(Errno::NoMem)),
                (5, Err(Errno::Srch)),
                (7, Err(Errno::Srch)),
                (8, Err(Errno::Srch)),
                (10, Err(Errno::Srch)),
                (11, Ok(())),
            ]
        );
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert_eq!(
            outcome.notes,
            [
                (5, "child does not exist: its fork at line 4 failed with ENOMEM; the operation answers ESRCH".into()),
                (7, "child does not exist: its fork at line 4 failed with ENOMEM; the operation answers ESRCH".into()),
                (
                    8,
                    "grandchild does not exist: its fork at line 7 failed with ESRCH; the operation answers ESRCH"
                        .into()
                ),
                (10, "child does not exist: its fork at line 4 failed with ENOMEM; the operation answers ESRCH".into()),
            ]
        );
        // Only the first fork reached the backend; no observation asked about
        // a process that does not exist.
        assert_eq!(backend.applied.iter().filter(|op| matches!(op, Op::Fork { .. })).count(), 1);
        assert_eq!(backend.applied.len(), 5);
        assert!(backend.observed_procs.iter().flatten().all(|&p| p == ProcId(0)), "{:?}", backend.observed_procs);
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
