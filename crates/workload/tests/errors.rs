//! Every kind of input mistake gets its line, column and a message saying
//! what was expected and what was found.

use thpsim_workload::parse_scenario;

/// Parses `text` as `scenarios/t.thp` and checks the error's position and
/// message.
#[track_caller]
fn check(text: &str, line: u32, column: u32, message: &str) {
    let err = match parse_scenario("scenarios/t.thp", text) {
        Ok(s) => panic!("parsed without error into {} steps: {:?}", s.steps.len(), text.get(..200).unwrap_or(text)),
        Err(err) => err,
    };
    assert_eq!(err.file, "scenarios/t.thp");
    assert_eq!((err.line, err.column, err.message.as_str()), (line, column, message), "\n{err}");
    let source = text.split('\n').nth(line as usize - 1).unwrap_or_default();
    assert_eq!(err.source_line, source.trim_end_matches('\r'));
}

const A2M: &str = "p1: A = mmap 2M\n";

#[test]
fn the_error_points_at_the_token_under_the_line() {
    let err = parse_scenario("scenarios/t.thp", "# x\n\tp1: A = mmap 2MB  # a comment").unwrap_err();
    assert_eq!(
        err.to_string(),
        "scenarios/t.thp:2:15: error: expected a size such as 4K, 2M, 1G or 64kB, found \"2MB\" \
         (units are binary and written K, M, G, T or kB)\n\
         \x20 | \tp1: A = mmap 2MB  # a comment\n\
         \x20 | \t             ^"
    );
}

#[test]
fn unknown_statements_and_operations() {
    check(
        "p1: A = mmap 2M\nfoo bar",
        2,
        1,
        "expected a statement (machine, policy, inject, set, khugepaged, shrink, observe, expect, unpin, exit, `<process>: ...` or \
         `<child> = fork <parent>`), found \"foo\"",
    );
    check(
        "obsrve",
        1,
        1,
        "expected a statement (machine, policy, inject, set, khugepaged, shrink, observe, expect, unpin, exit, `<process>: ...` or \
         `<child> = fork <parent>`), found \"obsrve\" (did you mean \"observe\"?)",
    );
    check(
        "touch A",
        1,
        1,
        "expected a statement (machine, policy, inject, set, khugepaged, shrink, observe, expect, unpin, exit, `<process>: ...` or \
         `<child> = fork <parent>`), found \"touch\" (touch is an operation of a process: `p1: touch ...`)",
    );
    check(
        "= 3",
        1,
        1,
        "expected a statement: machine, policy, inject, set, khugepaged, shrink, observe, expect, unpin, exit, `<process>: \
         <operation>` or `<child> = fork <parent>`, found \"=\"",
    );
    check(
        &format!("{A2M}p1: mmapp A"),
        2,
        5,
        "expected an operation (mmap, munmap, mprotect, madvise, mremap, mlock, munlock, touch, prctl, pin, unpin, \
         exit), found \"mmapp\" (did you mean \"mmap\"?)",
    );
    check("p1: mmap 2M", 1, 5, "mmap makes a new region and needs its name: `p1: A = mmap ...`");
    check("p1: A = mmop 2M", 1, 9, "expected mmap or mremap, found \"mmop\" (did you mean \"mmap\"?)");
    check("A = mmap 2M", 1, 5, "expected fork, found \"mmap\" (regions belong to a process: `p1: A = mmap ...`)");
    check(&format!("{A2M}p1:"), 2, 4, "expected an operation such as mmap, touch or madvise, found end of line");
    check(&format!("{A2M}shrink now"), 2, 8, "expected end of line, found \"now\"");
}

#[test]
fn machine_must_come_first() {
    check(
        &format!("{A2M}set enabled = always\nmachine ram=1G"),
        3,
        1,
        "machine must be the first statement of a scenario",
    );
    check("machine ram=1G\nmachine ram=2G", 2, 1, "machine must be the first statement of a scenario");
    check("machine ram=1G disk=2G", 1, 16, "expected ram= or swap=, found \"disk\"");
    check("machine ram=1G ram=2G", 1, 16, "ram= is given twice");
    check("machine ram=0", 1, 13, "the RAM size must not be zero");
    check("machine ram", 1, 9, "expected ram=<size> or swap=<size>, found \"ram\"");
}

