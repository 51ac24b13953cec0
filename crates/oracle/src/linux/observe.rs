//! Observing: smaps, `VmPTE`, pagemap, kpageflags, kpagecount and
//! PAGEMAP_SCAN per process and region, and the counter deltas, gathered
//! into the `Observation` both backends produce.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use super::procfs::{
    self, Kpages, KPF_LRU, KPF_SWAPBACKED, KPF_SWAPCACHE, PM_MMAP_EXCLUSIVE, PM_PFN_MASK, PM_PRESENT, PM_SWAP,
};
use super::{executor::Worker, io_error, pagemap_scan, sysfs, LinuxBackend, PAGE_SIZE};
use crate::{
    normalise_folios, BackendError, Observation, PageObs, PageRun, PageRunsBuilder, PageState, ProcObs, RegionObs,
    RegionRef, VmaObs, MTHP_SIZES_KB, MTHP_STATS,
};

/// The end of user space with 4-level page tables (x86-64 `TASK_SIZE`).
pub(super) const USER_SPACE_END: u64 = 0x7fff_ffff_f000;
/// Bytes a PMD maps.
const PMD_SIZE: u64 = 2 << 20;

/// The smaps `VmFlags` mnemonics an observation carries: those the model
/// has (every flag it knows set at once), so a flag the model learns
/// (`lo`, `wf`) is compared on both sides from then on.
fn modelled_vm_flag_names() -> Vec<&'static str> {
    thpsim_mm::vma::VmFlags(u32::MAX).mnemonics()
}

/// Raw folio keys (head PFNs) per process, region and page run, beside the
/// runs they belong to, for `normalise_folios`.
type RawKeys = Vec<Vec<Vec<Option<u64>>>>;

impl LinuxBackend {
    /// The observation of `regions` now. Regions of processes that are not
    /// running are left out; processes without a listed region appear with
    /// no regions, named `p<N+1>`.
    pub(super) fn observe_inner(&mut self, regions: &[RegionRef]) -> Result<Observation, BackendError> {
        procfs::drain_lru_batches().map_err(io_error("draining the LRU batches"))?;
        self.refresh_stats();
        let Some(mut kpages) = self.kpages.take() else {
            return Err(BackendError::Executor("kpageflags reader missing".into()));
        };
        kpages.clear();
        let result = self.observe_procs(&mut kpages, regions).and_then(|observed| {
            let own_thps = self.pmd_mapped_folios(&mut kpages)?;
            Ok((observed, own_thps))
        });
        self.kpages = Some(kpages);
        let ((mut procs, raw), own_thps) = result?;
        normalise_folios(&mut procs, &raw);

        let vmstat_now = procfs::read_vmstat().map_err(io_error("reading /proc/vmstat"))?;
        let vmstat: BTreeMap<String, i64> = crate::vmstat_keys()
            .filter_map(|name| {
                let delta = vmstat_now.get(&name)? - self.base_vmstat.get(&name)?;
                Some((name, delta))
            })
            .collect();
        self.check_foreign_thps(&vmstat, own_thps);
        let mthp_now =
            sysfs::read_mthp_stats(MTHP_SIZES_KB, MTHP_STATS).map_err(io_error("reading the per-size THP stats"))?;
        let mthp =
            mthp_now.iter().filter_map(|(key, now)| Some((key.clone(), now - self.base_mthp.get(key)?))).collect();
        Ok(Observation { procs, vmstat, mthp, contents: Vec::new() })
    }

