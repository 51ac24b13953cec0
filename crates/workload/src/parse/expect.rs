//! `expect` statements.

use std::collections::BTreeSet;

use crate::expect::{
    Cmp, CmpOp, ContentWant, Expectation, ExpectedState, PageProp, Place, SmapsField, VmaProp, KHUGEPAGED_COUNTERS,
    MEMINFO_FIELDS, MTHP_SIZES_KB, MTHP_STATS, VMSTAT_COUNTERS, VM_FLAGS,
};
use crate::plan::PAGE_SIZE;
use crate::scenario::StepKind;
use crate::ProcId;
use thpsim_uapi::Errno;

use super::lex::{found, Cursor, Fail, Kind, Tok};
use super::process::RangeArg;
use super::words::{is_identifier, number, parse_size, size, suggest};
use super::Parser;

impl Parser {
    /// A change of a counter: `+1`, `-2`, `= 0`, `>= 1`.
    pub(super) fn change(&self, c: &mut Cursor) -> Result<Cmp, Fail> {
        const WHAT: &str = "a change such as +1, -1 or = 0 (counters compare as changes since the scenario started)";
        let op = c.cmp_op();
        let tok = c.word(WHAT)?;
        if op.is_none() && !tok.text.starts_with(['+', '-']) {
            return Err(Fail::at(&tok, format!("expected {WHAT}, found {}", found(Some(&tok)))));
        }
        let value = tok
            .text
            .parse::<i64>()
            .map_err(|_| Fail::at(&tok, format!("expected {WHAT}, found {}", found(Some(&tok)))))?;
        Ok(Cmp { op: op.unwrap_or(CmpOp::Eq), value })
    }

    /// A change in kB: `+8kB`, `-4 kB`, `+8K`, `= 0`, `>= 4kB`.
    pub(super) fn change_kb(&self, c: &mut Cursor) -> Result<Cmp, Fail> {
        const WHAT: &str = "a change in kB such as +8kB, -4kB or = 0 (compared as a change since the scenario started)";
        let op = c.cmp_op();
        let tok = c.word(WHAT)?;
        let bad = || Fail::at(&tok, format!("expected {WHAT}, found {}", found(Some(&tok))));
        let (sign, rest) = match tok.text.strip_prefix('+') {
            Some(rest) => (1, rest),
            None => match tok.text.strip_prefix('-') {
                Some(rest) => (-1, rest),
                None if op.is_some() => (1, tok.text),
                None => return Err(bad()),
            },
        };
        let bare = !rest.is_empty() && rest.chars().all(|ch| ch.is_ascii_digit());
        let bytes = if bare && c.peek().is_some_and(|t| t.is_word() && t.text == "kB") {
            c.next();
            rest.parse::<u64>().ok().and_then(|kb| kb.checked_mul(1024)).ok_or_else(bad)?
        } else {
            let bytes = parse_size(rest).ok_or_else(bad)?;
            if bare && bytes != 0 {
                return Err(Fail::at(&tok, format!("write the unit: {0}kB (changes here are in kB)", tok.text)));
            }
            bytes
        };
        if bytes % 1024 != 0 {
            return Err(Fail::at(&tok, format!("{} is not a whole number of kB", tok.text)));
        }
        let kb = i64::try_from(bytes / 1024).map_err(|_| Fail::at(&tok, "the size is too large"))?;
        Ok(Cmp { op: op.unwrap_or(CmpOp::Eq), value: sign * kb })
    }

