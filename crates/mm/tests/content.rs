//! Page contents survive what moves or copies pages: COW, PMD split, folio
//! split, collapse and mremap (issue 8, class 13). A pattern store writes
//! `pattern_word(tag, i)` at the start of page i of the touched range; a
//! load reads it back.

use thpsim_mm::mman::{pattern_word, NONZERO_FILL};
use thpsim_mm::*;

const M: u64 = 1 << 20;
const A: Vaddr = Vaddr(0x2000_0000_0000);
const TAG: u64 = 0x7e57;

fn world() -> (World, Pid) {
    let mut w = World::new(Machine { ram_bytes: 256 * M }, Config::default());
    w.set_knob("enabled", "always").unwrap();
    let p = w.spawn().unwrap();
    w.mmap(p, Some(A), 4 * M, Prot::READ_WRITE).unwrap();
    (w, p)
}

fn assert_pattern(w: &mut World, p: Pid, at: Vaddr, nr: u64, what: &str) {
    for i in 0..nr {
        let got = w.read_word(p, at.add(i * 4096)).unwrap();
        assert_eq!(got, pattern_word(TAG, i), "{what}: page {i} at {}", at.add(i * 4096));
    }
}

#[test]
fn pattern_survives_cow_split_collapse_and_mremap() {
    let (mut w, p) = world();
    w.touch_pages(p, A, 0..1024u64, Access::Write, Fill::Pattern(TAG)).unwrap();
    assert!(w.page_info(p, A).pmd_mapped, "a PMD THP holds the pattern");
    assert_pattern(&mut w, p, A, 1024, "after the stores");
    // COW: the child writes one page; both keep the rest.
    let c = w.fork(p).unwrap();
    w.touch(c, A.add(4096), Access::Write, Fill::NonZero).unwrap();
    assert_eq!(w.read_word(c, A.add(4096)).unwrap(), (pattern_word(TAG, 1) & !0xff) | u64::from(NONZERO_FILL));
    assert_pattern(&mut w, p, A, 1024, "parent after the child's COW");
    w.exit(c).unwrap();
    // PMD split and folio split: munmap of one page, then the shrinker.
    w.munmap(p, A.add(1023 * 4096), 4096).unwrap();
    w.drop_caches();
    assert!(!w.page_info(p, A.add(2 * M)).pmd_mapped);
    assert_pattern(&mut w, p, A, 1023, "after the split");
    // Collapse back: MADV_COLLAPSE copies every page.
    w.mmap(p, Some(A.add(1023 * 4096)), 4096, Prot::READ_WRITE).unwrap();
    w.madvise(p, A, 4 * M, Advice::Collapse).unwrap();
    assert!(w.page_info(p, A.add(2 * M)).pmd_mapped);
    assert_pattern(&mut w, p, A, 1023, "after the collapse");
    // mremap to an unaligned destination: PMDs split, PTEs move.
    let to = Vaddr(0x3000_0000_0000 + 4096);
    w.mremap(p, A, 4 * M, 4 * M, true, Some(to)).unwrap();
    assert_pattern(&mut w, p, to, 1023, "after mremap");
}

#[test]
fn a_load_of_a_never_touched_page_reads_zero_and_maps_the_zero_page() {
    let (mut w, p) = world();
    assert_eq!(w.read_word(p, A.add(2 * M)).unwrap(), 0);
    assert!(w.page_info(p, A.add(2 * M)).zero_page);
    // A byte store keeps the pattern's upper bytes, as on the hardware.
    w.touch(p, A, Access::Write, Fill::Pattern(TAG)).unwrap();
    w.touch(p, A, Access::Write, Fill::Zero).unwrap();
    assert_eq!(w.read_word(p, A).unwrap(), pattern_word(TAG, 0) & !0xff);
}