#[test]
fn unknown_and_dead_processes() {
    check(
        &format!("{A2M}expect p3 A Rss 0"),
        2,
        8,
        "there is no process named \"p3\" (did you mean \"p1\"?); expect takes ok, errno, vmstat, mthp, khugepaged, meminfo or a process",
    );
    check(&format!("{A2M}p2 = fork p3"), 2, 11, "there is no process named \"p3\" (did you mean \"p1\"?)");
    check("p1: exit", 1, 1, "there is no process named \"p1\"");
    check("exit p1", 1, 6, "there is no process named \"p1\"");
    check(
        &format!("{A2M}p2 = fork p1\np2: exit\np2: touch A"),
        4,
        1,
        "p2 exited at line 3 and cannot be used any more",
    );
    check(&format!("{A2M}exit p1\nobserve p1"), 3, 9, "p1 exited at line 2 and cannot be used any more");
    check(
        &format!("{A2M}p2 = fork p1\nexit p2\np2 = fork p1"),
        4,
        1,
        "p2 exited at line 3; a new process needs a new name",
    );
}

#[test]
fn unknown_regions() {
    check(&format!("{A2M}p1: touch B"), 2, 11, "p1 has no region named \"B\" (p1 has A)");
    check("p1: prctl thp_disable all\np1: touch A", 2, 11, "p1 has no region named \"A\" (p1 has no regions)");
    check(&format!("{A2M}p1: munmap A\np1: touch A"), 3, 11, "p1 has no region named \"A\" (p1 has no regions)");
    check(&format!("{A2M}observe p1 B"), 2, 12, "p1 has no region named \"B\" (p1 has A)");
    check(&format!("{A2M}p2: touch A"), 2, 11, "p2 has no region named \"A\" (p2 has no regions)");
}

#[test]
fn duplicate_and_reserved_names() {
    check(&format!("{A2M}p1: A = mmap 2M"), 2, 5, "p1 already has a region named A");
    check(&format!("{A2M}p1: B = mmap 2M\np1: B = mremap A 4M"), 3, 5, "p1 already has a region named B");
    check(&format!("{A2M}p1 = fork p1"), 2, 1, "process p1 already exists");
    check(
        &format!("{A2M}p1: pin X = A\np1: pin X = A"),
        3,
        9,
        "pin X is already held; unpin it first or choose another name",
    );
    check("p1: VmPTE = mmap 2M", 1, 5, "\"VmPTE\" is a keyword and cannot be a region name");
    check("expect: A = mmap 2M", 1, 1, "\"expect\" is a keyword and cannot be a process name");
    check(&format!("{A2M}vmstat = fork p1"), 2, 1, "\"vmstat\" is a keyword and cannot be a process name");
    check(
        "p1: 2A = mmap 2M",
        1,
        5,
        "expected a region name (letters, digits and _, starting with a letter, at most 64 characters), found \"2A\"",
    );
}

#[test]
fn sizes() {
    check(
        "p1: A = mmap 2MB",
        1,
        14,
        "expected a size such as 4K, 2M, 1G or 64kB, found \"2MB\" (units are binary and written K, M, G, T or kB)",
    );
    check("p1: A = mmap 2X", 1, 14, "expected a size such as 4K, 2M, 1G or 64kB, found \"2X\"");
    check("p1: A = mmap 6K", 1, 14, "the length 6K is not a multiple of the page size (4K)");
    check(
        "p1: A = mmap 1000",
        1,
        14,
        "the length 1000 is not a multiple of the page size (4K); a bare number is bytes",
    );
    check("p1: A = mmap 0", 1, 14, "the length must not be zero");
    check("p1: A = mmap 2T", 1, 14, "the length 2T is above the limit of 1T");
    check(
        "p1: A = mmap 99999999999999999999",
        1,
        14,
        "expected a size such as 4K, 2M, 1G or 64kB, found \"99999999999999999999\"",
    );
    check("p1: A = mmap 99999999999T", 1, 14, "expected a size such as 4K, 2M, 1G or 64kB, found \"99999999999T\"");
    check("p1: A = mmap", 1, 13, "expected the length to map, such as 2M, found end of line");
}