    /// A size compared in kB: `2048kB`, `2048 kB`, `2M`, `0`, `>= 4kB`.
    pub(super) fn size_kb(&self, c: &mut Cursor) -> Result<Cmp, Fail> {
        let op = c.cmp_op().unwrap_or(CmpOp::Eq);
        let tok = c.word("a size in kB such as 2048kB")?;
        let bare = tok.text.chars().all(|ch| ch.is_ascii_digit());
        let bytes = if bare && c.peek().is_some_and(|t| t.is_word() && t.text == "kB") {
            c.next();
            tok.text
                .parse::<u64>()
                .ok()
                .and_then(|kb| kb.checked_mul(1024))
                .ok_or_else(|| Fail::at(&tok, "the size is too large"))?
        } else {
            let bytes = size(&tok)?;
            if bare && bytes != 0 {
                return Err(Fail::at(
                    &tok,
                    format!("write the unit: {0}kB or {0} kB (sizes here are in kB, as smaps prints them)", tok.text),
                ));
            }
            bytes
        };
        if bytes % 1024 != 0 {
            return Err(Fail::at(&tok, format!("{} is not a whole number of kB", tok.text)));
        }
        let kb = i64::try_from(bytes / 1024).map_err(|_| Fail::at(&tok, "the size is too large"))?;
        Ok(Cmp { op, value: kb })
    }

    pub(super) fn place(&self, proc: ProcId, tok: &Tok) -> Result<Place, Fail> {
        let (region, offset) = self.region_at(proc, tok, false)?;
        Ok(Place { proc, proc_name: self.planner.proc_name(proc).to_string(), region: region.name, offset })
    }

    /// A place that may be a region's end (`A+2M` of a 2M region A).
    pub(super) fn place_to(&self, proc: ProcId, tok: &Tok) -> Result<Place, Fail> {
        let (region, offset) = self.region_at(proc, tok, true)?;
        Ok(Place { proc, proc_name: self.planner.proc_name(proc).to_string(), region: region.name, offset })
    }

    pub(super) fn expect(&mut self, c: &mut Cursor, first: &Tok) -> Result<(), Fail> {
        let head = c.word("ok, errno, vmstat, mthp, khugepaged, meminfo or a process")?;
        let expectation = match head.text {
            "ok" => {
                c.end()?;
                self.after_op(&head)?;
                Expectation::Ok
            }
            "errno" => {
                let name = c.word("an errno such as ENOMEM or EINVAL")?;
                c.end()?;
                let errno = Errno::from_name(name.text).ok_or_else(|| {
                    let names: Vec<&str> = Errno::ALL.iter().map(|e| e.name()).collect();
                    Fail::at(
                        &name,
                        format!(
                            "expected an errno ({}), found {}{}",
                            names.join(", "),
                            found(Some(&name)),
                            suggest(name.text, names.iter().copied())
                        ),
                    )
                })?;
                self.after_op(&head)?;
                Expectation::Errno(errno)
            }
            "vmstat" => {
                let counter = c.word("a /proc/vmstat counter such as thp_split_pmd")?;
                if !VMSTAT_COUNTERS.contains(&counter.text) {
                    return Err(Fail::at(
                        &counter,
                        format!(
                            "expected a /proc/vmstat counter thpsim observes ({}), found {}{}",
                            VMSTAT_COUNTERS.join(", "),
                            found(Some(&counter)),
                            suggest(counter.text, VMSTAT_COUNTERS.iter().copied())
                        ),
                    ));
                }
                let cmp = self.change(c)?;
                c.end()?;
                Expectation::Vmstat { counter: counter.text.to_string(), cmp }
            }
            "mthp" => {
                let size_tok = c.word("a folio size such as 64kB")?;
                let size_kb = parse_size(size_tok.text)
                    .filter(|bytes| bytes % 1024 == 0 && MTHP_SIZES_KB.contains(&(bytes / 1024)))
                    .map(|bytes| bytes / 1024)
                    .ok_or_else(|| {
                        let sizes: Vec<String> = MTHP_SIZES_KB.iter().map(|kb| format!("{kb}kB")).collect();
                        Fail::at(
                            &size_tok,
                            format!("expected a folio size ({}), found {}", sizes.join(", "), found(Some(&size_tok))),
                        )
                    })?;
                let stat = c.word("a per-size stat such as anon_fault_alloc")?;
                if !MTHP_STATS.contains(&stat.text) {
                    return Err(Fail::at(
                        &stat,
                        format!(
                            "expected a per-size stat ({}), found {}{}",
                            MTHP_STATS.join(", "),
                            found(Some(&stat)),
                            suggest(stat.text, MTHP_STATS.iter().copied())
                        ),
                    ));
                }
                let cmp = self.change(c)?;
                c.end()?;
                Expectation::Mthp { size_kb, stat: stat.text.to_string(), cmp }
            }
            "khugepaged" => {
                let counter = c.word("a khugepaged counter such as pages_collapsed")?;
                if !KHUGEPAGED_COUNTERS.contains(&counter.text) {
                    return Err(Fail::at(
                        &counter,
                        format!(
                            "expected a khugepaged counter ({}), found {}{}",
                            KHUGEPAGED_COUNTERS.join(", "),
                            found(Some(&counter)),
                            suggest(counter.text, KHUGEPAGED_COUNTERS.iter().copied())
                        ),
                    ));
                }
                let cmp = self.change(c)?;
                c.end()?;
                Expectation::Khugepaged { counter: counter.text.to_string(), cmp }
            }
            "meminfo" => {
                let field = c.word("a /proc/meminfo field such as PageTables")?;
                if !MEMINFO_FIELDS.contains(&field.text) {
                    return Err(Fail::at(
                        &field,
                        format!(
                            "expected a /proc/meminfo field thpsim observes ({}), found {}{}",
                            MEMINFO_FIELDS.join(", "),
                            found(Some(&field)),
                            suggest(field.text, MEMINFO_FIELDS.iter().copied())
                        ),
                    ));
                }
                let cmp = self.change_kb(c)?;
                c.end()?;
                Expectation::Meminfo { field: field.text.to_string(), cmp }
            }
            _ => self.expect_proc(c, &head)?,
        };
        let regions = self.planner.regions();
        self.push(StepKind::Expect { expectation, regions }, first.col)
    }

