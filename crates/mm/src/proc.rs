//! What /proc shows: smaps per VMA, pagemap + kpageflags + kpagecount per
//! virtual page, meminfo, and the PAGEMAP_SCAN view of PMD mappings.
//!
//! Models: fs/proc/task_mmu.c (`smaps_pte_entry()`, `smaps_pmd_entry()`,
//! `show_smap()`'s THPeligible, `pte_to_pagemap_entry()`,
//! `pagemap_pmd_range()`), fs/proc/page.c (`kpagecount`, `kpageflags`),
//! fs/proc/meminfo.c. With `CONFIG_PAGE_MAPCOUNT=y`, pagemap's
//! PM_MMAP_EXCLUSIVE means "the page's precise mapcount is 1"; for a PMD
//! mapping it is computed for the first page and repeated, as the kernel does.

use crate::memory::Tva;
use crate::pagewalk::{Lookup, Ro, Slot, Walk, WalkOps};
use crate::pgtable::{Entry, Level};
use crate::types::*;
use crate::world::World;

/// One VMA as smaps prints it (kB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmapsVma {
    pub start: Vaddr,
    pub end: Vaddr,
    pub rss_kb: u64,
    pub anonymous_kb: u64,
    pub anon_huge_pages_kb: u64,
    pub swap_kb: u64,
    /// `Pss`: each page's size divided by its mapcount, summed in the
    /// kernel's fixed point (`PSS_SHIFT`) and truncated as smaps prints it.
    pub pss_kb: u64,
    /// Pages mapped once (`Private_*`) or more (`Shared_*`), clean or dirty.
    /// Dirty is the mapping's dirty bit (the model keeps no `PG_dirty`; on
    /// the kernel a folio is `PG_dirty` only where its mappings were dirty
    /// when a PMD split or reclaim moved the bit to it).
    pub shared_clean_kb: u64,
    pub shared_dirty_kb: u64,
    pub private_clean_kb: u64,
    pub private_dirty_kb: u64,
    /// `LazyFree`: pages of MADV_FREE folios (not swap-backed) whose mapping
    /// is clean.
    pub lazyfree_kb: u64,
    pub thp_eligible: bool,
    pub vm_flags: Vec<&'static str>,
}

/// Whether a virtual page is backed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    None,
    Present,
    Swapped,
}

/// One virtual page as pagemap, kpageflags, kpagecount and PAGEMAP_SCAN show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfo {
    pub state: PageState,
    /// The folio (none for zero pages and absent pages).
    pub folio: Option<FolioId>,
    pub pfn: Option<Pfn>,
    pub order: u8,
    pub pmd_mapped: bool,
    /// kpagecount: the precise page mapcount (0 for zero pages).
    pub mapcount: u64,
    /// pagemap bit 56, PM_MMAP_EXCLUSIVE.
    pub exclusive: bool,
    /// kpageflags ZERO_PAGE.
    pub zero_page: bool,
    /// kpageflags LRU (5): every mapped anonymous folio once the per-CPU
    /// LRU batches are drained (the model has no batches).
    pub lru: bool,
    /// kpageflags SWAPBACKED (14): an anonymous folio that MADV_FREE has not
    /// made lazyfree.
    pub swapbacked: bool,
    /// kpageflags SWAPCACHE (13): never, without swap.
    pub swapcache: bool,
}

/// Consecutive virtual pages that `page_info` reports alike: every field
/// equal except `pfn`, which (when present) advances by one per page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfoRun {
    /// The first page.
    pub addr: Vaddr,
    pub nr_pages: u64,
    /// `page_info` of the first page.
    pub info: PageInfo,
}

impl PageInfoRun {
    /// `page_info` of the run's page `i`.
    pub fn page(&self, i: u64) -> PageInfo {
        PageInfo { pfn: self.info.pfn.map(|pfn| pfn.add(i)), ..self.info }
    }

    /// Whether page `info` at the run's end continues it.
    fn continues_with(&self, info: &PageInfo) -> bool {
        let pfn = self.info.pfn.map(|pfn| pfn.add(self.nr_pages));
        PageInfo { pfn, ..self.info } == *info
    }
}

