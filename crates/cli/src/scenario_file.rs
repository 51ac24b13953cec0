//! Finding, reading and parsing scenario files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use std::io::Read;
use thpsim_mm::Policy;

use thpsim_workload::{decode_scenario, parse_scenario, ParseError, Scenario, MAX_SCENARIO_BYTES};

use crate::CliError;

/// The extension of scenario files.
pub const EXTENSION: &str = "thp";
/// How deep `collect` descends into directories, against symlink loops.
pub const MAX_DIR_DEPTH: usize = 32;

/// A scenario file's text with the label messages name it by.
pub struct ScenarioText {
    /// The path as the user gave it (or found under a directory they gave).
    pub label: String,
    pub text: String,
    /// `--policy` overrides, applied after parsing.
    pub overrides: Vec<Policy>,
}

/// Parses `--policy name=value`.
pub fn parse_policy_arg(text: &str) -> Result<Policy, String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!(
            "expected name=value such as deposit=eager; the policies are {}",
            Policy::NAMES.join(", ")
        ));
    };
    Policy::parse(name.trim(), value.trim()).map_err(|err| err.to_string())
}

impl ScenarioText {
    /// Reads a scenario file, or standard input for `-`, stopping one byte
    /// after `MAX_SCENARIO_BYTES` (metadata cannot bound /dev/zero or a
    /// pipe, which report size 0).
    pub fn read(path: &Path) -> Result<ScenarioText, CliError> {
        let label = path.display().to_string();
        let bytes = if path == Path::new("-") {
            read_bounded(std::io::stdin().lock())
        } else {
            std::fs::File::open(path).and_then(read_bounded)
        }
        .with_context(|| format!("cannot read scenario {label}"))
        .map_err(CliError::bad_input)?;
        let text = decode_scenario(&label, &bytes).map_err(CliError::bad_input)?;
        Ok(ScenarioText { label, text, overrides: Vec::new() })
    }

    /// The same text with `--policy` overrides.
    pub fn with_overrides(mut self, overrides: &[Policy]) -> ScenarioText {
        self.overrides = overrides.to_vec();
        self
    }

    /// Parses the text and applies the overrides.
    pub fn parse(&self) -> Result<Scenario, ParseError> {
        let mut scenario = parse_scenario(&self.label, &self.text)?;
        for &policy in &self.overrides {
            scenario.override_policy(policy);
        }
        Ok(scenario)
    }
}

/// Reads at most `MAX_SCENARIO_BYTES + 1` bytes: one more than a scenario may
/// have, so that `decode_scenario` can tell an oversized input.
fn read_bounded(reader: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(MAX_SCENARIO_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Every `.thp` file named or found under a named directory, recursively;
/// each directory's files sorted by path. Files named directly are taken
/// whatever their extension.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            out.push(path.clone());
            continue;
        }
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(CliError::bad_input)?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(path, 0, &mut found)?;
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    if depth > MAX_DIR_DEPTH {
        return Err(CliError::bad_input(anyhow::anyhow!(
            "{}: directories nest deeper than {MAX_DIR_DEPTH} levels",
            dir.display()
        )));
    }
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))
        .map_err(CliError::bad_input)?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display())).map_err(CliError::bad_input)?;
        let path = entry.path();
        if path.is_dir() {
            walk(&path, depth + 1, out)?;
        } else if path.extension().is_some_and(|e| e == EXTENSION) {
            out.push(path);
        }
    }
    Ok(())
}

/// Each step's source text by line, for reports.
pub fn sources(scenario: &Scenario) -> BTreeMap<u32, String> {
    scenario.steps.iter().map(|s| (s.line, s.source.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_thp_files_recursively_and_sorted() {
        let dir = std::env::temp_dir().join(format!("thpsim-collect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("b/deeper")).unwrap();
        std::fs::create_dir_all(dir.join("a")).unwrap();
        for f in ["b/deeper/z.thp", "b/y.thp", "a/x.thp", "a/notes.txt", "c.thp"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let found = collect(std::slice::from_ref(&dir)).unwrap();
        let rel: Vec<String> = found.iter().map(|p| p.strip_prefix(&dir).unwrap().display().to_string()).collect();
        assert_eq!(rel, ["a/x.thp", "b/deeper/z.thp", "b/y.thp", "c.thp"]);
        let missing = collect(&[dir.join("nope")]).err().unwrap();
        assert_eq!(missing.status, crate::Status::BadInput);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
