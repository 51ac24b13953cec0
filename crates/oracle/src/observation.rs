//! What memory looks like after a step: the one type both backends produce.
//!
//! Models what a kernel developer reads from /proc: smaps per VMA, VmPTE per
//! process, pagemap + kpageflags + kpagecount per virtual page, PAGEMAP_SCAN's
//! PAGE_IS_HUGE for PMD mappings, and /proc/vmstat plus the per-size
//! `hugepages-<size>kB/stats/` counters as deltas since the scenario started.
//!
//! Pages are held as runs of consecutive pages that look alike (`PageRun`),
//! so an observation costs memory in proportion to what is populated, not to
//! the size of the regions: a never-touched 1 TiB region is one run.
//!
//! Folio identities are normalised by first appearance (process order, then
//! region order, then address order), so the model's PFNs never need to equal
//! the kernel's.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use thpsim_workload::ProcId;

/// The whole observation at one point of a scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// Live processes, in `ProcId` order.
    pub procs: Vec<ProcObs>,
    /// /proc/vmstat deltas since the scenario started, kernel names, only the
    /// counters in `VMSTAT_COUNTERS`; and khugepaged's counters
    /// (`KHUGEPAGED_COUNTERS`) as `khugepaged/<name>`.
    pub vmstat: BTreeMap<String, i64>,
    /// Per-size stat deltas, keyed `"<size>kB/<stat>"`, e.g. `"64kB/anon_fault_alloc"`,
    /// only the stats in `MTHP_STATS`.
    pub mthp: BTreeMap<String, i64>,
    /// Words read back for a `content` expectation at this step (read before
    /// the rest was observed): per process and start address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contents: Vec<ContentObs>,
}

/// The words at the start of consecutive pages, read with loads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentObs {
    pub proc: ProcId,
    /// The first page's address.
    pub addr: u64,
    pub read: crate::WordsRead,
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
    /// The region's base pages as runs, ascending: they cover page offsets
    /// `0..nr_pages()` without gap or overlap, and two neighbouring runs never
    /// carry equal `PageObs` (absent pages form one run).
    pub runs: Vec<PageRun>,
}

/// Consecutive base pages of a region that pagemap, kpageflags, kpagecount
/// and PAGEMAP_SCAN show alike: same state, normalised folio, order, PMD
/// mapping, mapcount, exclusive bit and zero-page flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    /// The first page's index in its region (byte offset / 4 KiB).
    pub first: u64,
    pub nr_pages: u64,
    /// What every page of the run looks like.
    pub page: PageObs,
}

impl PageRun {
    /// The page indices the run covers.
    pub fn range(&self) -> Range<u64> {
        self.first..self.first + self.nr_pages
    }
}

impl RegionObs {
    /// Base pages in the region (a partial last page counts).
    pub fn nr_pages(&self) -> u64 {
        self.len.div_ceil(PAGE_SIZE)
    }

    /// The page at `index`, or `None` beyond the region. O(log runs).
    pub fn page(&self, index: u64) -> Option<&PageObs> {
        let i = self.runs.partition_point(|r| r.first + r.nr_pages <= index);
        self.runs.get(i).filter(|r| r.first <= index).map(|r| &r.page)
    }

    /// The runs that intersect the page indices `pages`, clipped to them:
    /// (clipped range, page), ascending.
    pub fn runs_in(&self, pages: Range<u64>) -> impl Iterator<Item = (Range<u64>, &PageObs)> + '_ {
        let from = self.runs.partition_point(|r| r.first + r.nr_pages <= pages.start);
        self.runs[from..]
            .iter()
            .take_while(move |r| r.first < pages.end)
            .map(move |r| (r.first.max(pages.start)..(r.first + r.nr_pages).min(pages.end), &r.page))
    }

    /// Every page, one by one: for tests and small regions only.
    pub fn pages(&self) -> impl Iterator<Item = &PageObs> + '_ {
        self.runs.iter().flat_map(|r| std::iter::repeat_n(&r.page, r.nr_pages as usize))
    }
}

/// Builds a region's runs from pages given in address order, merging
/// neighbours that are equal (folio ids, raw or normalised, included).
#[derive(Clone, Debug, Default)]
pub struct PageRunsBuilder {
    runs: Vec<PageRun>,
    raw: Vec<Option<RawFolioKey>>,
    next: u64,
}