#[test]
fn offsets_and_lengths_stay_inside_the_region() {
    check(&format!("{A2M}p1: munmap A+2M"), 2, 14, "the offset 2M is outside A, which is 2M long");
    check(&format!("{A2M}p1: munmap A+1K"), 2, 14, "the offset 1K is not a multiple of the page size (4K)");
    check(&format!("{A2M}p1: munmap A+1M 2M"), 2, 17, "A+1M 2M runs past the end of A, which is 2M long");
    check(&format!("{A2M}p1: munmap A 0"), 2, 14, "the length must not be zero");
    check(&format!("{A2M}p1: munmap A+"), 2, 14, "expected a size such as 4K, 2M, 1G or 64kB, found \"\"");
    check(&format!("{A2M}p1: touch A + 4K"), 2, 13, "write the offset without spaces: A+4K");
    check(&format!("{A2M}p1: touch A write 513"), 2, 19, "513 pages from A do not fit in A (512 pages there)");
    check(
        &format!("{A2M}p1: touch A+4K 1"),
        2,
        16,
        "the length 1 is not a multiple of the page size (4K); a bare number is bytes, and a page count goes after \
         read or write: `touch A+4K write 1`",
    );
    check(&format!("{A2M}p1: touch A 8K 2"), 2, 16, "give either a length or a number of pages, not both");
    check(&format!("{A2M}p1: pin X = A+4K 2M"), 2, 18, "A+4K 2M runs past the end of A, which is 2M long");
    check(&format!("{A2M}p1: B = mremap A 4M 8M"), 2, 18, "A 4M runs past the end of A, which is 2M long");
    check(&format!("{A2M}expect p1 A+2M Rss 0"), 2, 13, "the offset 2M is outside A, which is 2M long");
    check(
        &format!("{A2M}expect p1 A page present pages=513"),
        2,
        32,
        "pages= must be from 1 to the 512 pages from A to the end of A",
    );
    check(&format!("{A2M}p1: B = mmap 2M at=A+3M"), 2, 22, "the offset 3M is outside A, which is 2M long");
}

#[test]
fn placement_options() {
    check("p1: A = mmap 2M align=3M", 1, 23, "align= must be a power of two from 4K to 1T, found \"3M\"");
    check("p1: A = mmap 2M align=2K", 1, 23, "align= must be a power of two from 4K to 1T, found \"2K\"");
    check("p1: A = mmap 2M align=2M offset=2M", 1, 33, "offset= must be below align= (2M)");
    check("p1: A = mmap 2M offset=6K", 1, 24, "the offset 6K is not a multiple of the page size (4K)");
    check("p1: A = mmap 2M align=2M align=4M", 1, 26, "align= is given twice");
    check(
        "p1: A = mmap 2M prot=rw-",
        1,
        22,
        "expected a protection: none, r, rw, rwx (or r, w, x in that order), found \"rw-\"",
    );
    check(
        "p1: A = mmap 2M alig=2M",
        1,
        17,
        "expected prot=, align=, offset=, at= or fixed, found \"alig\" (did you mean \"align\"?)",
    );
    check("p1: A = mmap 2M hugepage", 1, 17, "expected prot=, align=, offset=, at= or fixed, found \"hugepage\"");
    check(
        &format!("{A2M}p1: B = mmap 2M at=A+2M align=2M"),
        2,
        31,
        "at= places the region exactly; it cannot be combined with align= or offset=",
    );
    check(
        &format!("{A2M}p1: B = mremap A 2M at=A+1M"),
        2,
        16,
        "the destination 0x200000100000..0x200000300000 overlaps the range being moved 0x200000000000..0x200000200000",
    );
    check(&format!("{A2M}p1: B = mremap A"), 2, 17, "expected the new length, such as 4M, found end of line");
    check(
        &format!("{A2M}p1: B = mremap A 2M prot=r"),
        2,
        21,
        "expected align=, offset=, at= or inplace, found \"prot\"",
    );
}

#[test]
fn planner_limits() {
    // 48 TiB of planned address space holds 47 regions of 1 TiB and their
    // 2 MiB gaps: the 48th would end 94 MiB past the limit.
    let mut text = String::new();
    for i in 0..48 {
        text.push_str(&format!("p1: R{i} = mmap 1T\n"));
    }
    check(
        &text,
        48,
        5,
        "the planner's address space is full: 1099511627776 bytes at 0x4f0005e00000 would end past 0x500000000000",
    );
}

