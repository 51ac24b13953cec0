//! What each statement of the scenario language compiles to.

use thpsim_mm::Errno;
use thpsim_workload::expect::fmt_size;
use thpsim_workload::plan::{GUARD_GAP, MMAP_BASE};
use thpsim_workload::{
    parse_scenario, Access, Advice, Cmp, CmpOp, Expectation, ExpectedState, Fill, Machine, Op, PageProp, PinRef, Place,
    ProcId, Prot, RegionRef, Scenario, Setting, SmapsField, StepKind, ThpDisable, TouchPattern,
};

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const G: u64 = 1 << 30;
const P1: ProcId = ProcId(0);
const P2: ProcId = ProcId(1);

#[track_caller]
fn parse(text: &str) -> Scenario {
    parse_scenario("test.thp", text).unwrap_or_else(|e| panic!("{e}"))
}

/// The operations of a scenario, in order.
fn ops(s: &Scenario) -> Vec<Op> {
    s.steps
        .iter()
        .filter_map(|step| match &step.kind {
            StepKind::Op(op) => Some(op.clone()),
            _ => None,
        })
        .collect()
}

/// The expectations of a scenario, in order.
fn expectations(s: &Scenario) -> Vec<Expectation> {
    s.steps
        .iter()
        .filter_map(|step| match &step.kind {
            StepKind::Expect { expectation, .. } => Some(expectation.clone()),
            _ => None,
        })
        .collect()
}