impl PageRunsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `nr_pages` pages that look like `page`, in a folio with raw
    /// key `raw` (`page.folio` is ignored; `normalise_folios` fills it).
    pub fn push(&mut self, nr_pages: u64, page: PageObs, raw: Option<RawFolioKey>) {
        if nr_pages == 0 {
            return;
        }
        let page = PageObs { folio: None, ..page };
        match (self.runs.last_mut(), self.raw.last()) {
            (Some(last), Some(&last_raw)) if last.page == page && last_raw == raw => last.nr_pages += nr_pages,
            _ => {
                self.runs.push(PageRun { first: self.next, nr_pages, page });
                self.raw.push(raw);
            }
        }
        self.next += nr_pages;
    }

    /// Pages pushed so far.
    pub fn nr_pages(&self) -> u64 {
        self.next
    }

    /// The runs (folio ids unset) and each run's raw folio key.
    pub fn finish(self) -> (Vec<PageRun>, Vec<Option<RawFolioKey>>) {
        (self.runs, self.raw)
    }
}

/// Runs of pages already carrying their folio ids, merged as a backend
/// merges them: for tests and toy backends that describe pages one by one.
pub fn runs_of_pages(pages: &[PageObs]) -> Vec<PageRun> {
    let mut runs: Vec<PageRun> = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        match runs.last_mut() {
            Some(last) if last.page == *page => last.nr_pages += 1,
            _ => runs.push(PageRun { first: i as u64, nr_pages: 1, page: *page }),
        }
    }
    runs
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
    /// smaps `Pss`.
    #[serde(default)]
    pub pss_kb: u64,
    /// smaps `Shared_Clean`, `Shared_Dirty`, `Private_Clean`, `Private_Dirty`.
    #[serde(default)]
    pub shared_clean_kb: u64,
    #[serde(default)]
    pub shared_dirty_kb: u64,
    #[serde(default)]
    pub private_clean_kb: u64,
    #[serde(default)]
    pub private_dirty_kb: u64,
    /// smaps `LazyFree`.
    #[serde(default)]
    pub lazyfree_kb: u64,
    /// smaps `THPeligible`.
    pub thp_eligible: bool,
    /// smaps `VmFlags` mnemonics that thpsim models (`MODELLED_VM_FLAGS`), sorted.
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
    /// kpageflags LRU (bit 5), read after the per-CPU LRU batches are drained.
    #[serde(default)]
    pub lru: bool,
    /// kpageflags SWAPBACKED (bit 14): clear on a lazyfree (MADV_FREE) folio.
    #[serde(default)]
    pub swapbacked: bool,
    /// kpageflags SWAPCACHE (bit 13).
    #[serde(default)]
    pub swapcache: bool,
}

/// The smaps `VmFlags` mnemonics an observation carries: those the model
/// keeps (`thpsim_mm::VmFlags::mnemonics`); the Linux backend drops the rest.
pub use thpsim_workload::expect::VM_FLAGS as MODELLED_VM_FLAGS;

/// The counters an observation carries, defined once with the scenario
/// language (which checks `expect` lines against them): /proc/vmstat
/// counters and per-size stats as deltas, and the folio sizes that have
/// per-size stats on x86-64.
pub use thpsim_workload::expect::{KHUGEPAGED_COUNTERS, MTHP_SIZES_KB, MTHP_STATS, VMSTAT_COUNTERS};

/// The keys of an observation's `vmstat` map: `VMSTAT_COUNTERS`, then
/// `khugepaged/<name>` for each of `KHUGEPAGED_COUNTERS`.
pub fn vmstat_keys() -> impl Iterator<Item = String> {
    VMSTAT_COUNTERS
        .iter()
        .map(|name| name.to_string())
        .chain(KHUGEPAGED_COUNTERS.iter().map(|name| format!("khugepaged/{name}")))
}

/// The raw identity a backend gives a folio before normalisation: the model's
/// folio id or the kernel's head PFN.
pub type RawFolioKey = u64;

/// Bytes in a base page.
const PAGE_SIZE: u64 = 4096;