#[test]
fn operation_arguments() {
    check(
        &format!("{A2M}p1: madvise A hugpage"),
        2,
        15,
        "expected an advice (normal, dontneed, free, hugepage, nohugepage, collapse, cold, pageout, populate_read, \
         populate_write, dontfork, dofork, wipeonfork, keeponfork), found \"hugpage\" (did you mean \"hugepage\"?)",
    );
    check(
        &format!("{A2M}p1: madvise A"),
        2,
        14,
        "expected an advice such as hugepage, dontneed or collapse, found end of line",
    );
    check(
        &format!("{A2M}p1: mprotect A rw-"),
        2,
        16,
        "expected a protection: none, r, rw, rwx (or r, w, x in that order), found \"rw-\"",
    );
    check(&format!("{A2M}p1: prctl thp_disable some"), 2, 23, "expected all, except_advised or off, found \"some\"");
    check(&format!("{A2M}p1: prctl thp_enable all"), 2, 11, "expected thp_disable, found \"thp_enable\"");
    check(&format!("{A2M}p1: touch A read zero"), 2, 18, "zero says what a write stores; a read stores nothing");
    check(&format!("{A2M}p1: touch A every=2 random=3"), 2, 21, "every= and random= cannot be combined");
    check(&format!("{A2M}p1: touch A seed=3"), 2, 13, "seed= goes with random=");
    check(&format!("{A2M}p1: touch A random=600"), 2, 13, "random= must be from 1 to the 512 pages of the range");
    check(&format!("{A2M}p1: touch A every=0"), 2, 13, "every= must be at least 1");
    check(&format!("{A2M}p1: touch A write read"), 2, 19, "read or write is given twice");
    check(
        &format!("{A2M}p1: touch A wrte"),
        2,
        13,
        "expected read, write, a number of pages, zero, every=N or random=N, found \"wrte\" (did you mean \"write\"?)",
    );
    check(&format!("{A2M}p1: pin X = A shortterm"), 2, 15, "expected longterm or end of line, found \"shortterm\"");
    check(&format!("{A2M}p1: pin X A"), 2, 11, "expected = and the range to pin, found \"A\"");
    check("khugepaged 0", 1, 12, "the number of full scans must be from 1 to 1000");
    check("khugepaged many", 1, 12, "expected a number of full scans, found \"many\"");
}

#[test]
fn pins() {
    check("unpin X", 1, 7, "there is no pin named X");
    check(&format!("{A2M}p1: pin X = A\nunpin X\nunpin X"), 4, 7, "pin X was already unpinned at line 3");
    check(
        &format!("{A2M}p2 = fork p1\np2: pin X = A\nexit p2\nunpin X"),
        5,
        7,
        "pin X was released when p2 exited at line 4",
    );
    check(&format!("{A2M}p2 = fork p1\np1: pin X = A\np2: unpin X"), 4, 11, "pin X is held by p1, not p2");
}

#[test]
fn settings() {
    check("set enabled = sometimes", 1, 15, "enabled takes always, madvise, never, found \"sometimes\"");
    check(
        "set khugepaged/max_ptes_none = 512",
        1,
        32,
        "khugepaged/max_ptes_none takes a number from 0 to 511, found \"512\"",
    );
    check(
        "set hugepages-64kB/enabled = inheritt",
        1,
        30,
        "hugepages-64kB/enabled takes always, inherit, madvise, never, found \"inheritt\"",
    );
    check("set hugepages-48kB/enabled = never", 1, 5, "there is no hugepages-48kB/enabled: per-size directories are hugepages-<size> for 16kB, 32kB, 64kB, 128kB, 256kB, 512kB, 1024kB, 2048kB");
    check(
        "set enable = always",
        1,
        5,
        "expected a THP setting such as enabled, defrag, khugepaged/max_ptes_none or hugepages-64kB/enabled, found \
         \"enable\" (did you mean \"enabled\"?)",
    );
    check("set shmem_enabled = always", 1, 5, "shmem_enabled is not modelled: thpsim models anonymous memory only");
    check("set hpage_pmd_size = 4096", 1, 5, "hpage_pmd_size is read-only");
    check("set enabled always", 1, 13, "expected = and a value, found \"always\"");
    check("set enabled = always madvise", 1, 22, "expected end of line, found \"madvise\"");
}

