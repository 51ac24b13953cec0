//! The model backend: runs operations on `thpsim_mm::World` and reads the
//! same observables the Linux backend reads from /proc.
//!
//! Scenario processes map to model pids; pins taken by a process are
//! released when it exits, as closing its io_uring ring releases the fixed
//! buffers on Linux.

use std::collections::BTreeMap;

use thpsim_mm::{self as mm, Machine, Pid, PinId, Vaddr, World, PAGE_SIZE};
use thpsim_workload::{Op, PinRef, ProcId, RegionRef, Scenario};

use crate::{
    normalise_folios, Backend, BackendError, Observation, OpResult, PageObs, PageRun, PageRunsBuilder, PageState,
    ProcObs, RawFolioKey, RegionObs, VmaObs, KHUGEPAGED_COUNTERS, MTHP_SIZES_KB, MTHP_STATS, VMSTAT_COUNTERS,
};

/// Regions up to this many pages (64 MiB) have their page runs checked
/// against `World::page_info` page by page in debug and test builds.
#[cfg(debug_assertions)]
const CROSS_CHECK_MAX_PAGES: u64 = 16 * 1024;

/// The model as a backend.
pub struct ModelBackend {
    world: World,
    pids: BTreeMap<ProcId, Pid>,
    pins: BTreeMap<PinRef, (ProcId, PinId)>,
    baseline: Counters,
}

/// Counter values at the start, for deltas.
struct Counters {
    vmstat: BTreeMap<String, i64>,
    mthp: BTreeMap<String, i64>,
}

fn mthp_stat(name: &str) -> Option<mm::MthpStat> {
    mm::MthpStat::ALL.iter().copied().find(|s| s.name() == name)
}

impl ModelBackend {
    /// A fresh machine of `ram_bytes` with Linux 6.18's default tunables.
    pub fn new(ram_bytes: u64) -> ModelBackend {
        let world = World::new(Machine { ram_bytes }, mm::Config::default());
        let baseline = Self::counters(&world);
        ModelBackend { world, pids: BTreeMap::new(), pins: BTreeMap::new(), baseline }
    }

    /// The machine a scenario asks for: its RAM, Linux 6.18's tunables with
    /// the scenario's `policy` statements applied (`--policy` overrides are
    /// already in `scenario.policies`), and its `inject` points armed.
    pub fn for_scenario(scenario: &Scenario) -> ModelBackend {
        let config = mm::Config::with_policies(scenario.policy_values());
        let mut world = World::new(Machine { ram_bytes: scenario.machine.ram }, config);
        for injection in &scenario.injections {
            world.inject(injection.point, injection.attr());
        }
        let baseline = Self::counters(&world);
        ModelBackend { world, pids: BTreeMap::new(), pins: BTreeMap::new(), baseline }
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }

    fn counters(world: &World) -> Counters {
        let stats = world.stats();
        let mut vmstat: BTreeMap<String, i64> =
            VMSTAT_COUNTERS.iter().map(|name| (name.to_string(), stats.vmstat_value(name).unwrap_or(0))).collect();
        for name in KHUGEPAGED_COUNTERS {
            let v = match *name {
                "pages_collapsed" => stats.khugepaged_pages_collapsed(),
                "full_scans" => stats.khugepaged_full_scans(),
                other => unreachable!("khugepaged counter {other} has no model value"),
            };
            vmstat.insert(format!("khugepaged/{name}"), v as i64);
        }
        let mut mthp = BTreeMap::new();
        for kb in MTHP_SIZES_KB {
            let order = mm::Order::from_size(kb * 1024).expect("mTHP size");
            for stat in MTHP_STATS {
                let v = mthp_stat(stat).map_or(0, |s| stats.mthp_stat(order, s));
                mthp.insert(format!("{kb}kB/{stat}"), v);
            }
        }
        Counters { vmstat, mthp }
    }

    /// The pages of [addr, addr + nr_pages * 4K) as observation runs with
    /// their raw folio keys, from the page-table walk `page_info_runs`.
    fn page_runs(&self, pid: Pid, addr: u64, nr_pages: u64) -> (Vec<PageRun>, Vec<Option<RawFolioKey>>) {
        let mut builder = PageRunsBuilder::new();
        let runs = self.world.page_info_runs(pid, Vaddr(addr), nr_pages);
        #[cfg(debug_assertions)]
        self.check_runs_against_page_info(pid, &runs, nr_pages);
        for run in runs {
            let info = run.info;
            let page = PageObs {
                state: match info.state {
                    mm::PageState::None => PageState::None,
                    mm::PageState::Present => PageState::Present,
                    mm::PageState::Swapped => PageState::Swapped,
                },
                folio: None,
                order: info.order,
                pmd_mapped: info.pmd_mapped,
                mapcount: info.mapcount,
                exclusive: info.exclusive,
                zero_page: info.zero_page,
                lru: info.lru,
                swapbacked: info.swapbacked,
                swapcache: info.swapcache,
            };
            builder.push(run.nr_pages, page, info.folio.map(|f| f.0 as u64));
        }
        debug_assert_eq!(builder.nr_pages(), nr_pages, "page_info_runs covered the wrong number of pages");
        builder.finish()
    }

