//! The model's own benchmarks: fault rates, fork and munmap of large THP
//! mappings, and the host memory a fully mapped 1 TiB machine takes.
//! Single-threaded, release build (no invariant checks).

use std::time::Instant;

use thpsim_mm::{Access, Advice, Config, Fill, Machine, Prot, Vaddr, World, PAGE_SIZE, PMD_SIZE};

use crate::bench::BenchResult;

const GIB: u64 = 1 << 30;
const BASE: Vaddr = Vaddr(0x2000_0000_0000);

fn machine(ram: u64, enabled: &str) -> World {
    let mut w = World::new(Machine { ram_bytes: ram }, Config::default());
    w.set_knob("enabled", enabled).expect("knob");
    w
}

fn result(name: &str, value: f64, unit: &'static str) -> BenchResult {
    BenchResult { name: name.to_string(), value, unit }
}

/// Maps `len` bytes and writes one byte per `stride`; returns the seconds.
fn fault_in(w: &mut World, pid: thpsim_mm::Pid, len: u64, stride: u64) -> f64 {
    w.mmap(pid, Some(BASE), len, Prot::READ_WRITE).expect("mmap");
    w.madvise(pid, BASE, len, Advice::HugePage).expect("madvise");
    let pages: Vec<u64> = (0..len / stride).map(|i| i * stride / PAGE_SIZE).collect();
    let t = Instant::now();
    w.touch_pages(pid, BASE, &pages, Access::Write, Fill::NonZero).expect("touch");
    t.elapsed().as_secs_f64()
}

fn peak_rss_kb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn model_benchmarks() -> Vec<BenchResult> {
    let mut out = Vec::new();

    // 1 TiB machine fully mapped by PMD THPs (less the reserves).
    let mut w = machine(1 << 40, "always");
    let p = w.spawn().expect("spawn");
    let len = (1u64 << 40) - 8 * GIB;
    let secs = fault_in(&mut w, p, len, PMD_SIZE);
    let faults = (len / PMD_SIZE) as f64;
    out.push(result("model.pmd_thp_write_faults_per_sec", faults / secs, "faults/s"));
    out.push(result("model.pmd_thp_1tib_mapped_gib", len as f64 / GIB as f64, "GiB"));
    if let Some(kb) = peak_rss_kb() {
        out.push(result("model.peak_host_rss_1tib_thp_mapped", kb / 1024.0, "MiB"));
    }
    drop(w);

    // 4K write faults: 8 GiB touched page by page with THP off.
    let mut w = machine(16 * GIB, "never");
    let p = w.spawn().expect("spawn");
    let secs = fault_in(&mut w, p, 8 * GIB, PAGE_SIZE);
    out.push(result("model.base_page_write_faults_per_sec", (8 * GIB / PAGE_SIZE) as f64 / secs, "faults/s"));
    let t = Instant::now();
    let c = w.fork(p).expect("fork");
    out.push(result("model.fork_8gib_4k_mapped", t.elapsed().as_secs_f64() * 1e3, "ms"));
    w.exit(c).expect("exit");
    let t = Instant::now();
    w.munmap(p, BASE, 8 * GIB).expect("munmap");
    out.push(result("model.munmap_8gib_4k_mapped", t.elapsed().as_secs_f64() * 1e3, "ms"));
    drop(w);

    // fork and munmap of a process with 10 GiB of PMD THPs.
    let mut w = machine(32 * GIB, "always");
    let p = w.spawn().expect("spawn");
    fault_in(&mut w, p, 10 * GIB, PMD_SIZE);
    let t = Instant::now();
    let c = w.fork(p).expect("fork");
    out.push(result("model.fork_10gib_thp", t.elapsed().as_secs_f64() * 1e3, "ms"));
    let t = Instant::now();
    w.touch_pages(c, BASE, (0..10 * GIB / PMD_SIZE).map(|i| i * 512), Access::Write, Fill::NonZero).expect("cow");
    out.push(result(
        "model.cow_fault_on_shared_pmd_per_sec",
        (10 * GIB / PMD_SIZE) as f64 / t.elapsed().as_secs_f64(),
        "faults/s",
    ));
    w.exit(c).expect("exit");
    let t = Instant::now();
    w.munmap(p, BASE, 10 * GIB).expect("munmap");
    out.push(result("model.munmap_10gib_thp", t.elapsed().as_secs_f64() * 1e3, "ms"));
    out
}
