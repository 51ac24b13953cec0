//! `parse_scenario` returns `Ok` or `Err` on any input and never panics:
//! random bytes, random soups of the language's own tokens, and mutations
//! of valid scenarios.

use proptest::prelude::*;
use thpsim_workload::{parse_scenario, StepKind};

/// Words and punctuation of the language, plus near misses, so that random
/// lines get deep into the statement parsers.
const TOKENS: &[&str] = &[
    "p1",
    "p2",
    "p3",
    ":",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "#",
    "\n",
    " ",
    "\t",
    "A",
    "B",
    "C",
    "A+4K",
    "A+0",
    "A+2M",
    "B+1M",
    "A+",
    "+1",
    "-1",
    "0",
    "1",
    "2",
    "9",
    "512",
    "513",
    "4K",
    "2M",
    "1G",
    "1T",
    "2T",
    "64kB",
    "2MB",
    "6K",
    "18446744073709551615",
    "99999999999999999999T",
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "mremap",
    "touch",
    "prctl",
    "pin",
    "unpin",
    "exit",
    "fork",
    "machine",
    "set",
    "khugepaged",
    "shrink",
    "observe",
    "expect",
    "ok",
    "errno",
    "EINVAL",
    "vmstat",
    "mthp",
    "thp_split_pmd",
    "anon_fault_alloc",
    "VmPTE",
    "Rss",
    "AnonHugePages",
    "page",
    "folios",
    "present",
    "none",
    "swapped",
    "pmd",
    "!pmd",
    "exclusive",
    "!exclusive",
    "zero",
    "order",
    "mapcount",
    "count",
    "pages",
    "all",
    "same_folio",
    "!same_folio",
    "read",
    "write",
    "every",
    "random",
    "seed",
    "align",
    "offset",
    "prot",
    "at",
    "r",
    "rw",
    "rwx",
    "hugepage",
    "collapse",
    "dontneed",
    "thp_disable",
    "except_advised",
    "longterm",
    "enabled",
    "always",
    "madvise",
    "khugepaged/max_ptes_none",
    "hugepages-64kB/enabled",
    "defer+madvise",
    "ram",
    "swap",
    "P1",
    "é",
    "∞",
    "\u{0}",
    "\r",
    "kB",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..60).prop_map(|toks| {
        let mut out = String::new();
        for (i, t) in toks.iter().enumerate() {
            // Join most tokens with a space, some without, so that both
            // `A+4K` and `A + 4K`, `order=9` and `order = 9` appear.
            if i % 3 != 0 {
                out.push(' ');
            }
            out.push_str(t);
        }
        out
    })
}

/// Beginnings of statements, so that generated lines reach every parser.
const HEADS: &[&str] = &[
    "p1: A =",
    "p1: C =",
    "p2: D =",
    "p1:",
    "p1:",
    "p2:",
    "p3:",
    "p1: touch",
    "p1: touch",
    "p2: touch",
    "p1: madvise",
    "p1: munmap",
    "p1: mprotect",
    "p1: pin Q =",
    "p1: C = mremap",
    "p2: C = mremap",
    "p1: A = mremap",
    "p1: D = mmap",
    "p1: prctl thp_disable",
    "expect p1",
    "expect p2",
    "expect p1 A",
    "expect p1 A+4K page",
    "expect p2 B folios",
    "expect p1 A page",
    "expect vmstat",
    "expect mthp",
    "expect",
    "observe",
    "observe p1",
    "p4 = fork",
    "p2 = fork",
    "set",
    "set enabled =",
    "machine",
    "khugepaged",
    "unpin",
    "exit",
    "shrink",
];

/// Arguments, whole and well-formed more often than not.
const ARGS: &[&str] = &[
    "A",
    "B",
    "A+4K",
    "A+1M",
    "B+4K",
    "A+4M",
    "B+2M",
    "4K",
    "8K",
    "1M",
    "2M",
    "4M",
    "1G",
    "0",
    "1",
    "3",
    "512",
    "read",
    "write",
    "zero",
    "random=5",
    "random=0",
    "every=2",
    "every=0",
    "seed=9",
    "pages=all",
    "pages=3",
    "order=9",
    "order=0",
    "count=1",
    "count>=1",
    "mapcount=1",
    "mapcount<2",
    "same_folio=A",
    "same_folio=p2:A+4K",
    "!same_folio=B",
    "same_folio!=A+4K",
    "present",
    "none",
    "swapped",
    "pmd",
    "!pmd",
    "exclusive",
    "zero",
    "!zero",
    "align=1G",
    "align=4K",
    "offset=4K",
    "at=A+4M",
    "at=B+2M",
    "at=A",
    "prot=r",
    "prot=none",
    "longterm",
    "hugepage",
    "collapse",
    "pageout",
    "r",
    "rw",
    "rwx",
    "all",
    "except_advised",
    "off",
    "p1",
    "p2",
    "P1",
    "Q",
    "Rss",
    "AnonHugePages",
    "VmPTE",
    "2048kB",
    "2048",
    "kB",
    "+1",
    "-1",
    "= 0",
    ">= 2",
    "thp_split_pmd",
    "64kB",
    "anon_fault_alloc",
    "nr_anon",
    "ok",
    "errno",
    "EINVAL",
    "ram=1G",
    "swap=0",
    "mmap",
    "mremap",
    "fork",
];

