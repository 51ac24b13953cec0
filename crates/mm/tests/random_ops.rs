//! Random sequences of operations over several processes: every invariant
//! is checked after every operation (debug build), nothing panics, and
//! when every process has exited and the shrinkers ran, every page is back
//! in the allocator. Shrinks to a minimal failing sequence.

use proptest::prelude::*;
use thpsim_mm::*;

const M: u64 = 1 << 20;
const BASE: u64 = 0x2000_0000_0000;
/// Regions live in 8 slots of 8 MiB, so operations collide often.
const SLOTS: u64 = 8;
const SLOT: u64 = 8 * M;

#[derive(Clone, Debug)]
enum RandomOp {
    Spawn,
    Fork(usize),
    Exit(usize),
    Mmap(usize, u64, u64),
    Munmap(usize, u64, u64),
    Mprotect(usize, u64, u64, bool),
    Mremap(usize, u64, u64, u64),
    Madvise(usize, u64, u64, u8),
    Touch(usize, u64, u64, bool, bool),
    Pin(usize, u64, u64),
    Unpin(usize),
    Khugepaged,
    Shrink,
    Set(u8),
}

/// A page-aligned offset and length inside the 64 MiB arena.
fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..SLOTS * SLOT / 4096, prop_oneof![1..8u64, 1..1024u64, Just(512u64), Just(1024u64)])
        .prop_map(|(page, n)| (page * 4096, n * 4096))
}

fn op() -> impl Strategy<Value = RandomOp> {
    let p = 0..4usize;
    prop_oneof![
        1 => Just(RandomOp::Spawn),
        2 => p.clone().prop_map(RandomOp::Fork),
        1 => p.clone().prop_map(RandomOp::Exit),
        4 => (p.clone(), 0..SLOTS, prop_oneof![Just(2 * M), Just(4 * M), Just(M), Just(3 * M + 4096)]).prop_map(|(p, s, l)| RandomOp::Mmap(p, s * SLOT, l)),
        2 => (p.clone(), range()).prop_map(|(p, (a, l))| RandomOp::Munmap(p, a, l)),
        2 => (p.clone(), range(), any::<bool>()).prop_map(|(p, (a, l), w)| RandomOp::Mprotect(p, a, l, w)),
        1 => (p.clone(), range(), 0..SLOTS * SLOT / 4096).prop_map(|(p, (a, l), d)| RandomOp::Mremap(p, a, l, d * 4096)),
        4 => (p.clone(), range(), 0..12u8).prop_map(|(p, (a, l), adv)| RandomOp::Madvise(p, a, l, adv)),
        8 => (p.clone(), range(), any::<bool>(), any::<bool>()).prop_map(|(p, (a, l), w, z)| RandomOp::Touch(p, a, l, w, z)),
        1 => (p.clone(), range()).prop_map(|(p, (a, l))| RandomOp::Pin(p, a, l)),
        1 => (0..4usize).prop_map(RandomOp::Unpin),
        1 => Just(RandomOp::Khugepaged),
        1 => Just(RandomOp::Shrink),
        2 => (0..8u8).prop_map(RandomOp::Set),
    ]
}

const ADVICES: [Advice; 12] = [
    Advice::Normal,
    Advice::DontNeed,
    Advice::Free,
    Advice::HugePage,
    Advice::NoHugePage,
    Advice::Collapse,
    Advice::Cold,
    Advice::PageOut,
    Advice::PopulateRead,
    Advice::PopulateWrite,
    Advice::DontFork,
    Advice::DoFork,
];

const KNOBS: [(&str, &str); 8] = [
    ("enabled", "always"),
    ("enabled", "madvise"),
    ("hugepages-64kB/enabled", "always"),
    ("hugepages-16kB/enabled", "inherit"),
    ("use_zero_page", "0"),
    ("use_zero_page", "1"),
    ("khugepaged/max_ptes_none", "0"),
    ("defrag", "always"),
];

