//! Behaviours of Linux 6.18 that the model must reproduce, each seen on the
//! live kernel (ORACLE-NOTES.md) or read in mm/. Tests go through the public
//! API only; every operation also runs the invariant checker (debug build).

use thpsim_mm::*;

const M: u64 = 1 << 20;
const A: Vaddr = Vaddr(0x2000_0000_0000);

fn world() -> World {
    World::new(Machine { ram_bytes: 256 * M }, Config::default())
}

fn proc_with_thp_region(w: &mut World, len: u64) -> Pid {
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), len, Prot::READ_WRITE).unwrap();
    w.madvise(p, A, len, Advice::HugePage).unwrap();
    p
}

fn write_all(w: &mut World, p: Pid, addr: Vaddr, len: u64) {
    let pages: Vec<u64> = (0..len / 4096).collect();
    w.touch_pages(p, addr, &pages, Access::Write, Fill::NonZero).unwrap();
}

fn ev(w: &World, e: VmEvent) -> u64 {
    w.stats().event(e)
}

#[test]
fn write_fault_in_madvised_block_maps_one_pmd_thp() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    w.touch(p, A, Access::Write, Fill::NonZero).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpFaultAlloc), 1);
    assert_eq!(w.stats().mthp_stat(Order::PMD, MthpStat::AnonFaultAlloc), 1);
    let info = w.page_info(p, A.add(4096 * 100));
    assert!(info.pmd_mapped && info.order == 9 && info.mapcount == 1 && info.exclusive);
    let smaps = &w.smaps(p)[0];
    assert_eq!((smaps.rss_kb, smaps.anon_huge_pages_kb), (2048, 2048));
    // PUD table + PMD table + the deposited PTE table.
    assert_eq!(w.mm(p).unwrap().vm_pte_kb(), 12);
    assert_eq!(w.stats().nr_anon_transparent_hugepages(), 1);
}

#[test]
fn without_madvise_enabled_madvise_gives_base_pages() {
    let mut w = world();
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), 2 * M, Prot::READ_WRITE).unwrap();
    w.touch(p, A, Access::Write, Fill::NonZero).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpFaultAlloc), 0);
    let info = w.page_info(p, A);
    assert_eq!((info.order, info.pmd_mapped), (0, false));
    assert_eq!(w.page_info(p, A.add(4096)).state, PageState::None);
}

#[test]
fn read_fault_maps_huge_zero_then_write_allocates_a_thp_without_split() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    w.touch(p, A, Access::Read, Fill::NonZero).unwrap();
    let info = w.page_info(p, A);
    assert!(info.zero_page && info.pmd_mapped && info.mapcount == 0);
    assert_eq!(w.smaps(p)[0].rss_kb, 0);
    assert_eq!(ev(&w, VmEvent::ThpZeroPageAlloc), 1);
    w.touch(p, A, Access::Write, Fill::NonZero).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpFaultAlloc), 1);
    assert_eq!(ev(&w, VmEvent::ThpSplitPmd), 0);
    assert!(w.page_info(p, A).pmd_mapped && !w.page_info(p, A).zero_page);
}

#[test]
fn fork_child_write_splits_only_the_child_pmd_and_copies_one_page() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    write_all(&mut w, p, A, 2 * M);
    let c = w.fork(p).unwrap();
    assert_eq!(w.page_info(p, A).mapcount, 2);
    assert!(w.page_info(c, A).pmd_mapped);
    w.touch(c, A.add(4096), Access::Write, Fill::NonZero).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpSplitPmd), 1);
    assert_eq!(ev(&w, VmEvent::ThpDeferredSplitPage), 0);
    let (pc, cc) = (w.page_info(p, A), w.page_info(c, A.add(4096)));
    assert!(pc.pmd_mapped && pc.mapcount == 2);
    assert_eq!((cc.order, cc.pmd_mapped, cc.mapcount), (0, false, 1));
    assert_eq!(w.page_info(c, A).order, 9);
    assert_eq!(w.smaps(c)[0].anon_huge_pages_kb, 0);
    w.exit(c).unwrap();
    assert_eq!(w.page_info(p, A).mapcount, 1);
    // The parent's write now reuses the folio: nothing is copied or split.
    w.touch(p, A, Access::Write, Fill::NonZero).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpSplitPmd), 1);
    assert!(w.page_info(p, A).pmd_mapped);
}

