//! A toy backend for the CLI's tests: base pages only, no THP at all.
//!
//! It is just enough of an mm for reports and the oracle to have something
//! to show: regions, present pages in order-0 folios shared after fork,
//! EFAULT outside any mapping. A `Bug` makes one instance misbehave in a
//! known way, so tests can check that the oracle finds, reports and shrinks
//! a divergence, and that a model panic is reported as a broken invariant.

use std::collections::BTreeMap;

use thpsim_mm::{Errno, PAGE_SIZE};
use thpsim_oracle::{
    normalise_folios, Backend, BackendError, Observation, OpResult, PageObs, PageRunsBuilder, PageState, ProcObs,
    RegionObs, VmaObs,
};
use thpsim_workload::{Advice, Op, ProcId, RegionRef, Scenario};

use crate::backends::{BackendFactory, BackendKind};

/// How a toy backend goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Every `shrink` after a fork counts a `thp_split_pmd`.
    SplitPmdOnShrinkAfterFork,
    /// Panics on `mprotect`, as a model invariant check would.
    PanicOnMprotect,
    /// Every fork fails with EBUSY, an errno Linux's fork() never returns.
    ForkAnswersEbusy,
}

#[derive(Clone, Debug, Default)]
struct ToyProc {
    /// Mapped ranges, start → end.
    mapped: BTreeMap<u64, u64>,
    /// Present pages: virtual page number → folio.
    pages: BTreeMap<u64, u64>,
}

impl ToyProc {
    fn is_mapped(&self, addr: u64) -> bool {
        self.mapped.range(..=addr).next_back().is_some_and(|(_, &end)| addr < end)
    }

    fn unmap(&mut self, addr: u64, len: u64) {
        let end = addr + len;
        let overlapping: Vec<(u64, u64)> =
            self.mapped.range(..end).filter(|(_, &e)| e > addr).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in overlapping {
            self.mapped.remove(&s);
            if s < addr {
                self.mapped.insert(s, addr);
            }
            if e > end {
                self.mapped.insert(end, e);
            }
        }
        self.drop_pages(addr, len);
    }

    fn drop_pages(&mut self, addr: u64, len: u64) {
        let (first, last) = (addr / PAGE_SIZE, (addr + len) / PAGE_SIZE);
        let gone: Vec<u64> = self.pages.range(first..last).map(|(&vpn, _)| vpn).collect();
        for vpn in gone {
            self.pages.remove(&vpn);
        }
    }
}

/// The toy mm.
#[derive(Default)]
pub struct Toy {
    bug: Option<Bug>,
    procs: BTreeMap<ProcId, ToyProc>,
    next_folio: u64,
    forked: bool,
    vmstat: BTreeMap<String, i64>,
}

impl Toy {
    pub fn new(bug: Option<Bug>) -> Self {
        Toy { bug, ..Toy::default() }
    }

    fn count(&mut self, counter: &str, by: i64) {
        *self.vmstat.entry(counter.to_string()).or_insert(0) += by;
    }

    fn proc(&mut self, proc: ProcId) -> Result<&mut ToyProc, Errno> {
        self.procs.get_mut(&proc).ok_or(Errno::Srch)
    }

    fn apply_op(&mut self, op: &Op) -> OpResult {
        match *op {
            Op::Spawn { proc } => {
                self.procs.insert(proc, ToyProc::default());
            }
            Op::Fork { .. } if self.bug == Some(Bug::ForkAnswersEbusy) => return Err(Errno::Busy),
            Op::Fork { parent, child } => {
                let copy = self.proc(parent)?.clone();
                self.procs.insert(child, copy);
                self.forked = true;
            }
            Op::Exit { proc } => {
                self.procs.remove(&proc).ok_or(Errno::Srch)?;
            }
            Op::Mmap { proc, addr, len, .. } => {
                self.proc(proc)?.mapped.insert(addr, addr + len);
            }
            Op::Munmap { proc, addr, len } => self.proc(proc)?.unmap(addr, len),
            Op::Mprotect { .. } if self.bug == Some(Bug::PanicOnMprotect) => {
                panic!("toy invariant: mprotect is not allowed here")
            }
            Op::Mremap { proc, old_addr, old_len, new_len, new_addr } => {
                let p = self.proc(proc)?;
                let dest = new_addr.unwrap_or(old_addr);
                let moved: Vec<(u64, u64)> = p
                    .pages
                    .range(old_addr / PAGE_SIZE..(old_addr + old_len.min(new_len)) / PAGE_SIZE)
                    .map(|(&vpn, &folio)| (vpn, folio))
                    .collect();
                p.unmap(old_addr, old_len);
                p.mapped.insert(dest, dest + new_len);
                for (vpn, folio) in moved {
                    p.pages.insert(vpn - old_addr / PAGE_SIZE + dest / PAGE_SIZE, folio);
                }
            }
            Op::Madvise { proc, addr, len, advice: Advice::DontNeed } => self.proc(proc)?.drop_pages(addr, len),
            Op::Touch { proc, addr, len, pattern, .. } => {
                for index in pattern.page_indices(len / PAGE_SIZE) {
                    let page = addr + index * PAGE_SIZE;
                    let next = self.next_folio;
                    let p = self.proc(proc)?;
                    if !p.is_mapped(page) {
                        return Err(Errno::Fault);
                    }
                    if let std::collections::btree_map::Entry::Vacant(slot) = p.pages.entry(page / PAGE_SIZE) {
                        slot.insert(next);
                        self.next_folio += 1;
                        self.count("nr_anon_pages", 1);
                    }
                }
            }
            Op::Shrink if self.forked && self.bug == Some(Bug::SplitPmdOnShrinkAfterFork) => {
                self.count("thp_split_pmd", 1);
            }
            _ => {}
        }
        Ok(())
    }
}

