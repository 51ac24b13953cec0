//! The operations of a process (`p1: ...`), fork and exit, and the region
//! ranges they take.

use crate::expect::fmt_size;
use crate::plan::{Placement, ProcStatus, Region, DEFAULT_ALIGN, MAX_SIZE, PAGE_SIZE};
use crate::{pattern_tag as pattern_tag_of, Access, CmpOp, Fill, Op, ProcId, Prot, ThpDisable, TouchPattern};

use super::lex::{found, Cursor, Fail, Kind, Tok};
use super::words::{
    aligned_size, check_name, is_identifier, number, or_list, parse_advice, parse_prot, size, suggest, EXPECT_WORDS,
    OPERATIONS, STATEMENTS,
};
use super::Parser;

/// A resolved range of a region: `A+off len`.
pub(super) struct RangeArg {
    pub(super) region: Region,
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) explicit_len: bool,
}

impl RangeArg {
    pub(super) fn addr(&self) -> u64 {
        self.region.addr + self.offset
    }
}

impl Parser {
    /// `p1: ...`: the process, created if this is its first appearance.
    pub(super) fn proc_statement(&mut self, name: Tok, c: &mut Cursor) -> Result<(), Fail> {
        check_name(&name, "a process name", &[STATEMENTS, EXPECT_WORDS])?;
        let verb = c.word("an operation such as mmap, touch or madvise")?;
        let proc = match self.planner.proc_id(name.text) {
            Some(_) => self.live_proc(&name)?,
            None if verb.text == "exit" || verb.text == "unpin" => {
                return Err(Fail::at(&name, format!("there is no process named \"{}\"", name.text)));
            }
            None => {
                let proc = self.planner.spawn(name.text).map_err(|msg| Fail::at(&name, msg))?;
                self.op(Op::Spawn { proc }, name.col)?;
                proc
            }
        };
        if c.peek().is_some_and(|t| t.kind == Kind::Cmp(CmpOp::Eq)) {
            c.next();
            let op = c.word("mmap or mremap")?;
            return match op.text {
                "mmap" => self.mmap(proc, &verb, c),
                "mremap" => self.mremap(proc, &verb, c),
                _ => Err(Fail::at(
                    &op,
                    format!(
                        "expected mmap or mremap, found {}{}",
                        found(Some(&op)),
                        suggest(op.text, ["mmap", "mremap"])
                    ),
                )),
            };
        }
        match verb.text {
            "munmap" => {
                let range = self.range(proc, c)?;
                c.end()?;
                self.planner.munmap(proc, range.addr(), range.len);
                self.op(Op::Munmap { proc, addr: range.addr(), len: range.len }, verb.col)
            }
            "mlock" | "munlock" => {
                let range = self.range(proc, c)?;
                c.end()?;
                let (addr, len) = (range.addr(), range.len);
                let op =
                    if verb.text == "mlock" { Op::Mlock { proc, addr, len } } else { Op::Munlock { proc, addr, len } };
                self.op(op, verb.col)
            }
            "mprotect" => {
                let range = self.range(proc, c)?;
                let prot = parse_prot(&c.word("a protection: none, r, rw or rwx")?)?;
                c.end()?;
                self.op(Op::Mprotect { proc, addr: range.addr(), len: range.len, prot }, verb.col)
            }
            "madvise" => {
                let range = self.range(proc, c)?;
                let advice = parse_advice(&c.word("an advice such as hugepage, dontneed or collapse")?)?;
                c.end()?;
                self.op(Op::Madvise { proc, addr: range.addr(), len: range.len, advice }, verb.col)
            }
            "touch" => self.touch(proc, c, &verb),
            "prctl" => {
                let what = c.word("thp_disable")?;
                if what.text != "thp_disable" {
                    return Err(Fail::at(&what, format!("expected thp_disable, found {}", found(Some(&what)))));
                }
                let mode = c.word("all, except_advised or off")?;
                let disable = ThpDisable::from_name(mode.text).ok_or_else(|| {
                    Fail::at(
                        &mode,
                        format!(
                            "expected {}, found {}{}",
                            or_list(ThpDisable::NAMES),
                            found(Some(&mode)),
                            suggest(mode.text, ThpDisable::NAMES.iter().copied())
                        ),
                    )
                })?;
                c.end()?;
                self.op(Op::Prctl { proc, disable }, verb.col)
            }
            "pin" => {
                let pin_name = c.word("the pin's name")?;
                check_name(&pin_name, "a pin name", &[])?;
                c.eq("= and the range to pin")?;
                let range = self.range(proc, c)?;
                let longterm = match c.next() {
                    None => false,
                    Some(tok) if tok.text == "longterm" => true,
                    Some(tok) => {
                        return Err(Fail::at(
                            &tok,
                            format!("expected longterm or end of line, found {}", found(Some(&tok))),
                        ))
                    }
                };
                c.end()?;
                let pin = self.planner.pin(proc, pin_name.text).map_err(|msg| Fail::at(&pin_name, msg))?;
                self.op(Op::Pin { proc, pin, addr: range.addr(), len: range.len, longterm }, verb.col)
            }
            "unpin" => self.unpin(c, Some(proc), &verb),
            "exit" => {
                c.end()?;
                self.exit(proc, &verb)
            }
            "mmap" | "mremap" => Err(Fail::at(
                &verb,
                format!("{0} makes a new region and needs its name: `{1}: A = {0} ...`", verb.text, name.text),
            )),
            "fork" => Err(Fail::at(&verb, format!("fork is written `<child> = fork {}`", name.text))),
            _ => Err(Fail::at(
                &verb,
                format!(
                    "expected an operation ({}), found {}{}",
                    OPERATIONS.join(", "),
                    found(Some(&verb)),
                    suggest(verb.text, OPERATIONS.iter().copied())
                ),
            )),
        }
    }