#[test]
fn expectations() {
    check("expect ok", 1, 8, "expect ok checks the previous operation, and there is none yet");
    check("expect errno ENOMEM", 1, 8, "expect errno checks the previous operation, and there is none yet");
    check(
        &format!("{A2M}expect errno ENOENT"),
        2,
        14,
        "expected an errno (EPERM, ESRCH, EAGAIN, ENOMEM, EFAULT, EBUSY, EEXIST, EINVAL), found \"ENOENT\"",
    );
    check(
        "expect vmstat thp_split_pmds +1",
        1,
        15,
        "expected a /proc/vmstat counter thpsim observes (nr_anon_pages, nr_anon_transparent_hugepages, \
         thp_fault_alloc, thp_fault_fallback, thp_fault_fallback_charge, thp_collapse_alloc, \
         thp_collapse_alloc_failed, thp_split_page, thp_split_page_failed, thp_deferred_split_page, \
         thp_underused_split_page, thp_split_pmd, thp_scan_exceed_none_pte, thp_scan_exceed_swap_pte, \
         thp_scan_exceed_share_pte, thp_zero_page_alloc, thp_zero_page_alloc_failed, thp_swpout, \
         thp_swpout_fallback, pswpin, pswpout, pgfault, pgmajfault, pglazyfree, pglazyfreed, nr_page_table_pages, \
         nr_swapcached), found \"thp_split_pmds\" (did you mean \"thp_split_pmd\"?)",
    );
    check(
        "expect vmstat thp_split_pmd 1",
        1,
        29,
        "expected a change such as +1, -1 or = 0 (counters compare as changes since the scenario started), found \"1\"",
    );
    check(
        "expect vmstat thp_split_pmd = x",
        1,
        31,
        "expected a change such as +1, -1 or = 0 (counters compare as changes since the scenario started), found \"x\"",
    );
    check(
        "expect mthp 48kB anon_fault_alloc +1",
        1,
        13,
        "expected a folio size (16kB, 32kB, 64kB, 128kB, 256kB, 512kB, 1024kB, 2048kB), found \"48kB\"",
    );
    check(
        "expect mthp 64kB anon_fault +1",
        1,
        18,
        "expected a per-size stat (anon_fault_alloc, anon_fault_fallback, anon_fault_fallback_charge, swpout, \
         swpout_fallback, split, split_failed, split_deferred, nr_anon, nr_anon_partially_mapped, swpin, swpin_fallback), found \
         \"anon_fault\"",
    );
    check(
        &format!("{A2M}expect p1 A AnonHugePages 2048"),
        2,
        27,
        "write the unit: 2048kB or 2048 kB (sizes here are in kB, as smaps prints them)",
    );
    check(
        &format!("{A2M}expect p1 VmPTE 8"),
        2,
        17,
        "write the unit: 8kB or 8 kB (sizes here are in kB, as smaps prints them)",
    );
    check(
        &format!("{A2M}expect p1 A Rsss 0"),
        2,
        13,
        "expected an smaps field (Rss, Pss, Shared_Clean, Shared_Dirty, Private_Clean, Private_Dirty, Anonymous, \
         LazyFree, AnonHugePages, Swap), page, folios, vmas, vma or content, found \"Rsss\" (did you mean \"Rss\"?)",
    );
    check("expect", 1, 7, "expected ok, errno, vmstat, mthp, khugepaged, meminfo or a process, found end of line");
    const PROPS: &str = "a page property (present, none, swapped, [!]pmd, [!]exclusive, [!]zero, [!]lru, \
                         [!]swapbacked, [!]swapcache, order=N, mapcount=N, [!]same_folio=A+off, pages=N)";
    check(&format!("{A2M}expect p1 A page"), 2, 17, &format!("expected {PROPS}, found end of line"));
    check(&format!("{A2M}expect p1 A page present bogus"), 2, 26, &format!("expected {PROPS}, found \"bogus\""));
    check(
        &format!("{A2M}expect p1 A page presnt"),
        2,
        18,
        &format!("expected {PROPS}, found \"presnt\" (did you mean \"present\"?)"),
    );
    check(&format!("{A2M}expect p1 A page present none"), 2, 26, "the page state is given twice");
    check(&format!("{A2M}expect p1 A page order>=9"), 2, 18, "order takes =, found >=");
    check(&format!("{A2M}expect p1 A page order=19"), 2, 24, "an order is from 0 to 18");
    check(
        &format!("{A2M}expect p1 A page !present"),
        2,
        18,
        &format!("expected {PROPS}, found \"!present\" (did you mean \"present\"?)"),
    );
    check(
        &format!("{A2M}expect p1 A page present same_folio=p2:A"),
        2,
        37,
        "there is no process named \"p2\" (did you mean \"p1\"?)",
    );
    check(
        &format!("{A2M}expect p1 A+4K 4K page present"),
        2,
        19,
        "a page expectation takes pages=N after its properties, not a length",
    );
    check(&format!("{A2M}expect p1 A folios order=9"), 2, 27, "expected count=N, found end of line");
    check(&format!("{A2M}expect p1 A folios count"), 2, 20, "expected order=N or count=N, found \"count\"");
    check(&format!("{A2M}expect p1 A folios size=2"), 2, 20, "expected order= or count=, found \"size\"");
}