fn statement() -> impl Strategy<Value = String> {
    (prop::sample::select(HEADS), prop::collection::vec(prop::sample::select(ARGS), 0..7))
        .prop_map(|(head, args)| format!("{head} {}", args.join(" ")))
}

/// A valid prefix that defines processes, regions and a pin, so that soups
/// after it reach the planner.
const PRELUDE: &str = "p1: A = mmap 4M\np1: B = mmap 2M\np2 = fork p1\np1: pin P1 = A\n";

#[track_caller]
fn parse_never_panics(text: &str) {
    match parse_scenario("fuzz.thp", text) {
        Ok(s) => {
            // Every step's table holds live regions only, and the totals stay
            // within the documented bounds.
            assert!(s.steps.len() <= thpsim_workload::scenario::MAX_STEPS);
            for step in &s.steps {
                if let StepKind::Expect { regions, .. } | StepKind::Observe(regions) = &step.kind {
                    assert!(regions.iter().all(|r| r.len > 0 && r.len <= thpsim_workload::plan::MAX_SIZE));
                }
            }
        }
        Err(e) => {
            // The error renders and points inside its line.
            let shown = e.to_string();
            assert!(shown.contains(": error: "), "{shown}");
            assert!(e.line >= 1 && e.column >= 1, "{e:?}");
            assert!(e.column as usize <= e.source_line.chars().count() + 2, "{e:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        parse_never_panics(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_token_soups(lines in prop::collection::vec(soup(), 0..8)) {
        parse_never_panics(&lines.join("\n"));
        parse_never_panics(&format!("{PRELUDE}{}", lines.join("\n")));
    }

    #[test]
    fn random_statements(lines in prop::collection::vec(statement(), 1..12)) {
        // The first bad line ends a parse, so each line also gets a parse of
        // its own after the prelude.
        for line in &lines {
            parse_never_panics(&format!("{PRELUDE}{line}"));
        }
        parse_never_panics(&format!("{PRELUDE}{}", lines.join("\n")));
    }

    #[test]
    fn mutated_examples(which in 0usize..3, at in any::<prop::sample::Index>(), insert in soup(), cut in 0usize..20) {
        let examples = [
            include_str!("../../../scenarios/examples/fault_pmd.thp"),
            include_str!("../../../scenarios/examples/fork_child_write.thp"),
            include_str!("../../../scenarios/examples/munmap_partial.thp"),
        ];
        let text = examples[which];
        let mut pos = at.index(text.len() + 1);
        while !text.is_char_boundary(pos) {
            pos -= 1;
        }
        let end = (pos + cut).min(text.len());
        let end = (end..=text.len()).find(|&e| text.is_char_boundary(e)).unwrap_or(text.len());
        let mutated = format!("{}{insert}{}", &text[..pos], &text[end..]);
        parse_never_panics(&mutated);
    }
}

#[test]
fn hostile_inputs() {
    for text in [
        "",
        "\n\n\n",
        "#",
        ":",
        "p1:",
        "p1: A = mmap 1T\np1: B = mremap A 1T 1T",
        "p1: A = mmap 4K align=1T offset=4K",
        "p1: A = mmap 18446744073709551615",
        "p1: A = mmap 1T align=1T\np1: B = mmap 1T align=1T at=A+1T",
        "p1: A = mmap 2M\nexpect p1 A page present pages=18446744073709551615",
        "p1: A = mmap 2M\nexpect p1 A page mapcount=99999999999999999999",
        "p1: A = mmap 2M\nexpect vmstat thp_split_pmd +9223372036854775808",
        "p1: A = mmap 2M\nexpect vmstat thp_split_pmd -9223372036854775808",
        "p1: A = mmap 2M\np1: touch A write 18446744073709551615",
        "p1: A = mmap 2M\np1: touch A random=18446744073709551615 seed=18446744073709551615",
        "p1: A = mmap 2M\nexpect p1 A Rss 18446744073709551615 kB",
        "p1: A = mmap 2M\nexpect p1 A Rss 18014398509481984 kB",
        "p1: A = mmap 2M\nexpect p1 A+18446744073709551615 page present",
        "p1: A = mmap 2M\nexpect p1 A page same_folio=A+",
        "p1: A = mmap 2M\nexpect p1 A page same_folio=p1:",
        "p1: A = mmap 2M\nexpect p1 A page same_folio=:",
        "\u{feff}p1: A = mmap 2M",
        "p1: A = mmap 2M\np1: B = mremap A+ 2M",
        "p1: é = mmap 2M",
        "p1: A = mmap 2M\np1: touch é",
        "p1: A = mmap 2M\np1: touch A+é",
    ] {
        parse_never_panics(text);
    }
    // Forks until the process limit, then one more.
    let mut text = String::from("p0: A = mmap 2M\n");
    for i in 1..300 {
        text.push_str(&format!("p{i} = fork p0\n"));
    }
    let err = parse_scenario("fuzz.thp", &text).unwrap_err();
    assert_eq!((err.line, err.message.as_str()), (257, "too many processes: a scenario may create at most 256"));
    // Regions until the region limit.
    let mut text = String::new();
    for i in 0..5000 {
        text.push_str(&format!("p1: R{i} = mmap 4K align=4K\n"));
    }
    let err = parse_scenario("fuzz.thp", &text).unwrap_err();
    assert_eq!(
        (err.line, err.message.as_str()),
        (4097, "too many regions: at most 4096 may be alive at once over all processes")
    );
}
