//! Anonymous page faults at PTE level, write-protect faults and COW, and
//! zapping (unmapping) ranges.
//!
//! Models: mm/memory.c: `handle_mm_fault()`, `__handle_mm_fault()`,
//! `handle_pte_fault()`, `do_anonymous_page()`, `alloc_anon_folio()`,
//! `do_wp_page()`, `wp_can_reuse_anon_folio()`, `wp_page_copy()`,
//! `zap_pte_range()`, `zap_pmd_range()`, `free_pgd_range()`.
//! Not modelled: file and shmem faults, userfaultfd, NUMA hinting faults,
//! KSM, device memory. A fault that ends in VM_FAULT_OOM is reported to the
//! caller as `ENOMEM` instead of invoking the OOM killer (docs/fidelity.md).

use crate::errno::{Errno, FaultError};
use crate::events::MmEvent;
use crate::gfp::Gfp;
use crate::mman::{Access, Fill};
use crate::pagewalk::{Lookup, Slot, Walk, WalkOps};
use crate::pgtable::{Entry, Leaf, Level};
use crate::rmap::RmapLevel;
use crate::stats::{MthpStat, VmEvent};
use crate::types::*;
use crate::vma::Vma;
use crate::world::World;

/// `reusable_anon_vma()`: `old`'s anon_vma, if the adjacent `a` and `b` are
/// compatible (`anon_vma_compatible()`: flags equal but for access bits,
/// page offsets contiguous) and `old`'s anon_vma chain holds only its own
/// anon_vma (it did not come through fork).
fn reusable_anon_vma(old: &Vma, a: &Vma, b: &Vma) -> Option<u32> {
    use crate::vma::VmFlags;
    let access = VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC);
    let compatible = a.end == b.start
        && a.flags.without(access) == b.flags.without(access)
        && b.pgoff == a.pgoff + ((b.start.0 - a.start.0) >> PAGE_SHIFT);
    old.anon_vma.filter(|_| compatible && !old.anon_vma_forked)
}

/// Why `thp_vma_allowable_orders()` is asked (`enum tva_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tva {
    Smaps,
    PageFault,
    Khugepaged,
    ForcedCollapse,
}

/// The fault being handled (`struct vm_fault`): the process, the VMA, the
/// address, whether it is a write, and the PMD slot covering the address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VmFault<'a> {
    pub(crate) pid: Pid,
    pub(crate) vma: &'a Vma,
    pub(crate) addr: Vaddr,
    pub(crate) write: bool,
    /// The PMD entry covering `addr`.
    pub(crate) pmd: Slot,
}

/// The result of a huge-page fault attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HugeFault {
    Done,
    /// `VM_FAULT_FALLBACK`: go on at the next smaller level.
    Fallback,
}

impl World {
    /// `vma_thp_disabled()`.
    pub(crate) fn vma_thp_disabled(&self, pid: Pid, vma: &Vma, forced_collapse: bool) -> bool {
        use crate::mman::ThpDisable;
        use crate::vma::VmFlags;
        if vma.flags.contains(VmFlags::NOHUGEPAGE) {
            return true;
        }
        let mm = self.mm_ref(pid);
        if mm.thp_disable == ThpDisable::All {
            return true;
        }
        if vma.flags.contains(VmFlags::HUGEPAGE) || forced_collapse {
            return false;
        }
        mm.thp_disable == ThpDisable::ExceptAdvised
    }

    /// `thp_vma_suitable_order()`: the aligned block around `addr` fits in the VMA.
    pub(crate) fn thp_vma_suitable_order(vma: &Vma, addr: Vaddr, order: Order) -> bool {
        let haddr = addr.align_down(order.bytes());
        haddr >= vma.start && haddr.0 + order.bytes() <= vma.end.0
    }