/// Renumbers raw folio keys by first appearance across the observation.
/// Backends pass the raw keys beside the runs, one per run
/// (`Some(key as u32)` is not enough for 64-bit PFNs), and call this.
/// First appearance by run is first appearance by page, and renumbering is
/// one to one, so runs built on raw keys stay distinct.
pub fn normalise_folios(procs: &mut [ProcObs], raw: &[Vec<Vec<Option<RawFolioKey>>>]) {
    let mut ids: BTreeMap<RawFolioKey, u32> = BTreeMap::new();
    for (proc, raw_regions) in procs.iter_mut().zip(raw) {
        for (region, raw_runs) in proc.regions.iter_mut().zip(raw_regions) {
            for (run, key) in region.runs.iter_mut().zip(raw_runs) {
                run.page.folio = key.map(|k| {
                    let next = ids.len() as u32;
                    *ids.entry(k).or_insert(next)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(mapcount: u64) -> PageObs {
        PageObs { state: PageState::Present, mapcount, exclusive: mapcount == 1, ..PageObs::default() }
    }

    fn region(runs: Vec<PageRun>, nr_pages: u64) -> RegionObs {
        RegionObs { name: "A".into(), addr: 0x20_0000, len: nr_pages * PAGE_SIZE, vmas: vec![], runs }
    }

    #[test]
    fn builder_merges_equal_neighbours_by_raw_key() {
        let mut b = PageRunsBuilder::new();
        b.push(3, PageObs::default(), None);
        b.push(1 << 28, PageObs::default(), None);
        b.push(2, present(1), Some(0x1000));
        b.push(2, present(1), Some(0x1000));
        b.push(1, present(1), Some(0x2000));
        b.push(0, present(2), Some(0x3000));
        assert_eq!(b.nr_pages(), 3 + (1 << 28) + 5);
        let (runs, raw) = b.finish();
        let shape: Vec<(u64, u64)> = runs.iter().map(|r| (r.first, r.nr_pages)).collect();
        assert_eq!(shape, vec![(0, 3 + (1 << 28)), (3 + (1 << 28), 4), (7 + (1 << 28), 1)]);
        assert_eq!(raw, vec![None, Some(0x1000), Some(0x2000)]);
    }

    #[test]
    fn folios_are_numbered_by_first_appearance_across_processes() {
        let mut b = PageRunsBuilder::new();
        b.push(1, present(1), Some(0x900));
        b.push(1, PageObs::default(), None);
        b.push(1, present(1), Some(0x100));
        let (runs_a, raw_a) = b.finish();
        let mut b = PageRunsBuilder::new();
        b.push(1, present(1), Some(0x100));
        b.push(1, present(1), Some(0x500));
        let (runs_b, raw_b) = b.finish();
        let mut procs = vec![
            ProcObs { name: "p1".into(), regions: vec![region(runs_a, 3)], ..ProcObs::default() },
            ProcObs { name: "p2".into(), regions: vec![region(runs_b, 2)], ..ProcObs::default() },
        ];
        normalise_folios(&mut procs, &[vec![raw_a], vec![raw_b]]);
        let ids = |p: usize| procs[p].regions[0].runs.iter().map(|r| r.page.folio).collect::<Vec<_>>();
        assert_eq!(ids(0), vec![Some(0), None, Some(1)]);
        assert_eq!(ids(1), vec![Some(1), Some(2)]);
    }

    #[test]
    fn page_lookup_and_clipped_runs() {
        let pages: Vec<PageObs> = [0, 0, 1, 1, 1, 2].iter().map(|&m| present(m)).collect();
        let r = region(runs_of_pages(&pages), 6);
        assert_eq!(r.runs.len(), 3);
        assert_eq!(r.nr_pages(), 6);
        assert_eq!(r.page(0).map(|p| p.mapcount), Some(0));
        assert_eq!(r.page(4).map(|p| p.mapcount), Some(1));
        assert_eq!(r.page(5).map(|p| p.mapcount), Some(2));
        assert_eq!(r.page(6), None);
        let clipped: Vec<(Range<u64>, u64)> = r.runs_in(1..5).map(|(range, p)| (range, p.mapcount)).collect();
        assert_eq!(clipped, vec![(1..2, 0), (2..5, 1)]);
        assert_eq!(r.runs_in(6..9).count(), 0);
        assert_eq!(r.pages().copied().collect::<Vec<_>>(), pages);
    }
}