/// The runs a page-table walk reports, merged as they are pushed.
struct PageInfoRuns {
    runs: Vec<PageInfoRun>,
    next: Vaddr,
}

impl PageInfoRuns {
    /// Appends `nr_pages` pages from `self.next` on, the first of which is
    /// `info` and the rest continue it (pfn + 1 per page).
    fn push(&mut self, nr_pages: u64, info: PageInfo) {
        if nr_pages == 0 {
            return;
        }
        match self.runs.last_mut() {
            Some(last) if last.continues_with(&info) => last.nr_pages += nr_pages,
            _ => self.runs.push(PageInfoRun { addr: self.next, nr_pages, info }),
        }
        self.next = self.next.add(nr_pages * PAGE_SIZE);
    }
}

const ABSENT: PageInfo = PageInfo {
    state: PageState::None,
    folio: None,
    pfn: None,
    order: 0,
    pmd_mapped: false,
    mapcount: 0,
    exclusive: false,
    zero_page: false,
    lru: false,
    swapbacked: false,
    swapcache: false,
};

/// /proc/meminfo lines the model moves (kB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meminfo {
    pub mem_total_kb: u64,
    pub mem_free_kb: u64,
    pub anon_pages_kb: u64,
    pub anon_huge_pages_kb: u64,
    pub page_tables_kb: u64,
}

impl World {
    /// /proc/<pid>/smaps for every VMA.
    pub fn smaps(&self, pid: Pid) -> Vec<SmapsVma> {
        let Some(mm) = self.mm(pid) else { return Vec::new() };
        mm.vmas
            .iter()
            .map(|vma| {
                let mut ops = SmapsOps::default();
                let Ok(()) = self.walk_ro(pid, vma.start, vma.end, &mut ops);
                let (rss, thp) = (ops.rss, ops.anon_huge);
                SmapsVma {
                    start: vma.start,
                    end: vma.end,
                    rss_kb: rss / 1024,
                    anonymous_kb: rss / 1024,
                    anon_huge_pages_kb: thp / 1024,
                    swap_kb: 0,
                    pss_kb: (ops.pss >> PSS_SHIFT) / 1024,
                    shared_clean_kb: ops.shared_clean / 1024,
                    shared_dirty_kb: ops.shared_dirty / 1024,
                    private_clean_kb: ops.private_clean / 1024,
                    private_dirty_kb: ops.private_dirty / 1024,
                    lazyfree_kb: ops.lazyfree / 1024,
                    thp_eligible: self.thp_vma_allowable_orders(
                        pid,
                        vma,
                        Tva::Smaps,
                        crate::config::MTHP_ORDERS.fold(0, |m, o| m | 1 << o),
                    ) != 0,
                    vm_flags: vma.flags.mnemonics(),
                }
            })
            .collect()
    }

    /// pagemap + kpageflags + kpagecount + PAGEMAP_SCAN for one page.
    pub fn page_info(&self, pid: Pid, addr: Vaddr) -> PageInfo {
        if self.mm(pid).is_none() {
            return ABSENT;
        }
        match self.lookup(pid, addr) {
            Lookup::Hole => ABSENT,
            Lookup::Pud { slot, entry } => panic!("{pid:?} {addr}: {entry:?} at PUD {slot:?}"),
            Lookup::Pmd { entry, .. } => self.pmd_page_info(entry, (addr.0 & (PMD_SIZE - 1)) / PAGE_SIZE),
            Lookup::Pte { entry, .. } => self.pte_page_info(entry),
        }
    }

    /// `page_info` of page `page` of a PMD leaf (`pagemap_pmd_range_thp()`):
    /// the exclusive bit of a PMD mapping is its first page's.
    fn pmd_page_info(&self, entry: Entry, page: u64) -> PageInfo {
        match entry {
            Entry::Zero => PageInfo {
                state: PageState::Present,
                pfn: self.huge_zero.map(|hz| hz.pfn.add(page)),
                order: Order::PMD.get(),
                pmd_mapped: true,
                zero_page: true,
                ..ABSENT
            },
            Entry::Page(leaf) => {
                let f = &self.folios[leaf.folio];
                PageInfo {
                    state: PageState::Present,
                    folio: Some(leaf.folio),
                    pfn: Some(f.pfn.add(page)),
                    order: f.order.get(),
                    pmd_mapped: true,
                    mapcount: f.precise_page_mapcount(page) as u64,
                    exclusive: f.precise_page_mapcount(0) == 1,
                    zero_page: false,
                    lru: true,
                    swapbacked: !f.lazyfree,
                    swapcache: false,
                }
            }
            Entry::None | Entry::Table(_) => unreachable!("{entry:?} is not a PMD leaf"),
        }
    }

