//! `World::page_info_runs` reports exactly what `page_info` reports page by
//! page, merged into runs, for every kind of mapping the model makes; and
//! holes cost nothing per page.

use thpsim_mm::*;

const M: u64 = 1 << 20;
const A: Vaddr = Vaddr(0x2000_0000_0000);

/// Expands the runs and compares them with `page_info` page by page; checks
/// that the runs cover the range and that neighbours do not continue each other.
#[track_caller]
fn assert_runs_match_page_info(w: &World, pid: Pid, start: Vaddr, nr_pages: u64) -> Vec<PageInfoRun> {
    let runs = w.page_info_runs(pid, start, nr_pages);
    let mut next = start;
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run.addr, next, "run {i} starts at {:#x}, expected {:#x}", run.addr.0, next.0);
        assert!(run.nr_pages > 0, "run {i} is empty");
        for page in 0..run.nr_pages {
            let addr = run.addr.add(page * PAGE_SIZE);
            assert_eq!(run.page(page), w.page_info(pid, addr), "page {:#x} (run {i})", addr.0);
        }
        if let Some(prev) = i.checked_sub(1).map(|p| runs[p]) {
            let continued = PageInfo { pfn: prev.info.pfn.map(|p| p.add(prev.nr_pages)), ..prev.info };
            assert_ne!(continued, run.info, "run {i} should have been merged into run {}", i - 1);
        }
        next = run.addr.add(run.nr_pages * PAGE_SIZE);
    }
    assert_eq!(next, start.add(nr_pages * PAGE_SIZE), "the runs end early or late");
    runs
}

fn write(w: &mut World, p: Pid, addr: Vaddr, pages: &[u64]) {
    w.touch_pages(p, addr, pages, Access::Write, Fill::NonZero).unwrap();
}

// 0     2M    4M    6M    8M
// |HHHHH|zzzzz|h.h.h|     |     p1: PMD THP, huge zero page, three 4K pages
// |HHHHH|hhhhh|           p2 after fork and a write to 4M+8K: PTE-mapped
#[test]
fn runs_match_page_info_after_fork_zero_pages_and_splits() {
    let mut w = World::new(Machine { ram_bytes: 256 * M }, Config::default());
    w.set_knob("enabled", "madvise").unwrap();
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), 8 * M, Prot::READ_WRITE).unwrap();
    w.madvise(p, A, 4 * M, Advice::HugePage).unwrap();
    write(&mut w, p, A, &[0]);
    w.touch(p, A.add(2 * M), Access::Read, Fill::NonZero).unwrap();
    write(&mut w, p, A.add(4 * M), &[0, 2, 4]);
    w.touch(p, A.add(4 * M + 3 * PAGE_SIZE), Access::Read, Fill::NonZero).unwrap();
    let runs = assert_runs_match_page_info(&w, p, A, 8 * M / PAGE_SIZE);
    assert!(runs[0].info.pmd_mapped && runs[0].nr_pages == 512, "{runs:?}");
    assert!(runs[1].info.zero_page && runs[1].nr_pages == 512, "{runs:?}");

    let c = w.fork(p).unwrap();
    // The child's write splits its PMD: the THP's pages get PTE mapcounts.
    write(&mut w, c, A.add(8 * PAGE_SIZE), &[0]);
    // The parent's PMD mapping: page 8 is now mapped by the parent only.
    let runs = assert_runs_match_page_info(&w, p, A, 512);
    let shape: Vec<(u64, u64, bool)> = runs.iter().map(|r| (r.nr_pages, r.info.mapcount, r.info.pmd_mapped)).collect();
    assert_eq!(shape, vec![(8, 2, true), (1, 1, true), (503, 2, true)]);
    for pid in [p, c] {
        assert_runs_match_page_info(&w, pid, A, 8 * M / PAGE_SIZE);
        // Ranges that start and end inside PMDs.
        assert_runs_match_page_info(&w, pid, A.add(3 * PAGE_SIZE), 700);
    }
    w.munmap(p, A.add(M), M).unwrap();
    assert_runs_match_page_info(&w, p, A, 8 * M / PAGE_SIZE);
    assert_runs_match_page_info(&w, c, A, 8 * M / PAGE_SIZE);
    // A process that does not exist: absent.
    assert_eq!(w.page_info_runs(Pid(99), A, 4).len(), 1);
}

#[test]
fn a_terabyte_hole_is_one_run() {
    // More RAM than the mapping: the overcommit heuristic allows it.
    let mut w = World::new(Machine { ram_bytes: 2 << 40 }, Config::default());
    let p = w.spawn().unwrap();
    let len = 1u64 << 40;
    w.mmap(p, Some(A), len, Prot::READ_WRITE).unwrap();
    // One populated page far into the range: tables exist only around it.
    write(&mut w, p, A.add(len / 2), &[0]);
    let runs = w.page_info_runs(p, A, len / PAGE_SIZE);
    let shape: Vec<(u64, PageState)> = runs.iter().map(|r| (r.nr_pages, r.info.state)).collect();
    let half = len / 2 / PAGE_SIZE;
    assert_eq!(shape, vec![(half, PageState::None), (1, PageState::Present), (half - 1, PageState::None)]);
}