#[test]
fn scenario_size_is_bounded() {
    let mut text = String::from(A2M);
    for _ in 0..100_000 {
        text.push_str("shrink\n");
    }
    check(&text, 100_000, 1, "the scenario is too long: it may have at most 100000 steps");
    // Observations of many regions, many times, would describe too much.
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(&format!("p1: R{i} = mmap 4K align=4K\n"));
    }
    for _ in 0..1001 {
        text.push_str("observe\n");
    }
    check(
        &text,
        2001,
        1,
        "the scenario observes too much: its observe and expect steps would describe more than 1000000 regions in all",
    );
}

#[test]
fn policies_name_a_known_policy_and_value_before_the_first_operation() {
    check(
        "policy lazy_deposit = eager",
        1,
        8,
        "expected a policy (deposit, pmd_swap_entries, pud_thp, pmd_cow), found \"lazy_deposit\"",
    );
    check(
        "policy deposti = eager",
        1,
        8,
        "expected a policy (deposit, pmd_swap_entries, pud_thp, pmd_cow), found \"deposti\" (did you mean \"deposit\"?)",
    );
    check("policy deposit = lazy", 1, 18, "policy deposit takes eager, found \"lazy\"");
    check("policy pmd_cow = yes", 1, 18, "policy pmd_cow takes off, found \"yes\"");
    check("policy deposit eager", 1, 16, "expected = and a value, found \"eager\"");
    check("policy deposit = eager\npolicy deposit = eager", 2, 8, "policy deposit is already set at line 1");
    check(
        &format!("machine ram=1G\n{A2M}policy deposit = eager"),
        3,
        1,
        "policy must come before the first operation (line 2): it sets up the machine the operations run on",
    );
    check(
        "set enabled = always\npolicy pud_thp = off",
        2,
        1,
        "policy must come before the first operation (line 1): it sets up the machine the operations run on",
    );
    check("policy deposit = eager\nmachine ram=1G", 2, 1, "machine must be the first statement of a scenario");
    check("policy: A = mmap 2M", 1, 1, "\"policy\" is a keyword and cannot be a process name");
}

#[test]
fn injections_name_a_point_and_numeric_attributes() {
    check("inject pte nth=1", 1, 8, "expected a failure point (pgtable, folio), found \"pte\"");
    check("inject folio nth=0", 1, 18, "nth= must be at least 1");
    check("inject folio probability=101", 1, 26, "probability= is a percentage from 0 to 100, found \"101\"");
    check(
        "inject folio nth=2 times=3",
        1,
        20,
        "nth=N fails the N-th allocation only (interval=N times=1); give nth= or interval=/times=, not both",
    );
    check("inject folio seed=1 seed=2", 1, 21, "seed= is given twice");
    check("inject folio every=2", 1, 14, "expected nth=, interval=, probability=, times= or seed=, found \"every\"");
    check("inject folio nth=x", 1, 18, "expected a number, found \"x\"");
    check("inject folio\ninject folio nth=2", 2, 8, "folio is already injected at line 1");
    check(
        &format!("{A2M}inject pgtable nth=1"),
        2,
        1,
        "inject must come before the first operation (line 1): it sets up the machine the operations run on",
    );
}

