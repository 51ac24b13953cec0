//! The whole simulated machine: physical memory, folios, page tables,
//! processes and counters, and the helpers every mm path shares
//! (page-table walks, page-table and folio allocation, `folio_put()`).
//!
//! Models: the state behind mm/ as a whole; `struct mm_struct`
//! (include/linux/mm_types.h), `mm_alloc()`/`mmput()` (kernel/fork.c),
//! `pte_alloc()`/`pmd_alloc()`/`pud_alloc()` (mm/memory.c),
//! `folio_put()` (mm/swap.c).

use crate::config::Config;
use crate::errno::Errno;
use crate::events::{EventLog, MmEvent};
use crate::fault_inject::{FailAttr, FailPoint, FaultInjection};
use crate::folio::FolioTable;
use crate::gfp::{AllocError, Gfp};
use crate::mman::ThpDisable;
use crate::page_alloc::BuddyAllocator;
use crate::pagewalk::Slot;
use crate::pgtable::{Entry, Level, PageTables, PtNode};
use crate::stats::{MthpStat, Stats};
use crate::types::*;
use crate::vma::VmaTree;

/// `PGD_ALLOCATION_ORDER`: 1 with `CONFIG_MITIGATION_PAGE_TABLE_ISOLATION=y`,
/// as on our machines (the user PGD sits beside the kernel's copy).
pub const PGD_ALLOCATION_ORDER: Order = Order::new(1);

/// The simulated machine's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    pub ram_bytes: u64,
}

impl Default for Machine {
    fn default() -> Self {
        Machine { ram_bytes: 16 << 30 }
    }
}

/// One process's address space (`struct mm_struct`).
#[derive(Clone, Debug)]
pub struct Mm {
    pub(crate) pid: Pid,
    pub(crate) mm_id: MmId,
    pub(crate) pgd: PtId,
    pub(crate) vmas: VmaTree,
    /// `MM_ANONPAGES`: anonymous pages mapped, counting a PMD THP as 512.
    pub(crate) rss_anon: u64,
    /// `mm_pgtables_bytes()` by level: PTE tables (deposited ones
    /// included), PMD tables and PUD tables. The PGD is not counted.
    pub(crate) nr_ptes: u64,
    pub(crate) nr_pmds: u64,
    pub(crate) nr_puds: u64,
    pub(crate) thp_disable: ThpDisable,
    /// The anon_vma root family: this mm and every mm forked from it.
    pub(crate) family: u32,
    /// `MMF_HUGE_ZERO_FOLIO`: this mm holds a reference on the huge zero folio.
    pub(crate) huge_zero_ref: bool,
    /// `MMF_HAS_PINNED`: this mm has pinned pages at some point.
    pub(crate) has_pinned: bool,
    /// `MMF_VM_HUGEPAGE`: registered with khugepaged.
    pub(crate) khugepaged_registered: bool,
}

impl Mm {
    pub fn pid(&self) -> Pid {
        self.pid
    }
    pub fn vmas(&self) -> &VmaTree {
        &self.vmas
    }
    /// `VmPTE` of /proc/<pid>/status, in kB.
    pub fn vm_pte_kb(&self) -> u64 {
        (self.nr_ptes + self.nr_pmds + self.nr_puds) * PAGE_SIZE / 1024
    }
    /// `RssAnon` of /proc/<pid>/status, in kB.
    pub fn rss_anon_kb(&self) -> u64 {
        self.rss_anon * PAGE_SIZE / 1024
    }
    pub fn thp_disable(&self) -> ThpDisable {
        self.thp_disable
    }
}

/// The huge zero folio (`huge_zero_folio`, `huge_zero_refcount`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HugeZero {
    pub(crate) pfn: Pfn,
    /// One for the global reference plus one per mm with `huge_zero_ref`.
    pub(crate) refcount: u32,
}

/// A GUP pin: the pages it holds, by folio.
#[derive(Clone, Debug)]
pub(crate) struct Pin {
    pub(crate) folios: Vec<FolioId>,
}

/// The simulated machine.
#[derive(Clone, Debug)]
pub struct World {
    pub(crate) config: Config,
    /// `config.sysfs_allowed_orders()` for VMAs without and with
    /// VM_HUGEPAGE, recomputed whenever a knob is written.
    pub(crate) sysfs_orders: [u32; 2],
    pub(crate) buddy: BuddyAllocator,
    pub(crate) folios: FolioTable,
    pub(crate) pt: PageTables,
    pub(crate) mms: Vec<Option<Mm>>,
    pub(crate) stats: Stats,
    /// The deferred-split queue in list order. Removal is lazy: an entry
    /// counts only while its folio is queued under the same sequence number.
    pub(crate) deferred_queue: Vec<(FolioId, u64)>,
    /// `split_queue_len`: live entries of `deferred_queue`.
    pub(crate) deferred_len: usize,
    pub(crate) next_deferred_seq: u64,
    pub(crate) huge_zero: Option<HugeZero>,
    pub(crate) pins: Vec<Option<Pin>>,
    pub(crate) khugepaged: crate::khugepaged::KhugepagedState,
    pub(crate) events: EventLog,
    pub(crate) next_family: u32,
    pub(crate) next_anon_vma: u32,
    /// The name of the public operation running, for invariant messages.
    pub(crate) current_op: &'static str,
    /// Armed failure-injection points (`fault_inject`).
    pub(crate) fault_inject: FaultInjection,
    boot_free_pages: u64,
}