#[test]
fn parent_write_while_child_lives_splits_parent_and_child_exit_defers_split() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    write_all(&mut w, p, A, 2 * M);
    let c = w.fork(p).unwrap();
    w.touch(c, A, Access::Write, Fill::NonZero).unwrap();
    w.touch(p, A.add(8192), Access::Write, Fill::NonZero).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpSplitPmd), 2);
    assert_eq!(w.stats().nr_anon_transparent_hugepages(), 0);
    assert_eq!(ev(&w, VmEvent::ThpDeferredSplitPage), 0);
    w.exit(c).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpDeferredSplitPage), 1);
}

#[test]
fn munmap_4k_inside_thp_defers_split_and_shrinker_frees_the_page() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    write_all(&mut w, p, A, 2 * M);
    let free_before = w.buddy().nr_free_pages();
    w.munmap(p, A.add(4096), 4096).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpSplitPmd), 1);
    assert_eq!(ev(&w, VmEvent::ThpDeferredSplitPage), 1);
    assert_eq!(w.stats().mthp_stat(Order::PMD, MthpStat::NrAnonPartiallyMapped), 1);
    assert_eq!(w.buddy().nr_free_pages(), free_before, "partial unmap frees nothing by itself");
    w.drop_caches();
    assert_eq!(ev(&w, VmEvent::ThpSplitPage), 1);
    assert_eq!(w.stats().mthp_stat(Order::PMD, MthpStat::NrAnonPartiallyMapped), 0);
    assert_eq!(w.buddy().nr_free_pages(), free_before + 1);
    assert_eq!(w.page_info(p, A.add(8192)).order, 0);
}

#[test]
fn split_remaps_all_zero_subpages_to_the_zero_page() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    // One write: page 0 holds data, the other 511 pages are zero-filled.
    w.touch(p, A, Access::Write, Fill::NonZero).unwrap();
    w.munmap(p, A.add(2 * M - 4096), 4096).unwrap();
    w.drop_caches();
    assert_eq!(w.smaps(p)[0].rss_kb, 4);
    assert!(w.page_info(p, A.add(4096)).zero_page);
    assert_eq!(w.page_info(p, A).order, 0);
}

#[test]
fn pinned_thp_refuses_split_but_pmd_split_still_works() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    write_all(&mut w, p, A, 2 * M);
    let pin = w.pin_user_pages(p, A, 512, true).unwrap();
    w.madvise(p, A.add(4096), 4096, Advice::DontNeed).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpSplitPmd), 1);
    w.drop_caches();
    assert!(ev(&w, VmEvent::ThpSplitPageFailed) >= 1);
    assert_eq!(ev(&w, VmEvent::ThpSplitPage), 0);
    assert_eq!(w.madvise(p, A, 2 * M, Advice::Collapse), Err(Errno::Again));
    w.unpin(pin).unwrap();
    w.drop_caches();
    assert_eq!(ev(&w, VmEvent::ThpSplitPage), 1);
}

#[test]
fn mprotect_4k_inside_splits_pmd_and_vmas_merge_back() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    write_all(&mut w, p, A, 2 * M);
    w.mprotect(p, A.add(M), 4096, Prot::READ).unwrap();
    assert_eq!(w.smaps(p).len(), 3);
    assert_eq!(ev(&w, VmEvent::ThpSplitPmd), 1);
    assert_eq!(ev(&w, VmEvent::ThpDeferredSplitPage), 0);
    assert_eq!(w.touch(p, A.add(M), Access::Write, Fill::NonZero), Err(Errno::Fault));
    w.mprotect(p, A.add(M), 4096, Prot::READ_WRITE).unwrap();
    assert_eq!(w.smaps(p).len(), 1);
    assert!(!w.page_info(p, A).pmd_mapped);
    w.madvise(p, A, 2 * M, Advice::Collapse).unwrap();
    assert!(w.page_info(p, A).pmd_mapped);
    assert_eq!(ev(&w, VmEvent::ThpCollapseAlloc), 1);
}

