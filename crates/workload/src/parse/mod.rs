//! Parsing of scenario text, one line per statement.
//!
//! `lex` splits a line into tokens with their columns; `words` reads the
//! words the statements share (sizes, names, advices, settings);
//! `process` parses the operations of a process and the ranges they take;
//! `expect` parses expectations. Every error names the line and column of
//! the token it is about. The grammar is in docs/scenario.md.

mod expect;
mod lex;
mod process;
mod setup;
mod words;

use std::collections::BTreeSet;

use crate::plan::{Planner, ProcStatus};
use crate::scenario::{
    Injection, Machine, ParseError, PolicyLine, Scenario, Step, StepKind, MAX_KHUGEPAGED_SCANS, MAX_OBSERVED_REGIONS,
    MAX_STEPS,
};
use crate::{CmpOp, Op, ProcId};

use lex::{found, lex, Cursor, Fail, Kind, Tok};
use words::{aligned_size, check_knob, number, suggest, OPERATIONS, SIZE_HINT, STATEMENTS};

/// The state of a parse in progress.
struct Parser {
    planner: Planner,
    steps: Vec<Step>,
    machine: Option<Machine>,
    /// A statement other than `machine` has been seen.
    started: bool,
    /// An operation step has been emitted (for `expect ok`).
    any_op: bool,
    /// The line of the first operation, after which `policy` and `inject`
    /// are refused.
    first_op_line: Option<u32>,
    policies: Vec<PolicyLine>,
    injections: Vec<Injection>,
    /// Region entries carried by observe and expect steps so far.
    observed: usize,
    line: u32,
    source: String,
}

pub(crate) fn parse(file_label: &str, text: &str) -> Result<Scenario, ParseError> {
    let mut parser = Parser {
        planner: Planner::new(),
        steps: Vec::new(),
        machine: None,
        started: false,
        any_op: false,
        first_op_line: None,
        policies: Vec::new(),
        injections: Vec::new(),
        observed: 0,
        line: 0,
        source: String::new(),
    };
    // A byte-order mark some editors write is not part of the first statement.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (toks, comment) = lex(raw);
        if toks.is_empty() {
            continue;
        }
        parser.line = u32::try_from(index + 1).unwrap_or(u32::MAX);
        parser.source = raw[..comment].trim().to_string();
        let mut cursor = Cursor { toks, pos: 0 };
        parser.statement(&mut cursor).map_err(|fail| ParseError {
            file: file_label.to_string(),
            line: parser.line,
            column: fail.col,
            message: crate::scenario::bound_message(&fail.msg),
            source_line: raw.to_string(),
        })?;
    }
    let name =
        std::path::Path::new(file_label).file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    Ok(Scenario {
        name,
        machine: parser.machine.unwrap_or_default(),
        policies: parser.policies,
        injections: parser.injections,
        procs: parser.planner.proc_names(),
        final_regions: parser.planner.regions(),
        steps: parser.steps,
    })
}

impl Parser {
    fn push(&mut self, kind: StepKind, col: u32) -> Result<(), Fail> {
        if self.steps.len() >= MAX_STEPS {
            return Err(Fail { col, msg: format!("the scenario is too long: it may have at most {MAX_STEPS} steps") });
        }
        if let StepKind::Observe(regions) | StepKind::Expect { regions, .. } = &kind {
            self.observed += regions.len();
            if self.observed > MAX_OBSERVED_REGIONS {
                return Err(Fail {
                    col,
                    msg: format!(
                        "the scenario observes too much: its observe and expect steps would describe more than {MAX_OBSERVED_REGIONS} regions in all"
                    ),
                });
            }
        }
        if matches!(kind, StepKind::Op(_)) {
            self.any_op = true;
            self.first_op_line.get_or_insert(self.line);
        }
        self.steps.push(Step { line: self.line, source: self.source.clone(), kind });
        Ok(())
    }

    fn op(&mut self, op: Op, col: u32) -> Result<(), Fail> {
        self.push(StepKind::Op(op), col)
    }