    pub(super) fn after_op(&self, tok: &Tok) -> Result<(), Fail> {
        if self.any_op {
            Ok(())
        } else {
            Err(Fail::at(tok, format!("expect {} checks the previous operation, and there is none yet", tok.text)))
        }
    }

    /// `expect p1 VmPTE ...`, `expect p1 A ... <field>|page|folios ...`.
    pub(super) fn expect_proc(&self, c: &mut Cursor, proc_tok: &Tok) -> Result<Expectation, Fail> {
        if self.planner.proc_id(proc_tok.text).is_none() {
            let names = self.planner.proc_names();
            let candidates = ["ok", "errno", "vmstat", "mthp", "khugepaged", "meminfo"]
                .into_iter()
                .chain(names.iter().map(String::as_str));
            return Err(Fail::at(
                proc_tok,
                format!(
                    "there is no process named \"{}\"{}; expect takes ok, errno, vmstat, mthp, khugepaged, meminfo or a process",
                    proc_tok.text,
                    suggest(proc_tok.text, candidates)
                ),
            ));
        }
        let proc = self.live_proc(proc_tok)?;
        let proc_name = proc_tok.text.to_string();
        if c.peek().is_some_and(|t| t.text == "VmPTE") {
            c.next();
            let cmp = self.size_kb(c)?;
            c.end()?;
            return Ok(Expectation::VmPte { proc, proc_name, cmp });
        }
        let region_tok = c.peek();
        let range = self.range(proc, c)?;
        let at = Place { proc, proc_name, region: range.region.name.clone(), offset: range.offset };
        const WHAT: &str = "an smaps field (Rss, Pss, Shared_Clean, Shared_Dirty, Private_Clean, Private_Dirty, Anonymous, LazyFree, AnonHugePages, Swap), page, folios, vmas, vma or content";
        let what = c.word(WHAT)?;
        if let Some(field) = SmapsField::from_name(what.text) {
            let cmp = self.size_kb(c)?;
            c.end()?;
            return Ok(Expectation::Smaps { at, len: range.len, explicit_len: range.explicit_len, field, cmp });
        }
        match what.text {
            "page" => {
                if range.explicit_len {
                    return Err(Fail::at(&what, "a page expectation takes pages=N after its properties, not a length"));
                }
                self.expect_page(c, at, &range, region_tok)
            }
            "folios" => self.expect_folios(c, at, &range),
            "vmas" => {
                let Some((key, op)) = c.key_op() else {
                    return Err(c.expected("count=N"));
                };
                if key.text != "count" {
                    return Err(Fail::at(
                        &key,
                        format!("expected count=N, found \"{}\"{}", key.text, suggest(key.text, ["count"])),
                    ));
                }
                let tok = c.word("a number of VMAs")?;
                let n = number(&tok, "a number of VMAs")?;
                let value = i64::try_from(n).map_err(|_| Fail::at(&tok, "the count is too large"))?;
                c.end()?;
                Ok(Expectation::Vmas { at, len: range.len, explicit_len: range.explicit_len, count: Cmp { op, value } })
            }
            "content" => {
                const WANT: &str = "pattern=T or zero";
                let want = if let Some((key, op)) = c.key_op() {
                    if key.text != "pattern" || op != CmpOp::Eq {
                        return Err(Fail::at(
                            &key,
                            format!("expected {WANT}, found \"{}\"{}", key.text, suggest(key.text, ["pattern"])),
                        ));
                    }
                    let tag = c.word("a pattern tag such as T")?;
                    if !is_identifier(tag.text) && !tag.starts_with_digit() {
                        return Err(Fail::at(
                            &tag,
                            format!("expected a pattern tag such as T or 7, found {}", found(Some(&tag))),
                        ));
                    }
                    ContentWant::Pattern { name: tag.text.to_string(), tag: crate::pattern_tag(tag.text) }
                } else {
                    let tok = c.word(WANT)?;
                    if tok.text != "zero" {
                        return Err(Fail::at(
                            &tok,
                            format!("expected {WANT}, found {}{}", found(Some(&tok)), suggest(tok.text, ["zero"])),
                        ));
                    }
                    ContentWant::Zero
                };
                c.end()?;
                Ok(Expectation::Content { at, len: range.len, explicit_len: range.explicit_len, want })
            }
            "vma" => {
                if range.explicit_len {
                    return Err(Fail::at(&what, "a vma expectation is about the VMA of one page: it takes no length"));
                }
                self.expect_vma(c, at)
            }
            _ => {
                let names =
                    SmapsField::ALL.iter().map(|f| f.name()).chain(["page", "folios", "vmas", "vma", "content"]);
                Err(Fail::at(
                    &what,
                    format!("expected {WHAT}, found {}{}", found(Some(&what)), suggest(what.text, names)),
                ))
            }
        }
    }

