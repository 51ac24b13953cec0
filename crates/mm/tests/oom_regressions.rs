//! Regression tests for model bugs that `random_ops_oom.rs` found on the
//! out-of-memory paths (all fixed). Each asserts what Linux 6.18 does.

use thpsim_mm::*;

const M: u64 = 1 << 20;
const G: u64 = 1 << 30;
const A: Vaddr = Vaddr(0x2000_0000_0000);

fn world() -> World {
    World::new(Machine { ram_bytes: 256 * M }, Config::default())
}

/// mremap() to a 1 GiB-aligned destination needs a new PMD table there; when
/// that allocation fails, Linux's `move_page_tables()` returns the length it
/// moved (0), `move_vma()` moves nothing back and mremap() fails with ENOMEM,
/// leaving the old mapping as it was. (The model once panicked here.)
#[test]
fn mremap_answers_enomem_when_a_table_cannot_be_allocated() {
    let mut w = world();
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), 4096, Prot::READ_WRITE).unwrap();
    w.touch(p, A, Access::Write, Fill::NonZero).unwrap();
    w.inject(FailPoint::PageTable, FailAttr::nth(1));
    assert_eq!(w.mremap(p, A, 4096, 4096, true, Some(A.add(G))), Err(Errno::NoMem));
    assert_eq!(w.fault_injection().nr_injected(FailPoint::PageTable), 1);
    assert!(w.page_info(p, A).folio.is_some(), "the old mapping stays after a failed move");
}

/// A PMD fault whose deposited PTE table cannot be allocated frees the new
/// THP again (`__do_huge_pmd_anonymous_page()`: `folio_put()`, then
/// VM_FAULT_OOM). The folio was never mapped, so it never became anon and
/// `free_pages_prepare()` leaves `nr_anon` alone. (The model once drove the
/// order-9 `nr_anon` gauge to -1 here.) Allocations at the page-table point: the PGD
/// (spawn), then the PUD and PMD tables of the fault, then the deposit.
#[test]
fn thp_fault_without_a_deposit_frees_the_unmapped_folio_without_moving_nr_anon() {
    let mut w = world();
    w.inject(FailPoint::PageTable, FailAttr::nth(4));
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), 2 * M, Prot::READ_WRITE).unwrap();
    w.madvise(p, A, 2 * M, Advice::HugePage).unwrap();
    assert_eq!(w.touch(p, A, Access::Write, Fill::NonZero), Err(Errno::NoMem));
    assert_eq!(w.fault_injection().nr_injected(FailPoint::PageTable), 1, "the deposit allocation failed");
    assert_eq!(w.stats().mthp_stat(Order::PMD, MthpStat::NrAnon), 0);
    assert_eq!(w.stats().event(VmEvent::ThpFaultAlloc), 0);
}

/// Not an out-of-memory path, but found by the same test: a PMD THP mapped
/// by a parent and two children (no free `CONFIG_MM_ID` slot for the second
/// child); the parent exits, freeing its slot; splitting the PMD in the
/// second child (munmap of one page) adds its 512 PTE mappings under the
/// freed slot, then removes its PMD mapping from that slot, which never
/// counted it. Linux 6.18 allows exactly this (`folio_sub_return_large_mapcount()`:
/// "valid corner cases where we might underflow a per-MM mapcount") and has
/// set the folio's shared bit when the slot was taken over. The invariant
/// checker accepts a slot that undercounts its mm (never one that
/// overcounts), and demands exact counts only of a folio not marked shared.
#[test]
fn mm_id_slot_taken_over_after_parent_exit_may_undercount() {
    let mut w = world();
    w.set_knob("enabled", "always").unwrap();
    let parent = w.spawn().unwrap();
    w.mmap(parent, Some(A), 2 * M, Prot::READ_WRITE).unwrap();
    w.touch(parent, A, Access::Write, Fill::NonZero).unwrap();
    let _first = w.fork(parent).unwrap();
    let second = w.fork(parent).unwrap();
    w.exit(parent).unwrap();
    assert_eq!(w.munmap(second, A, 4096), Ok(()));
    let info = w.page_info(second, A.add(4096));
    assert!(!info.pmd_mapped && info.mapcount == 2, "the rest stays PTE-mapped in this child, PMD-mapped in the other");
}