#[test]
fn invalid_utf8_gets_its_line_and_column() {
    use thpsim_workload::decode_scenario;
    let err = decode_scenario("t.thp", b"p1: A = mmap 2M\np1: touch \xc3\xa9A\xff write\n").unwrap_err();
    assert_eq!((err.line, err.column, err.message.as_str()), (2, 13, "invalid UTF-8"));
    assert_eq!(err.source_line, "p1: touch \u{e9}A\u{fffd} write");
    assert_eq!(
        decode_scenario("t.thp", b"\xfe").unwrap_err().to_string(),
        "t.thp:1:1: error: invalid UTF-8\n  | \u{fffd}\n  | ^"
    );
    assert_eq!(decode_scenario("t.thp", "p1: A = mmap 2M\n".as_bytes()).unwrap(), "p1: A = mmap 2M\n");
}

#[test]
fn input_beyond_the_size_limit_is_refused() {
    use thpsim_workload::{decode_scenario, MAX_SCENARIO_BYTES};
    let big = vec![b'\n'; MAX_SCENARIO_BYTES as usize + 1];
    let err = decode_scenario("big.thp", &big).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "big.thp:{}:1: error: the scenario is larger than the limit of 4 MiB (MAX_SCENARIO_BYTES); reading stopped there",
            MAX_SCENARIO_BYTES + 2
        )
    );
    assert!(decode_scenario("ok.thp", &big[1..]).is_ok());
}

#[test]
fn words_in_messages_are_escaped_and_cut() {
    // Control characters are escaped, never echoed raw.
    check("p1: A = mmap 2M\x1b[31m", 1, 14, "expected a size such as 4K, 2M, 1G or 64kB, found \"2M\\u{1b}[31m\"");
    check("\u{0}\u{0}", 1, 1, "expected a statement (machine, policy, inject, set, khugepaged, shrink, observe, expect, unpin, exit, `<process>: ...` or `<child> = fork <parent>`), found \"\\0\\0\"");
    // A long word is quoted up to 40 characters.
    let long = "x".repeat(100_000);
    let err = parse_scenario("t.thp", &format!("p1: A = mmap {long}")).unwrap_err();
    assert_eq!(err.message, format!("expected a size such as 4K, 2M, 1G or 64kB, found \"{}…\"", "x".repeat(40)));
    // The whole report stays short, whatever the line's length.
    let shown = err.to_string();
    assert!(shown.chars().count() < 500, "{} chars", shown.chars().count());
    assert!(shown.contains(&format!("  | p1: A = mmap {}…\n", "x".repeat(147))), "{shown}");
    assert!(shown.ends_with("  |              ^"), "{shown}");
    // An error far into a long line shows a window around the column.
    let err = parse_scenario("t.thp", &format!("p1: A = mmap 2M prot=r {long} ")).unwrap_err();
    let shown = err.to_string();
    assert!(shown.chars().count() < 500, "{shown}");
    assert!(shown.contains("  | p1: A = mmap 2M prot=r x"), "{shown}");
    // A NUL-filled input is one long word: one short message.
    let err = parse_scenario("t.thp", &"\0".repeat(1 << 20)).unwrap_err();
    assert!(err.to_string().chars().count() < 1000);
    assert!(!err.to_string().contains('\0'));
}

