//! A parsed scenario: the machine it needs and the steps it takes, each
//! with the line that stated it. docs/scenario.md is the language reference.

use std::fmt;

use serde::{Deserialize, Serialize};

use thpsim_mm::fault_inject::{FailAttr, FailPoint};
use thpsim_mm::Policy;

use crate::{Expectation, Op, RegionRef};

/// The most steps one scenario may expand to (operations, observations and
/// expectations; a statement that creates a process counts twice).
pub const MAX_STEPS: usize = 100_000;
/// The most region entries all `observe` and `expect` steps together may
/// carry, which bounds the work of observing a scenario.
pub const MAX_OBSERVED_REGIONS: usize = 1_000_000;
/// The largest scenario file, in bytes (4 MiB): readers stop after one byte
/// more and refuse the file, so `/dev/zero` or a runaway pipe cannot grow
/// without bound. The largest scenario in the corpus is a few kB.
pub const MAX_SCENARIO_BYTES: u64 = 4 << 20;
/// How much of an input word an error message quotes, in characters.
pub const MAX_QUOTED_CHARS: usize = 40;
/// How long an error message may grow, in characters, before it is cut.
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// How much of the offending line an error shows under its message.
pub const MAX_SHOWN_LINE_CHARS: usize = 160;
/// The most full scans one `khugepaged` statement may ask for.
pub const MAX_KHUGEPAGED_SCANS: u32 = 1000;

/// A scenario, ready for a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    /// The file stem of the scenario's file (`fault_pmd` for
    /// `scenarios/examples/fault_pmd.thp`).
    pub name: String,
    pub machine: Machine,
    /// The `policy` statements, in order; each names a different policy.
    /// Policies not named keep Linux 6.18's value.
    #[serde(default)]
    pub policies: Vec<PolicyLine>,
    /// The `inject` statements, in order; each arms a different point.
    #[serde(default)]
    pub injections: Vec<Injection>,
    /// Process names by `ProcId` index, in order of first appearance.
    pub procs: Vec<String>,
    pub steps: Vec<Step>,
    /// Every live process's regions after the last step, as `Observe`
    /// carries them: for a final observation of the whole scenario.
    pub final_regions: Vec<RegionRef>,
}

/// The `machine` statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Bytes of RAM.
    pub ram: u64,
    /// Bytes of swap.
    pub swap: u64,
}

impl Default for Machine {
    fn default() -> Self {
        Machine { ram: 16 << 30, swap: 0 }
    }
}

/// A `policy <name> = <value>` statement, or a `--policy` override.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyLine {
    /// 1-based line; 0 for a policy given on the command line.
    pub line: u32,
    pub policy: Policy,
}

/// An `inject <point> ...` statement: fail allocations at a named point,
/// as /sys/kernel/debug/fail_page_alloc would (model only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injection {
    /// 1-based line.
    pub line: u32,
    /// The point's name, `FailPoint::name()`.
    #[serde(with = "fail_point_name")]
    pub point: FailPoint,
    /// Percent chance (0..=100).
    pub probability: u32,
    /// Only every `interval`-th allocation may fail.
    pub interval: u64,
    /// How many failures in all; `None` is no limit.
    pub times: Option<u64>,
    pub seed: u64,
}

impl Injection {
    pub fn attr(&self) -> FailAttr {
        FailAttr { probability: self.probability, interval: self.interval, times: self.times, seed: self.seed }
    }
}

/// `FailPoint` by its scenario name.
mod fail_point_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use thpsim_mm::fault_inject::FailPoint;

    pub fn serialize<S: Serializer>(point: &FailPoint, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(point.name())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FailPoint, D::Error> {
        let name = String::deserialize(d)?;
        FailPoint::from_name(&name).ok_or_else(|| serde::de::Error::custom(format!("no failure point {name:?}")))
    }
}

impl Scenario {
    /// Sets a policy as `--policy` does: replaces the scenario's statement
    /// for the same policy, or adds one (with line 0).
    pub fn override_policy(&mut self, policy: Policy) {
        self.policies.retain(|p| p.policy.name() != policy.name());
        self.policies.push(PolicyLine { line: 0, policy });
    }

    /// Every policy the scenario selects, in order.
    pub fn policy_values(&self) -> impl Iterator<Item = Policy> + '_ {
        self.policies.iter().map(|p| p.policy)
    }
}