    /// `thp_vma_allowable_orders()` for anonymous VMAs: which of `orders`
    /// (a bitmask by order) this VMA may use.
    pub(crate) fn thp_vma_allowable_orders(&self, pid: Pid, vma: &Vma, tva: Tva, orders: u32) -> u32 {
        use crate::vma::VmFlags;
        if self.vma_thp_disabled(pid, vma, tva == Tva::ForcedCollapse) {
            return 0;
        }
        let mut orders = orders;
        if tva != Tva::ForcedCollapse {
            orders &= self.sysfs_orders[usize::from(vma.flags.contains(VmFlags::HUGEPAGE))];
        }
        if orders == 0 {
            return 0;
        }
        if tva != Tva::PageFault {
            // The largest allowed order that fits at the VMA's end decides.
            let mut o = orders;
            while o != 0 {
                let order = 31 - o.leading_zeros();
                let addr = Vaddr(vma.end.0.wrapping_sub(PAGE_SIZE << order));
                if vma.end.0 >= PAGE_SIZE << order && Self::thp_vma_suitable_order(vma, addr, Order::new(order as u8)) {
                    break;
                }
                o &= !(1 << order);
            }
            orders = o;
            if orders == 0 {
                return 0;
            }
        }
        if vma.anon_vma.is_none() && !matches!(tva, Tva::Smaps | Tva::PageFault) {
            return 0;
        }
        orders
    }

    /// `anon_vma_prepare()`: gives the VMA an anon_vma at its first fault.
    /// Reuses a neighbour's anon_vma where `find_mergeable_anon_vma()` would,
    /// so that the two VMAs can merge later.
    pub(crate) fn anon_vma_prepare(&mut self, pid: Pid, vma: &Vma) {
        if vma.anon_vma.is_some() {
            return;
        }
        let vma_start = vma.start;
        let vmas = &self.mm_ref(pid).vmas;
        let Some(cur) = vmas.get(vma_start).filter(|v| v.anon_vma.is_none()) else { return };
        let reusable = vmas
            .next(cur.end)
            .filter(|next| next.start == cur.end)
            .and_then(|next| reusable_anon_vma(next, cur, next))
            .or_else(|| vmas.prev(cur.start).and_then(|prev| reusable_anon_vma(prev, prev, cur)));
        let av = match reusable {
            Some(av) => av,
            None => self.new_anon_vma(),
        };
        self.mm_mut(pid).vmas.get_mut(vma_start).expect("vma").anon_vma = Some(av);
    }

    /// One user access of the byte at `addr`: a store of `fill` or a load.
    /// Faults as the hardware would, and updates young/dirty and the page's
    /// contents.
    pub fn touch(&mut self, pid: Pid, addr: Vaddr, access: Access, fill: Fill) -> Result<(), Errno> {
        self.check_pid(pid)?;
        self.begin_op("touch");
        let result = self.user_access(pid, addr, access, fill, 0);
        self.end_op();
        result
    }

    /// Reads the 64-bit word at `addr`'s page start as a load would: faults
    /// like one (a never-touched page gets the zero page), then returns what
    /// the page holds there.
    pub fn read_word(&mut self, pid: Pid, addr: Vaddr) -> Result<u64, Errno> {
        self.check_pid(pid)?;
        self.begin_op("read");
        let result = self.user_access(pid, addr, Access::Read, Fill::Zero, 0).map(|()| match self.lookup(pid, addr) {
            Lookup::Pmd { entry: Entry::Page(leaf), .. } => {
                self.folios[leaf.folio].word((addr.0 & (PMD_SIZE - 1)) / PAGE_SIZE)
            }
            Lookup::Pte { entry: Entry::Page(leaf), .. } => self.folios[leaf.folio].word(leaf.page as u64),
            Lookup::Pmd { entry: Entry::Zero, .. } | Lookup::Pte { entry: Entry::Zero, .. } => 0,
            other @ (Lookup::Hole | Lookup::Pud { .. } | Lookup::Pmd { .. } | Lookup::Pte { .. }) => {
                panic!("{pid:?} {addr}: a load succeeded where the tables show {other:?}")
            }
        });
        self.end_op();
        result
    }

    /// Touches the first byte of each page in `pages` (page indices from
    /// `addr`, a slice or a lazy iterator), as one operation; stops at the
    /// first access that fails.
    pub fn touch_pages<I>(&mut self, pid: Pid, addr: Vaddr, pages: I, access: Access, fill: Fill) -> Result<(), Errno>
    where
        I: IntoIterator,
        I::Item: std::borrow::Borrow<u64>,
    {
        self.check_pid(pid)?;
        self.begin_op("touch");
        let mut result = Ok(());
        for p in pages {
            let p = *std::borrow::Borrow::<u64>::borrow(&p);
            result = self.user_access(pid, addr.add(p * PAGE_SIZE), access, fill, p);
            if result.is_err() {
                break;
            }
        }
        self.end_op();
        result
    }

