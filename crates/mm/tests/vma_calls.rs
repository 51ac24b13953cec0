//! The overcommit heuristic, mlock()/munlock(), MAP_FIXED and
//! MADV_WIPEONFORK/KEEPONFORK, as Linux 6.18 does them (mm/util.c
//! `__vm_enough_memory()`, mm/mlock.c, mm/vma.c `__mmap_region()`,
//! kernel/fork.c `dup_mmap()`). Public API only; the invariant checker runs
//! after every operation.

use thpsim_mm::*;

const M: u64 = 1 << 20;
const A: Vaddr = Vaddr(0x2000_0000_0000);

fn world() -> (World, Pid) {
    let mut w = World::new(Machine { ram_bytes: 256 * M }, Config::default());
    let p = w.spawn().unwrap();
    (w, p)
}

fn flags(w: &World, p: Pid, addr: Vaddr) -> Vec<&'static str> {
    w.smaps(p).into_iter().find(|v| v.start <= addr && addr < v.end).expect("a VMA there").vm_flags
}

fn rss_kb(w: &World, p: Pid) -> u64 {
    w.smaps(p).iter().map(|v| v.rss_kb).sum()
}

#[test]
fn overcommit_heuristic_refuses_a_single_charge_above_ram() {
    let (mut w, p) = world();
    // A private writable mapping is charged: more than all RAM at once fails.
    assert_eq!(w.mmap(p, Some(A), 512 * M, Prot::READ_WRITE), Err(Errno::NoMem));
    // Up to all RAM passes, however much is mapped in all.
    w.mmap(p, Some(A), 256 * M, Prot::READ_WRITE).unwrap();
    w.mmap(p, Some(A.add(1 << 30)), 256 * M, Prot::READ_WRITE).unwrap();
    // A read-only private mapping is not charged ...
    let ro = A.add(4 << 30);
    w.mmap(p, Some(ro), 1 << 30, Prot::READ).unwrap();
    // ... until mprotect makes it writable.
    assert_eq!(w.mprotect(p, ro, 1 << 30, Prot::READ_WRITE), Err(Errno::NoMem));
    assert_eq!(flags(&w, p, ro), ["rd"]);
    // Growing an accounted mapping charges the growth only.
    assert_eq!(w.mremap(p, A, 256 * M, 768 * M, true, None), Err(Errno::NoMem));
    assert!(w.mremap(p, A, 256 * M, 384 * M, true, None).is_ok());
}

#[test]
fn mlock_populates_with_write_faults_and_munlock_keeps_the_pages() {
    let (mut w, p) = world();
    w.mmap(p, Some(A), 4 * M, Prot::READ_WRITE).unwrap();
    w.madvise(p, A, 4 * M, Advice::HugePage).unwrap();
    // Unaligned start: the range is rounded to pages; the VMA splits there.
    w.mlock(p, A.add(M + 100), M - 100).unwrap();
    assert_eq!(flags(&w, p, A.add(M)), ["rd", "wr", "lo", "ac", "hg"]);
    assert_eq!(flags(&w, p, A), ["rd", "wr", "ac", "hg"]);
    assert_eq!(w.smaps(p).len(), 3, "mlock split the VMA in three");
    // The locked megabyte is populated by write faults: real pages, no zero page.
    assert_eq!(rss_kb(&w, p), 1024);
    let info = w.page_info(p, A.add(M));
    assert!(info.state == PageState::Present && !info.zero_page && !info.pmd_mapped);
    // munlock clears the flag, the VMAs merge back, the pages stay.
    w.munlock(p, A.add(M), M).unwrap();
    assert_eq!(w.smaps(p).len(), 1);
    assert_eq!(rss_kb(&w, p), 1024);
    // A whole locked PMD block gets a THP (it is a write fault like any other).
    w.mlock(p, A.add(2 * M), 2 * M).unwrap();
    assert!(w.page_info(p, A.add(2 * M)).pmd_mapped);
}

#[test]
fn mlock_errors_follow_mlock_posix_error_return() {
    let (mut w, p) = world();
    w.mmap(p, Some(A), M, Prot::READ_WRITE).unwrap();
    w.mmap(p, Some(A.add(2 * M)), M, Prot::NONE).unwrap();
    // A hole: ENOMEM, the VMA before it locked.
    assert_eq!(w.mlock(p, A, 2 * M), Err(Errno::NoMem));
    assert!(flags(&w, p, A).contains(&"lo"));
    // PROT_NONE: locked, not populated (populate_vma_page_range() is
    // EFAULT, which mlock reports as ENOMEM).
    assert_eq!(w.mlock(p, A.add(2 * M), M), Err(Errno::NoMem));
    assert_eq!(flags(&w, p, A.add(2 * M)), ["lo"]);
    // Out of memory while populating: EAGAIN.
    let mut small = World::new(Machine { ram_bytes: 8 * M }, Config::default());
    let q = small.spawn().unwrap();
    small.mmap(q, Some(A), 8 * M, Prot::READ_WRITE).unwrap();
    assert_eq!(small.mlock(q, A, 8 * M), Err(Errno::Again));
    // madvise advices that reclaim refuse a locked VMA.
    for advice in [Advice::DontNeed, Advice::Free, Advice::Cold, Advice::PageOut] {
        assert_eq!(w.madvise(p, A, M, advice), Err(Errno::Inval), "{advice:?}");
    }
}

#[test]
fn fork_neither_copies_the_lock_nor_a_wiped_range() {
    let (mut w, p) = world();
    w.mmap(p, Some(A), 2 * M, Prot::READ_WRITE).unwrap();
    w.mlock(p, A, M).unwrap();
    w.madvise(p, A.add(M), M, Advice::WipeOnFork).unwrap();
    w.touch_pages(p, A, 0..512u64, Access::Write, Fill::NonZero).unwrap();
    assert_eq!(flags(&w, p, A.add(M)), ["rd", "wr", "ac", "wf"]);
    let c = w.fork(p).unwrap();
    // The child's VMAs are not locked; the wiped half is empty there.
    assert_eq!(flags(&w, c, A), ["rd", "wr", "ac"]);
    assert_eq!(w.page_info(c, A).mapcount, 2, "the locked half is shared");
    assert_eq!(w.page_info(c, A.add(M)).state, PageState::None);
    assert_eq!(w.page_info(p, A.add(M)).mapcount, 1);
    // KEEPONFORK clears the flag: the next child shares the pages.
    w.madvise(p, A.add(M), M, Advice::KeepOnFork).unwrap();
    let d = w.fork(p).unwrap();
    assert_eq!(w.page_info(d, A.add(M)).state, PageState::Present);
}

#[test]
fn map_fixed_replaces_what_was_mapped() {
    let (mut w, p) = world();
    w.mmap(p, Some(A), 4 * M, Prot::READ_WRITE).unwrap();
    w.touch_pages(p, A, 0..1024u64, Access::Write, Fill::NonZero).unwrap();
    assert_eq!(w.mmap(p, Some(A.add(M)), M, Prot::READ), Err(Errno::Exist), "MAP_FIXED_NOREPLACE");
    w.mmap_fixed(p, A.add(M), M, Prot::READ).unwrap();
    // The old pages there are gone, the new VMA stands between the halves.
    assert_eq!(w.page_info(p, A.add(M)).state, PageState::None);
    assert_eq!(flags(&w, p, A.add(M)), ["rd"]);
    assert_eq!(rss_kb(&w, p), 3 * 1024);
    assert_eq!(w.smaps(p).len(), 3);
}