#[test]
fn dontneed_inside_splits_whole_block_zaps_without_split() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 4 * M);
    write_all(&mut w, p, A, 4 * M);
    w.madvise(p, A, M, Advice::DontNeed).unwrap();
    assert_eq!((ev(&w, VmEvent::ThpSplitPmd), ev(&w, VmEvent::ThpDeferredSplitPage)), (1, 1));
    w.madvise(p, A.add(2 * M), 2 * M, Advice::DontNeed).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpSplitPmd), 1);
    // A fully zapped block gets a new THP; a page in the split block is order 0.
    w.touch(p, A.add(2 * M), Access::Write, Fill::NonZero).unwrap();
    assert!(w.page_info(p, A.add(2 * M)).pmd_mapped);
    w.touch(p, A, Access::Write, Fill::NonZero).unwrap();
    assert_eq!(w.page_info(p, A).order, 0);
}

#[test]
fn collapse_rules() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 4 * M);
    assert_eq!(w.madvise(p, A, 2 * M, Advice::Collapse), Err(Errno::Inval), "empty range");
    // 64 of 512 pages present in a VMA without MADV_HUGEPAGE.
    let q = w.spawn().unwrap();
    w.mmap(q, Some(A), 2 * M, Prot::READ_WRITE).unwrap();
    let pages: Vec<u64> = (0..64).collect();
    w.touch_pages(q, A, &pages, Access::Write, Fill::NonZero).unwrap();
    w.madvise(q, A, 2 * M, Advice::Collapse).unwrap();
    assert!(w.page_info(q, A).pmd_mapped);
    assert_eq!(w.smaps(q)[0].rss_kb, 2048);
    assert_eq!(w.madvise(q, A, 2 * M, Advice::Collapse), Ok(()), "already PMD-mapped: no-op");
    w.madvise(q, A, 2 * M, Advice::NoHugePage).unwrap();
    assert_eq!(w.madvise(q, A, 2 * M, Advice::Collapse), Err(Errno::Inval));
}

#[test]
fn khugepaged_collapses_and_respects_max_ptes_none() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 4 * M);
    // A THP fault registers the mm with khugepaged; the second block gets
    // 4K pages after a DONTNEED of half of it splits it.
    write_all(&mut w, p, A, 4 * M);
    w.madvise(p, A.add(2 * M), M, Advice::DontNeed).unwrap();
    w.set_knob("khugepaged/max_ptes_none", "0").unwrap();
    w.khugepaged_scan(1);
    assert!(!w.page_info(p, A.add(3 * M)).pmd_mapped);
    assert_eq!(ev(&w, VmEvent::ThpScanExceedNonePte), 1);
    w.set_knob("khugepaged/max_ptes_none", "511").unwrap();
    w.khugepaged_scan(1);
    assert!(w.page_info(p, A.add(3 * M)).pmd_mapped);
    assert_eq!(w.stats().khugepaged_pages_collapsed(), 1);
}

#[test]
fn mthp_64k_always_outside_madvise_and_pmd_inside() {
    let mut w = world();
    w.set_knob("hugepages-64kB/enabled", "always").unwrap();
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), 2 * M, Prot::READ_WRITE).unwrap();
    w.touch(p, A.add(4096 * 17), Access::Write, Fill::NonZero).unwrap();
    let info = w.page_info(p, A.add(4096 * 16));
    assert_eq!((info.order, info.pmd_mapped), (4, false));
    assert_eq!(w.stats().mthp_stat(Order::new(4), MthpStat::AnonFaultAlloc), 1);
    assert_eq!(w.stats().mthp_stat(Order::new(4), MthpStat::NrAnon), 1);
    w.mmap(p, Some(A.add(4 * M)), 2 * M, Prot::READ_WRITE).unwrap();
    w.madvise(p, A.add(4 * M), 2 * M, Advice::HugePage).unwrap();
    w.touch(p, A.add(4 * M), Access::Write, Fill::NonZero).unwrap();
    assert!(w.page_info(p, A.add(4 * M)).pmd_mapped);
    w.mmap(p, Some(A.add(8 * M)), 2 * M, Prot::READ_WRITE).unwrap();
    w.madvise(p, A.add(8 * M), 2 * M, Advice::NoHugePage).unwrap();
    w.touch(p, A.add(8 * M), Access::Write, Fill::NonZero).unwrap();
    assert_eq!(w.page_info(p, A.add(8 * M)).order, 0);
}