#[test]
fn observable_expectations() {
    check(
        &format!("{A2M}expect p1 A Private_Drity 4kB"),
        2,
        13,
        "expected an smaps field (Rss, Pss, Shared_Clean, Shared_Dirty, Private_Clean, Private_Dirty, Anonymous, \
         LazyFree, AnonHugePages, Swap), page, folios, vmas, vma or content, found \"Private_Drity\" \
         (did you mean \"Private_Dirty\"?)",
    );
    check(
        "expect khugepaged pages_colapsed +1",
        1,
        19,
        "expected a khugepaged counter (pages_collapsed, full_scans), found \"pages_colapsed\" \
         (did you mean \"pages_collapsed\"?)",
    );
    check(
        "expect meminfo PageTable +4kB",
        1,
        16,
        "expected a /proc/meminfo field thpsim observes (PageTables), found \"PageTable\" (did you mean \"PageTables\"?)",
    );
    check("expect meminfo PageTables 4", 1, 27, "expected a change in kB such as +8kB, -4kB or = 0 (compared as a change since the scenario started), found \"4\"");
    check("expect meminfo PageTables +4", 1, 27, "write the unit: +4kB (changes here are in kB)");
    check(&format!("{A2M}expect p1 A vmas 2"), 2, 18, "expected count=N, found \"2\"");
    check(
        &format!("{A2M}expect p1 A vmas cout=2"),
        2,
        18,
        "expected count=N, found \"cout\" (did you mean \"count\"?)",
    );
    check(
        &format!("{A2M}expect p1 A vma hgg"),
        2,
        17,
        "expected a VMA property (start=A+off, end=A+off, [!]THPeligible, or a VmFlags mnemonic such as hg or !nh); \
         the VmFlags thpsim observes are rd wr ex lo dc ac wf hg nh; found \"hgg\" (did you mean \"hg\"?)",
    );
    check(&format!("{A2M}expect p1 A vma sd"), 2, 17, "expected a VMA property (start=A+off, end=A+off, [!]THPeligible, or a VmFlags mnemonic such as hg or !nh); the VmFlags thpsim observes are rd wr ex lo dc ac wf hg nh; found \"sd\" (did you mean \"rd\"?)");
    check(&format!("{A2M}expect p1 A vma end=A+4M"), 2, 23, "the offset 4M is outside A, which is 2M long");
    check(&format!("{A2M}expect p1 A vma hg hg"), 2, 20, "hg is given twice");
    check(
        &format!("{A2M}expect p1 A 1M vma hg"),
        2,
        16,
        "a vma expectation is about the VMA of one page: it takes no length",
    );
    check(
        &format!("{A2M}expect p1 A page pmd_maped"),
        2,
        18,
        "expected a page property (present, none, swapped, [!]pmd, [!]exclusive, [!]zero, [!]lru, [!]swapbacked, \
         [!]swapcache, order=N, mapcount=N, [!]same_folio=A+off, pages=N), found \"pmd_maped\" \
         (did you mean \"pmd_mapped\"?)",
    );
    check(&format!("{A2M}expect p1 A page swapbacked !swapbacked"), 2, 29, "swapbacked is given twice");
}

#[test]
fn mlock_mmap_fixed_and_mremap_in_place() {
    check(&format!("{A2M}p1: mlok A"), 2, 5, "expected an operation (mmap, munmap, mprotect, madvise, mremap, mlock, munlock, touch, prctl, pin, unpin, exit), found \"mlok\" (did you mean \"mlock\"?)");
    check(&format!("{A2M}p1: mlock A 4M"), 2, 13, "A 4M runs past the end of A, which is 2M long");
    check(
        &format!("{A2M}p1: B = mmap 1M fixed"),
        2,
        17,
        "fixed maps over what is there and needs the address: at=B+off",
    );
    check(&format!("{A2M}p1: B = mmap 1M at=A fixed fixed"), 2, 28, "fixed is given twice");
    check(
        &format!("{A2M}p1: C = mremap A 4M inplace at=A+1M"),
        2,
        21,
        "inplace keeps the mapping where it is; it cannot be combined with align=, offset= or at=",
    );
    check(
        &format!("{A2M}p1: C = mremap A 4M inplac"),
        2,
        21,
        "expected align=, offset=, at= or inplace, found \"inplac\"",
    );
}

#[test]
fn touch_pattern_and_content() {
    check(
        &format!("{A2M}p1: touch A read pattern=T"),
        2,
        18,
        "pattern= says what a write stores; a read stores nothing",
    );
    check(&format!("{A2M}p1: touch A zero pattern=T"), 2, 18, "pattern= and zero cannot be combined");
    check(&format!("{A2M}p1: touch A pattern=T pattern=U"), 2, 23, "pattern= is given twice");
    check(
        &format!("{A2M}p1: touch A patern=T"),
        2,
        13,
        "expected every=, random=, seed= or pattern=, found \"patern\" (did you mean \"pattern\"?)",
    );
    check(&format!("{A2M}p1: touch A pattern=+"), 2, 21, "expected a pattern tag such as T or 7, found \"+\"");
    check(
        &format!("{A2M}expect p1 A content patern=T"),
        2,
        21,
        "expected pattern=T or zero, found \"patern\" (did you mean \"pattern\"?)",
    );
    check(
        &format!("{A2M}expect p1 A content zeros"),
        2,
        21,
        "expected pattern=T or zero, found \"zeros\" (did you mean \"zero\"?)",
    );
}
