//! khugepaged and MADV_COLLAPSE: scanning PTE-mapped ranges and collapsing
//! them into PMD-mapped THPs.
//!
//! Models: mm/khugepaged.c (Linux 6.18): `khugepaged_enter_vma()`,
//! `__khugepaged_enter()`, `khugepaged_fork()`, `khugepaged_exit()`,
//! `khugepaged_do_scan()`, `khugepaged_scan_mm_slot()`,
//! `hpage_collapse_scan_pmd()`, `collapse_huge_page()`,
//! `__collapse_huge_page_copy_succeeded()`, `madvise_collapse()` and
//! `madvise_collapse_errno()`. khugepaged runs only when asked
//! (`khugepaged_scan(n)` completes n full passes): no wall clock.
//! Not modelled yet: swap-in of swap PTEs (no swap until a later issue),
//! file/shmem collapse.

use crate::errno::Errno;
use crate::events::MmEvent;
use crate::gfp::Gfp;
use crate::memory::Tva;
use crate::pagewalk::{Slot, Walk, WalkOps};
use crate::pgtable::{Entry, Leaf, Level};
use crate::rmap::RmapLevel;
use crate::stats::VmEvent;
use crate::types::*;
use crate::world::World;

/// The scan cursor and the list of registered mms (`khugepaged_scan`,
/// `mm_slot`s).
#[derive(Clone, Debug, Default)]
pub struct KhugepagedState {
    /// Registered mms in registration order.
    slots: Vec<Pid>,
    /// Index into `slots` of the mm being scanned, if any.
    cursor: Option<usize>,
    /// `khugepaged_scan.address`.
    address: u64,
}

/// `enum scan_result`, with the tracepoint spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanResult {
    Fail,
    Succeed,
    /// No PMD table covers the range (`mm_find_pmd()` found none).
    PmdNull,
    /// The PMD entry is none: no PTE table, no leaf.
    PmdNone,
    PmdMapped,
    ExceedNonePte,
    ExceedSwapPte,
    ExceedSharedPte,
    PageRo,
    LackReferencedPage,
    PageNull,
    PageCount,
    AllocHugePageFail,
}

impl ScanResult {
    /// The `status=` string of the `huge_memory:mm_khugepaged_scan_pmd` tracepoint.
    pub const fn name(self) -> &'static str {
        match self {
            ScanResult::Fail => "failed",
            ScanResult::Succeed => "succeeded",
            ScanResult::PmdNull => "pmd_null",
            ScanResult::PmdNone => "pmd_none",
            ScanResult::PmdMapped => "page_pmd_mapped",
            ScanResult::ExceedNonePte => "exceed_none_pte",
            ScanResult::ExceedSwapPte => "exceed_swap_pte",
            ScanResult::ExceedSharedPte => "exceed_shared_pte",
            ScanResult::PageRo => "no_writable_page",
            ScanResult::LackReferencedPage => "lack_referenced_page",
            ScanResult::PageNull => "page_null",
            ScanResult::PageCount => "not_suitable_page_count",
            ScanResult::AllocHugePageFail => "alloc_huge_page_failed",
        }
    }

    /// `madvise_collapse_errno()`.
    fn collapse_errno(self) -> Errno {
        match self {
            ScanResult::AllocHugePageFail => Errno::NoMem,
            ScanResult::ExceedNonePte => Errno::Busy,
            ScanResult::PageCount => Errno::Again,
            _ => Errno::Inval,
        }
    }
}

/// Bounds a `khugepaged_scan()` call: wakes of `khugepaged_do_scan()`
/// before giving up on reaching the requested number of full scans.
const MAX_KHUGEPAGED_WAKES: u32 = 1_000_000;