    /// The distinct folios PMD-mapped anywhere in the scenario's processes
    /// (the huge zero page aside): what the scenario adds to
    /// `nr_anon_transparent_hugepages`, which counts folios with at least one
    /// PMD mapping.
    fn pmd_mapped_folios(&self, kpages: &mut Kpages) -> Result<i64, BackendError> {
        let mut heads = BTreeSet::new();
        for proc in self.procs.values() {
            let worker = &proc.worker;
            let context = || format!("scanning {} for PMD mappings", worker.label);
            let ranges = pagemap_scan::pmd_mapped_ranges(&worker.pagemap, 0, USER_SPACE_END)
                .map_err(|e| io_error(context())(e))?;
            for (start, end) in ranges {
                for addr in (start..end).step_by(PMD_SIZE as usize) {
                    let entry = procfs::read_pagemap(&worker.pagemap, addr, 1).map_err(|e| io_error(context())(e))?[0];
                    if entry & PM_PRESENT == 0 {
                        continue;
                    }
                    let folio = kpages.folio_of(entry & PM_PFN_MASK).map_err(|e| io_error(context())(e))?;
                    if !folio.zero {
                        heads.insert(folio.head);
                    }
                }
            }
        }
        Ok(heads.len() as i64)
    }

    /// Warns when `nr_anon_transparent_hugepages` moved by more than the
    /// scenario's own PMD-mapped THPs: other processes on the host faulted,
    /// split or freed THPs, and the system-wide counters carry their
    /// activity too. Warns again only when that difference changes.
    fn check_foreign_thps(&mut self, vmstat: &BTreeMap<String, i64>, own_thps: i64) {
        let Some(&delta) = vmstat.get("nr_anon_transparent_hugepages") else {
            return;
        };
        let foreign = delta - own_thps;
        if foreign != self.foreign_thps {
            self.foreign_thps = foreign;
            self.warnings.push(format!(
                "host noise: nr_anon_transparent_hugepages moved by {delta:+} since the start, \
                 the scenario's processes hold {own_thps}: other processes hold {foreign:+}; \
                 system-wide counters (vmstat thp_*, per-size stats) include their activity"
            ));
        }
    }

    /// Every running process, in `ProcId` order, with its listed regions.
    fn observe_procs(
        &self,
        kpages: &mut Kpages,
        regions: &[RegionRef],
    ) -> Result<(Vec<ProcObs>, RawKeys), BackendError> {
        let mut procs = Vec::new();
        let mut raw = Vec::new();
        for (&id, proc) in &self.procs {
            let worker = &proc.worker;
            let mine: Vec<&RegionRef> = regions.iter().filter(|r| r.proc == id).collect();
            let name = mine.first().map(|r| r.proc_name.clone()).unwrap_or_else(|| format!("p{}", id.0 + 1));
            let vm_pte_kb = worker.vm_pte_kb()?.saturating_sub(proc.vm_pte_base_kb);
            let smaps =
                procfs::read_smaps(worker.pid).map_err(io_error(format!("reading the smaps of {}", worker.label)))?;
            let mut region_obs = Vec::new();
            let mut raw_regions = Vec::new();
            for region in mine {
                let end = region.addr + region.len;
                let vmas = smaps
                    .iter()
                    .filter(|vma| vma.start < end && vma.end > region.addr)
                    .map(|vma| VmaObs {
                        start: vma.start,
                        end: vma.end,
                        rss_kb: vma.rss_kb,
                        anonymous_kb: vma.anonymous_kb,
                        anon_huge_pages_kb: vma.anon_huge_pages_kb,
                        swap_kb: vma.swap_kb,
                        pss_kb: vma.pss_kb,
                        shared_clean_kb: vma.shared_clean_kb,
                        shared_dirty_kb: vma.shared_dirty_kb,
                        private_clean_kb: vma.private_clean_kb,
                        private_dirty_kb: vma.private_dirty_kb,
                        lazyfree_kb: vma.lazyfree_kb,
                        thp_eligible: vma.thp_eligible,
                        vm_flags: modelled_vm_flags(&vma.vm_flags),
                    })
                    .collect();
                let (runs, keys) = observe_pages(worker, kpages, region.addr, region.len)
                    .map_err(io_error(format!("reading the pages of {} region {}", worker.label, region.name)))?;
                region_obs.push(RegionObs {
                    name: region.name.clone(),
                    addr: region.addr,
                    len: region.len,
                    vmas,
                    runs,
                });
                raw_regions.push(keys);
            }
            procs.push(ProcObs { proc: id, name, vm_pte_kb, regions: region_obs });
            raw.push(raw_regions);
        }
        Ok((procs, raw))
    }
}

