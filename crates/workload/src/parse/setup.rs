//! The statements that set up the machine before the first operation:
//! `policy <name> = <value>` (a proposal switch of the model's `Config`)
//! and `inject <point> [nth=N] [interval=N] [probability=P] [times=N] [seed=S]`
//! (a named failure-injection point, as mm/fail_page_alloc.c).

use std::collections::BTreeSet;

use thpsim_mm::fault_inject::FailPoint;
use thpsim_mm::{config::PolicyError, Policy};

use crate::scenario::{Injection, PolicyLine};
use crate::CmpOp;

use super::lex::{found, Cursor, Fail, Tok};
use super::words::{number, suggest};
use super::Parser;

impl Parser {
    /// Fails unless no operation came before: `what` changes the machine
    /// the operations run on.
    fn before_ops(&self, first: &Tok) -> Result<(), Fail> {
        match self.first_op_line {
            None => Ok(()),
            Some(line) => Err(Fail::at(
                first,
                format!(
                    "{} must come before the first operation (line {line}): it sets up the machine the operations run on",
                    first.text
                ),
            )),
        }
    }

    /// `policy <name> = <value>`.
    pub(super) fn policy(&mut self, c: &mut Cursor, first: &Tok) -> Result<(), Fail> {
        self.before_ops(first)?;
        let name = c.word(&format!("a policy name ({})", Policy::NAMES.join(", ")))?;
        c.eq("= and a value")?;
        let value = c.word("a value")?;
        c.end()?;
        let policy = Policy::parse(name.text, value.text).map_err(|err| match err {
            PolicyError::UnknownName { .. } => Fail::at(
                &name,
                format!(
                    "expected a policy ({}), found {}{}",
                    Policy::NAMES.join(", "),
                    found(Some(&name)),
                    suggest(name.text, Policy::NAMES.iter().copied())
                ),
            ),
            PolicyError::BadValue { name: known, values, .. } => Fail::at(
                &value,
                format!(
                    "policy {known} takes {}, found {}{}",
                    values.join(", "),
                    found(Some(&value)),
                    suggest(value.text, values.iter().copied())
                ),
            ),
        })?;
        if let Some(earlier) = self.policies.iter().find(|p| p.policy.name() == policy.name()) {
            return Err(Fail::at(&name, format!("policy {} is already set at line {}", policy.name(), earlier.line)));
        }
        self.policies.push(PolicyLine { line: self.line, policy });
        Ok(())
    }

    /// `inject <point> [nth=N] [interval=N] [probability=P] [times=N] [seed=S]`.
    pub(super) fn inject(&mut self, c: &mut Cursor, first: &Tok) -> Result<(), Fail> {
        self.before_ops(first)?;
        let names: Vec<&str> = FailPoint::ALL.iter().map(|p| p.name()).collect();
        let point_tok = c.word(&format!("a failure point ({})", names.join(", ")))?;
        let point = FailPoint::from_name(point_tok.text).ok_or_else(|| {
            Fail::at(
                &point_tok,
                format!(
                    "expected a failure point ({}), found {}{}",
                    names.join(", "),
                    found(Some(&point_tok)),
                    suggest(point_tok.text, names.iter().copied())
                ),
            )
        })?;
        if let Some(earlier) = self.injections.iter().find(|i| i.point == point) {
            return Err(Fail::at(&point_tok, format!("{} is already injected at line {}", point.name(), earlier.line)));
        }
        const KEYS: [&str; 5] = ["nth", "interval", "probability", "times", "seed"];
        let mut seen = BTreeSet::new();
        let mut injection = Injection { line: self.line, point, probability: 100, interval: 1, times: None, seed: 0 };
        while !c.at_end() {
            let Some((key, CmpOp::Eq)) = c.key_op() else {
                return Err(c.expected("nth=, interval=, probability=, times= or seed="));
            };
            if !KEYS.contains(&key.text) {
                return Err(Fail::at(
                    &key,
                    format!(
                        "expected nth=, interval=, probability=, times= or seed=, found {}{}",
                        found(Some(&key)),
                        suggest(key.text, KEYS)
                    ),
                ));
            }
            if !seen.insert(key.text) {
                return Err(Fail::at(&key, format!("{}= is given twice", key.text)));
            }
            let value = c.word("a number")?;
            let n = number(&value, "a number")?;
            match key.text {
                "nth" | "interval" if n == 0 => {
                    return Err(Fail::at(&value, format!("{}= must be at least 1", key.text)));
                }
                "nth" => {
                    injection.interval = n;
                    injection.times = Some(1);
                }
                "interval" => injection.interval = n,
                "probability" => {
                    injection.probability = u32::try_from(n).ok().filter(|p| *p <= 100).ok_or_else(|| {
                        Fail::at(
                            &value,
                            format!("probability= is a percentage from 0 to 100, found {}", found(Some(&value))),
                        )
                    })?;
                }
                "times" => injection.times = Some(n),
                _ => injection.seed = n,
            }
            if seen.contains("nth") && (seen.contains("interval") || seen.contains("times")) {
                return Err(Fail::at(
                    &key,
                    "nth=N fails the N-th allocation only (interval=N times=1); give nth= or interval=/times=, not both",
                ));
            }
        }
        self.injections.push(injection);
        Ok(())
    }
}