    /// The access itself: at most a few faults, then the store lands. The
    /// page is page `index` of the touched range (for `Fill::Pattern`).
    pub(crate) fn user_access(
        &mut self,
        pid: Pid,
        addr: Vaddr,
        access: Access,
        fill: Fill,
        index: u64,
    ) -> Result<(), Errno> {
        let write = access == Access::Write;
        // A fault that falls back or races may need another pass, as the
        // hardware retries the instruction; three are always enough here.
        const MAX_FAULT_RETRIES: u32 = 3;
        for _ in 0..MAX_FAULT_RETRIES {
            let vma = self.mm_ref(pid).vmas.find(addr).ok_or(Errno::Fault)?.clone();
            // x86 has no write-only or execute-only pages: any access right
            // makes the page readable (`protection_map[]`).
            let readable = vma.readable() || vma.writable() || vma.flags.contains(crate::vma::VmFlags::EXEC);
            if (write && !vma.writable()) || (!write && !readable) {
                return Err(Errno::Fault);
            }
            if self.access_mapped(pid, addr, write, fill, index) {
                return Ok(());
            }
            self.stats.count(VmEvent::PgFault);
            self.handle_mm_fault(pid, &vma, addr, write)?;
            // The hardware retries the access; the VMA cannot have changed.
            if self.access_mapped(pid, addr, write, fill, index) {
                return Ok(());
            }
        }
        panic!("{pid:?} {addr}: access still faulting after {MAX_FAULT_RETRIES} faults");
    }

    /// Performs the access if the page tables allow it without a fault;
    /// returns false if a fault is needed.
    fn access_mapped(&mut self, pid: Pid, addr: Vaddr, write: bool, fill: Fill, index: u64) -> bool {
        let (slot, entry, page_in_folio) = match self.lookup(pid, addr) {
            Lookup::Hole => return false,
            Lookup::Pud { slot, entry } => panic!("{pid:?} {addr}: {entry:?} at PUD {slot:?}"),
            Lookup::Pmd { slot, entry } => (slot, entry, (addr.0 & (PMD_SIZE - 1)) / PAGE_SIZE),
            Lookup::Pte { slot, entry } => {
                let page = entry.leaf().map_or(0, |l| l.page as u64);
                (slot, entry, page)
            }
        };
        let mut leaf = match entry {
            Entry::Page(leaf) => leaf,
            Entry::Zero => return !write,
            Entry::None => return false,
            Entry::Table(t) => panic!("{pid:?} {addr}: lookup ended at table {t:?}"),
        };
        if write && !leaf.writable {
            return false;
        }
        leaf.young = true;
        if write {
            leaf.dirty = true;
            self.folios[leaf.folio].store(page_in_folio, fill, index);
        }
        self.folios[leaf.folio].referenced = true;
        self.set_entry(slot, Entry::Page(leaf));
        true
    }

    /// `handle_mm_fault()` → `__handle_mm_fault()`.
    /// `vma` is the VMA containing `addr`, as the caller found it.
    pub(crate) fn handle_mm_fault(&mut self, pid: Pid, vma: &Vma, addr: Vaddr, write: bool) -> Result<(), FaultError> {
        debug_assert!(vma.contains(addr), "fault at {addr} outside {vma:?}");
        let pmd = self.pmd_alloc(pid, addr)?;
        let vmf = VmFault { pid, vma, addr, write, pmd };
        match self.entry(pmd) {
            Entry::None => {
                if self.thp_vma_allowable_orders(pid, vma, Tva::PageFault, 1 << Order::PMD.get()) != 0
                    && self.do_huge_pmd_anonymous_page(&vmf)? == HugeFault::Done
                {
                    return Ok(());
                }
            }
            Entry::Page(_) | Entry::Zero => {
                if write {
                    if self.do_huge_pmd_wp_page(&vmf)? == HugeFault::Done {
                        return Ok(());
                    }
                } else {
                    return Ok(());
                }
            }
            Entry::Table(_) => {}
        }
        self.handle_pte_fault(&vmf)
    }

    /// `handle_pte_fault()`.
    fn handle_pte_fault(&mut self, vmf: &VmFault<'_>) -> Result<(), FaultError> {
        let VmFault { addr, write, pmd, .. } = *vmf;
        let pte = match self.entry(pmd) {
            Entry::Table(t) => Slot { table: t, index: Level::Pte.index(addr) },
            Entry::None => return self.do_anonymous_page(vmf),
            other @ (Entry::Page(_) | Entry::Zero) => panic!("PTE fault under a PMD leaf {other:?}"),
        };
        match self.entry(pte) {
            Entry::None => self.do_anonymous_page(vmf),
            Entry::Zero | Entry::Page(_) if write => self.do_wp_page(vmf, pte),
            Entry::Zero | Entry::Page(_) => Ok(()),
            Entry::Table(t) => panic!("{pte:?}: a PTE table points to table {t:?}"),
        }
    }