/// The `VmFlags` mnemonics thpsim models, sorted.
fn modelled_vm_flags(all: &[String]) -> Vec<String> {
    let modelled = modelled_vm_flag_names();
    let mut flags: Vec<String> = all.iter().filter(|f| modelled.contains(&f.as_str())).cloned().collect();
    flags.sort();
    flags
}

/// Pages whose pagemap entries are read at once.
const PAGEMAP_CHUNK_PAGES: u64 = 4096;

/// pagemap, kpageflags, kpagecount and PAGEMAP_SCAN for each base page of
/// [addr, addr + len), as runs with their raw folio keys (head PFNs).
/// PAGEMAP_SCAN finds the present and swapped pages; only those are read
/// from pagemap, so a hole costs nothing per page.
fn observe_pages(
    worker: &Worker,
    kpages: &mut Kpages,
    addr: u64,
    len: u64,
) -> io::Result<(Vec<PageRun>, Vec<Option<u64>>)> {
    let start = addr & !(PAGE_SIZE - 1);
    let end = (addr + len).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut runs = PageRunsBuilder::new();
    let mut next = start;
    for range in pagemap_scan::populated_ranges(&worker.pagemap, start, end)? {
        let (from, to) = (range.start.max(next), range.end.min(end));
        if from >= to {
            continue;
        }
        runs.push((from - next) / PAGE_SIZE, PageObs::default(), None);
        let mut chunk = from;
        while chunk < to {
            let nr = ((to - chunk) / PAGE_SIZE).min(PAGEMAP_CHUNK_PAGES);
            let entries = procfs::read_pagemap(&worker.pagemap, chunk, nr)?;
            for (i, &entry) in entries.iter().enumerate() {
                let va = chunk + i as u64 * PAGE_SIZE;
                let (page, key) = observe_page(kpages, va, entry, range.pmd_mapped)?;
                runs.push(1, page, key);
            }
            chunk += nr * PAGE_SIZE;
        }
        next = to;
    }
    runs.push((end - next) / PAGE_SIZE, PageObs::default(), None);
    Ok(runs.finish())
}

/// One page from its pagemap entry, kpageflags and kpagecount; `pmd_mapped`
/// is PAGEMAP_SCAN's `PAGE_IS_HUGE` for it. Also its raw folio key.
fn observe_page(kpages: &mut Kpages, va: u64, entry: u64, pmd_mapped: bool) -> io::Result<(PageObs, Option<u64>)> {
    let mut page = PageObs { exclusive: entry & PM_MMAP_EXCLUSIVE != 0, ..PageObs::default() };
    let mut key = None;
    if entry & PM_PRESENT != 0 {
        page.state = PageState::Present;
        let pfn = entry & PM_PFN_MASK;
        if pfn == 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("pagemap shows no PFN for present page {va:#x} (CAP_SYS_ADMIN needed)"),
            ));
        }
        let folio = kpages.folio_of(pfn)?;
        page.order = folio.order;
        page.zero_page = folio.zero;
        page.mapcount = kpages.mapcount(&folio, pfn)?;
        page.pmd_mapped = pmd_mapped;
        page.lru = folio.head_flags & KPF_LRU != 0;
        page.swapbacked = folio.head_flags & KPF_SWAPBACKED != 0;
        page.swapcache = folio.head_flags & KPF_SWAPCACHE != 0;
        if !folio.zero {
            key = Some(folio.head);
        }
    } else if entry & PM_SWAP != 0 {
        page.state = PageState::Swapped;
    }
    Ok((page, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_flags_are_filtered_and_sorted() {
        let all: Vec<String> = "rd wr mr mw me ac sd hg".split(' ').map(String::from).collect();
        assert_eq!(modelled_vm_flags(&all), vec!["ac", "hg", "rd", "wr"]);
        let all: Vec<String> = "rd wr lo dc wf nh mg".split(' ').map(String::from).collect();
        assert_eq!(modelled_vm_flags(&all), vec!["dc", "lo", "nh", "rd", "wf", "wr"], "what the model knows");
    }
}
