//! Write faults on present read-only pages: when `do_wp_page()` reuses the
//! page in place and when `wp_page_copy()` copies it, told apart by the page
//! frame the writer ends up on and by the `Copied` and `Zeroed` events.
//! The 64K-folio cases, which the live kernel shows, are corpus scenarios
//! (scenarios/cow_reuse/); these tests look at what only the model exposes:
//! PFNs, events, refcounts and the MM_ID shared bit.

use thpsim_mm::folio::Folio;
use thpsim_mm::*;

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const A: Vaddr = Vaddr(0x2000_0000_0000);

/// THP off everywhere: every fault maps a base page.
fn world_without_thp() -> World {
    let mut w = World::new(Machine { ram_bytes: 256 * M }, Config::default());
    w.set_knob("enabled", "never").unwrap();
    w
}

/// 64K mTHP in MADV_HUGEPAGE regions only.
fn world_with_64k() -> World {
    let mut w = world_without_thp();
    w.set_knob("hugepages-64kB/enabled", "madvise").unwrap();
    w
}

fn pfn(w: &World, p: Pid, addr: Vaddr) -> Pfn {
    w.page_info(p, addr).pfn.unwrap_or_else(|| panic!("{p:?} {addr}: no page mapped"))
}

fn folio_at(w: &World, p: Pid, addr: Vaddr) -> &Folio {
    let id = w.page_info(p, addr).folio.unwrap_or_else(|| panic!("{p:?} {addr}: no folio mapped"));
    &w.folios()[id]
}

/// The bytes copied and zeroed among `events`.
fn copied_and_zeroed(events: &[MmEvent]) -> (u64, u64) {
    events.iter().fold((0, 0), |(c, z), e| match e {
        MmEvent::Copied { bytes } => (c + bytes, z),
        MmEvent::Zeroed { bytes } => (c, z + bytes),
        _ => (c, z),
    })
}

/// One process with `len` bytes at A, every page written.
fn written_region(w: &mut World, len: u64, hugepage: bool) -> Pid {
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), len, Prot::READ_WRITE).unwrap();
    if hugepage {
        w.madvise(p, A, len, Advice::HugePage).unwrap();
    }
    let pages: Vec<u64> = (0..len / 4096).collect();
    w.touch_pages(p, A, &pages, Access::Write, Fill::NonZero).unwrap();
    p
}

#[test]
fn small_page_is_reused_once_the_child_has_exited() {
    let mut w = world_without_thp();
    let p = written_region(&mut w, 16 * K, false);
    let before = pfn(&w, p, A);
    let c = w.fork(p).unwrap();
    assert!(!w.page_info(p, A).exclusive, "fork write-protects and shares the page");
    w.exit(c).unwrap();
    let info = w.page_info(p, A);
    assert_eq!((info.mapcount, info.exclusive), (1, true), "kpagecount is 1 again, so pagemap says exclusive");
    w.events_mut().enable();
    let anon_before = w.stats().nr_anon_pages();
    w.touch(p, A, Access::Write, Fill::NonZero).unwrap();
    let events = w.events_mut().drain();
    // The page lost AnonExclusive at fork, but the refcount is 1: reuse.
    assert_eq!(pfn(&w, p, A), before, "the write moved to a new page: {events:?}");
    assert_eq!(copied_and_zeroed(&events), (0, 0), "a reuse copies and zeroes nothing: {events:?}");
    assert_eq!(w.stats().nr_anon_pages(), anon_before);
    let info = w.page_info(p, A);
    assert_eq!((info.mapcount, info.exclusive), (1, true));
    // The reuse made the PTE writable: the next write does not fault.
    let faults = w.stats().event(VmEvent::PgFault);
    w.touch(p, A, Access::Write, Fill::NonZero).unwrap();
    assert_eq!(w.stats().event(VmEvent::PgFault), faults, "the reused PTE is still read-only");
}

#[test]
fn small_page_shared_with_a_live_child_is_copied_for_the_writer_only() {
    let mut w = world_without_thp();
    let p = written_region(&mut w, 16 * K, false);
    let old = pfn(&w, p, A.add(4096));
    let c = w.fork(p).unwrap();
    assert_eq!(folio_at(&w, p, A.add(4096)).refcount(), 2);
    w.events_mut().enable();
    w.touch(c, A.add(4096), Access::Write, Fill::NonZero).unwrap();
    let events = w.events_mut().drain();
    assert_eq!(copied_and_zeroed(&events), (4096, 0), "one 4K page copied: {events:?}");
    let new = pfn(&w, c, A.add(4096));
    assert_ne!(new, old, "the child wrote to the page it shares with its parent");
    assert_eq!(pfn(&w, p, A.add(4096)), old, "the parent keeps the original page");
    for (who, expect_pfn) in [(p, old), (c, new)] {
        let info = w.page_info(who, A.add(4096));
        assert_eq!((info.pfn, info.mapcount, info.exclusive), (Some(expect_pfn), 1, true), "{who:?}");
        assert_eq!(folio_at(&w, who, A.add(4096)).refcount(), 1, "{who:?}");
    }
    // The other pages stay shared.
    assert_eq!(w.page_info(p, A).mapcount, 2);
    assert_eq!(pfn(&w, c, A), pfn(&w, p, A));
    // The parent's page lost its other mapping: the parent now reuses it.
    w.touch(p, A.add(4096), Access::Write, Fill::NonZero).unwrap();
    let events = w.events_mut().drain();
    assert_eq!(pfn(&w, p, A.add(4096)), old);
    assert_eq!(copied_and_zeroed(&events), (0, 0), "{events:?}");
}