#[track_caller]
fn only_expectation(text: &str) -> Expectation {
    let s = parse(text);
    let mut all = expectations(&s);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn names(regions: &[RegionRef]) -> Vec<String> {
    regions.iter().map(|r| format!("{}:{}@{:#x}+{}", r.proc_name, r.name, r.addr, fmt_size(r.len))).collect()
}

/// The statement sketch of the brief, all of it.
const TOUR: &str = "\
# comment
machine ram=16G swap=0            # optional, first statement only
set enabled = always
set hugepages-64kB/enabled = inherit
set khugepaged/max_ptes_none = 511
set use_zero_page = 1
p1: A = mmap 4M
p1: B = mmap 2M align=2M offset=4K prot=r
p1: madvise A hugepage
p1: touch A write
p1: touch A+4K write 1
p1: touch A+1M 64K
p1: touch A read every=4
p1: touch A write random=100 seed=7
p1: touch A write zero
p1: munmap A+2M 4K
p1: mprotect A+1M 4K r
p1: C = mremap A 4M 8M
p1: prctl thp_disable except_advised
p1: pin P1 = C+0 2M longterm
unpin P1
p2 = fork p1
p2: exit
khugepaged 2
shrink
observe
observe p1 C
expect p1 C AnonHugePages 2048kB
expect p1 VmPTE 8kB
expect vmstat thp_split_pmd +1
expect vmstat thp_split_pmd = 0
expect mthp 64kB anon_fault_alloc +4
expect p1 C+4K page present order=9 pmd mapcount=1 exclusive
expect p1 C folios order=9 count=2
expect ok
expect errno EINVAL
";

#[test]
fn the_tour_compiles_to_these_operations() {
    let s = parse(TOUR);
    assert_eq!(s.name, "test");
    assert_eq!(s.machine, Machine { ram: 16 * G, swap: 0 });
    assert_eq!(s.procs, ["p1", "p2"]);
    let a = MMAP_BASE;
    let b = a + 4 * M + GUARD_GAP + 4 * K;
    let all = ops(&s);
    let set = |path: &str, value: &str| Op::Set { setting: Setting::from_sysfs(path, value).unwrap() };
    let touch = |addr, len, access, fill, pattern| Op::Touch { proc: P1, addr, len, access, fill, pattern };
    // The cursor after B: B ends at 6M + 4K + 2M, plus the 2M gap, aligned up to 2M.
    let c = (b + 2 * M + GUARD_GAP).next_multiple_of(2 * M);
    assert_eq!(
        all,
        vec![
            set("enabled", "always"),
            set("hugepages-64kB/enabled", "inherit"),
            set("khugepaged/max_ptes_none", "511"),
            set("use_zero_page", "1"),
            Op::Spawn { proc: P1 },
            Op::Mmap { proc: P1, addr: a, len: 4 * M, prot: Prot::READ_WRITE },
            Op::Mmap { proc: P1, addr: b, len: 2 * M, prot: Prot::READ },
            Op::Madvise { proc: P1, addr: a, len: 4 * M, advice: Advice::HugePage },
            touch(a, 4 * M, Access::Write, Fill::NonZero, TouchPattern::All),
            touch(a + 4 * K, 4 * K, Access::Write, Fill::NonZero, TouchPattern::All),
            touch(a + M, 64 * K, Access::Write, Fill::NonZero, TouchPattern::All),
            touch(a, 4 * M, Access::Read, Fill::NonZero, TouchPattern::EveryNth(4)),
            touch(a, 4 * M, Access::Write, Fill::NonZero, TouchPattern::Random { count: 100, seed: 7 }),
            touch(a, 4 * M, Access::Write, Fill::Zero, TouchPattern::All),
            Op::Munmap { proc: P1, addr: a + 2 * M, len: 4 * K },
            Op::Mprotect { proc: P1, addr: a + M, len: 4 * K, prot: Prot::READ },
            Op::Mremap { proc: P1, old_addr: a, old_len: 4 * M, new_len: 8 * M, new_addr: Some(c) },
            Op::Prctl { proc: P1, disable: ThpDisable::ExceptAdvised },
            Op::Pin { proc: P1, pin: PinRef(0), addr: c, len: 2 * M, longterm: true },
            Op::Unpin { pin: PinRef(0) },
            Op::Fork { parent: P1, child: P2 },
            Op::Exit { proc: P2 },
            Op::Khugepaged { full_scans: 2 },
            Op::Shrink,
        ]
    );
    // After the mremap A is gone (all of it moved) and C is where it went.
    let observes: Vec<&Vec<RegionRef>> = s
        .steps
        .iter()
        .filter_map(|step| match &step.kind {
            StepKind::Observe(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(names(observes[0]), [format!("p1:B@{b:#x}+2M"), format!("p1:C@{c:#x}+8M")]);
    assert_eq!(names(observes[1]), [format!("p1:C@{c:#x}+8M")]);
    assert_eq!(names(&s.final_regions), names(observes[0]));

    let place = |region: &str, offset| Place { proc: P1, proc_name: "p1".into(), region: region.into(), offset };
    assert_eq!(
        expectations(&s),
        vec![
            Expectation::Smaps {
                at: place("C", 0),
                len: 8 * M,
                explicit_len: false,
                field: SmapsField::AnonHugePages,
                cmp: Cmp::eq(2048)
            },
            Expectation::VmPte { proc: P1, proc_name: "p1".into(), cmp: Cmp::eq(8) },
            Expectation::Vmstat { counter: "thp_split_pmd".into(), cmp: Cmp::eq(1) },
            Expectation::Vmstat { counter: "thp_split_pmd".into(), cmp: Cmp::eq(0) },
            Expectation::Mthp { size_kb: 64, stat: "anon_fault_alloc".into(), cmp: Cmp::eq(4) },
            Expectation::Page {
                at: place("C", 4 * K),
                pages: 1,
                props: vec![
                    PageProp::State(ExpectedState::Present),
                    PageProp::Order(9),
                    PageProp::Pmd(true),
                    PageProp::Mapcount(Cmp::eq(1)),
                    PageProp::Exclusive(true),
                ]
            },
            Expectation::Folios {
                at: place("C", 0),
                len: 8 * M,
                explicit_len: false,
                order: Some(9),
                count: Cmp::eq(2)
            },
            Expectation::Ok,
            Expectation::Errno(Errno::Inval),
        ]
    );
}

#[test]
fn steps_keep_their_line_and_statement() {
    let s = parse("# header\n\np1: A = mmap 2M   # a comment\n  p1: touch A\r\n");
    let lines: Vec<(u32, &str)> = s.steps.iter().map(|st| (st.line, st.source.as_str())).collect();
    // The first statement of a process also spawns it, on the same line.
    assert_eq!(lines, [(3, "p1: A = mmap 2M"), (3, "p1: A = mmap 2M"), (4, "p1: touch A")]);
}

#[test]
fn a_byte_order_mark_and_crlf_line_ends_are_fine() {
    let s = parse("\u{feff}p1: A = mmap 2M\r\np1: touch A\r\n");
    assert_eq!(s.procs, ["p1"]);
    assert_eq!(s.steps.len(), 3);
}

#[test]
fn machine_defaults_to_16g_and_no_swap() {
    assert_eq!(parse("p1: A = mmap 2M").machine, Machine { ram: 16 * G, swap: 0 });
    assert_eq!(parse("# first\nmachine swap=4G ram=256M").machine, Machine { ram: 256 * M, swap: 4 * G });
}

#[test]
fn sizes_are_binary_and_accept_kb() {
    let s = parse("p1: A = mmap 64kB\np1: B = mmap 8192\np1: C = mmap 1g\np1: D = mmap 3m");
    let lens: Vec<u64> = ops(&s)
        .iter()
        .filter_map(|op| match op {
            Op::Mmap { len, .. } => Some(*len),
            _ => None,
        })
        .collect();
    assert_eq!(lens, [64 * K, 8 * K, G, 3 * M]);
}

// BASE           +6M          +1G+4K
// |A 4M| gap |B 1M, align=1G offset=4K
#[test]
fn planner_places_regions_with_alignment_offset_and_gaps() {
    let s = parse(
        "p1: A = mmap 4M\n\
         p1: B = mmap 1M align=1G offset=4K\n\
         p1: C = mmap 4K align=4K\n\
         p1: D = mmap 2M at=C+4K\n\
         p1: E = mmap 2M",
    );
    let addrs: Vec<u64> = ops(&s)
        .iter()
        .filter_map(|op| match op {
            Op::Mmap { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect();
    let b = MMAP_BASE + G + 4 * K;
    let c = b + M + GUARD_GAP;
    let d = c + 4 * K;
    let e = (d + 2 * M + GUARD_GAP).next_multiple_of(2 * M);
    assert_eq!(addrs, [MMAP_BASE, b, c, d, e]);
}

#[test]
fn fork_copies_the_region_table_to_the_child() {
    let s = parse(
        "p1: A = mmap 2M\n\
         p1: B = mmap 4M\n\
         p2 = fork p1\n\
         p2: munmap B\n\
         p1: C = mmap 2M\n\
         expect p2 A Rss 0\n\
         p3 = fork p2\n\
         observe",
    );
    let tables: Vec<Vec<String>> = s
        .steps
        .iter()
        .filter_map(|st| match &st.kind {
            StepKind::Expect { regions, .. } | StepKind::Observe(regions) => Some(names(regions)),
            _ => None,
        })
        .collect();
    let (a, b, c) = (MMAP_BASE, MMAP_BASE + 4 * M, MMAP_BASE + 10 * M);
    assert_eq!(
        tables[0],
        [format!("p1:A@{a:#x}+2M"), format!("p1:B@{b:#x}+4M"), format!("p1:C@{c:#x}+2M"), format!("p2:A@{a:#x}+2M"),]
    );
    assert_eq!(tables[1][4..], [format!("p3:A@{a:#x}+2M")]);
    assert_eq!(s.procs, ["p1", "p2", "p3"]);
}

#[test]
fn exit_drops_a_process_from_the_table() {
    let s = parse("p1: A = mmap 2M\np2 = fork p1\nexit p1\nobserve");
    let Some(StepKind::Observe(regions)) = s.steps.last().map(|st| &st.kind) else { panic!() };
    assert_eq!(names(regions), [format!("p2:A@{MMAP_BASE:#x}+2M")]);
    assert_eq!(ops(&s)[3], Op::Exit { proc: P1 });
}

#[test]
fn partial_munmap_keeps_the_name_and_whole_munmap_drops_it() {
    let s = parse(
        "p1: A = mmap 4M\n\
         p1: munmap A+1M 4K\n\
         observe\n\
         p1: munmap A 1M\n\
         p1: munmap A+1M\n\
         observe\n\
         p1: A = mmap 2M",
    );
    let tables: Vec<Vec<String>> = s
        .steps
        .iter()
        .filter_map(|st| match &st.kind {
            StepKind::Observe(regions) => Some(names(regions)),
            _ => None,
        })
        .collect();
    assert_eq!(tables[0], [format!("p1:A@{MMAP_BASE:#x}+4M")]);
    assert!(tables[1].is_empty());
    // The name is free again, and the new A goes at a fresh address.
    assert_eq!(
        ops(&s).last(),
        Some(&Op::Mmap { proc: P1, addr: MMAP_BASE + 6 * M, len: 2 * M, prot: Prot::READ_WRITE })
    );
}

#[test]
fn mremap_shrinks_in_place_and_grows_to_a_planned_address() {
    let s = parse(
        "p1: A = mmap 4M\n\
         p1: A = mremap A 2M\n\
         p1: B = mremap A 4M\n\
         p1: C = mremap B+2M 2M 2M align=1G\n\
         p1: D = mremap C 2M at=B+4M\n\
         p1: E = mremap B 2M 2M\n\
         observe",
    );
    let a = MMAP_BASE;
    let b = a + 6 * M; // the cursor after A
    let c = (b + 4 * M + GUARD_GAP).next_multiple_of(G);
    let d = b + 4 * M;
    assert_eq!(
        ops(&s)[2..],
        [
            Op::Mremap { proc: P1, old_addr: a, old_len: 4 * M, new_len: 2 * M, new_addr: None },
            Op::Mremap { proc: P1, old_addr: a, old_len: 2 * M, new_len: 4 * M, new_addr: Some(b) },
            Op::Mremap { proc: P1, old_addr: b + 2 * M, old_len: 2 * M, new_len: 2 * M, new_addr: Some(c) },
            Op::Mremap { proc: P1, old_addr: c, old_len: 2 * M, new_len: 2 * M, new_addr: Some(d) },
            Op::Mremap { proc: P1, old_addr: b, old_len: 2 * M, new_len: 2 * M, new_addr: None },
        ]
    );
    let Some(StepKind::Observe(regions)) = s.steps.last().map(|st| &st.kind) else { panic!() };
    // B was moved away piece by piece; D sits right after where B's first half was.
    assert_eq!(names(regions), [format!("p1:D@{d:#x}+2M"), format!("p1:E@{b:#x}+2M")]);
}

#[test]
fn pins_number_in_creation_order() {
    let s = parse(
        "p1: A = mmap 4M\n\
         p1: pin X = A 2M\n\
         p1: pin Y = A+2M\n\
         p1: unpin X\n\
         p1: pin X = A+1M 4K longterm\n\
         unpin Y",
    );
    let pins: Vec<Op> = ops(&s).into_iter().filter(|op| matches!(op, Op::Pin { .. } | Op::Unpin { .. })).collect();
    let a = MMAP_BASE;
    assert_eq!(
        pins,
        [
            Op::Pin { proc: P1, pin: PinRef(0), addr: a, len: 2 * M, longterm: false },
            Op::Pin { proc: P1, pin: PinRef(1), addr: a + 2 * M, len: 2 * M, longterm: false },
            Op::Unpin { pin: PinRef(0) },
            Op::Pin { proc: P1, pin: PinRef(2), addr: a + M, len: 4 * K, longterm: true },
            Op::Unpin { pin: PinRef(1) },
        ]
    );
}

#[test]
fn set_accepts_the_sysfs_path_with_or_without_its_prefix() {
    let s = parse(
        "set transparent_hugepage/enabled = madvise\n\
         set /sys/kernel/mm/transparent_hugepage/defrag = defer+madvise\n\
         set khugepaged/max_ptes_none=0",
    );
    assert_eq!(
        ops(&s),
        [
            Op::Set { setting: Setting::from_sysfs("enabled", "madvise").unwrap() },
            Op::Set { setting: Setting::from_sysfs("defrag", "defer+madvise").unwrap() },
            Op::Set { setting: Setting::from_sysfs("khugepaged/max_ptes_none", "0").unwrap() },
        ]
    );
}

#[test]
fn advices_protections_and_prctl_modes() {
    let s = parse(
        "p1: A = mmap 2M prot=none\n\
         p1: madvise A MADV_COLLAPSE\n\
         p1: madvise A populate_write\n\
         p1: mprotect A rwx\n\
         p1: mprotect A w\n\
         p1: prctl thp_disable all\n\
         p1: prctl thp_disable off",
    );
    let o = ops(&s);
    let a = MMAP_BASE;
    assert_eq!(o[1], Op::Mmap { proc: P1, addr: a, len: 2 * M, prot: Prot::NONE });
    assert_eq!(o[2], Op::Madvise { proc: P1, addr: a, len: 2 * M, advice: Advice::Collapse });
    assert_eq!(o[3], Op::Madvise { proc: P1, addr: a, len: 2 * M, advice: Advice::PopulateWrite });
    assert_eq!(
        o[4],
        Op::Mprotect { proc: P1, addr: a, len: 2 * M, prot: Prot { read: true, write: true, exec: true } }
    );
    assert_eq!(
        o[5],
        Op::Mprotect { proc: P1, addr: a, len: 2 * M, prot: Prot { read: false, write: true, exec: false } }
    );
    assert_eq!(o[6], Op::Prctl { proc: P1, disable: ThpDisable::All });
    assert_eq!(o[7], Op::Prctl { proc: P1, disable: ThpDisable::Off });
}

#[test]
fn touch_takes_a_page_count_after_the_access() {
    let s = parse("p1: A = mmap 2M\np1: touch A+8K read 3 every=2\np1: touch A+1M\np1: touch A random=5");
    let a = MMAP_BASE;
    assert_eq!(
        ops(&s)[2..],
        [
            Op::Touch {
                proc: P1,
                addr: a + 8 * K,
                len: 12 * K,
                access: Access::Read,
                fill: Fill::NonZero,
                pattern: TouchPattern::EveryNth(2)
            },
            Op::Touch {
                proc: P1,
                addr: a + M,
                len: M,
                access: Access::Write,
                fill: Fill::NonZero,
                pattern: TouchPattern::All
            },
            Op::Touch {
                proc: P1,
                addr: a,
                len: 2 * M,
                access: Access::Write,
                fill: Fill::NonZero,
                pattern: TouchPattern::Random { count: 5, seed: 0 }
            },
        ]
    );
}

#[test]
fn observe_selects_processes_and_regions() {
    let s = parse("p1: A = mmap 2M\np1: B = mmap 2M\np2: C = mmap 2M\nobserve p1 B A\nobserve p2\nobserve");
    let tables: Vec<Vec<String>> = s
        .steps
        .iter()
        .filter_map(|st| match &st.kind {
            StepKind::Observe(regions) => Some(regions.iter().map(|r| format!("{}:{}", r.proc_name, r.name)).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(tables, [vec!["p1:B", "p1:A"], vec!["p2:C"], vec!["p1:A", "p1:B", "p2:C"]]);
}

#[test]
fn expectation_forms() {
    let setup = "p1: A = mmap 4M\np2 = fork p1\n";
    let place = |proc: ProcId, _name: &str, offset| Place {
        proc,
        proc_name: if proc == P1 { "p1".into() } else { "p2".into() },
        region: "A".into(),
        offset,
    };
    let cases: Vec<(&str, Expectation)> = vec![
        (
            "expect p1 A+2M 1M Rss >= 4kB",
            Expectation::Smaps {
                at: place(P1, "A", 2 * M),
                len: M,
                explicit_len: true,
                field: SmapsField::Rss,
                cmp: Cmp { op: CmpOp::Ge, value: 4 },
            },
        ),
        (
            "expect p2 A Swap 2048 kB",
            Expectation::Smaps {
                at: place(P2, "A", 0),
                len: 4 * M,
                explicit_len: false,
                field: SmapsField::Swap,
                cmp: Cmp::eq(2048),
            },
        ),
        (
            "expect p1 A Anonymous 2M",
            Expectation::Smaps {
                at: place(P1, "A", 0),
                len: 4 * M,
                explicit_len: false,
                field: SmapsField::Anonymous,
                cmp: Cmp::eq(2048),
            },
        ),
        (
            "expect vmstat pswpout >= 512",
            Expectation::Vmstat { counter: "pswpout".into(), cmp: Cmp { op: CmpOp::Ge, value: 512 } },
        ),
        (
            "expect vmstat nr_anon_pages -512",
            Expectation::Vmstat { counter: "nr_anon_pages".into(), cmp: Cmp::eq(-512) },
        ),
        (
            "expect mthp 2M split != 0",
            Expectation::Mthp { size_kb: 2048, stat: "split".into(), cmp: Cmp { op: CmpOp::Ne, value: 0 } },
        ),
        (
            "expect p2 A+4K page swapped !pmd !exclusive !zero mapcount<2 pages=3",
            Expectation::Page {
                at: place(P2, "A", 4 * K),
                pages: 3,
                props: vec![
                    PageProp::State(ExpectedState::Swapped),
                    PageProp::Pmd(false),
                    PageProp::Exclusive(false),
                    PageProp::Zero(false),
                    PageProp::Mapcount(Cmp { op: CmpOp::Lt, value: 2 }),
                ],
            },
        ),
        (
            "expect p2 A+2M page zero same_folio=p1:A+2M pages=all",
            Expectation::Page {
                at: place(P2, "A", 2 * M),
                pages: 512,
                props: vec![PageProp::Zero(true), PageProp::SameFolio { same: true, with: place(P1, "A", 2 * M) }],
            },
        ),
        (
            "expect p2 A page none !same_folio=A+4K",
            Expectation::Page {
                at: place(P2, "A", 0),
                pages: 1,
                props: vec![
                    PageProp::State(ExpectedState::None),
                    PageProp::SameFolio { same: false, with: place(P2, "A", 4 * K) },
                ],
            },
        ),
        (
            "expect p2 A page same_folio!=A+4K",
            Expectation::Page {
                at: place(P2, "A", 0),
                pages: 1,
                props: vec![PageProp::SameFolio { same: false, with: place(P2, "A", 4 * K) }],
            },
        ),
        (
            "expect p1 A+2M 2M folios count>=1",
            Expectation::Folios {
                at: place(P1, "A", 2 * M),
                len: 2 * M,
                explicit_len: true,
                order: None,
                count: Cmp { op: CmpOp::Ge, value: 1 },
            },
        ),
        ("expect errno ENOMEM", Expectation::Errno(Errno::NoMem)),
    ];
    for (line, want) in cases {
        let got = only_expectation(&format!("{setup}{line}"));
        assert_eq!(got, want, "{line}");
    }
}

/// Printing an expectation gives a line that parses back to it, so failure
/// messages quote valid scenario text.
#[test]
fn expectations_print_as_scenario_text() {
    let setup = "p1: A = mmap 4M\np2 = fork p1\n";
    let lines = [
        ("expect p1 A+2M 1M Rss >= 4kB", "p1 A+2M 1M Rss >= 4 kB"),
        ("expect p1 A AnonHugePages 2048kB", "p1 A AnonHugePages 2048 kB"),
        ("expect p1 VmPTE 8 kB", "p1 VmPTE 8 kB"),
        ("expect vmstat thp_split_pmd +1", "vmstat thp_split_pmd +1"),
        ("expect vmstat thp_split_pmd = 0", "vmstat thp_split_pmd = 0"),
        ("expect vmstat thp_split_pmd >= 2", "vmstat thp_split_pmd >= 2"),
        ("expect mthp 64K nr_anon -1", "mthp 64kB nr_anon -1"),
        (
            "expect p2 A+4K page present order=9 !pmd mapcount>=1 exclusive zero same_folio=p1:A pages=2",
            "p2 A+4K page present order=9 !pmd mapcount>=1 exclusive zero same_folio=p1:A pages=2",
        ),
        ("expect p1 A 2M folios order=0 count=3", "p1 A 2M folios order=0 count=3"),
        ("expect ok", "ok"),
        ("expect errno EAGAIN", "errno EAGAIN"),
    ];
    for (line, printed) in lines {
        let exp = only_expectation(&format!("{setup}{line}"));
        assert_eq!(exp.to_string(), printed);
        let again = only_expectation(&format!("{setup}expect {exp}"));
        assert_eq!(again, exp, "{line}");
    }
}

#[test]
fn a_process_may_be_created_by_prctl_and_reused_names_are_fine_after_exit_of_others() {
    let s = parse("p1: prctl thp_disable except_advised\np1: A = mmap 2M\np2 = fork p1\np2: exit\np3 = fork p1");
    assert_eq!(s.procs, ["p1", "p2", "p3"]);
    assert_eq!(ops(&s)[0], Op::Spawn { proc: P1 });
    assert_eq!(ops(&s)[5], Op::Fork { parent: P1, child: ProcId(2) });
}

#[test]
fn mremap_may_keep_the_name_it_moves() {
    let s = parse("p1: A = mmap 2M\np1: A = mremap A 4M\nexpect p1 A Rss 0");
    let Some(StepKind::Expect { regions, .. }) = s.steps.last().map(|st| &st.kind) else { panic!() };
    assert_eq!(names(regions), [format!("p1:A@{:#x}+4M", MMAP_BASE + 4 * M)]);
}

#[test]
fn policy_and_inject_statements_set_up_the_scenario() {
    use thpsim_mm::config::{Deposit, PmdCow};
    use thpsim_mm::fault_inject::{FailAttr, FailPoint};
    use thpsim_mm::Policy;
    let s = parse(
        "machine ram=1G\npolicy deposit = eager\n# comment\npolicy pmd_cow = off\ninject pgtable nth=3\n\
         inject folio probability=10 interval=2 times=5 seed=7\np1: A = mmap 2M\n",
    );
    let policies: Vec<(u32, Policy)> = s.policies.iter().map(|p| (p.line, p.policy)).collect();
    assert_eq!(policies, [(2, Policy::Deposit(Deposit::Eager)), (4, Policy::PmdCow(PmdCow::Off))]);
    assert_eq!(s.injections.len(), 2);
    assert_eq!((s.injections[0].line, s.injections[0].point), (5, FailPoint::PageTable));
    assert_eq!(s.injections[0].attr(), FailAttr::nth(3));
    assert_eq!(s.injections[1].point, FailPoint::Folio);
    assert_eq!(s.injections[1].attr(), FailAttr { probability: 10, interval: 2, times: Some(5), seed: 7 });
    assert_eq!(
        parse("inject folio\n").injections[0].attr(),
        FailAttr { probability: 100, interval: 1, times: None, seed: 0 }
    );
    // The statements are not steps.
    assert_eq!(s.steps.len(), 2);

    let mut s = parse("policy deposit = eager\n");
    s.override_policy(Policy::PmdCow(PmdCow::Off));
    s.override_policy(Policy::Deposit(Deposit::Eager));
    let lines: Vec<(u32, &str)> = s.policies.iter().map(|p| (p.line, p.policy.name())).collect();
    assert_eq!(lines, [(0, "pmd_cow"), (0, "deposit")]);
}

#[test]
fn observable_expectations() {
    use thpsim_workload::VmaProp;
    let setup = "p1: A = mmap 4M\np2 = fork p1\n";
    let at = |offset| Place { proc: P1, proc_name: "p1".into(), region: "A".into(), offset };
    let cases: Vec<(&str, Expectation)> = vec![
        (
            "expect p1 A Pss 1024kB",
            Expectation::Smaps {
                at: at(0),
                len: 4 * M,
                explicit_len: false,
                field: SmapsField::Pss,
                cmp: Cmp::eq(1024),
            },
        ),
        (
            "expect p1 A Private_Dirty >= 4kB",
            Expectation::Smaps {
                at: at(0),
                len: 4 * M,
                explicit_len: false,
                field: SmapsField::PrivateDirty,
                cmp: Cmp { op: CmpOp::Ge, value: 4 },
            },
        ),
        (
            "expect p1 A LazyFree 0",
            Expectation::Smaps {
                at: at(0),
                len: 4 * M,
                explicit_len: false,
                field: SmapsField::LazyFree,
                cmp: Cmp::eq(0),
            },
        ),
        ("expect vmstat pglazyfree +512", Expectation::Vmstat { counter: "pglazyfree".into(), cmp: Cmp::eq(512) }),
        (
            "expect khugepaged pages_collapsed +1",
            Expectation::Khugepaged { counter: "pages_collapsed".into(), cmp: Cmp::eq(1) },
        ),
        ("expect meminfo PageTables +8kB", Expectation::Meminfo { field: "PageTables".into(), cmp: Cmp::eq(8) }),
        ("expect meminfo PageTables -4 kB", Expectation::Meminfo { field: "PageTables".into(), cmp: Cmp::eq(-4) }),
        (
            "expect meminfo PageTables >= 0",
            Expectation::Meminfo { field: "PageTables".into(), cmp: Cmp { op: CmpOp::Ge, value: 0 } },
        ),
        ("expect mthp 2M swpin = 0", Expectation::Mthp { size_kb: 2048, stat: "swpin".into(), cmp: Cmp::eq(0) }),
        (
            "expect p1 A+2M 1M vmas count=1",
            Expectation::Vmas { at: at(2 * M), len: M, explicit_len: true, count: Cmp::eq(1) },
        ),
        (
            "expect p1 A+1M vma start=A end=A+4M !THPeligible hg !nh",
            Expectation::Vma {
                at: at(M),
                props: vec![
                    VmaProp::Start(at(0)),
                    VmaProp::End(at(4 * M)),
                    VmaProp::ThpEligible(false),
                    VmaProp::Flag { name: "hg".into(), set: true },
                    VmaProp::Flag { name: "nh".into(), set: false },
                ],
            },
        ),
        ("expect p1 A vma thp_eligible", Expectation::Vma { at: at(0), props: vec![VmaProp::ThpEligible(true)] }),
        (
            "expect p1 A page pmd_mapped !zero_page lru !swapbacked !swapcache",
            Expectation::Page {
                at: at(0),
                pages: 1,
                props: vec![
                    PageProp::Pmd(true),
                    PageProp::Zero(false),
                    PageProp::Lru(true),
                    PageProp::SwapBacked(false),
                    PageProp::SwapCache(false),
                ],
            },
        ),
    ];
    for (line, want) in cases {
        let exp = only_expectation(&format!("{setup}{line}"));
        assert_eq!(exp, want, "{line}");
        // Printed back, it parses to the same expectation.
        let again = only_expectation(&format!("{setup}expect {exp}"));
        assert_eq!(again, exp, "{line} printed as {exp}");
    }
}

#[test]
fn mlock_mmap_fixed_and_mremap_in_place() {
    let s = parse(
        "p1: A = mmap 4M\np1: mlock A+2M 1M\np1: munlock A\np1: B = mmap 1M at=A+1M fixed prot=r\n\
         p1: C = mremap A 1M 512K inplace\np1: madvise C wipeonfork\n",
    );
    let a = MMAP_BASE;
    assert_eq!(
        ops(&s)[2..],
        [
            Op::Mlock { proc: P1, addr: a + 2 * M, len: M },
            Op::Munlock { proc: P1, addr: a, len: 4 * M },
            Op::MmapFixed { proc: P1, addr: a + M, len: M, prot: Prot::READ },
            Op::MremapInPlace { proc: P1, old_addr: a, old_len: M, new_len: 512 * K },
            Op::Madvise { proc: P1, addr: a, len: 512 * K, advice: Advice::WipeOnFork },
        ]
    );
    // B took A+1M..A+2M from A, and C A's first 1M; A keeps its name (and
    // its original range) for the 2M after B.
    assert_eq!(
        names(&s.final_regions),
        vec![format!("p1:A@{a:#x}+4M"), format!("p1:B@{:#x}+1M", a + M), format!("p1:C@{a:#x}+512K")]
    );
}

#[test]
fn touch_pattern_and_content() {
    use thpsim_workload::{pattern_tag, ContentWant};
    let s = parse("p1: A = mmap 2M\np1: touch A write every=2 pattern=T\nexpect p1 A+4K 8K content pattern=T\nexpect p1 A content zero\n");
    assert_eq!(
        ops(&s)[2],
        Op::Touch {
            proc: P1,
            addr: MMAP_BASE,
            len: 2 * M,
            access: Access::Write,
            fill: Fill::Pattern(pattern_tag("T")),
            pattern: TouchPattern::EveryNth(2),
        }
    );
    let at = |offset| Place { proc: P1, proc_name: "p1".into(), region: "A".into(), offset };
    let exps = expectations(&s);
    assert_eq!(
        exps,
        vec![
            Expectation::Content {
                at: at(4 * K),
                len: 8 * K,
                explicit_len: true,
                want: ContentWant::Pattern { name: "T".into(), tag: pattern_tag("T") },
            },
            Expectation::Content { at: at(0), len: 2 * M, explicit_len: false, want: ContentWant::Zero },
        ]
    );
    assert_eq!(exps[0].to_string(), "p1 A+4K 8K content pattern=T");
    assert_eq!(exps[1].to_string(), "p1 A content zero");
    assert_ne!(pattern_tag("T"), pattern_tag("U"));
}