#[test]
fn mremap_aligned_keeps_pmd_unaligned_splits() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    write_all(&mut w, p, A, 2 * M);
    let dst = A.add(64 * M);
    w.mremap(p, A, 2 * M, 2 * M, true, Some(dst)).unwrap();
    assert!(w.page_info(p, dst).pmd_mapped);
    assert_eq!(ev(&w, VmEvent::ThpSplitPmd), 0);
    let dst2 = A.add(128 * M + 4096);
    w.mremap(p, dst, 2 * M, 2 * M, true, Some(dst2)).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpSplitPmd), 1);
    let (a, b) = (w.page_info(p, dst2), w.page_info(p, dst2.add(2 * M - 4096)));
    assert_eq!((a.order, a.pmd_mapped, a.folio), (9, false, b.folio));
}

#[test]
fn pageout_without_swap_splits_and_keeps_pages_resident() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    write_all(&mut w, p, A, 2 * M);
    w.madvise(p, A, 2 * M, Advice::PageOut).unwrap();
    assert_eq!((ev(&w, VmEvent::ThpSwpoutFallback), ev(&w, VmEvent::ThpSplitPage)), (1, 1));
    assert_eq!(w.smaps(p)[0].rss_kb, 2048);
    // Shared after fork: PAGEOUT leaves it alone.
    let q = proc_with_thp_region(&mut w, 2 * M);
    write_all(&mut w, q, A, 2 * M);
    let _child = w.fork(q).unwrap();
    w.madvise(q, A, 2 * M, Advice::PageOut).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpSplitPage), 1);
    assert!(w.page_info(q, A).pmd_mapped);
}

#[test]
fn madv_free_on_part_of_a_thp_splits_it_at_once() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 2 * M);
    write_all(&mut w, p, A, 2 * M);
    w.madvise(p, A, 64 * 1024, Advice::Free).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpSplitPage), 1);
}

#[test]
fn prctl_thp_disable_forms_and_inheritance() {
    let mut w = world();
    w.set_knob("enabled", "always").unwrap();
    let p = w.spawn().unwrap();
    w.prctl_set_thp_disable(p, ThpDisable::ExceptAdvised).unwrap();
    w.mmap(p, Some(A), 4 * M, Prot::READ_WRITE).unwrap();
    w.madvise(p, A.add(2 * M), 2 * M, Advice::HugePage).unwrap();
    let c = w.fork(p).unwrap();
    for pid in [p, c] {
        w.touch(pid, A, Access::Write, Fill::NonZero).unwrap();
        w.touch(pid, A.add(2 * M), Access::Write, Fill::NonZero).unwrap();
        assert!(!w.page_info(pid, A).pmd_mapped, "{pid:?}: unadvised range must not get a THP");
        assert!(w.page_info(pid, A.add(2 * M)).pmd_mapped, "{pid:?}: advised range gets a THP");
    }
    w.prctl_set_thp_disable(c, ThpDisable::All).unwrap();
    w.mmap(c, Some(A.add(8 * M)), 2 * M, Prot::READ_WRITE).unwrap();
    w.madvise(c, A.add(8 * M), 2 * M, Advice::HugePage).unwrap();
    w.touch(c, A.add(8 * M), Access::Write, Fill::NonZero).unwrap();
    assert!(!w.page_info(c, A.add(8 * M)).pmd_mapped);
}