impl World {
    /// `khugepaged_enter_vma()`: registers the mm if this VMA is eligible.
    pub(crate) fn khugepaged_enter_vma(&mut self, pid: Pid, vma_start: Vaddr) {
        if self.mm_ref(pid).khugepaged_registered || !self.config.pmd_enabled() {
            return;
        }
        let Some(vma) = self.mm_ref(pid).vmas.get(vma_start).cloned() else { return };
        if self.thp_vma_allowable_orders(pid, &vma, Tva::Khugepaged, 1 << Order::PMD.get()) != 0 {
            self.khugepaged_register(pid);
        }
    }

    /// `__khugepaged_enter()`.
    pub(crate) fn khugepaged_register(&mut self, pid: Pid) {
        self.mm_mut(pid).khugepaged_registered = true;
        self.khugepaged.slots.push(pid);
    }

    /// `khugepaged_exit()` / `collect_mm_slot()`.
    pub(crate) fn khugepaged_exit(&mut self, pid: Pid) {
        let k = &mut self.khugepaged;
        if let Some(i) = k.slots.iter().position(|p| *p == pid) {
            k.slots.remove(i);
            k.cursor = match k.cursor {
                Some(c) if c == i => {
                    k.address = 0;
                    (i < k.slots.len()).then_some(i)
                }
                Some(c) if c > i => Some(c - 1),
                other => other,
            };
        }
    }

    /// Lets khugepaged run until it has completed `full_scans` more full
    /// passes over its mm list (khugepaged/full_scans). Does nothing when
    /// no mm is registered: khugepaged then has no work and sleeps.
    pub fn khugepaged_scan(&mut self, full_scans: u32) {
        self.begin_op("khugepaged");
        let target = self.stats.khugepaged_full_scans + full_scans as u64;
        let mut wakes = 0;
        while self.stats.khugepaged_full_scans < target && !self.khugepaged.slots.is_empty() {
            self.khugepaged_do_scan();
            wakes += 1;
            assert!(wakes < MAX_KHUGEPAGED_WAKES, "khugepaged made no progress in {MAX_KHUGEPAGED_WAKES} wakes");
        }
        self.end_op();
    }

    /// `khugepaged_do_scan()`: one wake, scanning up to `pages_to_scan`.
    fn khugepaged_do_scan(&mut self) {
        let pages = self.config.khugepaged.pages_to_scan as u64;
        let mut progress = 0;
        let mut pass_through_head = 0;
        let mut alloc_failed_once = false;
        while progress < pages {
            if self.khugepaged.cursor.is_none() {
                pass_through_head += 1;
            }
            if self.khugepaged.slots.is_empty() || pass_through_head >= 2 {
                break;
            }
            let (p, result) = self.khugepaged_scan_mm_slot(pages - progress);
            progress += p;
            if result == ScanResult::AllocHugePageFail {
                if alloc_failed_once {
                    break;
                }
                alloc_failed_once = true;
            }
        }
    }