/// One step, with the scenario line it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// 1-based line number.
    pub line: u32,
    /// The statement as written: the line without its comment, trimmed.
    pub source: String,
    pub kind: StepKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepKind {
    Op(Op),
    /// Observe these regions: every region of every live process for a bare
    /// `observe`, in `ProcId` then creation order; a process's regions for
    /// `observe p1`; the named ones for `observe p1 A B`.
    Observe(Vec<RegionRef>),
    /// Check an expectation against an observation of `regions`, which are
    /// every region of every live process (in `ProcId` then creation order).
    Expect {
        expectation: Expectation,
        regions: Vec<RegionRef>,
    },
}

/// A scenario the parser does not understand, pointing at where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The file label given to `parse_scenario`.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// What was expected and what was found.
    pub message: String,
    /// The whole line, as in the file.
    pub source_line: String,
}

impl fmt::Display for ParseError {
    /// ```text
    /// scenarios/x.thp:3:14: error: expected a size such as 4K, 2M, 1G or 64kB, found "2MB"
    ///   | p1: A = mmap 2MB
    ///   |              ^
    /// ```
    /// Control characters in the line are escaped (tabs are kept, so the
    /// caret lines up under a tab-indented line), and a long line is shown
    /// as a window of `MAX_SHOWN_LINE_CHARS` around the column.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: error: {}", self.file, self.line, self.column, self.message)?;
        if self.source_line.is_empty() {
            // Errors about the input as a whole (its size) point at no word.
            return Ok(());
        }
        writeln!(f)?;
        let chars: Vec<char> = self.source_line.chars().collect();
        let at = (self.column as usize).saturating_sub(1).min(chars.len());
        let start = at.saturating_sub(MAX_SHOWN_LINE_CHARS / 2);
        let end = (start + MAX_SHOWN_LINE_CHARS).min(chars.len());
        let (mut shown, mut pad) = (String::new(), String::new());
        if start > 0 {
            shown.push('…');
            pad.push(' ');
        }
        for (i, &c) in chars[start..end].iter().enumerate() {
            let piece = if c == '\t' { "\t".to_string() } else { escape_controls(&c.to_string()) };
            if start + i < at {
                pad.extend(piece.chars().map(|p| if p == '\t' { '\t' } else { ' ' }));
            }
            shown.push_str(&piece);
        }
        if end < chars.len() {
            shown.push('…');
        }
        writeln!(f, "  | {shown}")?;
        write!(f, "  | {pad}^")
    }
}

/// Escapes control characters (as `\u{1b}`, `\0`, `\n` ...) and leaves
/// everything else as it is, quotes included.
pub fn escape_controls(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

/// A word of the input as an error message quotes it: in double quotes,
/// control characters and quotes escaped, cut to `MAX_QUOTED_CHARS`
/// characters with `…`.
pub fn quote_word(text: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in text.chars().enumerate() {
        if i == MAX_QUOTED_CHARS {
            out.push('…');
            break;
        }
        if c == '\'' {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out.push('"');
    out
}

/// A message made safe to print: control characters escaped, cut to
/// `MAX_MESSAGE_CHARS` characters.
pub(crate) fn bound_message(message: &str) -> String {
    let escaped = escape_controls(message);
    match escaped.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

/// Scenario text from bytes: refuses more than `MAX_SCENARIO_BYTES`, and
/// bytes that are not UTF-8 with `file:line:column: invalid UTF-8`.
pub fn decode_scenario(file_label: &str, bytes: &[u8]) -> Result<String, ParseError> {
    if bytes.len() as u64 > MAX_SCENARIO_BYTES {
        let line = bytes.iter().filter(|&&b| b == b'\n').count();
        return Err(ParseError {
            file: file_label.to_string(),
            line: u32::try_from(line + 1).unwrap_or(u32::MAX),
            column: 1,
            message: format!(
                "the scenario is larger than the limit of {} MiB (MAX_SCENARIO_BYTES); reading stopped there",
                MAX_SCENARIO_BYTES >> 20
            ),
            source_line: String::new(),
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_string()),
        Err(err) => {
            let valid = &bytes[..err.valid_up_to()];
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            // The valid prefix is UTF-8 by construction.
            let before = std::str::from_utf8(&valid[line_start..]).unwrap_or("");
            let line_end = bytes[line_start..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| line_start + i);
            Err(ParseError {
                file: file_label.to_string(),
                line: u32::try_from(line).unwrap_or(u32::MAX),
                column: u32::try_from(before.chars().count() + 1).unwrap_or(u32::MAX),
                message: "invalid UTF-8".to_string(),
                source_line: String::from_utf8_lossy(&bytes[line_start..line_end]).into_owned(),
            })
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses a scenario. `file_label` names the file in errors and gives the
/// scenario its name (the file stem).
pub fn parse_scenario(file_label: &str, text: &str) -> Result<Scenario, ParseError> {
    crate::parse::parse(file_label, text)
}