#[test]
fn write_over_the_shared_zero_page_zeroes_a_fresh_page_and_counts_rss() {
    let mut w = world_without_thp();
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), 16 * K, Prot::READ_WRITE).unwrap();
    w.touch(p, A, Access::Read, Fill::NonZero).unwrap();
    assert!(w.page_info(p, A).zero_page);
    assert_eq!(w.mm(p).unwrap().rss_anon_kb(), 0);
    w.events_mut().enable();
    w.touch(p, A, Access::Write, Fill::NonZero).unwrap();
    let events = w.events_mut().drain();
    assert_eq!(copied_and_zeroed(&events), (0, 4096), "the zero page is not copied but a page zeroed: {events:?}");
    let info = w.page_info(p, A);
    assert!(!info.zero_page && info.order == 0 && info.mapcount == 1 && info.exclusive, "{info:?}");
    assert_eq!(w.mm(p).unwrap().rss_anon_kb(), 4);
    assert_eq!(w.smaps(p)[0].rss_kb, 4);
}

#[test]
fn mthp_reuse_after_child_exit_keeps_the_folio_and_copies_nothing() {
    let mut w = world_with_64k();
    let p = written_region(&mut w, 64 * K, true);
    let base = pfn(&w, p, A);
    assert_eq!(w.page_info(p, A).order, 4);
    let c = w.fork(p).unwrap();
    assert!(folio_at(&w, p, A).maybe_mapped_shared(), "a second mm maps the folio");
    w.exit(c).unwrap();
    assert!(!folio_at(&w, p, A).maybe_mapped_shared(), "the parent's slot owns all 16 mappings again");
    w.events_mut().enable();
    w.touch(p, A.add(8192), Access::Write, Fill::NonZero).unwrap();
    let events = w.events_mut().drain();
    assert_eq!(copied_and_zeroed(&events), (0, 0), "{events:?}");
    assert_eq!(pfn(&w, p, A.add(8192)), base.add(2));
    let f = folio_at(&w, p, A);
    assert_eq!((f.mapcount(), f.refcount(), f.nr_pages_mapped()), (16, 16, 16));
}

#[test]
fn mthp_copy_while_shared_moves_one_mapping_to_a_base_page() {
    let mut w = world_with_64k();
    let p = written_region(&mut w, 64 * K, true);
    let base = pfn(&w, p, A);
    let c = w.fork(p).unwrap();
    let f = folio_at(&w, p, A);
    assert_eq!((f.mapcount(), f.refcount()), (32, 32), "one reference per PTE in both mms");
    w.events_mut().enable();
    w.touch(p, A.add(4096), Access::Write, Fill::NonZero).unwrap();
    let events = w.events_mut().drain();
    assert_eq!(copied_and_zeroed(&events), (4096, 0), "{events:?}");
    assert_ne!(pfn(&w, p, A.add(4096)), base.add(1));
    assert_eq!(pfn(&w, c, A.add(4096)), base.add(1));
    let f = folio_at(&w, c, A);
    assert_eq!((f.mapcount(), f.refcount(), f.nr_pages_mapped()), (31, 31, 16));
    assert!(f.maybe_mapped_shared());
    assert_eq!(f.page_pte_mapcount(1), 1);
    assert_eq!(f.page_pte_mapcount(2), 2);
}

/// Three mms map one folio: the MM_ID slots hold two; the third is
/// untracked and keeps the folio shared until it unmaps.
#[test]
fn mm_id_slots_through_fork_munmap_and_exit() {
    let mut w = world_with_64k();
    let p1 = written_region(&mut w, 64 * K, true);
    let shared = |w: &World, p: Pid| folio_at(w, p, A).maybe_mapped_shared();
    assert!(!shared(&w, p1));
    let p2 = w.fork(p1).unwrap();
    let p3 = w.fork(p1).unwrap();
    assert_eq!(folio_at(&w, p1, A).mapcount(), 48);
    // p2 holds slot 1; p3 is untracked.
    w.munmap(p2, A, 64 * K).unwrap();
    assert!(shared(&w, p1), "p3 still maps the folio without a slot");
    w.munmap(p1, A.add(60 * K), 4 * K).unwrap();
    assert!(shared(&w, p1));
    w.exit(p3).unwrap();
    assert!(!shared(&w, p1), "p1's slot owns all 15 mappings");
    assert_eq!(folio_at(&w, p1, A).mapcount(), 15);
    // p1 unmaps a page at a time down to one: the folio stays exclusive.
    w.munmap(p1, A.add(4 * K), 52 * K).unwrap();
    assert!(!shared(&w, p1));
    let f = folio_at(&w, p1, A);
    assert_eq!((f.mapcount(), f.nr_pages_mapped()), (2, 2));
    // A new child takes the free slot while p1 maps the folio: shared.
    let p4 = w.fork(p1).unwrap();
    assert!(shared(&w, p1));
    w.munmap(p1, A, 64 * K).unwrap();
    assert!(!shared(&w, p4), "p4's slot owns all mappings once p1 is gone");
    assert_eq!(folio_at(&w, p4, A).mapcount(), 2);
    w.exit(p4).unwrap();
    assert_eq!(w.stats().mthp_stat(Order::new(4), MthpStat::NrAnon), 0);
}