    /// `do_anonymous_page()`: a fault on a none PTE.
    fn do_anonymous_page(&mut self, vmf: &VmFault<'_>) -> Result<(), FaultError> {
        let VmFault { pid, vma, addr, write, pmd } = *vmf;
        let pte = self.pte_alloc(pid, pmd)?;
        if !write {
            // The shared zero page: no folio, no RSS.
            self.pt[pte].set(Level::Pte.index(addr), Entry::Zero);
            self.events.emit(|| MmEvent::Fault { pid, addr, write, order: Order::BASE, fallback: false });
            return Ok(());
        }
        self.anon_vma_prepare(pid, vma);
        let (folio, fallback) = self.alloc_anon_folio(vmf, pte)?;
        let order = self.folios[folio].order;
        let nr = order.nr_pages();
        let base = addr.align_down(order.bytes());
        self.folios[folio].index = vma.linear_page_index(base);
        self.folios[folio].refcount = nr as u32;
        self.stats.mthp(order, MthpStat::AnonFaultAlloc, 1);
        self.folio_add_new_anon_rmap(folio, pid, RmapLevel::Pte);
        let first = Level::Pte.index(base);
        for p in 0..nr {
            let leaf = Leaf { folio, page: p as u32, writable: vma.writable(), dirty: vma.writable(), young: true };
            self.pt[pte].set(first + p as usize, Entry::Page(leaf));
        }
        self.mm_mut(pid).rss_anon += nr;
        self.events.emit(|| MmEvent::Fault { pid, addr, write, order, fallback });
        self.events.emit(|| MmEvent::Zeroed { bytes: order.bytes() });
        Ok(())
    }

    /// `alloc_anon_folio()`: the largest enabled mTHP order below PMD whose
    /// aligned range fits the VMA and is entirely none, falling back order
    /// by order, then a base page. Returns the folio and whether a larger
    /// order failed first.
    fn alloc_anon_folio(&mut self, vmf: &VmFault<'_>, pte: PtId) -> Result<(FolioId, bool), FaultError> {
        let VmFault { pid, vma, addr, .. } = *vmf;
        let below_pmd = (1u32 << Order::PMD.get()) - 1;
        let mut orders = self.thp_vma_allowable_orders(pid, vma, Tva::PageFault, below_pmd);
        // thp_vma_suitable_orders(): keep the orders that fit around addr.
        let mut o = orders;
        while o != 0 {
            let order = 31 - o.leading_zeros();
            if !Self::thp_vma_suitable_order(vma, addr, Order::new(order as u8)) {
                orders &= !(1 << order);
            }
            o &= !(1 << order);
        }
        // The highest order whose aligned PTE range is entirely none.
        while orders != 0 {
            let order = Order::new((31 - orders.leading_zeros()) as u8);
            let first = Level::Pte.index(addr.align_down(order.bytes()));
            if self.pt[pte].entries[first..first + order.nr_pages() as usize].iter().all(Entry::is_none) {
                break;
            }
            orders &= !(1 << order.get());
        }
        let mut fallback = false;
        let gfp = self.vma_thp_gfp(vma);
        let family = self.mm_ref(pid).family;
        while orders != 0 {
            let order = Order::new((31 - orders.leading_zeros()) as u8);
            if let Ok(folio) = self.folio_alloc(order, gfp, family) {
                return Ok((folio, fallback));
            }
            self.stats.mthp(order, MthpStat::AnonFaultFallback, 1);
            fallback = true;
            orders &= !(1 << order.get());
        }
        let folio = self.folio_alloc(Order::BASE, Gfp::HIGHUSER_MOVABLE, family)?;
        Ok((folio, fallback))
    }

    /// `vma_thp_gfp_mask()`: a THP or mTHP fault may compact directly when
    /// the `defrag` policy allows it for this VMA.
    pub(crate) fn vma_thp_gfp(&self, vma: &Vma) -> Gfp {
        Gfp::transhuge(self.config.fault_may_compact(vma.flags.contains(crate::vma::VmFlags::HUGEPAGE)))
    }