    pub(super) fn exit(&mut self, proc: ProcId, at: &Tok) -> Result<(), Fail> {
        self.planner.exit(proc, self.line);
        self.op(Op::Exit { proc }, at.col)
    }

    pub(super) fn unpin(&mut self, c: &mut Cursor, proc: Option<ProcId>, at: &Tok) -> Result<(), Fail> {
        let name = c.word("the pin's name")?;
        c.end()?;
        let pin = self.planner.unpin(name.text, proc, self.line).map_err(|msg| Fail::at(&name, msg))?;
        self.op(Op::Unpin { pin }, at.col)
    }

    /// `p2 = fork p1`.
    pub(super) fn fork(&mut self, child: Tok, c: &mut Cursor) -> Result<(), Fail> {
        let verb = c.word("fork")?;
        if verb.text != "fork" {
            let hint = if matches!(verb.text, "mmap" | "mremap") {
                format!(" (regions belong to a process: `p1: {} = {} ...`)", child.text, verb.text)
            } else {
                String::new()
            };
            return Err(Fail::at(&verb, format!("expected fork, found {}{hint}", found(Some(&verb)))));
        }
        let parent_tok = c.word("the parent process")?;
        c.end()?;
        check_name(&child, "a process name", &[STATEMENTS, EXPECT_WORDS])?;
        if let Some(existing) = self.planner.proc_id(child.text) {
            let msg = match self.planner.proc_status(existing) {
                ProcStatus::Live => format!("process {} already exists", child.text),
                ProcStatus::Exited { line } => {
                    format!("{} exited at line {line}; a new process needs a new name", child.text)
                }
            };
            return Err(Fail::at(&child, msg));
        }
        let parent = self.live_proc(&parent_tok)?;
        let child_id = self.planner.fork(parent, child.text).map_err(|msg| Fail::at(&child, msg))?;
        self.op(Op::Fork { parent, child: child_id }, child.col)
    }