impl Backend for Toy {
    fn name(&self) -> &'static str {
        "toy"
    }

    fn apply(&mut self, op: &Op) -> Result<OpResult, BackendError> {
        Ok(self.apply_op(op))
    }

    fn observe(&mut self, regions: &[RegionRef]) -> Result<Observation, BackendError> {
        let mut mapcount: BTreeMap<u64, u64> = BTreeMap::new();
        for p in self.procs.values() {
            for folio in p.pages.values() {
                *mapcount.entry(*folio).or_insert(0) += 1;
            }
        }
        let mut procs: Vec<ProcObs> = Vec::new();
        let mut raw = Vec::new();
        for region in regions {
            let Some(p) = self.procs.get(&region.proc) else {
                continue;
            };
            if procs.last().is_none_or(|last| last.proc != region.proc) {
                procs.push(ProcObs {
                    proc: region.proc,
                    name: region.proc_name.clone(),
                    vm_pte_kb: 0,
                    regions: Vec::new(),
                });
                raw.push(Vec::new());
            }
            let first = region.addr / PAGE_SIZE;
            let mut runs = PageRunsBuilder::new();
            let mut nr_present = 0;
            for vpn in first..first + region.len / PAGE_SIZE {
                let folio = p.pages.get(&vpn).copied();
                let count = folio.map_or(0, |f| mapcount[&f]);
                nr_present += u64::from(folio.is_some());
                let page = PageObs {
                    state: if folio.is_some() { PageState::Present } else { PageState::None },
                    folio: None,
                    order: 0,
                    pmd_mapped: false,
                    mapcount: count,
                    exclusive: count == 1,
                    zero_page: false,
                    lru: folio.is_some(),
                    swapbacked: folio.is_some(),
                    swapcache: false,
                };
                runs.push(1, page, folio);
            }
            let (runs, keys) = runs.finish();
            let rss_kb = nr_present * PAGE_SIZE / 1024;
            let vma = VmaObs {
                start: region.addr,
                end: region.addr + region.len,
                rss_kb,
                anonymous_kb: rss_kb,
                vm_flags: vec!["rd".into(), "wr".into()],
                ..VmaObs::default()
            };
            if let (Some(last), Some(last_raw)) = (procs.last_mut(), raw.last_mut()) {
                last.regions.push(RegionObs {
                    name: region.name.clone(),
                    addr: region.addr,
                    len: region.len,
                    vmas: vec![vma],
                    runs,
                });
                last_raw.push(keys);
            }
        }
        normalise_folios(&mut procs, &raw);
        Ok(Observation { procs, vmstat: self.vmstat.clone(), mthp: BTreeMap::new(), contents: Vec::new() })
    }
}

/// Toy backends in place of the model and the kernel, each with its bug.
#[derive(Clone, Copy, Debug, Default)]
pub struct ToyBackends {
    pub model: Option<Bug>,
    pub linux: Option<Bug>,
}

impl BackendFactory for ToyBackends {
    fn make(&self, kind: BackendKind, _: &Scenario) -> Result<Box<dyn Backend>, BackendError> {
        let bug = match kind {
            BackendKind::Model => self.model,
            BackendKind::Linux => self.linux,
        };
        Ok(Box::new(Toy::new(bug)))
    }
}
