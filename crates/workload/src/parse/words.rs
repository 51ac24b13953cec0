//! The words statements share: names, sizes, numbers, protections,
//! advices and THP settings, each read with an error that says what was
//! expected.

use crate::plan::{MAX_SIZE, PAGE_SIZE};
use crate::{Advice, Prot};
use thpsim_uapi::knob::{Knob, KnobError, Setting};

use super::lex::{found, Fail, Kind, Tok};

/// Statement keywords; none of them may name a process.
pub(super) const STATEMENTS: &[&str] =
    &["machine", "policy", "inject", "set", "khugepaged", "shrink", "observe", "expect", "unpin", "exit"];
/// Operations after `p1:`.
pub(super) const OPERATIONS: &[&str] =
    &["mmap", "munmap", "mprotect", "madvise", "mremap", "mlock", "munlock", "touch", "prctl", "pin", "unpin", "exit"];
/// Words that follow `expect` and so cannot name a process either.
pub(super) const EXPECT_WORDS: &[&str] = &["vmstat", "mthp", "meminfo", "ok", "errno", "fork"];
/// The longest name of a process, region or pin.
pub(super) const MAX_NAME_LEN: usize = 64;

pub(super) const SIZE_HINT: &str = "a size such as 4K, 2M, 1G or 64kB";

/// Edit distance, for "did you mean" hints (inputs capped, so it is cheap).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().take(64).flat_map(char::to_lowercase).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// ` (did you mean "x"?)` for the closest candidate, if one is close.
pub(super) fn suggest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|&(d, c)| d <= 2.max(c.len() / 4) && d < c.len())
        .min_by_key(|&(d, _)| d);
    match best {
        Some((_, c)) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}

pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= MAX_NAME_LEN
}

/// Checks a new name of a process, region or pin.
pub(super) fn check_name(tok: &Tok, what: &str, reserved: &[&[&str]]) -> Result<(), Fail> {
    if !is_identifier(tok.text) {
        return Err(Fail::at(
            tok,
            format!(
                "expected {what} (letters, digits and _, starting with a letter, at most {MAX_NAME_LEN} characters), found {}",
                found(Some(tok))
            ),
        ));
    }
    if reserved.iter().any(|list| list.contains(&tok.text)) {
        return Err(Fail::at(tok, format!("\"{}\" is a keyword and cannot be {what}", tok.text)));
    }
    Ok(())
}

/// Parses `4K`, `2M`, `1G`, `1T`, `64kB` or a number of bytes.
///
/// Units are binary (as the kernel's memparse and smaps use them): `K` and
/// `kB` are 1024 bytes. `k`, `m`, `g`, `t` are accepted too.
pub(super) fn parse_size(text: &str) -> Option<u64> {
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    if digits == 0 {
        return None;
    }
    let number: u64 = text[..digits].parse().ok()?;
    let unit: u64 = match &text[digits..] {
        "" => 1,
        "K" | "k" | "kB" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        "T" | "t" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(unit)
}

pub(super) fn size(tok: &Tok) -> Result<u64, Fail> {
    parse_size(tok.text).ok_or_else(|| {
        let hint = if tok.text.ends_with("MB") || tok.text.ends_with("GB") || tok.text.ends_with("iB") {
            " (units are binary and written K, M, G, T or kB)"
        } else {
            ""
        };
        Fail::at(tok, format!("expected {SIZE_HINT}, found {}{hint}", found(Some(tok))))
    })
}

/// A size that must be page-aligned and at most `MAX_SIZE`; `what` names it
/// in messages ("length", "offset"). `text` starts at column `col`.
pub(super) fn aligned_size(text: &str, col: u32, what: &str, nonzero: bool) -> Result<u64, Fail> {
    let bytes = size(&Tok { kind: Kind::Word, text, col })?;
    if nonzero && bytes == 0 {
        return Err(Fail { col, msg: format!("the {what} must not be zero") });
    }
    if bytes % PAGE_SIZE != 0 {
        let pages =
            if what == "length" && text.chars().all(|c| c.is_ascii_digit()) { "; a bare number is bytes" } else { "" };
        return Err(Fail { col, msg: format!("the {what} {text} is not a multiple of the page size (4K){pages}") });
    }
    if bytes > MAX_SIZE {
        return Err(Fail { col, msg: format!("the {what} {text} is above the limit of 1T") });
    }
    Ok(bytes)
}

pub(super) fn number(tok: &Tok, what: &str) -> Result<u64, Fail> {
    tok.text
        .parse::<u64>()
        .ok()
        .filter(|_| tok.text.starts_with(|c: char| c.is_ascii_digit()))
        .ok_or_else(|| Fail::at(tok, format!("expected {what}, found {}", found(Some(tok)))))
}

pub(super) fn parse_prot(tok: &Tok) -> Result<Prot, Fail> {
    let bad = || {
        Fail::at(
            tok,
            format!("expected a protection: none, r, rw, rwx (or r, w, x in that order), found {}", found(Some(tok))),
        )
    };
    if tok.text == "none" {
        return Ok(Prot::NONE);
    }
    let mut rest = tok.text;
    let mut take = |c: char| match rest.strip_prefix(c) {
        Some(r) => {
            rest = r;
            true
        }
        None => false,
    };
    let prot = Prot { read: take('r'), write: take('w'), exec: take('x') };
    if tok.text.is_empty() || !rest.is_empty() {
        return Err(bad());
    }
    Ok(prot)
}

/// `a, b or c`.
pub(super) fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

pub(super) fn parse_advice(tok: &Tok) -> Result<Advice, Fail> {
    // Accept the kernel's own spelling too: MADV_HUGEPAGE.
    Advice::from_word(tok.text).ok_or_else(|| {
        let name = tok.text.strip_prefix("MADV_").map(str::to_ascii_lowercase);
        let name = name.as_deref().unwrap_or(tok.text);
        Fail::at(
            tok,
            format!(
                "expected an advice ({}), found {}{}",
                Advice::NAMES.join(", "),
                found(Some(tok)),
                suggest(name, Advice::NAMES.iter().copied())
            ),
        )
    })
}

/// Checks a `set`: the knob and the value the kernel would accept for it.
pub(super) fn check_knob(path: &Tok, value: &Tok) -> Result<Setting, Fail> {
    let knob = Knob::from_path(path.text).map_err(|err| match err {
        KnobError::Unknown { path: rel } => {
            let names = Knob::all().into_iter().map(|k| k.path()).collect::<Vec<_>>();
            Fail::at(
                path,
                format!(
                    "expected a THP setting such as enabled, defrag, khugepaged/max_ptes_none or hugepages-64kB/enabled, found {}{}",
                    found(Some(path)),
                    suggest(&rel, names.iter().map(String::as_str))
                ),
            )
        }
        other => Fail::at(path, other.to_string()),
    })?;
    knob.parse(value.text)
        .map_err(|_| Fail::at(value, format!("{knob} takes {}, found {}", knob.values(), found(Some(value)))))
}