    /// `page_info` for every page of [start, start + nr_pages * 4K), as runs
    /// of pages that it reports alike, ascending and covering the range.
    ///
    /// Mirrors fs/proc/task_mmu.c's pagemap walk (`pagemap_read()` through
    /// `walk_page_range()`): a missing PGD, PUD or PMD entry is one hole
    /// (`pagemap_pte_hole()`), whatever it spans; a PMD leaf is one step
    /// (`pagemap_pmd_range_thp()`) unless some of its folio's pages are also
    /// PTE-mapped, which gives them their own mapcounts; a PTE table is
    /// walked entry by entry. A 1 TiB hole costs a handful of steps. As in
    /// `page_info`, a PUD leaf reads as absent and a PMD mapping's exclusive
    /// bit is its first page's.
    pub fn page_info_runs(&self, pid: Pid, start: Vaddr, nr_pages: u64) -> Vec<PageInfoRun> {
        let mut out = PageInfoRuns { runs: Vec::new(), next: start };
        if self.mm(pid).is_none() {
            out.push(nr_pages, ABSENT);
            return out.runs;
        }
        let end = start.add(nr_pages * PAGE_SIZE);
        let Ok(()) = self.walk_ro(pid, start, end, &mut out);
        out.runs
    }

    /// `page_info` of a page a PTE maps (or does not).
    fn pte_page_info(&self, entry: Entry) -> PageInfo {
        match entry {
            Entry::None => ABSENT,
            Entry::Table(t) => unreachable!("a PTE points to table {t:?}"),
            Entry::Zero => PageInfo { state: PageState::Present, zero_page: true, ..ABSENT },
            Entry::Page(leaf) => {
                let f = &self.folios[leaf.folio];
                let page = leaf.page as u64;
                let mapcount = f.precise_page_mapcount(page);
                PageInfo {
                    state: PageState::Present,
                    folio: Some(leaf.folio),
                    pfn: Some(f.pfn.add(page)),
                    order: f.order.get(),
                    pmd_mapped: false,
                    mapcount: mapcount as u64,
                    exclusive: mapcount == 1,
                    zero_page: false,
                    lru: true,
                    swapbacked: !f.lazyfree,
                    swapcache: false,
                }
            }
        }
    }

    /// /proc/meminfo.
    pub fn meminfo(&self) -> Meminfo {
        let kb = PAGE_SIZE / 1024;
        Meminfo {
            mem_total_kb: self.buddy.nr_total_pages() * kb,
            mem_free_kb: self.buddy.nr_free_pages() * kb,
            anon_pages_kb: self.stats.nr_anon_mapped as u64 * kb,
            anon_huge_pages_kb: self.stats.nr_anon_thps as u64 * kb,
            page_tables_kb: self.stats.nr_page_table_pages as u64 * kb,
        }
    }
}

/// The kernel's fixed point for `Pss` (fs/proc/task_mmu.c `PSS_SHIFT`).
const PSS_SHIFT: u32 = 12;

/// The walk of `smaps_pte_entry()`/`smaps_pmd_entry()` and
/// `smaps_account()`: resident and PMD-mapped anonymous bytes, Pss (bytes
/// << `PSS_SHIFT`), private/shared clean/dirty and LazyFree bytes. Zero
/// pages count in none of them (`vm_normal_page()` is NULL for them).
#[derive(Default)]
struct SmapsOps {
    rss: u64,
    anon_huge: u64,
    pss: u64,
    shared_clean: u64,
    shared_dirty: u64,
    private_clean: u64,
    private_dirty: u64,
    lazyfree: u64,
}