/// Fills a 16 MiB machine until the allocator says no, frees every other
/// page (plenty free, no free 2M block), and checks that a THP fault falls
/// back with defrag=never and gets a PMD through compaction with
/// defrag=always. With `prefault_tables`, one page per 2 MiB is faulted
/// first, so the page tables are allocated before the user pages.
fn fragment_then_fault_thp(prefault_tables: bool) {
    let mut w = World::new(Machine { ram_bytes: 16 * M }, Config::default());
    w.set_knob("defrag", "never").unwrap();
    let p = w.spawn().unwrap();
    let len = 16 * M;
    w.mmap(p, Some(A), len, Prot::READ_WRITE).unwrap();
    if prefault_tables {
        let firsts: Vec<u64> = (0..len / (2 * M)).map(|i| i * 512).collect();
        w.touch_pages(p, A, &firsts, Access::Write, Fill::NonZero).unwrap();
    }
    let all: Vec<u64> = (0..len / 4096).collect();
    assert_eq!(w.touch_pages(p, A, &all, Access::Write, Fill::NonZero), Err(Errno::NoMem));
    let touched = w.smaps(p)[0].rss_kb / 4;
    assert!(touched > 3_000, "only {touched} pages before OOM");
    for i in (0..touched).step_by(2) {
        w.madvise(p, A.add(i * 4096), 4096, Advice::DontNeed).unwrap();
    }
    assert!(w.buddy().nr_free_pages() > 2 * 512);
    let q = proc_with_thp_region(&mut w, 2 * M);
    w.touch(q, A, Access::Write, Fill::NonZero).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpFaultFallback), 1);
    assert_eq!(w.page_info(q, A).order, 0);
    // defrag=always lets the fault compact a block free.
    w.set_knob("defrag", "always").unwrap();
    let r = proc_with_thp_region(&mut w, 2 * M);
    w.touch(r, A, Access::Write, Fill::NonZero).unwrap();
    assert!(w.page_info(r, A).pmd_mapped, "compaction made a free 2M block");
    assert_eq!(ev(&w, VmEvent::CompactSuccess), 1);
}

#[test]
fn thp_allocation_falls_back_when_memory_is_fragmented_and_compaction_recovers() {
    fragment_then_fault_thp(true);
}

/// Without pre-faulting, each PTE table is allocated when the first page of
/// its 2 MiB faults, right among the user pages of the time. Unmovable
/// requests take pageblocks of their own (mm/page_alloc.c), so the tables
/// end up together and the other pageblocks hold movable pages only. (When
/// memory runs out, movable requests claim the tables' mostly free
/// pageblock back, as the kernel's do; the tables stay where they are.)
#[test]
fn grouping_by_mobility_keeps_page_tables_together_so_compaction_recovers_without_prefaulting() {
    fragment_then_fault_thp(false);
}

#[test]
fn everything_returns_to_the_allocator_after_exit() {
    let mut w = world();
    let boot = w.buddy().nr_free_pages();
    let p = proc_with_thp_region(&mut w, 8 * M);
    write_all(&mut w, p, A, 8 * M);
    let c = w.fork(p).unwrap();
    w.touch(c, A.add(4096), Access::Write, Fill::NonZero).unwrap();
    w.munmap(p, A.add(2 * M + 4096), 4096).unwrap();
    w.touch(p, A.add(6 * M), Access::Read, Fill::NonZero).unwrap();
    w.exit(p).unwrap();
    w.exit(c).unwrap();
    w.drop_caches();
    assert_eq!(w.buddy().nr_free_pages(), boot);
    assert_eq!(w.stats().nr_page_table_pages(), 0);
    assert_eq!(w.stats().nr_anon_pages(), 0);
}

#[test]
fn pageout_discards_clean_lazyfree_folios_and_keeps_redirtied_ones() {
    let mut w = world();
    let p = proc_with_thp_region(&mut w, 4 * M);
    write_all(&mut w, p, A, 4 * M);
    // The first THP is freed whole and left clean; the second is freed,
    // then written again.
    w.madvise(p, A, 4 * M, Advice::Free).unwrap();
    w.touch(p, A.add(2 * M), Access::Write, Fill::NonZero).unwrap();
    let free_before = w.buddy().nr_free_pages();
    w.madvise(p, A, 4 * M, Advice::PageOut).unwrap();
    assert_eq!(w.page_info(p, A).state, PageState::None, "clean lazyfree THP discarded");
    let kept = w.page_info(p, A.add(2 * M));
    assert_eq!((kept.order, kept.pmd_mapped), (9, false), "redirtied THP kept, its PMD split");
    assert_eq!(
        w.buddy().nr_free_pages(),
        free_before + 512,
        "the clean THP freed; its table now maps nothing but stays"
    );
    assert_eq!((ev(&w, VmEvent::ThpSplitPmd), ev(&w, VmEvent::ThpSplitPage)), (2, 0), "PMDs split, folios not");
}
