//! A base-page fault workload for profilers: 1 GiB of 4K write faults.
use thpsim_mm::*;

fn main() {
    const GIB: u64 = 1 << 30;
    let base = Vaddr(0x2000_0000_0000);
    let mut w = World::new(Machine { ram_bytes: 4 * GIB }, Config::default());
    w.set_knob("enabled", "never").unwrap();
    let p = w.spawn().unwrap();
    w.mmap(p, Some(base), GIB, Prot::READ_WRITE).unwrap();
    let pages: Vec<u64> = (0..GIB / PAGE_SIZE).collect();
    let t = std::time::Instant::now();
    w.touch_pages(p, base, &pages, Access::Write, Fill::NonZero).unwrap();
    let e = t.elapsed();
    println!("{} faults in {:?}: {:.0} ns/fault", pages.len(), e, e.as_nanos() as f64 / pages.len() as f64);
}