    /// Debug and test builds: the walk agrees with `page_info` page by page,
    /// for regions of at most `CROSS_CHECK_MAX_PAGES`, so that every corpus
    /// scenario checks it at every observation.
    #[cfg(debug_assertions)]
    fn check_runs_against_page_info(&self, pid: Pid, runs: &[mm::PageInfoRun], nr_pages: u64) {
        if nr_pages > CROSS_CHECK_MAX_PAGES {
            return;
        }
        let covered: u64 = runs.iter().map(|r| r.nr_pages).sum();
        assert_eq!(covered, nr_pages, "page_info_runs covered {covered} pages of {nr_pages}: {runs:?}");
        for run in runs {
            for i in 0..run.nr_pages {
                let addr = run.addr.add(i * PAGE_SIZE);
                let walked = run.page(i);
                let single = self.world.page_info(pid, addr);
                assert_eq!(walked, single, "page_info_runs and page_info disagree at {:#x} ({pid:?})", addr.0);
            }
        }
    }

    fn pid(&self, proc: ProcId) -> Result<Pid, BackendError> {
        self.pids
            .get(&proc)
            .copied()
            .ok_or_else(|| BackendError::Executor(format!("process {} is not running", proc.0)))
    }
}

impl Backend for ModelBackend {
    fn name(&self) -> &'static str {
        "model"
    }

    fn apply(&mut self, op: &Op) -> Result<OpResult, BackendError> {
        let w = &mut self.world;
        Ok(match *op {
            Op::Set { setting } => w.set(setting),
            Op::Spawn { proc } => w.spawn().map(|pid| {
                self.pids.insert(proc, pid);
            }),
            Op::Fork { parent, child } => {
                let ppid = self.pid(parent)?;
                self.world.fork(ppid).map(|pid| {
                    self.pids.insert(child, pid);
                })
            }
            Op::Exit { proc } => {
                let pid = self.pid(proc)?;
                let owned: Vec<PinRef> = self.pins.iter().filter(|(_, (p, _))| *p == proc).map(|(r, _)| *r).collect();
                for r in owned {
                    let (_, id) = self.pins.remove(&r).expect("pin");
                    self.world.unpin(id).expect("a live pin");
                }
                self.pids.remove(&proc);
                self.world.exit(pid)
            }
            Op::Mmap { proc, addr, len, prot } => {
                let pid = self.pid(proc)?;
                self.world.mmap(pid, Some(Vaddr(addr)), len, prot).map(|_| ())
            }
            Op::MmapFixed { proc, addr, len, prot } => {
                let pid = self.pid(proc)?;
                self.world.mmap_fixed(pid, Vaddr(addr), len, prot).map(|_| ())
            }
            Op::Mlock { proc, addr, len } => {
                let pid = self.pid(proc)?;
                self.world.mlock(pid, Vaddr(addr), len)
            }
            Op::Munlock { proc, addr, len } => {
                let pid = self.pid(proc)?;
                self.world.munlock(pid, Vaddr(addr), len)
            }
            Op::MremapInPlace { proc, old_addr, old_len, new_len } => {
                let pid = self.pid(proc)?;
                self.world.mremap(pid, Vaddr(old_addr), old_len, new_len, false, None).map(|_| ())
            }
            Op::Munmap { proc, addr, len } => {
                let pid = self.pid(proc)?;
                self.world.munmap(pid, Vaddr(addr), len)
            }
            Op::Mprotect { proc, addr, len, prot } => {
                let pid = self.pid(proc)?;
                self.world.mprotect(pid, Vaddr(addr), len, prot)
            }
            Op::Mremap { proc, old_addr, old_len, new_len, new_addr } => {
                let pid = self.pid(proc)?;
                self.world.mremap(pid, Vaddr(old_addr), old_len, new_len, true, new_addr.map(Vaddr)).map(|_| ())
            }
            Op::Madvise { proc, addr, len, advice } => {
                let pid = self.pid(proc)?;
                self.world.madvise(pid, Vaddr(addr), len, advice)
            }
            Op::Touch { proc, addr, len, access, fill, pattern } => {
                let pid = self.pid(proc)?;
                self.world.touch_pages(pid, Vaddr(addr), pattern.pages(len.div_ceil(PAGE_SIZE)), access, fill)
            }
            Op::Prctl { proc, disable } => {
                let pid = self.pid(proc)?;
                self.world.prctl_set_thp_disable(pid, disable)
            }
            Op::Pin { proc, pin, addr, len, longterm } => {
                let pid = self.pid(proc)?;
                self.world.pin_user_pages(pid, Vaddr(addr), len.div_ceil(PAGE_SIZE), longterm).map(|id| {
                    self.pins.insert(pin, (proc, id));
                })
            }
            Op::Unpin { pin } => match self.pins.remove(&pin) {
                Some((_, id)) => self.world.unpin(id),
                None => Err(mm::Errno::Inval),
            },
            Op::Khugepaged { full_scans } => {
                self.world.khugepaged_scan(full_scans);
                Ok(())
            }
            Op::Shrink => {
                self.world.drop_caches();
                Ok(())
            }
        })
    }

    fn read_words(&mut self, proc: ProcId, addr: u64, nr_pages: u64) -> Result<crate::WordsRead, BackendError> {
        let pid = self.pid(proc)?;
        let mut read = crate::WordsRead::default();
        for i in 0..nr_pages {
            match self.world.read_word(pid, Vaddr(addr + i * PAGE_SIZE)) {
                Ok(word) => read.words.push(word),
                Err(errno) => {
                    read.error = Some(errno);
                    break;
                }
            }
        }
        Ok(read)
    }

    fn observe(&mut self, regions: &[RegionRef]) -> Result<Observation, BackendError> {
        let mut procs = Vec::new();
        let mut raw: Vec<Vec<Vec<Option<RawFolioKey>>>> = Vec::new();
        for (&proc, &pid) in &self.pids {
            let mine: Vec<&RegionRef> = regions.iter().filter(|r| r.proc == proc).collect();
            let name = mine.first().map_or_else(|| format!("p{}", proc.0 + 1), |r| r.proc_name.clone());
            let smaps = self.world.smaps(pid);
            let mut region_obs = Vec::new();
            let mut raw_regions = Vec::new();
            for r in mine {
                let end = r.addr + r.len;
                let vmas = smaps
                    .iter()
                    .filter(|v| v.start.0 < end && v.end.0 > r.addr)
                    .map(|v| VmaObs {
                        start: v.start.0,
                        end: v.end.0,
                        rss_kb: v.rss_kb,
                        anonymous_kb: v.anonymous_kb,
                        anon_huge_pages_kb: v.anon_huge_pages_kb,
                        swap_kb: v.swap_kb,
                        pss_kb: v.pss_kb,
                        shared_clean_kb: v.shared_clean_kb,
                        shared_dirty_kb: v.shared_dirty_kb,
                        private_clean_kb: v.private_clean_kb,
                        private_dirty_kb: v.private_dirty_kb,
                        lazyfree_kb: v.lazyfree_kb,
                        thp_eligible: v.thp_eligible,
                        vm_flags: {
                            let mut f: Vec<String> = v.vm_flags.iter().map(|s| s.to_string()).collect();
                            f.sort();
                            f
                        },
                    })
                    .collect();
                let (runs, keys) = self.page_runs(pid, r.addr, r.len.div_ceil(PAGE_SIZE));
                region_obs.push(RegionObs { name: r.name.clone(), addr: r.addr, len: r.len, vmas, runs });
                raw_regions.push(keys);
            }
            let vm_pte_kb = self.world.mm(pid).map_or(0, |m| m.vm_pte_kb());
            procs.push(ProcObs { proc, name, vm_pte_kb, regions: region_obs });
            raw.push(raw_regions);
        }
        normalise_folios(&mut procs, &raw);
        let now = Self::counters(&self.world);
        let delta = |now: &BTreeMap<String, i64>, base: &BTreeMap<String, i64>| {
            now.iter().map(|(k, v)| (k.clone(), v - base.get(k).copied().unwrap_or(0))).collect()
        };
        Ok(Observation {
            procs,
            vmstat: delta(&now.vmstat, &self.baseline.vmstat),
            mthp: delta(&now.mthp, &self.baseline.mthp),
            contents: Vec::new(),
        })
    }
}
