//! The deferred-split queue and its shrinker, through the public API: which
//! folios `deferred_split_folio()` queues, when `deferred_split_scan()`
//! takes them off, and the `thp_underused()` threshold at its boundary.

use thpsim_mm::*;

const M: u64 = 1 << 20;
const A: Vaddr = Vaddr(0x2000_0000_0000);

fn world() -> World {
    let mut w = World::new(Machine { ram_bytes: 256 * M }, Config::default());
    w.set_knob("enabled", "madvise").unwrap();
    w
}

/// A PMD THP at A with the first `written` pages written (non-zero).
fn thp(w: &mut World, written: u64) -> Pid {
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), 2 * M, Prot::READ_WRITE).unwrap();
    w.madvise(p, A, 2 * M, Advice::HugePage).unwrap();
    let pages: Vec<u64> = (0..written.max(1)).collect();
    let fill = if written == 0 { Fill::Zero } else { Fill::NonZero };
    w.touch_pages(p, A, &pages, Access::Write, fill).unwrap();
    assert!(w.page_info(p, A).pmd_mapped);
    p
}

fn deferred(w: &World, p: Pid) -> folio::DeferredState {
    let id = w.page_info(p, A).folio.expect("a folio at A");
    w.folios()[id].deferred()
}

fn ev(w: &World, e: VmEvent) -> u64 {
    w.stats().event(e)
}

#[test]
fn fresh_thp_is_queued_for_the_underused_shrinker_only_when_enabled() {
    let mut w = world();
    let p = thp(&mut w, 512);
    assert_eq!(w.deferred_split_queue_len(), 1);
    let d = deferred(&w, p);
    assert!(d.queued && !d.partially_mapped, "{d:?}");
    // Fully written: the shrinker leaves it whole and takes it off the queue.
    w.drop_caches();
    assert_eq!(w.deferred_split_queue_len(), 0);
    assert!(!deferred(&w, p).queued);
    assert!(w.page_info(p, A).pmd_mapped);
    assert_eq!((ev(&w, VmEvent::ThpSplitPage), ev(&w, VmEvent::ThpUnderusedSplitPage)), (0, 0));

    let mut w = world();
    w.set_knob("shrink_underused", "0").unwrap();
    let p = thp(&mut w, 1);
    assert_eq!(w.deferred_split_queue_len(), 0);
    assert!(!deferred(&w, p).queued);
}

#[test]
fn partial_unmap_queues_once_and_the_shrinker_empties_the_queue() {
    let mut w = world();
    let p = thp(&mut w, 512);
    w.munmap(p, A.add(M), 4096).unwrap();
    let d = deferred(&w, p);
    assert!(d.queued && d.partially_mapped, "{d:?}");
    assert_eq!(w.deferred_split_queue_len(), 1, "queued once, though already queued as a fresh THP");
    assert_eq!(w.stats().mthp_stat(Order::PMD, MthpStat::NrAnonPartiallyMapped), 1);
    // A second hole does not queue or count it again.
    w.munmap(p, A.add(M + 8192), 4096).unwrap();
    assert_eq!(w.deferred_split_queue_len(), 1);
    assert_eq!(ev(&w, VmEvent::ThpDeferredSplitPage), 1);
    assert_eq!(w.stats().mthp_stat(Order::PMD, MthpStat::SplitDeferred), 1);
    w.drop_caches();
    assert_eq!(w.deferred_split_queue_len(), 0);
    assert_eq!(ev(&w, VmEvent::ThpSplitPage), 1);
    assert_eq!(w.stats().mthp_stat(Order::PMD, MthpStat::NrAnonPartiallyMapped), 0);
    assert_eq!(w.stats().mthp_stat(Order::PMD, MthpStat::NrAnon), 0);
    assert_eq!(w.page_info(p, A).order, 0);
}

/// A folio taken off the queue and queued again is on it once: the shrinker
/// splits it once.
#[test]
fn a_folio_queued_again_after_the_shrinker_dropped_it_is_split_once() {
    let mut w = world();
    let p = thp(&mut w, 512);
    let q = w.spawn().unwrap();
    w.mmap(q, Some(A), 2 * M, Prot::READ_WRITE).unwrap();
    w.madvise(q, A, 2 * M, Advice::HugePage).unwrap();
    w.touch(q, A, Access::Write, Fill::NonZero).unwrap();
    assert_eq!(w.deferred_split_queue_len(), 2);
    // p's THP is fully written: used, dropped from the queue. q's is not.
    w.set_knob("khugepaged/max_ptes_none", "0").unwrap();
    w.drop_caches();
    assert_eq!(ev(&w, VmEvent::ThpUnderusedSplitPage), 1);
    assert_eq!(w.deferred_split_queue_len(), 0);
    // Queued again, as partially mapped this time.
    w.munmap(p, A.add(M), 4096).unwrap();
    assert_eq!(w.deferred_split_queue_len(), 1);
    w.drop_caches();
    assert_eq!(ev(&w, VmEvent::ThpSplitPage), 2);
    assert_eq!(w.deferred_split_queue_len(), 0);
    assert_eq!(w.page_info(p, A).order, 0);
}