    /// `do_wp_page()`: a write to a present read-only PTE.
    fn do_wp_page(&mut self, vmf: &VmFault<'_>, pte: Slot) -> Result<(), FaultError> {
        let VmFault { pid, addr, .. } = *vmf;
        let leaf = match self.entry(pte) {
            Entry::Page(leaf) => leaf,
            // The shared zero page: always copy.
            Entry::Zero => return self.wp_page_copy(vmf, pte),
            other @ (Entry::None | Entry::Table(_)) => panic!("do_wp_page on {other:?}"),
        };
        let page = leaf.page as u64;
        let exclusive = self.folios[leaf.folio].anon_exclusive.get(page);
        if exclusive || self.wp_can_reuse_anon_folio(leaf.folio) {
            // wp_page_reuse(): make it writable in place.
            self.folios[leaf.folio].anon_exclusive.set(page, true);
            self.set_entry(pte, Entry::Page(Leaf { writable: true, dirty: true, young: true, ..leaf }));
            self.events.emit(|| MmEvent::Fault { pid, addr, write: true, order: Order::BASE, fallback: false });
            return Ok(());
        }
        self.wp_page_copy(vmf, pte)
    }

    /// `wp_can_reuse_anon_folio()` with `__wp_can_reuse_large_anon_folio()`
    /// (CONFIG_MM_ID): reuse when no other mm and no other reference holds it.
    fn wp_can_reuse_anon_folio(&self, id: FolioId) -> bool {
        let folio = &self.folios[id];
        if folio.is_large() {
            if folio.large_mapcount <= 1 {
                // A single mapped page: let the copy free the folio.
                return false;
            }
            if folio.maybe_mapped_shared {
                return false;
            }
            folio.large_mapcount == folio.refcount
        } else {
            folio.refcount == 1
        }
    }

    /// `wp_page_copy()`: a fresh order-0 page for the writer, a copy of the
    /// old one (zeroed if it was the zero page).
    fn wp_page_copy(&mut self, vmf: &VmFault<'_>, pte: Slot) -> Result<(), FaultError> {
        let VmFault { pid, vma, addr, .. } = *vmf;
        self.anon_vma_prepare(pid, vma);
        let family = self.mm_ref(pid).family;
        let new = self.folio_alloc(Order::BASE, Gfp::HIGHUSER_MOVABLE, family)?;
        self.folios[new].index = vma.linear_page_index(addr);
        let old = self.entry(pte);
        match old {
            Entry::Page(leaf) => {
                let word = self.folios[leaf.folio].word(leaf.page as u64);
                self.folios[new].set_word(0, word);
                self.events.emit(|| MmEvent::Copied { bytes: PAGE_SIZE });
            }
            Entry::Zero => {
                self.mm_mut(pid).rss_anon += 1;
                self.events.emit(|| MmEvent::Zeroed { bytes: PAGE_SIZE });
            }
            other @ (Entry::None | Entry::Table(_)) => panic!("wp_page_copy over {other:?}"),
        }
        self.folios[new].refcount = 1;
        self.folio_add_new_anon_rmap(new, pid, RmapLevel::Pte);
        self.set_entry(pte, Entry::Page(Leaf { folio: new, page: 0, writable: true, dirty: true, young: true }));
        if let Entry::Page(leaf) = old {
            self.folio_remove_rmap_ptes(leaf.folio, leaf.page as u64, 1, pid);
            self.folio_put_refs(leaf.folio, 1);
        }
        self.events.emit(|| MmEvent::TlbFlush { pid, start: addr, end: addr.add(PAGE_SIZE) });
        self.events.emit(|| MmEvent::Fault { pid, addr, write: true, order: Order::BASE, fallback: false });
        Ok(())
    }

    // ----- zapping ---------------------------------------------------------

    /// Unmaps every page in `[start, end)` of one VMA and flushes the TLB
    /// over it (`zap_page_range_single()`).
    pub(crate) fn zap_range(&mut self, pid: Pid, start: Vaddr, end: Vaddr) {
        self.unmap_page_range(pid, start, end);
        self.events.emit(|| MmEvent::TlbFlush { pid, start, end });
    }

