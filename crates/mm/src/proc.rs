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
use crate::pgtable::Entry;
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
}

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
        let absent = PageInfo {
            state: PageState::None,
            folio: None,
            pfn: None,
            order: 0,
            pmd_mapped: false,
            mapcount: 0,
            exclusive: false,
            zero_page: false,
        };
        let Some(_) = self.mm(pid) else { return absent };
        let (entry, pmd_mapped, page_of_pmd) = match self.lookup(pid, addr) {
            Lookup::Hole => return absent,
            Lookup::Pud { slot, entry } => panic!("{pid:?} {addr}: {entry:?} at PUD {slot:?}"),
            Lookup::Pmd { entry, .. } => (entry, true, (addr.0 & (PMD_SIZE - 1)) / PAGE_SIZE),
            Lookup::Pte { entry, .. } => (entry, false, 0),
        };
        match entry {
            Entry::None => absent,
            Entry::Table(t) => panic!("{pid:?} {addr}: lookup ended at table {t:?}"),
            Entry::Zero => PageInfo {
                state: PageState::Present,
                pfn: self.huge_zero.filter(|_| pmd_mapped).map(|hz| hz.pfn.add(page_of_pmd)),
                order: if pmd_mapped { Order::PMD.get() } else { 0 },
                pmd_mapped,
                zero_page: true,
                ..absent
            },
            Entry::Page(leaf) => {
                let f = &self.folios[leaf.folio];
                let page = if pmd_mapped { page_of_pmd } else { leaf.page as u64 };
                // The exclusive bit of a PMD mapping is the first page's.
                let excl_page = if pmd_mapped { 0 } else { page };
                PageInfo {
                    state: PageState::Present,
                    folio: Some(leaf.folio),
                    pfn: Some(f.pfn.add(page)),
                    order: f.order.get(),
                    pmd_mapped,
                    mapcount: f.precise_page_mapcount(page) as u64,
                    exclusive: f.precise_page_mapcount(excl_page) == 1,
                    zero_page: false,
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

/// The walk of `smaps_pte_entry()`/`smaps_pmd_entry()`: resident and
/// PMD-mapped anonymous bytes. Zero pages count in neither.
#[derive(Default)]
struct SmapsOps {
    rss: u64,
    anon_huge: u64,
}

impl WalkOps<Ro<'_>> for SmapsOps {
    type Error = std::convert::Infallible;

    fn pmd_leaf(&mut self, _: &mut Ro<'_>, _: Slot, entry: Entry, _: Vaddr, _: Vaddr) -> Result<Walk, Self::Error> {
        match entry {
            Entry::Page(_) => {
                self.rss += PMD_SIZE;
                self.anon_huge += PMD_SIZE;
            }
            Entry::Zero | Entry::None | Entry::Table(_) => {}
        }
        Ok(Walk::Skip)
    }

    fn pte_entry(&mut self, _: &mut Ro<'_>, _: Slot, entry: Entry, _: Vaddr, _: usize) -> Result<Walk, Self::Error> {
        match entry {
            Entry::Page(_) => self.rss += PAGE_SIZE,
            Entry::Zero | Entry::None | Entry::Table(_) => {}
        }
        Ok(Walk::Continue)
    }
}
