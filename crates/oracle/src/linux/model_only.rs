//! What the live kernel cannot run: a `policy` other than Linux 6.18's
//! behaviour (a proposal exists only in the model), and `inject` (the live
//! backend does not drive /sys/kernel/debug/fail_page_alloc, which would
//! fail every process's allocations, not only the scenario's).
//!
//! Checked before a Linux backend starts, so such a scenario is refused as
//! bad input for this backend rather than run with a different meaning.

use thiserror::Error;
use thpsim_workload::Scenario;

/// Why the Linux backend refuses a scenario.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ModelOnly {
    #[error("{at}: policy {name} = {value} is a model-only proposal; the live kernel (6.18) has {name} = {baseline}")]
    Policy { at: String, name: &'static str, value: &'static str, baseline: &'static str },
    #[error("{at}: inject {point} is model-only: the live backend does not inject allocation failures")]
    Inject { at: String, point: &'static str },
    #[error("machine swap={swap}: the live backend runs without swap (and the model ignores swap), write swap=0 or leave it out")]
    Swap { swap: String },
}

/// Where a setup statement came from: `line 3`, or `--policy` for line 0.
fn at(line: u32) -> String {
    if line == 0 {
        "--policy".to_string()
    } else {
        format!("line {line}")
    }
}

/// A size as a scenario writes it: `64M`.
fn size(bytes: u64) -> String {
    for (unit, shift) in [("G", 30), ("M", 20), ("K", 10)] {
        if bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Refuses a policy whose value is not the kernel's: generic over the
/// registry, so it holds for values later issues add.
pub fn check_policy(
    line: u32,
    name: &'static str,
    value: &'static str,
    baseline: &'static str,
) -> Result<(), ModelOnly> {
    if value == baseline {
        Ok(())
    } else {
        Err(ModelOnly::Policy { at: at(line), name, value, baseline })
    }
}

/// Refuses a scenario that selects a proposal or injects failures.
pub fn refuse_model_only(scenario: &Scenario) -> Result<(), ModelOnly> {
    for p in &scenario.policies {
        check_policy(p.line, p.policy.name(), p.policy.value(), p.policy.baseline().value())?;
    }
    if scenario.machine.swap != 0 {
        return Err(ModelOnly::Swap { swap: size(scenario.machine.swap) });
    }
    match scenario.injections.first() {
        Some(i) => Err(ModelOnly::Inject { at: at(i.line), point: i.point.name() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thpsim_workload::parse_scenario;

    #[test]
    fn baseline_policies_run_on_the_kernel() {
        let s = parse_scenario("t.thp", "policy deposit = eager\npolicy pud_thp = off\np1: A = mmap 2M\n").unwrap();
        assert_eq!(refuse_model_only(&s), Ok(()));
    }

    #[test]
    fn a_proposal_is_refused_with_its_line_and_the_kernels_value() {
        // No non-baseline value exists yet; the check is generic over the
        // registry's names and values.
        assert_eq!(
            check_policy(2, "deposit", "lazy", "eager").unwrap_err().to_string(),
            "line 2: policy deposit = lazy is a model-only proposal; the live kernel (6.18) has deposit = eager"
        );
        assert_eq!(
            check_policy(0, "pmd_cow", "on", "off").unwrap_err().to_string(),
            "--policy: policy pmd_cow = on is a model-only proposal; the live kernel (6.18) has pmd_cow = off"
        );
        assert_eq!(check_policy(2, "deposit", "eager", "eager"), Ok(()));
    }

    #[test]
    fn swap_is_refused_and_swap_0_runs() {
        let s = parse_scenario("t.thp", "machine ram=1G swap=64M\np1: A = mmap 2M\n").unwrap();
        assert_eq!(
            refuse_model_only(&s).unwrap_err().to_string(),
            "machine swap=64M: the live backend runs without swap (and the model ignores swap), write swap=0 or leave it out"
        );
        let s = parse_scenario("t.thp", "machine ram=1G swap=0\np1: A = mmap 2M\n").unwrap();
        assert_eq!(refuse_model_only(&s), Ok(()));
    }

    #[test]
    fn an_injection_is_refused() {
        let s = parse_scenario("t.thp", "machine ram=1G\ninject folio nth=2\np1: A = mmap 2M\n").unwrap();
        assert_eq!(
            refuse_model_only(&s).unwrap_err().to_string(),
            "line 2: inject folio is model-only: the live backend does not inject allocation failures"
        );
    }
}