    /// `khugepaged_scan_mm_slot()`: scans the current mm from the cursor.
    fn khugepaged_scan_mm_slot(&mut self, pages: u64) -> (u64, ScanResult) {
        let slot = *self.khugepaged.cursor.get_or_insert(0);
        let pid = self.khugepaged.slots[slot];
        // One for taking the mm, one per VMA skipped, 512 per PMD scanned.
        let mut progress = 1;
        let mut result = ScanResult::Fail;
        let mut finished_mm = true;
        // hpage_collapse_test_exit_or_disable(): a THP-disabled mm is passed
        // over as if it had no VMA left.
        let disabled = self.mm_ref(pid).thp_disable == crate::mman::ThpDisable::All;
        if !disabled {
            // vma_iter_init(address): from the VMA holding the cursor on.
            let address = self.khugepaged.address;
            let vmas: Vec<Vaddr> =
                self.mm_ref(pid).vmas.iter().filter(|v| v.end.0 > address).map(|v| v.start).collect();
            'vmas: for vstart in vmas {
                let Some(vma) = self.mm_ref(pid).vmas.get(vstart).cloned() else { continue };
                if self.thp_vma_allowable_orders(pid, &vma, Tva::Khugepaged, 1 << Order::PMD.get()) == 0 {
                    progress += 1;
                    continue;
                }
                let hstart = vma.start.align_up(PMD_SIZE).0;
                let hend = vma.end.align_down(PMD_SIZE).0;
                if self.khugepaged.address > hend {
                    progress += 1;
                    continue;
                }
                self.khugepaged.address = self.khugepaged.address.max(hstart);
                while self.khugepaged.address < hend {
                    let addr = Vaddr(self.khugepaged.address);
                    result = self.hpage_collapse_scan_pmd(pid, addr, true);
                    if result == ScanResult::Succeed {
                        self.stats.khugepaged_pages_collapsed += 1;
                    }
                    self.khugepaged.address += PMD_SIZE;
                    progress += Order::PMD.nr_pages();
                    if progress >= pages {
                        // Stop here; the cursor resumes in this VMA next wake
                        // unless it was the last block of the last VMA.
                        finished_mm = false;
                        break 'vmas;
                    }
                }
            }
        }
        if finished_mm || self.mm(pid).is_none() {
            let k = &mut self.khugepaged;
            k.address = 0;
            if slot + 1 < k.slots.len() {
                k.cursor = Some(slot + 1);
            } else {
                k.cursor = None;
                self.stats.khugepaged_full_scans += 1;
            }
            // collect_mm_slot() frees the slot of an mm that exited only: a
            // THP-disabled mm stays listed and keeps MMF_VM_HUGEPAGE, so its
            // children register at fork (`khugepaged_fork()`).
        }
        (progress, result)
    }

    /// `hpage_collapse_scan_pmd()`: decides whether the PTE table at `addr`
    /// may be collapsed, and collapses it if so. With `khugepaged`, the
    /// `max_ptes_*` limits and the referenced test apply; MADV_COLLAPSE
    /// ignores them.
    pub(crate) fn hpage_collapse_scan_pmd(&mut self, pid: Pid, addr: Vaddr, khugepaged: bool) -> ScanResult {
        let mut ops = ScanOps { khugepaged, none_or_zero: 0, referenced: 0, shared: 0, result: None };
        let Ok(()) = self.walk(pid, addr, addr.add(PMD_SIZE), &mut ops);
        let ScanOps { none_or_zero, referenced, .. } = ops;
        let unmapped = 0u32;
        // 6.12 refused ranges without a writable PTE (SCAN_PAGE_RO); the live
        // 6.18 kernel collapses them (fork-shared ranges included).
        let result = ops.result.unwrap_or(
            if khugepaged && (referenced == 0 || (unmapped > 0 && referenced < Order::PMD.nr_pages() as u32 / 2)) {
                ScanResult::LackReferencedPage
            } else {
                ScanResult::Succeed
            },
        );
        let result =
            if result == ScanResult::Succeed { self.collapse_huge_page(pid, addr, khugepaged) } else { result };
        self.events.emit(|| MmEvent::KhugepagedScanPmd {
            pid,
            addr,
            referenced,
            none_or_zero,
            status: result.name(),
            unmapped,
        });
        result
    }

    /// `collapse_huge_page()`: allocates a THP, copies the PTE-mapped pages
    /// into it, releases them, deposits the old PTE table and maps the THP
    /// by the PMD.
    fn collapse_huge_page(&mut self, pid: Pid, addr: Vaddr, khugepaged: bool) -> ScanResult {
        let may_compact = !khugepaged || self.config.khugepaged.defrag;
        let family = self.mm_ref(pid).family;
        let Ok(folio) = self.folio_alloc(Order::PMD, Gfp::transhuge(may_compact), family) else {
            self.stats.count(VmEvent::ThpCollapseAllocFailed);
            return ScanResult::AllocHugePageFail;
        };
        self.stats.count(VmEvent::ThpCollapseAlloc);
        let pmd = self.pmd_off(pid, addr).expect("scanned PMD vanished");
        let Entry::Table(pte) = self.entry(pmd) else { panic!("scanned PTE table vanished") };
        let mut copy = CollapseOps { pid, folio, rss_added: 0 };
        let Ok(()) = self.walk(pid, addr, addr.add(PMD_SIZE), &mut copy);
        self.events.emit(|| MmEvent::Copied { bytes: PMD_SIZE });
        // The emptied PTE table becomes the deposit under the new PMD.
        let old_table = self.pt.remove(pte);
        self.set_entry(pmd, Entry::None);
        self.deposit_collapsed_table(pid, pmd.table, old_table.pfn);
        let vma = self.mm_ref(pid).vmas.find(addr).expect("vma").clone();
        self.folios[folio].index = vma.linear_page_index(addr);
        self.folios[folio].refcount = 1;
        self.folio_add_new_anon_rmap(folio, pid, RmapLevel::Pmd);
        let writable = vma.writable();
        self.set_entry(pmd, Entry::Page(Leaf { folio, page: 0, writable, dirty: writable, young: true }));
        self.mm_mut(pid).rss_anon += copy.rss_added;
        self.deferred_split_folio(folio, false);
        self.events.emit(|| MmEvent::Collapse { pid, addr });
        ScanResult::Succeed
    }

    /// `madvise_collapse()` over `[start, end)` of one VMA: every PMD-aligned
    /// block inside must end up PMD-mapped, or the call fails with the errno
    /// of the last failure.
    pub(crate) fn madvise_collapse(&mut self, pid: Pid, start: Vaddr, end: Vaddr) -> Result<(), Errno> {
        let vma = self.mm_ref(pid).vmas.find(start).cloned().ok_or(Errno::NoMem)?;
        if self.thp_vma_allowable_orders(pid, &vma, Tva::ForcedCollapse, 1 << Order::PMD.get()) == 0 {
            return Err(Errno::Inval);
        }
        let (hstart, hend) = (start.align_up(PMD_SIZE), end.align_down(PMD_SIZE));
        if hstart > hend {
            // The kernel's block count underflows here and the call fails
            // with the errno of SCAN_FAIL.
            return Err(ScanResult::Fail.collapse_errno());
        }
        let mut thps = 0;
        let mut last_fail = ScanResult::Fail;
        let mut addr = hstart;
        while addr < hend {
            match self.hpage_collapse_scan_pmd(pid, addr, false) {
                ScanResult::Succeed | ScanResult::PmdMapped => thps += 1,
                // The results the kernel's loop goes on after. A block with
                // no PMD table (`SCAN_PMD_NULL`) is one; a block whose PMD
                // entry is none (`SCAN_PMD_NONE`, no PTE table) ends the walk
                // (measured on 6.18: later blocks are not collapsed and the
                // call fails).
                r @ (ScanResult::PmdNull
                | ScanResult::PageRo
                | ScanResult::LackReferencedPage
                | ScanResult::PageNull
                | ScanResult::PageCount) => last_fail = r,
                r => {
                    last_fail = r;
                    break;
                }
            }
            addr = addr.add(PMD_SIZE);
        }
        let blocks = (hend.0.saturating_sub(hstart.0)) / PMD_SIZE;
        if thps == blocks {
            Ok(())
        } else {
            Err(last_fail.collapse_errno())
        }
    }
}