    /// Resolves `A` or `A+off` to a live region of `proc` and an offset.
    /// With `allow_end`, the offset may equal the region's length.
    pub(super) fn region_at(&self, proc: ProcId, tok: &Tok, allow_end: bool) -> Result<(Region, u64), Fail> {
        let (name, offset_text) = match tok.text.split_once('+') {
            Some((name, off)) => (name, Some(off)),
            None => (tok.text, None),
        };
        if !is_identifier(name) {
            return Err(Fail::at(tok, format!("expected a region such as A or A+4K, found {}", found(Some(tok)))));
        }
        let Some(region) = self.planner.region(proc, name) else {
            let names = self.planner.region_names(proc);
            let proc_name = self.planner.proc_name(proc);
            let known = if names.is_empty() {
                format!("{proc_name} has no regions")
            } else {
                format!("{proc_name} has {}", names.join(", "))
            };
            return Err(Fail::at(
                tok,
                format!("{proc_name} has no region named \"{name}\" ({known}){}", suggest(name, names.iter().copied())),
            ));
        };
        let region = region.clone();
        let Some(offset_text) = offset_text else {
            return Ok((region, 0));
        };
        let col = tok.col_at(name.chars().count() + 1);
        let offset = aligned_size(offset_text, col, "offset", false)?;
        let inside = if allow_end { offset <= region.len } else { offset < region.len };
        if !inside {
            return Err(Fail {
                col,
                msg: format!("the offset {offset_text} is outside {name}, which is {} long", fmt_size(region.len)),
            });
        }
        Ok((region, offset))
    }

    /// `A`, `A+off`, `A+off len` or `A len`: without a length, the range runs
    /// to the region's end.
    pub(super) fn range(&self, proc: ProcId, c: &mut Cursor) -> Result<RangeArg, Fail> {
        let tok = c.word("a region such as A or A+4K")?;
        let (region, offset) = self.region_at(proc, &tok, false)?;
        if let Some(next) = c.peek().filter(|t| t.is_word() && t.text.starts_with('+')) {
            let offset = match (next.text, c.peek_at(1)) {
                ("+", Some(after)) if after.is_word() => format!("+{}", after.text),
                _ => next.text.to_string(),
            };
            return Err(Fail::at(&next, format!("write the offset without spaces: {}{offset}", tok.text)));
        }
        let rest = region.len - offset;
        match c.peek() {
            Some(len_tok) if len_tok.starts_with_digit() => {
                c.next();
                let len = aligned_size(len_tok.text, len_tok.col, "length", true)?;
                if len > rest {
                    return Err(Fail::at(
                        &len_tok,
                        format!(
                            "{} {} runs past the end of {}, which is {} long",
                            tok.text,
                            len_tok.text,
                            region.name,
                            fmt_size(region.len)
                        ),
                    ));
                }
                Ok(RangeArg { region, offset, len, explicit_len: true })
            }
            _ => Ok(RangeArg { region, offset, len: rest, explicit_len: false }),
        }
    }

