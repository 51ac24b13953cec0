//! The words statements share: names, sizes, numbers, protections,
//! advices and THP settings, each read with an error that says what was
//! expected.

use crate::expect::MTHP_SIZES_KB;
use crate::plan::{MAX_SIZE, PAGE_SIZE};
use crate::{Advice, Prot};

use super::lex::{found, Fail, Kind, Tok};

/// Statement keywords; none of them may name a process.
pub(super) const STATEMENTS: &[&str] =
    &["machine", "set", "khugepaged", "shrink", "observe", "expect", "unpin", "exit"];
/// Operations after `p1:`.
pub(super) const OPERATIONS: &[&str] =
    &["mmap", "munmap", "mprotect", "madvise", "mremap", "touch", "prctl", "pin", "unpin", "exit"];
/// Words that follow `expect` and so cannot name a process either.
pub(super) const EXPECT_WORDS: &[&str] = &["vmstat", "mthp", "ok", "errno", "fork"];
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

pub(super) const ADVICES: &[(&str, Advice)] = &[
    ("normal", Advice::Normal),
    ("dontneed", Advice::DontNeed),
    ("free", Advice::Free),
    ("hugepage", Advice::HugePage),
    ("nohugepage", Advice::NoHugePage),
    ("collapse", Advice::Collapse),
    ("cold", Advice::Cold),
    ("pageout", Advice::PageOut),
    ("populate_read", Advice::PopulateRead),
    ("populate_write", Advice::PopulateWrite),
    ("dontfork", Advice::DontFork),
    ("dofork", Advice::DoFork),
];

pub(super) fn parse_advice(tok: &Tok) -> Result<Advice, Fail> {
    // Accept the kernel's own spelling too: MADV_HUGEPAGE.
    let name = tok.text.strip_prefix("MADV_").map(str::to_ascii_lowercase);
    let name = name.as_deref().unwrap_or(tok.text);
    ADVICES.iter().find(|(n, _)| *n == name).map(|&(_, a)| a).ok_or_else(|| {
        let list: Vec<&str> = ADVICES.iter().map(|(n, _)| *n).collect();
        Fail::at(
            tok,
            format!(
                "expected an advice ({}), found {}{}",
                list.join(", "),
                found(Some(tok)),
                suggest(name, list.iter().copied())
            ),
        )
    })
}

/// The sysfs files under /sys/kernel/mm/transparent_hugepage a `set` may
/// write, with the values each accepts.
pub(super) enum KnobValues {
    OneOf(&'static [&'static str]),
    Range(u64, u64),
}

pub(super) const KNOBS: &[(&str, KnobValues)] = &[
    ("enabled", KnobValues::OneOf(&["always", "madvise", "never"])),
    ("defrag", KnobValues::OneOf(&["always", "defer", "defer+madvise", "madvise", "never"])),
    ("use_zero_page", KnobValues::OneOf(&["0", "1"])),
    ("shrink_underused", KnobValues::OneOf(&["0", "1"])),
    ("khugepaged/defrag", KnobValues::OneOf(&["0", "1"])),
    ("khugepaged/max_ptes_none", KnobValues::Range(0, 511)),
    ("khugepaged/max_ptes_swap", KnobValues::Range(0, 511)),
    ("khugepaged/max_ptes_shared", KnobValues::Range(0, 511)),
    ("khugepaged/pages_to_scan", KnobValues::Range(1, u32::MAX as u64)),
    ("khugepaged/scan_sleep_millisecs", KnobValues::Range(0, u32::MAX as u64)),
    ("khugepaged/alloc_sleep_millisecs", KnobValues::Range(0, u32::MAX as u64)),
];
pub(super) const MTHP_ENABLED: KnobValues = KnobValues::OneOf(&["always", "inherit", "madvise", "never"]);

/// Checks a `set`; returns the path relative to transparent_hugepage/.
pub(super) fn check_knob<'t>(path: &Tok<'t>, value: &Tok) -> Result<&'t str, Fail> {
    let rel = path
        .text
        .strip_prefix("/sys/kernel/mm/transparent_hugepage/")
        .or_else(|| path.text.strip_prefix("transparent_hugepage/"))
        .unwrap_or(path.text);
    let mthp_size = rel
        .strip_prefix("hugepages-")
        .and_then(|r| r.split_once("kB/"))
        .map(|(size, file)| (size.parse::<u64>().ok(), file));
    let values = match (KNOBS.iter().find(|(name, _)| *name == rel), mthp_size) {
        (Some((_, values)), _) => values,
        (None, Some((Some(kb), "enabled"))) if MTHP_SIZES_KB.contains(&kb) => &MTHP_ENABLED,
        (None, Some((_, "enabled"))) => {
            let sizes: Vec<String> = MTHP_SIZES_KB.iter().map(|kb| format!("{kb}kB")).collect();
            return Err(Fail::at(
                path,
                format!("there is no {rel}: per-size directories are hugepages-<size> for {}", sizes.join(", ")),
            ));
        }
        _ if rel.ends_with("shmem_enabled") || rel.starts_with("shmem") => {
            return Err(Fail::at(path, format!("{rel} is not modelled: thpsim models anonymous memory only")));
        }
        _ if rel == "hpage_pmd_size"
            || rel.contains("/stats/")
            || rel == "khugepaged/pages_collapsed"
            || rel == "khugepaged/full_scans" =>
        {
            return Err(Fail::at(path, format!("{rel} is read-only")));
        }
        _ => {
            let names = KNOBS.iter().map(|(n, _)| *n).chain(["hugepages-64kB/enabled"]);
            return Err(Fail::at(
                path,
                format!(
                    "expected a THP setting such as enabled, defrag, khugepaged/max_ptes_none or hugepages-64kB/enabled, found {}{}",
                    found(Some(path)),
                    suggest(rel, names)
                ),
            ));
        }
    };
    let ok = match values {
        KnobValues::OneOf(list) => list.contains(&value.text),
        KnobValues::Range(lo, hi) => value.text.parse::<u64>().is_ok_and(|v| (*lo..=*hi).contains(&v)),
    };
    if !ok {
        let want = match values {
            KnobValues::OneOf(list) => list.join(", "),
            KnobValues::Range(lo, hi) => format!("a number from {lo} to {hi}"),
        };
        return Err(Fail::at(value, format!("{rel} takes {want}, found {}", found(Some(value)))));
    }
    Ok(rel)
}