/// The walk of `hpage_collapse_scan_pmd()` over one PMD range: counts none,
/// shared and referenced PTEs, and ends with a result as soon as one is known.
struct ScanOps {
    khugepaged: bool,
    none_or_zero: u32,
    referenced: u32,
    shared: u32,
    result: Option<ScanResult>,
}

impl ScanOps {
    fn stop(&mut self, result: ScanResult) -> Result<Walk, std::convert::Infallible> {
        self.result = Some(result);
        Ok(Walk::Stop)
    }
}

impl WalkOps<World> for ScanOps {
    type Error = std::convert::Infallible;

    /// `find_pmd_or_thp_or_none()`: no PMD table is `SCAN_PMD_NULL`, a none
    /// PMD entry `SCAN_PMD_NONE`.
    fn hole(&mut self, _: &mut World, level: Level, _: Vaddr, _: Vaddr) -> Result<Walk, Self::Error> {
        self.stop(if level == Level::Pmd { ScanResult::PmdNone } else { ScanResult::PmdNull })
    }

    fn pmd_leaf(&mut self, _: &mut World, _: Slot, _: Entry, _: Vaddr, _: Vaddr) -> Result<Walk, Self::Error> {
        self.stop(ScanResult::PmdMapped)
    }

    fn pte_entry(&mut self, w: &mut World, _: Slot, entry: Entry, _: Vaddr, _: usize) -> Result<Walk, Self::Error> {
        let cfg = w.config.khugepaged;
        let leaf = match entry {
            Entry::None | Entry::Zero => {
                self.none_or_zero += 1;
                if !self.khugepaged || self.none_or_zero <= cfg.max_ptes_none {
                    return Ok(Walk::Continue);
                }
                w.stats.count(VmEvent::ThpScanExceedNonePte);
                return self.stop(ScanResult::ExceedNonePte);
            }
            Entry::Page(leaf) => leaf,
            Entry::Table(t) => unreachable!("the walker never hands a table {t:?} to pte_entry"),
        };
        let folio = &w.folios[leaf.folio];
        if folio.maybe_mapped_shared() {
            self.shared += 1;
            if self.khugepaged && self.shared > cfg.max_ptes_shared {
                w.stats.count(VmEvent::ThpScanExceedSharePte);
                return self.stop(ScanResult::ExceedSharedPte);
            }
        }
        // is_refcount_suitable(): nothing but the mappings holds it.
        if folio.refcount != folio.mapcount() {
            return self.stop(ScanResult::PageCount);
        }
        if self.khugepaged && (leaf.young || folio.referenced) {
            self.referenced += 1;
        }
        Ok(Walk::Continue)
    }
}

