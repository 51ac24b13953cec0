//! What memory looks like after a step: the one type both backends produce.
//!
//! Models what a kernel developer reads from /proc: smaps per VMA, VmPTE per
//! process, pagemap + kpageflags + kpagecount per virtual page, PAGEMAP_SCAN's
//! PAGE_IS_HUGE for PMD mappings, and /proc/vmstat plus the per-size
//! `hugepages-<size>kB/stats/` counters as deltas since the scenario started.
//!
//! Folio identities are normalised by first appearance (process order, then
//! region order, then address order), so the model's PFNs never need to equal
//! the kernel's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thpsim_workload::ProcId;

/// The whole observation at one point of a scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// Live processes, in `ProcId` order.
    pub procs: Vec<ProcObs>,
    /// /proc/vmstat deltas since the scenario started, kernel names, only the
    /// counters in `VMSTAT_COUNTERS`.
    pub vmstat: BTreeMap<String, i64>,
    /// Per-size stat deltas, keyed `"<size>kB/<stat>"`, e.g. `"64kB/anon_fault_alloc"`,
    /// only the stats in `MTHP_STATS`.
    pub mthp: BTreeMap<String, i64>,
}

/// One process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcObs {
    pub proc: ProcId,
    /// The scenario's name for it (`p1`).
    pub name: String,
    /// `VmPTE` of /proc/<pid>/status in kB: page-table pages of the process,
    /// including PTE tables deposited under PMD THPs.
    pub vm_pte_kb: u64,
    pub regions: Vec<RegionObs>,
}

/// One named region of a process, as the scenario sees it now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionObs {
    pub name: String,
    pub addr: u64,
    pub len: u64,
    /// The VMAs that intersect the region, ascending; smaps fields are for the
    /// whole VMA, as smaps prints them.
    pub vmas: Vec<VmaObs>,
    /// One entry per base page of the region, ascending.
    pub pages: Vec<PageObs>,
}

/// The smaps fields of one VMA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmaObs {
    pub start: u64,
    pub end: u64,
    pub rss_kb: u64,
    pub anonymous_kb: u64,
    pub anon_huge_pages_kb: u64,
    pub swap_kb: u64,
    /// smaps `THPeligible`.
    pub thp_eligible: bool,
    /// smaps `VmFlags` mnemonics that thpsim models (`rd wr ex hg nh dc ac`), sorted.
    pub vm_flags: Vec<String>,
}

/// Whether a virtual page is backed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageState {
    /// Not present and not swapped (pagemap bits 62 and 63 clear).
    #[default]
    None,
    Present,
    Swapped,
}

/// One virtual page, as pagemap, kpageflags, kpagecount and PAGEMAP_SCAN show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageObs {
    pub state: PageState,
    /// Normalised folio id (first appearance is 0); `None` for the shared zero
    /// page, the huge zero page and absent pages.
    pub folio: Option<u32>,
    /// The folio's order (0 for a small folio and the shared zero page,
    /// 9 for the huge zero page).
    pub order: u8,
    /// Mapped by a PMD leaf (PAGEMAP_SCAN `PAGE_IS_HUGE`).
    pub pmd_mapped: bool,
    /// /proc/kpagecount: the page's precise mapcount (0 for zero pages).
    pub mapcount: u64,
    /// pagemap bit 56, PM_MMAP_EXCLUSIVE.
    pub exclusive: bool,
    /// kpageflags ZERO_PAGE (bit 24): the shared zero page or the huge zero page.
    pub zero_page: bool,
}

/// The counters an observation carries, defined once with the scenario
/// language (which checks `expect` lines against them): /proc/vmstat
/// counters and per-size stats as deltas, and the folio sizes that have
/// per-size stats on x86-64.
pub use thpsim_workload::expect::{MTHP_SIZES_KB, MTHP_STATS, VMSTAT_COUNTERS};

/// The raw identity a backend gives a folio before normalisation: the model's
/// folio id or the kernel's head PFN.
pub type RawFolioKey = u64;

/// Renumbers raw folio keys by first appearance across the observation.
/// Backends fill `PageObs::folio` with raw keys (`Some(key as u32)` is not
/// enough for 64-bit PFNs, so they pass them beside the pages) and call this.
pub fn normalise_folios(procs: &mut [ProcObs], raw: &[Vec<Vec<Option<RawFolioKey>>>]) {
    let mut ids: BTreeMap<RawFolioKey, u32> = BTreeMap::new();
    for (proc, raw_regions) in procs.iter_mut().zip(raw) {
        for (region, raw_pages) in proc.regions.iter_mut().zip(raw_regions) {
            for (page, key) in region.pages.iter_mut().zip(raw_pages) {
                page.folio = key.map(|k| {
                    let next = ids.len() as u32;
                    *ids.entry(k).or_insert(next)
                });
            }
        }
    }
}