impl SmapsOps {
    /// `smaps_account()` for `nr` pages of `folio` from page `first` on,
    /// mapped by one entry whose dirty bit is `dirty`: each page by its own
    /// precise mapcount (CONFIG_PAGE_MAPCOUNT), as the kernel does for a
    /// folio whose refcount is not 1 (and which, at refcount 1, gives the
    /// same sums).
    fn account(&mut self, folio: &crate::folio::Folio, first: u64, nr: u64, dirty: bool) {
        if folio.lazyfree && !dirty {
            self.lazyfree += nr * PAGE_SIZE;
        }
        for page in first..first + nr {
            let mapcount = u64::from(folio.precise_page_mapcount(page)).max(1);
            let mut pss = PAGE_SIZE << PSS_SHIFT;
            if mapcount >= 2 {
                pss /= mapcount;
            }
            self.pss += pss;
            match (mapcount >= 2, dirty) {
                (true, true) => self.shared_dirty += PAGE_SIZE,
                (true, false) => self.shared_clean += PAGE_SIZE,
                (false, true) => self.private_dirty += PAGE_SIZE,
                (false, false) => self.private_clean += PAGE_SIZE,
            }
        }
    }
}

impl WalkOps<Ro<'_>> for SmapsOps {
    type Error = std::convert::Infallible;

    fn pmd_leaf(&mut self, w: &mut Ro<'_>, _: Slot, entry: Entry, _: Vaddr, _: Vaddr) -> Result<Walk, Self::Error> {
        match entry {
            Entry::Page(leaf) => {
                self.rss += PMD_SIZE;
                self.anon_huge += PMD_SIZE;
                let folio = &w.0.folios[leaf.folio];
                self.account(folio, 0, PMD_SIZE / PAGE_SIZE, leaf.dirty);
            }
            Entry::Zero | Entry::None | Entry::Table(_) => {}
        }
        Ok(Walk::Skip)
    }

    fn pte_entry(&mut self, w: &mut Ro<'_>, _: Slot, entry: Entry, _: Vaddr, _: usize) -> Result<Walk, Self::Error> {
        match entry {
            Entry::Page(leaf) => {
                self.rss += PAGE_SIZE;
                let folio = &w.0.folios[leaf.folio];
                self.account(folio, u64::from(leaf.page), 1, leaf.dirty);
            }
            Entry::Zero | Entry::None | Entry::Table(_) => {}
        }
        Ok(Walk::Continue)
    }
}

/// The walk of `pagemap_read()`: holes (`pagemap_pte_hole()`), PMD leaves
/// and PTEs become runs.
impl WalkOps<Ro<'_>> for PageInfoRuns {
    type Error = std::convert::Infallible;

    fn hole(&mut self, _: &mut Ro<'_>, _: Level, start: Vaddr, end: Vaddr) -> Result<Walk, Self::Error> {
        self.push((end.0 - start.0) / PAGE_SIZE, ABSENT);
        Ok(Walk::Continue)
    }

    /// One step for the whole leaf unless some of its folio's pages are also
    /// PTE-mapped, which gives them their own mapcounts.
    fn pmd_leaf(
        &mut self,
        w: &mut Ro<'_>,
        _: Slot,
        entry: Entry,
        start: Vaddr,
        end: Vaddr,
    ) -> Result<Walk, Self::Error> {
        let w = w.0;
        let first = (start.0 & (PMD_SIZE - 1)) / PAGE_SIZE;
        let nr = (end.0 - start.0) / PAGE_SIZE;
        let uniform = match entry {
            Entry::Page(leaf) => w.folios[leaf.folio].nr_pages_mapped() == 0,
            Entry::Zero => true,
            Entry::None | Entry::Table(_) => unreachable!("the walker hands leaves to pmd_leaf"),
        };
        if uniform {
            self.push(nr, w.pmd_page_info(entry, first));
        } else {
            for page in first..first + nr {
                self.push(1, w.pmd_page_info(entry, page));
            }
        }
        Ok(Walk::Skip)
    }

    fn pte_entry(&mut self, w: &mut Ro<'_>, _: Slot, entry: Entry, _: Vaddr, _: usize) -> Result<Walk, Self::Error> {
        self.push(1, w.0.pte_page_info(entry));
        Ok(Walk::Continue)
    }
}
