//! A fault-path workload for profilers (callgrind, perf): PMD THP write
//! faults over 64 GiB, then 4K write faults over 1 GiB.
use thpsim_mm::*;

fn main() {
    const GIB: u64 = 1 << 30;
    let base = Vaddr(0x2000_0000_0000);
    let mut w = World::new(Machine { ram_bytes: 128 * GIB }, Config::default());
    w.set_knob("enabled", "always").unwrap();
    let p = w.spawn().unwrap();
    w.mmap(p, Some(base), 64 * GIB, Prot::READ_WRITE).unwrap();
    let pmd_pages: Vec<u64> = (0..64 * GIB / PMD_SIZE).map(|i| i * 512).collect();
    w.touch_pages(p, base, &pmd_pages, Access::Write, Fill::NonZero).unwrap();
    w.set_knob("enabled", "never").unwrap();
    let q = w.spawn().unwrap();
    w.mmap(q, Some(base), GIB, Prot::READ_WRITE).unwrap();
    let pages: Vec<u64> = (0..GIB / PAGE_SIZE).collect();
    w.touch_pages(q, base, &pages, Access::Write, Fill::NonZero).unwrap();
    println!("{}", w.stats().event(VmEvent::ThpFaultAlloc));
}