    /// `unmap_page_range()`: whole PMD leaves inside the range are zapped at
    /// once (`zap_huge_pmd()`); a PMD leaf only partly inside is split first
    /// (`__split_huge_pmd()` from `zap_pmd_range()`); PTEs are cleared a
    /// folio batch at a time.
    pub(crate) fn unmap_page_range(&mut self, pid: Pid, start: Vaddr, end: Vaddr) {
        let Ok(()) = self.walk(pid, start, end, &mut ZapOps { pid });
    }

    /// Frees the page-table pages that map only `[floor, ceiling)` after an
    /// unmap of `[start, end)` (`free_pgtables()` → `free_pgd_range()`): a
    /// table goes only if the whole range it maps lies between the
    /// neighbouring VMAs. A `ceiling` of 0 means "no VMA above".
    pub(crate) fn free_pgtables(&mut self, pid: Pid, start: Vaddr, end: Vaddr, floor: Vaddr, ceiling: Vaddr) {
        let ceiling = if ceiling.0 == 0 { u64::MAX } else { ceiling.0 };
        let Ok(()) = self.walk(pid, start, end, &mut FreePgtablesOps { pid, floor: floor.0, ceiling });
    }
}

/// The walk of `unmap_page_range()`.
struct ZapOps {
    pid: Pid,
}

impl WalkOps<World> for ZapOps {
    type Error = std::convert::Infallible;

    /// `zap_pmd_range()`: a leaf wholly inside goes at once; one partly
    /// inside is split first. A split that fails leaves the PMD mapped and
    /// the zap goes on past it, as the lazy-PTE series has a partial zap
    /// (MADV_DONTNEED) skip the PMD.
    fn pmd_leaf(&mut self, w: &mut World, slot: Slot, _: Entry, start: Vaddr, end: Vaddr) -> Result<Walk, Self::Error> {
        if start.is_aligned(PMD_SIZE) && end.0 - start.0 == PMD_SIZE {
            w.zap_huge_pmd(self.pid, slot);
            return Ok(Walk::Skip);
        }
        Ok(if w.split_huge_pmd(self.pid, start).is_ok() { Walk::Again } else { Walk::Skip })
    }

    /// `zap_pte_range()`, batching consecutive pages of one folio as
    /// `folio_pte_batch()` does.
    fn pte_entry(
        &mut self,
        w: &mut World,
        slot: Slot,
        entry: Entry,
        _: Vaddr,
        last: usize,
    ) -> Result<Walk, Self::Error> {
        match entry {
            Entry::Page(leaf) => {
                let n = w.pte_batch(slot.table, slot.index, last);
                for k in slot.index..slot.index + n {
                    w.pt[slot.table].set(k, Entry::None);
                }
                w.mm_mut(self.pid).rss_anon -= n as u64;
                w.folio_remove_rmap_ptes(leaf.folio, leaf.page as u64, n as u64, self.pid);
                w.folio_put_refs(leaf.folio, n as u32);
                Ok(Walk::Advance(n))
            }
            Entry::Zero => {
                w.set_entry(slot, Entry::None);
                Ok(Walk::Continue)
            }
            Entry::None => Ok(Walk::Continue),
            Entry::Table(t) => unreachable!("the walker never hands a table {t:?} to pte_entry"),
        }
    }
}

/// The walk of `free_pgd_range()`: post-order over tables, PTE tables not entered.
struct FreePgtablesOps {
    pid: Pid,
    floor: u64,
    ceiling: u64,
}

impl WalkOps<World> for FreePgtablesOps {
    type Error = std::convert::Infallible;
    const PTES: bool = false;

    /// The caller zapped the range first: no leaf is left in it.
    fn pmd_leaf(
        &mut self,
        _: &mut World,
        slot: Slot,
        entry: Entry,
        start: Vaddr,
        _: Vaddr,
    ) -> Result<Walk, Self::Error> {
        panic!("{:?} {start}: {entry:?} at {slot:?} in a range whose tables are being freed", self.pid)
    }

    fn table_done(
        &mut self,
        w: &mut World,
        level: Level,
        slot: Slot,
        start: Vaddr,
        _: Vaddr,
    ) -> Result<(), Self::Error> {
        let size = level.entry_size();
        let span = start.align_down(size).0;
        let inside = span >= self.floor && span.checked_add(size).is_some_and(|e| e <= self.ceiling);
        let Entry::Table(child) = w.entry(slot) else { unreachable!("table_done() on {slot:?}, not a table") };
        if inside && w.pt[child].nr_used == 0 {
            w.free_table(self.pid, slot);
        }
        Ok(())
    }
}