impl World {
    /// A machine with `machine.ram_bytes` of RAM and the given tunables.
    pub fn new(machine: Machine, config: Config) -> World {
        let nr_pages = machine.ram_bytes / PAGE_SIZE;
        let buddy = BuddyAllocator::new(nr_pages);
        let boot_free_pages = buddy.nr_free_pages();
        let sysfs_orders = [config.sysfs_allowed_orders(false), config.sysfs_allowed_orders(true)];
        World {
            sysfs_orders,
            config,
            buddy,
            folios: FolioTable::default(),
            pt: PageTables::default(),
            mms: Vec::new(),
            stats: Stats::default(),
            deferred_queue: Vec::new(),
            deferred_len: 0,
            next_deferred_seq: 0,
            huge_zero: None,
            pins: Vec::new(),
            khugepaged: Default::default(),
            events: EventLog::default(),
            next_family: 0,
            next_anon_vma: 0,
            current_op: "boot",
            fault_inject: FaultInjection::default(),
            boot_free_pages,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn buddy(&self) -> &BuddyAllocator {
        &self.buddy
    }
    pub fn folios(&self) -> &FolioTable {
        &self.folios
    }
    pub fn page_tables(&self) -> &PageTables {
        &self.pt
    }
    pub fn events_mut(&mut self) -> &mut EventLog {
        &mut self.events
    }
    /// Free pages at boot: after every process exits and the shrinkers ran,
    /// `buddy().nr_free_pages()` must be back at this.
    pub fn boot_free_pages(&self) -> u64 {
        self.boot_free_pages
    }

    /// Writes a sysfs file under /sys/kernel/mm/transparent_hugepage, given as text.
    pub fn set_knob(&mut self, path: &str, value: &str) -> Result<(), Errno> {
        self.set(crate::config::Setting::from_sysfs(path, value).map_err(|_| Errno::Inval)?)
    }

    /// Writes a sysfs file under /sys/kernel/mm/transparent_hugepage.
    pub fn set(&mut self, setting: crate::config::Setting) -> Result<(), Errno> {
        self.config.set(setting)?;
        self.sysfs_orders = [self.config.sysfs_allowed_orders(false), self.config.sysfs_allowed_orders(true)];
        Ok(())
    }

    /// Arms a failure-injection point: from now on, allocations at `point`
    /// fail as `attr` says (`/sys/kernel/debug/fail_page_alloc`).
    pub fn inject(&mut self, point: FailPoint, attr: FailAttr) {
        self.fault_inject.set(point, attr);
    }
    pub fn fault_injection(&self) -> &FaultInjection {
        &self.fault_inject
    }

    pub fn mm(&self, pid: Pid) -> Option<&Mm> {
        self.mms.get(pid.index()).and_then(Option::as_ref)
    }
    pub(crate) fn mm_ref(&self, pid: Pid) -> &Mm {
        self.mm(pid).unwrap_or_else(|| panic!("{pid:?} is not a live process"))
    }
    pub(crate) fn mm_mut(&mut self, pid: Pid) -> &mut Mm {
        self.mms[pid.index()].as_mut().unwrap_or_else(|| panic!("{pid:?} is not a live process"))
    }
    pub fn live_pids(&self) -> Vec<Pid> {
        self.mms.iter().flatten().map(|m| m.pid).collect()
    }
    pub(crate) fn check_pid(&self, pid: Pid) -> Result<(), Errno> {
        self.mm(pid).map(|_| ()).ok_or(Errno::Srch)
    }

    /// Lowest unused `mm_id` (the kernel allocates them from an IDA).
    fn alloc_mm_id(&self) -> MmId {
        let used: std::collections::BTreeSet<u32> = self.mms.iter().flatten().map(|m| m.mm_id.0).collect();
        MmId((1..).find(|id| !used.contains(id)).expect("mm ids exhausted"))
    }

    pub(crate) fn new_family(&mut self) -> u32 {
        self.next_family += 1;
        self.next_family
    }

    pub(crate) fn new_anon_vma(&mut self) -> u32 {
        self.next_anon_vma += 1;
        self.next_anon_vma
    }

    /// Creates an mm with an empty address space (`mm_alloc()` + `pgd_alloc()`).
    pub(crate) fn mm_alloc(&mut self, family: u32) -> Result<Pid, Errno> {
        let pgd_pfn = self.alloc_pages(PGD_ALLOCATION_ORDER, Gfp::PGTABLE_USER)?;
        self.stats.nr_page_table_pages += PGD_ALLOCATION_ORDER.nr_pages() as i64;
        let pgd = self.pt.insert(PtNode::new(pgd_pfn, Level::Pgd));
        let mm_id = self.alloc_mm_id();
        let pid = Pid(self.mms.len() as u32);
        self.mms.push(Some(Mm {
            pid,
            mm_id,
            pgd,
            vmas: VmaTree::default(),
            rss_anon: 0,
            nr_ptes: 0,
            nr_pmds: 0,
            nr_puds: 0,
            thp_disable: ThpDisable::Off,
            family,
            huge_zero_ref: false,
            has_pinned: false,
            khugepaged_registered: false,
        }));
        Ok(pid)
    }

    /// Starts a process with an empty address space.
    pub fn spawn(&mut self) -> Result<Pid, Errno> {
        self.begin_op("spawn");
        let family = self.new_family();
        let pid = self.mm_alloc(family)?;
        self.end_op();
        Ok(pid)
    }

    // ----- page tables -------------------------------------------------

    fn account_pt(&mut self, pid: Pid, level: Level, delta: i64) {
        let mm = self.mm_mut(pid);
        let counter = match level {
            Level::Pte => &mut mm.nr_ptes,
            Level::Pmd => &mut mm.nr_pmds,
            Level::Pud => &mut mm.nr_puds,
            Level::Pgd => unreachable!("the PGD is accounted by mm_alloc"),
        };
        *counter = counter.checked_add_signed(delta).expect("page-table count underflow");
        self.stats.nr_page_table_pages += delta;
    }

    /// Allocates one page-table page (`pte_alloc_one()` and friends), with
    /// `GFP_PGTABLE_USER` (the min watermark).
    pub(crate) fn alloc_pt_page(&mut self, pid: Pid, level: Level) -> Result<Pfn, AllocError> {
        let pfn = self.alloc_pages(Order::BASE, Gfp::PGTABLE_USER)?;
        self.account_pt(pid, level, 1);
        self.events.emit(|| MmEvent::PtAlloc { level: level.event_level() });
        Ok(pfn)
    }

    /// Frees a page-table page that no node owns (a withdrawn deposit that
    /// was never populated, or a table being freed).
    pub(crate) fn free_pt_page(&mut self, pid: Pid, level: Level, pfn: Pfn) {
        self.buddy.free(pfn, Order::BASE);
        self.account_pt(pid, level, -1);
        self.events.emit(|| MmEvent::PtFree { level: level.event_level() });
    }

    /// Frees a node that has no entries left and clears its parent slot.
    pub(crate) fn free_table(&mut self, pid: Pid, slot: Slot) {
        let Entry::Table(id) = self.entry(slot) else { panic!("free_table: {slot:?} is not a table") };
        let node = self.pt.remove(id);
        assert_eq!(node.nr_used, 0, "freeing a {:?} table with {} entries", node.level, node.nr_used);
        assert!(node.deposited().is_empty(), "freeing a PMD table with {} deposited tables", node.deposited().len());
        self.set_entry(slot, Entry::None);
        self.free_pt_page(pid, node.level, node.pfn);
    }

    // ----- folios ------------------------------------------------------

    /// Drops `nr` references (`folio_put_refs()`); frees the folio when the
    /// last goes.
    pub(crate) fn folio_put_refs(&mut self, id: FolioId, nr: u32) {
        let folio = &mut self.folios[id];
        folio.refcount = folio.refcount.checked_sub(nr).unwrap_or_else(|| {
            panic!("{id:?}: refcount {} dropped by {nr} during {}", folio.refcount, self.current_op)
        });
        if folio.refcount == 0 {
            self.free_folio(id);
        }
    }

    /// Returns a folio with no references to the buddy allocator
    /// (`__folio_put()` → `free_pages_prepare()`).
    fn free_folio(&mut self, id: FolioId) {
        let folio = &self.folios[id];
        assert_eq!(folio.large_mapcount, 0, "freeing mapped {id:?} during {}", self.current_op);
        if folio.deferred.queued {
            self.deferred_split_remove(id);
        }
        let folio = self.folios.remove(id);
        if folio.is_large() {
            self.stats.mthp(folio.order, MthpStat::NrAnon, -1);
        }
        self.buddy.free(folio.pfn, folio.order);
    }

    // ----- operation bracketing -----------------------------------------

    pub(crate) fn begin_op(&mut self, name: &'static str) {
        self.current_op = name;
    }

    /// Ends a public operation: in debug and test builds, checks every
    /// invariant.
    pub(crate) fn end_op(&mut self) {
        if cfg!(any(debug_assertions, feature = "check-invariants")) {
            crate::invariants::check_all(self);
        }
    }
}