fn run(ops: &[RandomOp]) {
    let mut w = World::new(Machine { ram_bytes: 128 * M }, Config::default());
    let boot = w.buddy().nr_free_pages();
    let mut procs: Vec<Pid> = vec![w.spawn().unwrap()];
    let mut pins: Vec<PinId> = Vec::new();
    let pick = |procs: &Vec<Pid>, i: usize| procs.get(i % procs.len().max(1)).copied();
    for op in ops {
        let a = |off: u64| Vaddr(BASE + off);
        match *op {
            RandomOp::Spawn => {
                if let Ok(p) = w.spawn() {
                    procs.push(p);
                }
            }
            RandomOp::Fork(i) => {
                if let Some(p) = pick(&procs, i) {
                    if let Ok(c) = w.fork(p) {
                        procs.push(c);
                    }
                }
            }
            RandomOp::Exit(i) => {
                if procs.len() > 1 {
                    let p = procs.remove(i % procs.len());
                    w.exit(p).unwrap();
                }
            }
            RandomOp::Mmap(i, off, len) => {
                if let Some(p) = pick(&procs, i) {
                    let _ = w.mmap(p, Some(a(off)), len, Prot::READ_WRITE);
                }
            }
            RandomOp::Munmap(i, off, len) => {
                if let Some(p) = pick(&procs, i) {
                    w.munmap(p, a(off), len).unwrap();
                }
            }
            RandomOp::Mprotect(i, off, len, write) => {
                if let Some(p) = pick(&procs, i) {
                    let _ = w.mprotect(p, a(off), len, if write { Prot::READ_WRITE } else { Prot::READ });
                }
            }
            RandomOp::Mremap(i, off, len, dst) => {
                if let Some(p) = pick(&procs, i) {
                    let _ = w.mremap(p, a(off), len, len, true, Some(a(dst)));
                }
            }
            RandomOp::Madvise(i, off, len, adv) => {
                if let Some(p) = pick(&procs, i) {
                    let _ = w.madvise(p, a(off), len, ADVICES[adv as usize]);
                }
            }
            RandomOp::Touch(i, off, len, write, zero) => {
                if let Some(p) = pick(&procs, i) {
                    let pages: Vec<u64> = (0..len / 4096).collect();
                    let access = if write { Access::Write } else { Access::Read };
                    let fill = if zero { Fill::Zero } else { Fill::NonZero };
                    let _ = w.touch_pages(p, a(off), &pages, access, fill);
                }
            }
            RandomOp::Pin(i, off, len) => {
                if let Some(p) = pick(&procs, i) {
                    if let Ok(pin) = w.pin_user_pages(p, a(off), len / 4096, true) {
                        pins.push(pin);
                    }
                }
            }
            RandomOp::Unpin(i) => {
                if !pins.is_empty() {
                    let pin = pins.remove(i % pins.len());
                    w.unpin(pin).unwrap();
                }
            }
            RandomOp::Khugepaged => w.khugepaged_scan(1),
            RandomOp::Shrink => w.drop_caches(),
            RandomOp::Set(k) => {
                let (path, value) = KNOBS[k as usize];
                w.set_knob(path, value).unwrap();
            }
        }
    }
    for pin in pins {
        w.unpin(pin).unwrap();
    }
    for p in procs {
        w.exit(p).unwrap();
    }
    w.drop_caches();
    assert_eq!(w.buddy().nr_free_pages(), boot, "pages leaked after every process exited");
    assert_eq!(w.folios().len(), 0, "folios leaked");
    assert_eq!(w.page_tables().len(), 0, "page tables leaked");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, max_shrink_iters: 2000, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_keep_every_invariant_and_leak_nothing(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}

/// Determinism: the same operations give bit-identical counters and layout.
#[test]
fn same_operations_give_identical_results() {
    let script = |w: &mut World| {
        let p = w.spawn().unwrap();
        w.set_knob("enabled", "always").unwrap();
        w.mmap(p, Some(Vaddr(BASE)), 8 * M, Prot::READ_WRITE).unwrap();
        let pages: Vec<u64> = (0..2048).step_by(3).collect();
        w.touch_pages(p, Vaddr(BASE), &pages, Access::Write, Fill::NonZero).unwrap();
        let c = w.fork(p).unwrap();
        w.touch(c, Vaddr(BASE + 4096), Access::Write, Fill::NonZero).unwrap();
        w.munmap(p, Vaddr(BASE + M), 4096).unwrap();
        w.drop_caches();
        w.khugepaged_scan(1);
        let layout: Vec<PageInfo> = (0..2048).map(|i| w.page_info(p, Vaddr(BASE + i * 4096))).collect();
        (w.stats().vmstat(), layout, w.buddy().buddyinfo())
    };
    let mut a = World::new(Machine { ram_bytes: 256 * M }, Config::default());
    let mut b = World::new(Machine { ram_bytes: 256 * M }, Config::default());
    assert_eq!(script(&mut a), script(&mut b));
}
