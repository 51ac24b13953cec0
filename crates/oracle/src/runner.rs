//! Runs a scenario's steps on one backend and records what happened.
//!
//! The same runner drives the model and the live kernel, so the two
//! `RunOutcome`s it produces line up step for step and `diff` can compare
//! them. A failed expectation is recorded and the run goes on, as a kernel
//! selftest reports every failed check rather than stopping at the first;
//! only a `BackendError` (the host or the executor failed) stops a run.

use serde::Serialize;
use thpsim_workload::{Op, RegionRef};

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