    /// `align=`, `offset=` and `at=` of mmap and mremap; `prot=` for mmap;
    /// and the bare word `flag` (`fixed` for mmap, `inplace` for mremap),
    /// returned if given.
    pub(super) fn placement_options<'t>(
        &self,
        proc: ProcId,
        c: &mut Cursor<'t>,
        with_prot: bool,
        flag: &str,
    ) -> Result<(Option<Placement>, Prot, Option<Tok<'t>>), Fail> {
        let (mut align, mut offset, mut at, mut prot) = (None, None, None, None);
        let mut offset_tok = None;
        let mut flag_tok: Option<Tok> = None;
        while !c.at_end() {
            if let Some(tok) = c.peek().filter(|t| t.is_word() && t.text == flag) {
                c.next();
                if flag_tok.replace(tok).is_some() {
                    return Err(Fail::at(&tok, format!("{flag} is given twice")));
                }
                continue;
            }
            let keys = if with_prot {
                format!("prot=, align=, offset=, at= or {flag}")
            } else {
                format!("align=, offset=, at= or {flag}")
            };
            let Some((key, CmpOp::Eq)) = c.key_op() else {
                return Err(c.expected(&keys));
            };
            let value = c.word("a value")?;
            let dup = match key.text {
                "prot" if with_prot => prot.replace(parse_prot(&value)?).is_some(),
                "align" => {
                    let bytes = size(&value)?;
                    if !bytes.is_power_of_two() || !(PAGE_SIZE..=MAX_SIZE).contains(&bytes) {
                        return Err(Fail::at(
                            &value,
                            format!("align= must be a power of two from 4K to 1T, found {}", found(Some(&value))),
                        ));
                    }
                    align.replace((bytes, value)).is_some()
                }
                "offset" => {
                    offset_tok = Some(value);
                    offset.replace(aligned_size(value.text, value.col, "offset", false)?).is_some()
                }
                "at" => at.replace(self.region_at(proc, &value, true)?).is_some(),
                _ => {
                    let mut names = vec!["align", "offset", "at"];
                    if with_prot {
                        names.push("prot");
                    }
                    return Err(Fail::at(
                        &key,
                        format!("expected {keys}, found \"{}\"{}", key.text, suggest(key.text, names)),
                    ));
                }
            };
            if dup {
                return Err(Fail::at(&key, format!("{}= is given twice", key.text)));
            }
        }
        let prot = prot.unwrap_or(Prot::READ_WRITE);
        if let Some((region, off)) = at {
            if let Some(tok) = align.map(|a| a.1).or(offset_tok) {
                return Err(Fail::at(
                    &tok,
                    "at= places the region exactly; it cannot be combined with align= or offset=",
                ));
            }
            return Ok((Some(Placement::At(region.addr + off)), prot, flag_tok));
        }
        if align.is_none() && offset.is_none() {
            return Ok((None, prot, flag_tok));
        }
        let align_bytes = align.map_or(DEFAULT_ALIGN, |a| a.0);
        let offset = offset.unwrap_or(0);
        if offset >= align_bytes {
            let tok = offset_tok.or(align.map(|a| a.1));
            let col = tok.map_or(c.col(), |t| t.col);
            return Err(Fail { col, msg: format!("offset= must be below align= ({})", fmt_size(align_bytes)) });
        }
        Ok((Some(Placement::Fresh { align: align_bytes, offset }), prot, flag_tok))
    }

    pub(super) fn check_new_region(&self, proc: ProcId, name: &Tok) -> Result<(), Fail> {
        check_name(name, "a region name", &[&["VmPTE"]])?;
        if self.planner.region(proc, name.text).is_some() {
            return Err(Fail::at(
                name,
                format!("{} already has a region named {}", self.planner.proc_name(proc), name.text),
            ));
        }
        Ok(())
    }

    /// `A = mmap <len> [prot=] [align=] [offset=] [at=]`.
    pub(super) fn mmap(&mut self, proc: ProcId, name: &Tok, c: &mut Cursor) -> Result<(), Fail> {
        check_name(name, "a region name", &[&["VmPTE"]])?;
        let len_tok = c.word("the length to map, such as 2M")?;
        let len = aligned_size(len_tok.text, len_tok.col, "length", true)?;
        let (placement, prot, fixed) = self.placement_options(proc, c, true, "fixed")?;
        if let Some(fixed) = fixed {
            let Some(Placement::At(addr)) = placement else {
                return Err(Fail::at(&fixed, "fixed maps over what is there and needs the address: at=B+off"));
            };
            let addr = self.planner.mmap_fixed(proc, name.text, len, addr).map_err(|msg| Fail::at(name, msg))?;
            return self.op(Op::MmapFixed { proc, addr, len, prot }, name.col);
        }
        self.check_new_region(proc, name)?;
        let addr = self
            .planner
            .mmap(proc, name.text, len, placement.unwrap_or(Placement::DEFAULT))
            .map_err(|msg| Fail::at(name, msg))?;
        self.op(Op::Mmap { proc, addr, len, prot }, name.col)
    }

    /// `C = mremap A[+off] [<old len>] <new len> [align=] [offset=] [at=]`.
    pub(super) fn mremap(&mut self, proc: ProcId, name: &Tok, c: &mut Cursor) -> Result<(), Fail> {
        let src = c.word("the region to remap, such as A or A+2M")?;
        let (region, offset) = self.region_at(proc, &src, false)?;
        let rest = region.len - offset;
        let mut lens = Vec::new();
        while let Some(tok) = c.peek().filter(|t| t.starts_with_digit() && lens.len() < 2) {
            c.next();
            lens.push(tok);
        }
        let (old_len, new_tok) = match lens[..] {
            // One length is the new one; the old range runs to the region's end.
            [new] => (rest, new),
            [old, new] => {
                let old_len = aligned_size(old.text, old.col, "length", true)?;
                if old_len > rest {
                    return Err(Fail::at(
                        &old,
                        format!(
                            "{} {} runs past the end of {}, which is {} long",
                            src.text,
                            old.text,
                            region.name,
                            fmt_size(region.len)
                        ),
                    ));
                }
                (old_len, new)
            }
            _ => return Err(c.expected("the new length, such as 4M")),
        };
        let new_len = aligned_size(new_tok.text, new_tok.col, "length", true)?;
        let (placement, _, inplace) = self.placement_options(proc, c, false, "inplace")?;
        if let (Some(tok), Some(_)) = (&inplace, placement) {
            return Err(Fail::at(
                tok,
                "inplace keeps the mapping where it is; it cannot be combined with align=, offset= or at=",
            ));
        }
        let moves_whole_source = offset == 0 && old_len == region.len;
        if name.text == region.name && moves_whole_source {
            check_name(name, "a region name", &[&["VmPTE"]])?;
        } else {
            self.check_new_region(proc, name)?;
        }
        let old_addr = region.addr + offset;
        if inplace.is_some() {
            self.planner
                .mremap_in_place(proc, name.text, old_addr, old_len, new_len)
                .map_err(|msg| Fail::at(&src, msg))?;
            return self.op(Op::MremapInPlace { proc, old_addr, old_len, new_len }, name.col);
        }
        let new_addr = self
            .planner
            .mremap(proc, name.text, old_addr, old_len, new_len, placement)
            .map_err(|msg| Fail::at(&src, msg))?;
        self.op(Op::Mremap { proc, old_addr, old_len, new_len, new_addr }, name.col)
    }

    /// `touch <range> [read|write] [<pages>] [zero] [every=N | random=N [seed=S]]`.
    pub(super) fn touch(&mut self, proc: ProcId, c: &mut Cursor, verb: &Tok) -> Result<(), Fail> {
        let region_tok = c.peek();
        let mut range = self.range(proc, c).map_err(|mut fail| {
            if fail.msg.ends_with("a bare number is bytes") {
                let region = region_tok.map_or("A", |t| t.text);
                fail.msg = format!("{}, and a page count goes after read or write: `touch {region} write 1`", fail.msg);
            }
            fail
        })?;
        let mut access = None;
        let mut zero = None;
        let mut pages = None;
        let (mut every, mut random, mut seed) = (None, None, None);
        let mut pattern_tag = None;
        while let Some(tok) = c.peek() {
            if let Some((key, op)) = c.key_op() {
                let value = c.word("a number")?;
                if op != CmpOp::Eq {
                    return Err(Fail::at(&key, format!("{}= takes =, found {}", key.text, op.symbol())));
                }
                if key.text == "pattern" {
                    if !is_identifier(value.text) && !value.starts_with_digit() {
                        return Err(Fail::at(
                            &value,
                            format!("expected a pattern tag such as T or 7, found {}", found(Some(&value))),
                        ));
                    }
                    if pattern_tag.replace((pattern_tag_of(value.text), key)).is_some() {
                        return Err(Fail::at(&key, "pattern= is given twice"));
                    }
                    continue;
                }
                let slot = match key.text {
                    "every" => &mut every,
                    "random" => &mut random,
                    "seed" => &mut seed,
                    _ => {
                        return Err(Fail::at(
                            &key,
                            format!(
                                "expected every=, random=, seed= or pattern=, found \"{}\"{}",
                                key.text,
                                suggest(key.text, ["every", "random", "seed", "pattern"])
                            ),
                        ))
                    }
                };
                let n = number(&value, "a number")?;
                if slot.replace((n, key)).is_some() {
                    return Err(Fail::at(&key, format!("{}= is given twice", key.text)));
                }
                continue;
            }
            c.next();
            match tok.text {
                "read" | "write" if tok.is_word() => {
                    let a = if tok.text == "read" { Access::Read } else { Access::Write };
                    if access.replace((a, tok)).is_some() {
                        return Err(Fail::at(&tok, "read or write is given twice"));
                    }
                }
                "zero" => {
                    if zero.replace(tok).is_some() {
                        return Err(Fail::at(&tok, "zero is given twice"));
                    }
                }
                _ if tok.starts_with_digit() => {
                    let n = number(&tok, "a number of pages")?;
                    if range.explicit_len {
                        return Err(Fail::at(&tok, "give either a length or a number of pages, not both"));
                    }
                    if pages.replace(n).is_some() {
                        return Err(Fail::at(&tok, "the number of pages is given twice"));
                    }
                    let fits = n.checked_mul(PAGE_SIZE).filter(|&len| len > 0 && len <= range.len);
                    let Some(len) = fits else {
                        return Err(Fail::at(
                            &tok,
                            format!(
                                "{n} pages from {} do not fit in {} ({} pages there)",
                                region_tok.map_or("", |t| t.text),
                                range.region.name,
                                range.len / PAGE_SIZE
                            ),
                        ));
                    };
                    range.len = len;
                }
                _ => {
                    return Err(Fail::at(
                        &tok,
                        format!(
                            "expected read, write, a number of pages, zero, every=N or random=N, found {}{}",
                            found(Some(&tok)),
                            suggest(tok.text, ["read", "write", "zero"])
                        ),
                    ))
                }
            }
        }
        let access = access.map_or(Access::Write, |(a, _)| a);
        if let (Access::Read, Some(tok)) = (access, zero) {
            return Err(Fail::at(&tok, "zero says what a write stores; a read stores nothing"));
        }
        if let Some((_, key)) = pattern_tag {
            if access == Access::Read {
                return Err(Fail::at(&key, "pattern= says what a write stores; a read stores nothing"));
            }
            if zero.is_some() {
                return Err(Fail::at(&key, "pattern= and zero cannot be combined"));
            }
        }
        let nr_pages = range.len / PAGE_SIZE;
        let pattern = match (every, random, seed) {
            (Some(_), Some((_, key)), _) => {
                return Err(Fail::at(&key, "every= and random= cannot be combined"));
            }
            (None, None, Some((_, key))) => return Err(Fail::at(&key, "seed= goes with random=")),
            (Some((n, key)), None, _) => {
                if n == 0 {
                    return Err(Fail::at(&key, "every= must be at least 1"));
                }
                TouchPattern::EveryNth(n)
            }
            (None, Some((count, key)), seed) => {
                if count == 0 || count > nr_pages {
                    return Err(Fail::at(&key, format!("random= must be from 1 to the {nr_pages} pages of the range")));
                }
                TouchPattern::Random { count, seed: seed.map_or(0, |(s, _)| s) }
            }
            (None, None, None) => TouchPattern::All,
        };
        let fill = match (pattern_tag, zero) {
            (Some((tag, _)), _) => Fill::Pattern(tag),
            (None, Some(_)) => Fill::Zero,
            (None, None) => Fill::NonZero,
        };
        self.op(Op::Touch { proc, addr: range.addr(), len: range.len, access, fill, pattern }, verb.col)
    }
}