    pub(super) fn expect_page(
        &self,
        c: &mut Cursor,
        at: Place,
        range: &RangeArg,
        region_tok: Option<Tok>,
    ) -> Result<Expectation, Fail> {
        const WHAT: &str = "a page property (present, none, swapped, [!]pmd, [!]exclusive, [!]zero, [!]lru, [!]swapbacked, [!]swapcache, order=N, mapcount=N, [!]same_folio=A+off, pages=N)";
        let mut props = Vec::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut pages = 1;
        let mut once = |key: &'static str, tok: &Tok| {
            if seen.insert(key) {
                Ok(())
            } else {
                Err(Fail::at(tok, format!("{key} is given twice")))
            }
        };
        while !c.at_end() {
            if let Some((key, op)) = c.key_op() {
                let (negated, name) = match key.text.strip_prefix('!') {
                    Some(name) => (true, name),
                    None => (false, key.text),
                };
                let eq_only = |op: CmpOp| {
                    if op == CmpOp::Eq {
                        Ok(())
                    } else {
                        Err(Fail::at(&key, format!("{name} takes =, found {}", op.symbol())))
                    }
                };
                match name {
                    "order" if !negated => {
                        eq_only(op)?;
                        once("order", &key)?;
                        let tok = c.word("an order such as 0 or 9")?;
                        let order = number(&tok, "an order such as 0 or 9")?;
                        if order > 18 {
                            return Err(Fail::at(&tok, "an order is from 0 to 18"));
                        }
                        props.push(PageProp::Order(order as u8));
                    }
                    "mapcount" if !negated => {
                        once("mapcount", &key)?;
                        let tok = c.word("a mapcount")?;
                        let n = number(&tok, "a mapcount")?;
                        let value = i64::try_from(n).map_err(|_| Fail::at(&tok, "the mapcount is too large"))?;
                        props.push(PageProp::Mapcount(Cmp { op, value }));
                    }
                    "pages" if !negated => {
                        eq_only(op)?;
                        once("pages", &key)?;
                        let tok = c.word("a number of pages, or all")?;
                        let available = range.len / PAGE_SIZE;
                        pages = if tok.text == "all" { available } else { number(&tok, "a number of pages, or all")? };
                        if pages == 0 || pages > available {
                            return Err(Fail::at(
                                &tok,
                                format!(
                                    "pages= must be from 1 to the {available} pages from {} to the end of {}",
                                    region_tok.map_or("", |t| t.text),
                                    range.region.name
                                ),
                            ));
                        }
                    }
                    "same_folio" => {
                        once("same_folio", &key)?;
                        let same = match op {
                            CmpOp::Eq => !negated,
                            CmpOp::Ne if !negated => false,
                            _ => {
                                return Err(Fail::at(&key, format!("same_folio takes = or !=, found {}", op.symbol())))
                            }
                        };
                        let first = c.word("a page such as A+0 or p2:A+0")?;
                        let with = if c.peek().is_some_and(|t| t.kind == Kind::Colon) {
                            c.next();
                            let other = self.live_proc(&first)?;
                            let tok = c.word("a page such as A+0")?;
                            self.place(other, &tok)?
                        } else {
                            self.place(at.proc, &first)?
                        };
                        props.push(PageProp::SameFolio { same, with });
                    }
                    _ => return Err(Fail::at(&key, format!("expected {WHAT}, found \"{}\"", key.text))),
                }
                continue;
            }
            let tok = c.word(WHAT)?;
            let (negated, name) = match tok.text.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, tok.text),
            };
            // The observation's own spellings (`thpsim run`, the oracle's
            // diffs) are accepted too.
            let name = match name {
                "pmd_mapped" => "pmd",
                "zero_page" => "zero",
                other => other,
            };
            let prop = match name {
                "present" | "none" | "swapped" if !negated => {
                    once("the page state", &tok)?;
                    PageProp::State(match name {
                        "present" => ExpectedState::Present,
                        "none" => ExpectedState::None,
                        _ => ExpectedState::Swapped,
                    })
                }
                "pmd" => {
                    once("pmd", &tok)?;
                    PageProp::Pmd(!negated)
                }
                "exclusive" => {
                    once("exclusive", &tok)?;
                    PageProp::Exclusive(!negated)
                }
                "zero" => {
                    once("zero", &tok)?;
                    PageProp::Zero(!negated)
                }
                "lru" => {
                    once("lru", &tok)?;
                    PageProp::Lru(!negated)
                }
                "swapbacked" => {
                    once("swapbacked", &tok)?;
                    PageProp::SwapBacked(!negated)
                }
                "swapcache" => {
                    once("swapcache", &tok)?;
                    PageProp::SwapCache(!negated)
                }
                _ => {
                    let names = [
                        "present",
                        "none",
                        "swapped",
                        "pmd",
                        "pmd_mapped",
                        "exclusive",
                        "zero",
                        "zero_page",
                        "lru",
                        "swapbacked",
                        "swapcache",
                        "order",
                        "mapcount",
                        "same_folio",
                        "pages",
                    ];
                    return Err(Fail::at(
                        &tok,
                        format!("expected {WHAT}, found {}{}", found(Some(&tok)), suggest(name, names)),
                    ));
                }
            };
            props.push(prop);
        }
        if props.is_empty() {
            return Err(c.expected(WHAT));
        }
        Ok(Expectation::Page { at, pages, props })
    }

    /// `expect p1 A+off vma [start=B+off] [end=B+off] [!]THPeligible [!]hg ...`.
    pub(super) fn expect_vma(&self, c: &mut Cursor, at: Place) -> Result<Expectation, Fail> {
        const WHAT: &str =
            "a VMA property (start=A+off, end=A+off, [!]THPeligible, or a VmFlags mnemonic such as hg or !nh)";
        let mut props = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut once = |key: &str, tok: &Tok| {
            if seen.insert(key.to_string()) {
                Ok(())
            } else {
                Err(Fail::at(tok, format!("{key} is given twice")))
            }
        };
        while !c.at_end() {
            if let Some((key, op)) = c.key_op() {
                if op != CmpOp::Eq {
                    return Err(Fail::at(&key, format!("{} takes =, found {}", key.text, op.symbol())));
                }
                let place = |c: &mut Cursor| -> Result<Place, Fail> {
                    let tok = c.word("a place such as A+1M")?;
                    self.place_to(at.proc, &tok)
                };
                match key.text {
                    "start" => {
                        once("start", &key)?;
                        props.push(VmaProp::Start(place(c)?));
                    }
                    "end" => {
                        once("end", &key)?;
                        props.push(VmaProp::End(place(c)?));
                    }
                    _ => {
                        return Err(Fail::at(
                            &key,
                            format!("expected {WHAT}, found \"{}\"{}", key.text, suggest(key.text, ["start", "end"])),
                        ))
                    }
                }
                continue;
            }
            let tok = c.word(WHAT)?;
            let (negated, name) = match tok.text.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, tok.text),
            };
            if name == "THPeligible" || name == "thp_eligible" {
                once("THPeligible", &tok)?;
                props.push(VmaProp::ThpEligible(!negated));
            } else if VM_FLAGS.contains(&name) {
                once(name, &tok)?;
                props.push(VmaProp::Flag { name: name.to_string(), set: !negated });
            } else {
                let names = ["start", "end", "THPeligible", "thp_eligible"].into_iter().chain(VM_FLAGS.iter().copied());
                return Err(Fail::at(
                    &tok,
                    format!(
                        "expected {WHAT}; the VmFlags thpsim observes are {}; found {}{}",
                        VM_FLAGS.join(" "),
                        found(Some(&tok)),
                        suggest(name, names)
                    ),
                ));
            }
        }
        if props.is_empty() {
            return Err(c.expected(WHAT));
        }
        Ok(Expectation::Vma { at, props })
    }

    pub(super) fn expect_folios(&self, c: &mut Cursor, at: Place, range: &RangeArg) -> Result<Expectation, Fail> {
        let (mut order, mut count) = (None, None);
        while !c.at_end() {
            let Some((key, op)) = c.key_op() else {
                return Err(c.expected("order=N or count=N"));
            };
            let tok = c.word("a number")?;
            match key.text {
                "order" => {
                    if op != CmpOp::Eq {
                        return Err(Fail::at(&key, format!("order takes =, found {}", op.symbol())));
                    }
                    let n = number(&tok, "an order such as 0 or 9")?;
                    if n > 18 {
                        return Err(Fail::at(&tok, "an order is from 0 to 18"));
                    }
                    if order.replace(n as u8).is_some() {
                        return Err(Fail::at(&key, "order is given twice"));
                    }
                }
                "count" => {
                    let n = number(&tok, "a number of folios")?;
                    let value = i64::try_from(n).map_err(|_| Fail::at(&tok, "the count is too large"))?;
                    if count.replace(Cmp { op, value }).is_some() {
                        return Err(Fail::at(&key, "count is given twice"));
                    }
                }
                _ => {
                    return Err(Fail::at(
                        &key,
                        format!(
                            "expected order= or count=, found \"{}\"{}",
                            key.text,
                            suggest(key.text, ["order", "count"])
                        ),
                    ))
                }
            }
        }
        let Some(count) = count else {
            return Err(c.expected("count=N"));
        };
        Ok(Expectation::Folios { at, len: range.len, explicit_len: range.explicit_len, order, count })
    }
}