    fn statement(&mut self, c: &mut Cursor) -> Result<(), Fail> {
        let first = c.word(
            "a statement: machine, policy, inject, set, khugepaged, shrink, observe, expect, unpin, exit, `<process>: <operation>` or `<child> = fork <parent>`",
        )?;
        let is_keyword = STATEMENTS.contains(&first.text);
        let was_started = std::mem::replace(&mut self.started, true);
        match c.peek().map(|t| t.kind) {
            Some(Kind::Colon) => {
                c.next();
                return self.proc_statement(first, c);
            }
            Some(Kind::Cmp(CmpOp::Eq)) if !is_keyword => {
                c.next();
                return self.fork(first, c);
            }
            _ => {}
        }
        match first.text {
            "machine" if was_started => Err(Fail::at(&first, "machine must be the first statement of a scenario")),
            "machine" => self.machine(c),
            "set" => self.set(c, &first),
            "policy" => self.policy(c, &first),
            "inject" => self.inject(c, &first),
            "khugepaged" => {
                let full_scans = match c.next() {
                    None => 1,
                    Some(tok) => {
                        let n = number(&tok, "a number of full scans")?;
                        if !(1..=MAX_KHUGEPAGED_SCANS as u64).contains(&n) {
                            return Err(Fail::at(
                                &tok,
                                format!("the number of full scans must be from 1 to {MAX_KHUGEPAGED_SCANS}"),
                            ));
                        }
                        n as u32
                    }
                };
                c.end()?;
                self.op(Op::Khugepaged { full_scans }, first.col)
            }
            "shrink" => {
                c.end()?;
                self.op(Op::Shrink, first.col)
            }
            "observe" => self.observe(c, &first),
            "expect" => self.expect(c, &first),
            "unpin" => self.unpin(c, None, &first),
            "exit" => {
                let tok = c.word("the process that exits")?;
                let proc = self.live_proc(&tok)?;
                c.end()?;
                self.exit(proc, &first)
            }
            _ => {
                let hint = suggest(first.text, STATEMENTS.iter().copied());
                let op_hint = if OPERATIONS.contains(&first.text) || first.text == "fork" {
                    format!(" ({} is an operation of a process: `p1: {} ...`)", first.text, first.text)
                } else {
                    String::new()
                };
                Err(Fail::at(
                    &first,
                    format!(
                        "expected a statement (machine, policy, inject, set, khugepaged, shrink, observe, expect, unpin, exit, `<process>: ...` or `<child> = fork <parent>`), found {}{hint}{op_hint}",
                        found(Some(&first))
                    ),
                ))
            }
        }
    }

    fn machine(&mut self, c: &mut Cursor) -> Result<(), Fail> {
        let mut machine = Machine::default();
        let mut seen = BTreeSet::new();
        while !c.at_end() {
            let Some((key, CmpOp::Eq)) = c.key_op() else {
                return Err(c.expected("ram=<size> or swap=<size>"));
            };
            let value = c.word(SIZE_HINT)?;
            if !seen.insert(key.text) {
                return Err(Fail::at(&key, format!("{}= is given twice", key.text)));
            }
            match key.text {
                "ram" => machine.ram = aligned_size(value.text, value.col, "RAM size", true)?,
                "swap" => machine.swap = aligned_size(value.text, value.col, "swap size", false)?,
                _ => {
                    return Err(Fail::at(
                        &key,
                        format!("expected ram= or swap=, found \"{}\"{}", key.text, suggest(key.text, ["ram", "swap"])),
                    ))
                }
            }
        }
        self.machine = Some(machine);
        Ok(())
    }

    fn set(&mut self, c: &mut Cursor, first: &Tok) -> Result<(), Fail> {
        let path = c.word("a THP setting such as enabled or khugepaged/max_ptes_none")?;
        c.eq("= and a value")?;
        let value = c.word("a value")?;
        c.end()?;
        let setting = check_knob(&path, &value)?;
        self.op(Op::Set { setting }, first.col)
    }

    /// A process that exists and has not exited.
    fn live_proc(&self, tok: &Tok) -> Result<ProcId, Fail> {
        match self.planner.proc_id(tok.text) {
            Some(proc) => match self.planner.proc_status(proc) {
                ProcStatus::Live => Ok(proc),
                ProcStatus::Exited { line } => {
                    Err(Fail::at(tok, format!("{} exited at line {line} and cannot be used any more", tok.text)))
                }
            },
            None => {
                let names = self.planner.proc_names();
                let hint = suggest(tok.text, names.iter().map(String::as_str));
                Err(Fail::at(tok, format!("there is no process named \"{}\"{hint}", tok.text)))
            }
        }
    }

    /// `observe`, `observe p1`, `observe p1 A B`.
    fn observe(&mut self, c: &mut Cursor, first: &Tok) -> Result<(), Fail> {
        let regions = match c.next() {
            None => self.planner.regions(),
            Some(proc_tok) => {
                if !proc_tok.is_word() {
                    return Err(Fail::at(&proc_tok, format!("expected a process, found {}", found(Some(&proc_tok)))));
                }
                let proc = self.live_proc(&proc_tok)?;
                let all = self.planner.proc_regions(proc);
                if c.at_end() {
                    all
                } else {
                    let mut chosen = Vec::new();
                    while !c.at_end() {
                        let tok = c.word("a region name")?;
                        if tok.text.contains('+') {
                            return Err(Fail::at(&tok, "observe takes whole regions, without an offset"));
                        }
                        let (region, _) = self.region_at(proc, &tok, false)?;
                        if let Some(r) = all.iter().find(|r| r.name == region.name) {
                            if chosen.iter().any(|seen: &crate::RegionRef| seen.name == r.name) {
                                return Err(Fail::at(&tok, format!("{} is named twice", tok.text)));
                            }
                            chosen.push(r.clone());
                        }
                    }
                    chosen
                }
            }
        };
        self.push(StepKind::Observe(regions), first.col)
    }
}