#[test]
fn a_pinned_partially_mapped_thp_stays_queued_until_unpinned() {
    let mut w = world();
    let p = thp(&mut w, 512);
    let pin = w.pin_user_pages(p, A, 1, false).unwrap();
    w.munmap(p, A.add(M), 4096).unwrap();
    w.drop_caches();
    assert_eq!(ev(&w, VmEvent::ThpSplitPageFailed), 1);
    assert_eq!(w.deferred_split_queue_len(), 1, "a partially mapped folio that failed to split stays queued");
    assert!(deferred(&w, p).partially_mapped);
    w.unpin(pin).unwrap();
    w.drop_caches();
    assert_eq!(ev(&w, VmEvent::ThpSplitPage), 1);
    assert_eq!(w.deferred_split_queue_len(), 0);
}

/// `thp_underused()`: a THP is underused when more than `max_ptes_none` of
/// its pages are all zero. Checked on both sides of the boundary.
#[test]
fn underused_threshold_is_max_ptes_none_zero_pages() {
    for max_ptes_none in [0u64, 1, 100, 510] {
        for (written, split) in [(512 - max_ptes_none, false), (511 - max_ptes_none, true)] {
            let mut w = world();
            w.set_knob("khugepaged/max_ptes_none", &max_ptes_none.to_string()).unwrap();
            let p = thp(&mut w, written);
            w.drop_caches();
            let case = format!("max_ptes_none={max_ptes_none} written={written}");
            assert_eq!(ev(&w, VmEvent::ThpUnderusedSplitPage), u64::from(split), "{case}");
            assert_eq!(ev(&w, VmEvent::ThpSplitPage), u64::from(split), "{case}");
            assert_eq!(w.deferred_split_queue_len(), 0, "{case}");
            let info = w.page_info(p, A);
            assert_eq!(info.pmd_mapped, !split, "{case}: {info:?}");
            if split {
                // The written pages stay, the zero ones go to the zero page.
                assert_eq!(info.order, 0, "{case}");
                assert!(w.page_info(p, A.add(511 * 4096)).zero_page, "{case}");
                assert_eq!(w.smaps(p)[0].rss_kb, written * 4, "{case}");
            }
        }
    }
    // max_ptes_none = 511 turns the shrinker off for unwritten THPs.
    let mut w = world();
    w.set_knob("khugepaged/max_ptes_none", "511").unwrap();
    let p = thp(&mut w, 0);
    w.drop_caches();
    assert!(w.page_info(p, A).pmd_mapped);
    assert_eq!(ev(&w, VmEvent::ThpUnderusedSplitPage), 0);
}

/// The huge zero folio is freed by the shrinker once no mm holds it, and
/// allocated again by the next read fault that needs it.
#[test]
fn huge_zero_folio_is_freed_by_the_shrinker_when_unused() {
    let mut w = world();
    let free_at_boot = w.buddy().nr_free_pages();
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), 2 * M, Prot::READ_WRITE).unwrap();
    w.madvise(p, A, 2 * M, Advice::HugePage).unwrap();
    w.touch(p, A, Access::Read, Fill::NonZero).unwrap();
    assert!(w.page_info(p, A).zero_page);
    assert_eq!(ev(&w, VmEvent::ThpZeroPageAlloc), 1);
    // Mapped: the shrinker keeps it.
    w.drop_caches();
    assert!(w.page_info(p, A).pfn.is_some());
    w.exit(p).unwrap();
    assert!(w.buddy().nr_free_pages() < free_at_boot, "the global reference keeps the huge zero folio");
    w.drop_caches();
    assert_eq!(w.buddy().nr_free_pages(), free_at_boot, "the shrinker freed the huge zero folio");
    let q = w.spawn().unwrap();
    w.mmap(q, Some(A), 2 * M, Prot::READ_WRITE).unwrap();
    w.madvise(q, A, 2 * M, Advice::HugePage).unwrap();
    w.touch(q, A, Access::Read, Fill::NonZero).unwrap();
    assert_eq!(ev(&w, VmEvent::ThpZeroPageAlloc), 2);
}
