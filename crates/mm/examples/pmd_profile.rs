use thpsim_mm::*;
fn main() {
    const GIB: u64 = 1 << 30;
    let base = Vaddr(0x2000_0000_0000);
    let mut w = World::new(Machine { ram_bytes: 256 * GIB }, Config::default());
    w.set_knob("enabled", "always").unwrap();
    let p = w.spawn().unwrap();
    w.mmap(p, Some(base), 200 * GIB, Prot::READ_WRITE).unwrap();
    let pmd_pages: Vec<u64> = (0..200 * GIB / PMD_SIZE).map(|i| i * 512).collect();
    let t = std::time::Instant::now();
    w.touch_pages(p, base, &pmd_pages, Access::Write, Fill::NonZero).unwrap();
    let e = t.elapsed();
    println!("{} faults in {:?}: {:.0} ns/fault", pmd_pages.len(), e, e.as_nanos() as f64 / pmd_pages.len() as f64);
}