/// The walk of `__collapse_huge_page_copy()` and
/// `__collapse_huge_page_copy_succeeded()`: copies each page's contents into
/// the new folio and releases the source pages a folio batch at a time
/// (`folio_pte_batch()`), so a large source folio goes from fully mapped to
/// unmapped without looking partially mapped in between: no deferred split
/// is queued.
struct CollapseOps {
    pid: Pid,
    folio: FolioId,
    /// Pages the PMD maps that no PTE mapped: RSS grows by these.
    rss_added: u64,
}

impl WalkOps<World> for CollapseOps {
    type Error = std::convert::Infallible;

    fn pmd_leaf(&mut self, _: &mut World, slot: Slot, entry: Entry, _: Vaddr, _: Vaddr) -> Result<Walk, Self::Error> {
        panic!("{slot:?}: {entry:?} where collapse scanned a PTE table")
    }

    fn pte_entry(
        &mut self,
        w: &mut World,
        slot: Slot,
        entry: Entry,
        _: Vaddr,
        last: usize,
    ) -> Result<Walk, Self::Error> {
        match entry {
            Entry::None => {
                self.rss_added += 1;
                Ok(Walk::Continue)
            }
            Entry::Zero => {
                self.rss_added += 1;
                w.set_entry(slot, Entry::None);
                Ok(Walk::Continue)
            }
            Entry::Page(leaf) => {
                let nr = w.pte_batch(slot.table, slot.index, last);
                for k in 0..nr {
                    let page = leaf.page as u64 + k as u64;
                    let word = w.folios[leaf.folio].word(page);
                    w.folios[self.folio].set_word((slot.index + k) as u64, word);
                    w.pt[slot.table].set(slot.index + k, Entry::None);
                }
                w.folio_remove_rmap_ptes(leaf.folio, leaf.page as u64, nr as u64, self.pid);
                w.folio_put_refs(leaf.folio, nr as u32);
                Ok(Walk::Advance(nr))
            }
            Entry::Table(t) => unreachable!("the walker never hands a table {t:?} to pte_entry"),
        }
    }
}
