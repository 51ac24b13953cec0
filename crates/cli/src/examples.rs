//! Scenarios built into the binary, so that a first command works from
//! anywhere: `thpsim run --example`.

use crate::scenario_file::ScenarioText;

/// The README's first example: fork, then the child writes one page of a THP.
pub const FORK_CHILD_WRITE: &str = include_str!("../../../scenarios/examples/fork_child_write.thp");

/// The built-in example as a scenario file, labelled with its path in the
/// repository.
pub fn fork_child_write() -> ScenarioText {
    ScenarioText {
        label: "scenarios/examples/fork_child_write.thp".to_string(),
        text: FORK_CHILD_WRITE.to_string(),
        overrides: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_parses() {
        let scenario = super::fork_child_write().parse().unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(scenario.name, "fork_child_write");
        assert_eq!(scenario.procs, ["p1", "p2"]);
    }
}
