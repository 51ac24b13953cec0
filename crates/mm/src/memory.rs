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
use crate::pgtable::{Entry, Leaf, Level};
use crate::rmap::RmapLevel;
use crate::stats::{MthpStat, VmEvent};
use crate::types::*;
use crate::vma::Vma;
use crate::world::World;

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
    /// The PMD table and the index of the entry covering `addr`.
    pub(crate) pmd: PtId,
    pub(crate) pi: usize,
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
    pub(crate) fn anon_vma_prepare(&mut self, pid: Pid, vma: &Vma) {
        if vma.anon_vma.is_some() {
            return;
        }
        let vma_start = vma.start;
        if self.mm_ref(pid).vmas.get(vma_start).is_some_and(|v| v.anon_vma.is_none()) {
            let av = self.new_anon_vma();
            self.mm_mut(pid).vmas.get_mut(vma_start).expect("vma").anon_vma = Some(av);
        }
    }

    /// One user access of the byte at `addr`: a store of `fill` or a load.
    /// Faults as the hardware would, and updates young/dirty and the page's
    /// contents.
    pub fn touch(&mut self, pid: Pid, addr: Vaddr, access: Access, fill: Fill) -> Result<(), Errno> {
        self.check_pid(pid)?;
        self.begin_op("touch");
        let result = self.user_access(pid, addr, access, fill);
        self.end_op();
        result
    }

    /// Touches the first byte of each page in `pages` (page indices from
    /// `addr`), as one operation.
    pub fn touch_pages(
        &mut self,
        pid: Pid,
        addr: Vaddr,
        pages: &[u64],
        access: Access,
        fill: Fill,
    ) -> Result<(), Errno> {
        self.check_pid(pid)?;
        self.begin_op("touch");
        let mut result = Ok(());
        for &p in pages {
            result = self.user_access(pid, addr.add(p * PAGE_SIZE), access, fill);
            if result.is_err() {
                break;
            }
        }
        self.end_op();
        result
    }

    /// The access itself: at most a few faults, then the store lands.
    pub(crate) fn user_access(&mut self, pid: Pid, addr: Vaddr, access: Access, fill: Fill) -> Result<(), Errno> {
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
            if self.access_mapped(pid, addr, write, fill) {
                return Ok(());
            }
            self.stats.count(VmEvent::PgFault);
            self.handle_mm_fault(pid, &vma, addr, write)?;
            // The hardware retries the access; the VMA cannot have changed.
            if self.access_mapped(pid, addr, write, fill) {
                return Ok(());
            }
        }
        panic!("{pid:?} {addr}: access still faulting after {MAX_FAULT_RETRIES} faults");
    }

    /// Performs the access if the page tables allow it without a fault;
    /// returns false if a fault is needed.
    fn access_mapped(&mut self, pid: Pid, addr: Vaddr, write: bool, fill: Fill) -> bool {
        let Some((pmd, pi)) = self.walk_pmd(pid, addr) else { return false };
        let (node, index, page_in_folio) = match self.pt[pmd].entries[pi] {
            Entry::Page(_leaf) => (pmd, pi, (addr.0 & (PMD_SIZE - 1)) / PAGE_SIZE),
            Entry::Zero => return !write,
            Entry::Table(pte) => {
                let ti = Level::Pte.index(addr);
                match self.pt[pte].entries[ti] {
                    Entry::Page(leaf) => (pte, ti, leaf.page as u64),
                    Entry::Zero => return !write,
                    _ => return false,
                }
            }
            Entry::None => return false,
        };
        let Entry::Page(mut leaf) = self.pt[node].entries[index] else { unreachable!() };
        if write && !leaf.writable {
            return false;
        }
        leaf.young = true;
        if write {
            leaf.dirty = true;
            self.folios[leaf.folio].written.set(page_in_folio, fill == Fill::NonZero);
        }
        self.folios[leaf.folio].referenced = true;
        self.pt[node].entries[index] = Entry::Page(leaf);
        true
    }

    /// `handle_mm_fault()` → `__handle_mm_fault()`.
    /// `vma` is the VMA containing `addr`, as the caller found it.
    pub(crate) fn handle_mm_fault(&mut self, pid: Pid, vma: &Vma, addr: Vaddr, write: bool) -> Result<(), FaultError> {
        debug_assert!(vma.contains(addr), "fault at {addr} outside {vma:?}");
        let (pmd, pi) = self.pmd_alloc(pid, addr)?;
        let vmf = VmFault { pid, vma, addr, write, pmd, pi };
        match self.pt[pmd].entries[pi] {
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
        let VmFault { addr, write, pmd, pi, .. } = *vmf;
        let pte = match self.pt[pmd].entries[pi] {
            Entry::Table(t) => t,
            Entry::None => return self.do_anonymous_page(vmf),
            other => panic!("PTE fault under a PMD leaf {other:?}"),
        };
        let ti = Level::Pte.index(addr);
        match self.pt[pte].entries[ti] {
            Entry::None => self.do_anonymous_page(vmf),
            Entry::Zero | Entry::Page(_) if write => self.do_wp_page(vmf, pte, ti),
            _ => Ok(()),
        }
    }

    /// `do_anonymous_page()`: a fault on a none PTE.
    fn do_anonymous_page(&mut self, vmf: &VmFault<'_>) -> Result<(), FaultError> {
        let VmFault { pid, vma, addr, write, pmd, pi } = *vmf;
        let pte = self.pte_alloc(pid, pmd, pi)?;
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
    fn do_wp_page(&mut self, vmf: &VmFault<'_>, pte: PtId, ti: usize) -> Result<(), FaultError> {
        let VmFault { pid, addr, .. } = *vmf;
        let Entry::Page(leaf) = self.pt[pte].entries[ti] else {
            // The shared zero page: always copy.
            return self.wp_page_copy(vmf, pte, ti);
        };
        let page = leaf.page as u64;
        let exclusive = self.folios[leaf.folio].anon_exclusive.get(page);
        if exclusive || self.wp_can_reuse_anon_folio(leaf.folio) {
            // wp_page_reuse(): make it writable in place.
            self.folios[leaf.folio].anon_exclusive.set(page, true);
            self.pt[pte].entries[ti] = Entry::Page(Leaf { writable: true, dirty: true, young: true, ..leaf });
            self.events.emit(|| MmEvent::Fault { pid, addr, write: true, order: Order::BASE, fallback: false });
            return Ok(());
        }
        self.wp_page_copy(vmf, pte, ti)
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
    fn wp_page_copy(&mut self, vmf: &VmFault<'_>, pte: PtId, ti: usize) -> Result<(), FaultError> {
        let VmFault { pid, vma, addr, .. } = *vmf;
        self.anon_vma_prepare(pid, vma);
        let family = self.mm_ref(pid).family;
        let new = self.folio_alloc(Order::BASE, Gfp::HIGHUSER_MOVABLE, family)?;
        self.folios[new].index = vma.linear_page_index(addr);
        let old = self.pt[pte].entries[ti];
        match old {
            Entry::Page(leaf) => {
                let data = self.folios[leaf.folio].written.get(leaf.page as u64);
                self.folios[new].written.set(0, data);
                self.events.emit(|| MmEvent::Copied { bytes: PAGE_SIZE });
            }
            _ => {
                self.mm_mut(pid).rss_anon += 1;
                self.events.emit(|| MmEvent::Zeroed { bytes: PAGE_SIZE });
            }
        }
        self.folios[new].refcount = 1;
        self.folio_add_new_anon_rmap(new, pid, RmapLevel::Pte);
        self.pt[pte].entries[ti] = Entry::Page(Leaf { folio: new, page: 0, writable: true, dirty: true, young: true });
        if let Entry::Page(leaf) = old {
            self.folio_remove_rmap_ptes(leaf.folio, leaf.page as u64, 1, pid);
            self.folio_put_refs(leaf.folio, 1);
        }
        self.events.emit(|| MmEvent::TlbFlush { pid, start: addr, end: addr.add(PAGE_SIZE) });
        self.events.emit(|| MmEvent::Fault { pid, addr, write: true, order: Order::BASE, fallback: false });
        Ok(())
    }

    // ----- zapping ---------------------------------------------------------

    /// Unmaps every page in `[start, end)` of one VMA (`unmap_page_range()`):
    /// whole PMD leaves inside the range are zapped at once
    /// (`zap_huge_pmd()`); a PMD leaf only partly inside is split first.
    pub(crate) fn zap_range(&mut self, pid: Pid, start: Vaddr, end: Vaddr) {
        let mut addr = start;
        while addr < end {
            let next = addr.align_down(PMD_SIZE).add(PMD_SIZE).min(end);
            if let Some((pmd, pi)) = self.walk_pmd(pid, addr) {
                match self.pt[pmd].entries[pi] {
                    Entry::Page(_) | Entry::Zero => {
                        if addr.is_aligned(PMD_SIZE) && next.0 - addr.0 == PMD_SIZE {
                            self.zap_huge_pmd(pid, pmd, pi);
                        } else {
                            self.split_huge_pmd(pid, addr);
                            self.zap_pte_range(pid, addr, next);
                        }
                    }
                    Entry::Table(_) => self.zap_pte_range(pid, addr, next),
                    Entry::None => {}
                }
            } else {
                // No PMD table: skip to the next PUD.
                let pud_next = Vaddr(addr.0 & !(PUD_SIZE - 1)).add(PUD_SIZE).min(end);
                addr = pud_next;
                continue;
            }
            addr = next;
        }
        self.events.emit(|| MmEvent::TlbFlush { pid, start, end });
    }

    /// `zap_pte_range()` within one PMD.
    pub(crate) fn zap_pte_range(&mut self, pid: Pid, start: Vaddr, end: Vaddr) {
        let Some((pte, _)) = self.walk_pte(pid, start) else { return };
        let first = Level::Pte.index(start);
        let last = first + ((end.0 - start.0) / PAGE_SIZE) as usize;
        let mut i = first;
        while i < last {
            match self.pt[pte].entries[i] {
                Entry::Page(leaf) => {
                    // Batch consecutive pages of one folio, as folio_pte_batch() does.
                    let mut n = 1;
                    while i + n < last {
                        match self.pt[pte].entries[i + n] {
                            Entry::Page(l) if l.folio == leaf.folio && l.page == leaf.page + n as u32 => n += 1,
                            _ => break,
                        }
                    }
                    for k in i..i + n {
                        self.pt[pte].set(k, Entry::None);
                    }
                    self.mm_mut(pid).rss_anon -= n as u64;
                    self.folio_remove_rmap_ptes(leaf.folio, leaf.page as u64, n as u64, pid);
                    self.folio_put_refs(leaf.folio, n as u32);
                    i += n;
                }
                Entry::Zero => {
                    self.pt[pte].set(i, Entry::None);
                    i += 1;
                }
                Entry::None => i += 1,
                Entry::Table(_) => panic!("table entry in a PTE table"),
            }
        }
    }

    /// Frees the page-table pages that map only `[floor, ceiling)` after an
    /// unmap of `[start, end)` (`free_pgtables()` → `free_pgd_range()`): a
    /// table goes only if the whole range it maps lies between the
    /// neighbouring VMAs. A `ceiling` of 0 means "no VMA above".
    pub(crate) fn free_pgtables(&mut self, pid: Pid, start: Vaddr, end: Vaddr, floor: Vaddr, ceiling: Vaddr) {
        let ceiling = if ceiling.0 == 0 { u64::MAX } else { ceiling.0 };
        let pgd = self.mm_ref(pid).pgd;
        self.free_level(pid, pgd, Level::Pgd, 0, start.0, end.0, floor.0, ceiling);
    }

    /// Visits the entries of `node` (a table of `level` whose entry 0 maps
    /// `base`) that intersect `[start, end)`; frees each child table whose
    /// span lies within `[floor, ceiling)` once it is empty.
    #[allow(clippy::too_many_arguments)]
    fn free_level(
        &mut self,
        pid: Pid,
        node: PtId,
        level: Level,
        base: u64,
        start: u64,
        end: u64,
        floor: u64,
        ceiling: u64,
    ) {
        let size = level.entry_size();
        let first = ((start.max(base) - base) / size) as usize;
        let last = (((end - 1).min(base + size * PTRS_PER_TABLE - 1) - base) / size) as usize;
        for i in first..=last {
            let Entry::Table(child) = self.pt[node].entries[i] else { continue };
            let span = base + i as u64 * size;
            let child_level = level.below().expect("tables below PTE level");
            if child_level != Level::Pte {
                self.free_level(pid, child, child_level, span, start, end, floor, ceiling);
            }
            let inside = span >= floor && span.checked_add(size).is_some_and(|e| e <= ceiling);
            if inside && self.pt[child].nr_used == 0 {
                self.free_table(pid, node, i);
            }
        }
    }
}
