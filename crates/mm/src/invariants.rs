//! Every invariant of the model, checked after every public operation in
//! debug and test builds (and in release with the `check-invariants`
//! feature), as CONFIG_DEBUG_VM would. A violation is a bug in the model:
//! it panics with the operation, the object and the values.
//!
//! Checked: the buddy allocator's own invariants (free lists, merging,
//! pageblock types); physical memory is tiled exactly once by free blocks, folios,
//! page-table pages, deposited tables and the huge zero folio; every
//! folio's mapcounts and refcount agree with the page tables and pins; page
//! tables agree with their accounting and deposits; RSS and node counters
//! agree with the mappings; VMAs are ordered and every mapping lies in one.

use std::collections::BTreeMap;

use crate::folio::GUP_PIN_COUNTING_BIAS;
use crate::pagewalk::{Ro, Slot, Walk, WalkOps};
use crate::pgtable::{Entry, Level};
use crate::types::*;
use crate::world::{World, PGD_ALLOCATION_ORDER};

/// What the page tables say about one folio.
#[derive(Default)]
struct Seen {
    pmd_maps: u32,
    pte_maps: BTreeMap<u64, u32>,
    by_mm: BTreeMap<Pid, u32>,
}

/// What the page tables say about one mm.
#[derive(Default)]
struct MmSeen {
    rss: u64,
    ptes: u64,
    pmds: u64,
    puds: u64,
}

pub(crate) fn check_all(w: &World) {
    let op = w.current_op;
    w.buddy.check_invariants();
    check_physical_tiling(w, op);
    let (seen, mm_seen, zero_pmds) = walk_all(w, op);
    check_folios(w, op, &seen);
    check_mms(w, op, &mm_seen, &zero_pmds);
    check_counters(w, op);
}

fn check_physical_tiling(w: &World, op: &str) {
    let mut ranges: Vec<(u64, u64, String)> = Vec::new();
    for (pfn, order) in w.buddy.free_blocks() {
        ranges.push((pfn.0, order.nr_pages(), format!("free order-{}", order.get())));
    }
    for (id, f) in w.folios.iter() {
        ranges.push((f.pfn.0, f.nr_pages(), format!("{id:?} order-{}", f.order.get())));
    }
    for (id, node) in w.pt.iter() {
        let n = if node.level == Level::Pgd { PGD_ALLOCATION_ORDER.nr_pages() } else { 1 };
        ranges.push((node.pfn.0, n, format!("{id:?} {:?} table", node.level)));
        for d in node.deposited() {
            ranges.push((d.0, 1, format!("table deposited under {id:?}")));
        }
    }
    if let Some(hz) = w.huge_zero {
        ranges.push((hz.pfn.0, Order::PMD.nr_pages(), "huge zero folio".into()));
    }
    ranges.sort();
    let mut next = 0;
    for (start, len, what) in &ranges {
        assert_eq!(*start, next, "after {op}: physical memory at pfn {next:#x}: expected the next owner to start there, found {what} at {start:#x} (a gap or an overlap)");
        next = start + len;
    }
    assert_eq!(
        next,
        w.buddy.nr_total_pages(),
        "after {op}: physical memory owned up to pfn {next:#x}, expected {:#x}",
        w.buddy.nr_total_pages()
    );
}

fn walk_all(w: &World, op: &str) -> (BTreeMap<FolioId, Seen>, BTreeMap<Pid, MmSeen>, BTreeMap<Pid, u32>) {
    let mut ops = CheckOps { op, pid: Pid(0), seen: BTreeMap::new(), mm: MmSeen::default(), huge: 0, zero_pmds: 0 };
    let mut mm_seen: BTreeMap<Pid, MmSeen> = BTreeMap::new();
    let mut zero_pmds: BTreeMap<Pid, u32> = BTreeMap::new();
    for mm in w.mms.iter().flatten() {
        let pgd = &w.pt[mm.pgd];
        assert_eq!(pgd.level, Level::Pgd, "after {op}: {:?} pgd is a {:?} table", mm.pid, pgd.level);
        ops.pid = mm.pid;
        // The whole tree, kernel half included: nothing may be mapped there.
        let Ok(()) = w.walk_ro(mm.pid, Vaddr(0), Vaddr(PGDIR_SIZE * PTRS_PER_TABLE), &mut ops);
        mm_seen.insert(mm.pid, std::mem::take(&mut ops.mm));
        if ops.zero_pmds > 0 {
            zero_pmds.insert(mm.pid, std::mem::take(&mut ops.zero_pmds));
        }
    }
    (ops.seen, mm_seen, zero_pmds)
}

/// The checker's walk over one mm: counts tables per level and mappings per
/// folio, and checks each node and leaf on the way.
struct CheckOps<'o> {
    op: &'o str,
    pid: Pid,
    seen: BTreeMap<FolioId, Seen>,
    mm: MmSeen,
    /// Huge leaves in the PMD table being walked.
    huge: usize,
    zero_pmds: u32,
}

impl WalkOps<Ro<'_>> for CheckOps<'_> {
    type Error = std::convert::Infallible;

    fn table(&mut self, w: &mut Ro<'_>, level: Level, slot: Slot, _: Vaddr, _: Vaddr) -> Result<Walk, Self::Error> {
        let w = w.0;
        let Entry::Table(child) = w.entry(slot) else { unreachable!("table() on a table entry") };
        let below = level.below().expect("a table entry above PTE level");
        check_node(w, self.op, child, below);
        match below {
            Level::Pud => self.mm.puds += 1,
            Level::Pmd => {
                self.mm.pmds += 1;
                self.huge = 0;
            }
            Level::Pte => self.mm.ptes += 1,
            Level::Pgd => unreachable!("no table points to a PGD"),
        }
        Ok(Walk::Continue)
    }

    fn table_done(&mut self, w: &mut Ro<'_>, level: Level, slot: Slot, _: Vaddr, _: Vaddr) -> Result<(), Self::Error> {
        if level == Level::Pud {
            let w = w.0;
            let Entry::Table(pmd) = w.entry(slot) else { unreachable!("table_done() on a table entry") };
            let deposited = w.pt[pmd].deposited().len();
            assert_eq!(
                deposited,
                w.expected_deposits(self.huge),
                "after {}: {:?} PMD table {pmd:?}: {deposited} deposited tables for {} huge entries",
                self.op,
                self.pid,
                self.huge
            );
            self.mm.ptes += deposited as u64;
        }
        Ok(())
    }

    fn pud_leaf(
        &mut self,
        _: &mut Ro<'_>,
        slot: Slot,
        entry: Entry,
        start: Vaddr,
        _: Vaddr,
    ) -> Result<Walk, Self::Error> {
        panic!(
            "after {}: {:?} {start}: PUD entry {entry:?} at {slot:?} (PUD THP is not in the baseline)",
            self.op, self.pid
        )
    }

    fn pmd_leaf(&mut self, w: &mut Ro<'_>, _: Slot, entry: Entry, start: Vaddr, _: Vaddr) -> Result<Walk, Self::Error> {
        let (w, op, pid) = (w.0, self.op, self.pid);
        let addr = start.align_down(PMD_SIZE);
        self.huge += 1;
        check_in_vma(w, op, pid, addr);
        match entry {
            Entry::Zero => self.zero_pmds += 1,
            Entry::Page(leaf) => {
                self.mm.rss += Order::PMD.nr_pages();
                let f = w
                    .folios
                    .get(leaf.folio)
                    .unwrap_or_else(|| panic!("after {op}: {pid:?} {addr} PMD maps freed {:?}", leaf.folio));
                assert_eq!(
                    f.order,
                    Order::PMD,
                    "after {op}: {pid:?} {addr} PMD maps {:?} of {:?}",
                    leaf.folio,
                    f.order
                );
                let s = self.seen.entry(leaf.folio).or_default();
                s.pmd_maps += 1;
                *s.by_mm.entry(pid).or_default() += 1;
            }
            Entry::None | Entry::Table(_) => unreachable!("the walker hands leaves to pmd_leaf"),
        }
        Ok(Walk::Skip)
    }

    fn pte_entry(&mut self, w: &mut Ro<'_>, _: Slot, entry: Entry, a: Vaddr, _: usize) -> Result<Walk, Self::Error> {
        let (w, op, pid) = (w.0, self.op, self.pid);
        match entry {
            Entry::None => {}
            Entry::Zero => check_in_vma(w, op, pid, a),
            Entry::Page(leaf) => {
                check_in_vma(w, op, pid, a);
                self.mm.rss += 1;
                let f = w
                    .folios
                    .get(leaf.folio)
                    .unwrap_or_else(|| panic!("after {op}: {pid:?} {a} PTE maps freed {:?}", leaf.folio));
                assert!(
                    (leaf.page as u64) < f.nr_pages(),
                    "after {op}: {pid:?} {a} maps page {} of {:?} with {} pages",
                    leaf.page,
                    leaf.folio,
                    f.nr_pages()
                );
                let s = self.seen.entry(leaf.folio).or_default();
                *s.pte_maps.entry(leaf.page as u64).or_default() += 1;
                *s.by_mm.entry(pid).or_default() += 1;
            }
            Entry::Table(t) => panic!("after {op}: {pid:?} {a}: PTE table entry points to table {t:?}"),
        }
        Ok(Walk::Continue)
    }
}

fn check_node(w: &World, op: &str, id: PtId, level: Level) {
    let node = &w.pt[id];
    assert_eq!(node.level, level, "after {op}: {id:?} is a {:?} table where a {level:?} table belongs", node.level);
    let used = node.entries.iter().filter(|e| !e.is_none()).count();
    assert_eq!(
        node.nr_used as usize, used,
        "after {op}: {id:?} {level:?} table: nr_used {} but {used} entries are set",
        node.nr_used
    );
    if level != Level::Pmd {
        assert!(node.deposited().is_empty(), "after {op}: {id:?} {level:?} table holds deposits");
    }
}

fn check_in_vma(w: &World, op: &str, pid: Pid, addr: Vaddr) {
    assert!(w.mm_ref(pid).vmas.find(addr).is_some(), "after {op}: {pid:?} maps {addr} outside any VMA");
}

fn check_folios(w: &World, op: &str, seen: &BTreeMap<FolioId, Seen>) {
    let mut pins: BTreeMap<FolioId, u32> = BTreeMap::new();
    for f in w.pinned_folio_refs() {
        *pins.entry(f).or_default() += 1;
    }
    let empty = Seen::default();
    let queue = w.deferred_split_queue();
    assert_eq!(
        queue.len(),
        w.deferred_len,
        "after {op}: deferred queue holds {} folios but split_queue_len is {}",
        queue.len(),
        w.deferred_len
    );
    let queued: std::collections::BTreeSet<FolioId> = queue.iter().copied().collect();
    assert_eq!(queued.len(), queue.len(), "after {op}: a folio is queued twice for deferred split");
    for (id, f) in w.folios.iter() {
        let s = seen.get(&id).unwrap_or(&empty);
        let pte_total: u32 = s.pte_maps.values().sum();
        let dump = || format!("{f:?}");
        assert_eq!(
            f.entire_mapcount,
            s.pmd_maps,
            "after {op}: {id:?} pfn {:#x}: entire_mapcount is {} but {} PMDs map it\n{}",
            f.pfn.0,
            f.entire_mapcount,
            s.pmd_maps,
            dump()
        );
        assert_eq!(
            f.large_mapcount,
            s.pmd_maps + pte_total,
            "after {op}: {id:?}: mapcount is {} but page tables hold {} mappings\n{}",
            f.large_mapcount,
            s.pmd_maps + pte_total,
            dump()
        );
        assert_eq!(
            f.nr_pages_mapped as usize,
            s.pte_maps.len(),
            "after {op}: {id:?}: nr_pages_mapped is {} but PTEs map {} distinct pages",
            f.nr_pages_mapped,
            s.pte_maps.len()
        );
        if f.is_large() {
            for p in 0..f.nr_pages() {
                let want = s.pte_maps.get(&p).copied().unwrap_or(0);
                assert_eq!(
                    f.page_pte_mapcount(p),
                    want,
                    "after {op}: {id:?} page {p}: PTE mapcount {} but {want} PTEs map it",
                    f.page_pte_mapcount(p)
                );
            }
            if s.by_mm.len() > 1 {
                assert!(
                    f.maybe_mapped_shared,
                    "after {op}: {id:?} is mapped by {} mms but not marked maybe-shared",
                    s.by_mm.len()
                );
            }
            // An mm that takes a slot while it already has untracked mappings
            // starts its count low (`folio_add_return_large_mapcount()` sets
            // the shared bit then), so a slot may undercount its mm but never
            // overcount it; a folio not marked shared has one slot counting
            // every mapping exactly.
            for slot in 0..2 {
                if let Some(mm_id) = f.mm_ids[slot] {
                    let pid = w.mms.iter().flatten().find(|m| m.mm_id == mm_id).map(|m| m.pid);
                    let mapped = pid.and_then(|p| s.by_mm.get(&p)).copied().unwrap_or(0);
                    assert!(
                        f.mm_id_mapcount[slot] <= mapped,
                        "after {op}: {id:?} mm_id slot {slot} ({mm_id:?}) counts {} mappings, page tables show {mapped}",
                        f.mm_id_mapcount[slot]
                    );
                    if !f.maybe_mapped_shared {
                        assert_eq!(
                            f.mm_id_mapcount[slot], f.large_mapcount,
                            "after {op}: {id:?} is exclusive to slot {slot} ({mm_id:?}), which counts {} of {} mappings",
                            f.mm_id_mapcount[slot], f.large_mapcount
                        );
                    }
                }
            }
        }
        let pinned = pins.get(&id).copied().unwrap_or(0);
        let pin_refs = if f.is_large() { pinned } else { pinned * GUP_PIN_COUNTING_BIAS };
        assert_eq!(
            f.refcount,
            f.large_mapcount + pin_refs,
            "after {op}: {id:?}: refcount {} but {} mappings and {pinned} pinned pages",
            f.refcount,
            f.large_mapcount
        );
        if f.is_large() {
            assert_eq!(f.pincount, pinned, "after {op}: {id:?}: pincount {} but pins hold {pinned} pages", f.pincount);
        }
        assert!(f.refcount > 0, "after {op}: {id:?} is live with refcount 0");
        assert_eq!(
            f.deferred.queued,
            queued.contains(&id),
            "after {op}: {id:?} queued flag disagrees with the deferred-split queue"
        );
        assert!(
            !f.deferred.partially_mapped || f.deferred.queued,
            "after {op}: {id:?} partially mapped but not queued"
        );
    }
    for id in seen.keys() {
        assert!(w.folios.get(*id).is_some(), "after {op}: page tables map freed {id:?}");
    }
}

fn check_mms(w: &World, op: &str, mm_seen: &BTreeMap<Pid, MmSeen>, zero_pmds: &BTreeMap<Pid, u32>) {
    let mut holders = 0;
    for mm in w.mms.iter().flatten() {
        let s = &mm_seen[&mm.pid];
        assert_eq!(
            mm.rss_anon, s.rss,
            "after {op}: {:?} MM_ANONPAGES is {} but page tables map {} pages",
            mm.pid, mm.rss_anon, s.rss
        );
        assert_eq!(
            (mm.nr_ptes, mm.nr_pmds, mm.nr_puds),
            (s.ptes, s.pmds, s.puds),
            "after {op}: {:?} page-table counts (pte, pmd, pud) disagree with the tree",
            mm.pid
        );
        if zero_pmds.get(&mm.pid).copied().unwrap_or(0) > 0 {
            assert!(mm.huge_zero_ref, "after {op}: {:?} maps the huge zero folio without a reference", mm.pid);
        }
        holders += u32::from(mm.huge_zero_ref);
        let mut prev_end = 0;
        for v in mm.vmas.iter() {
            assert!(
                v.start.0 >= prev_end
                    && v.start < v.end
                    && v.start.is_aligned(PAGE_SIZE)
                    && v.end.is_aligned(PAGE_SIZE),
                "after {op}: {:?} bad VMA order or bounds: {v:?}",
                mm.pid
            );
            prev_end = v.end.0;
        }
    }
    if let Some(hz) = w.huge_zero {
        assert_eq!(
            hz.refcount,
            holders + 1,
            "after {op}: huge zero refcount {} but {holders} mms hold it",
            hz.refcount
        );
    } else {
        assert_eq!(holders, 0, "after {op}: mms hold a freed huge zero folio");
    }
}

fn check_counters(w: &World, op: &str) {
    let (mut anon_mapped, mut anon_thps) = (0i64, 0i64);
    let mut nr_anon = [0i64; 10];
    let mut partially = [0i64; 10];
    for (_, f) in w.folios.iter() {
        if f.entire_mapcount > 0 {
            anon_mapped += f.nr_pages() as i64;
            anon_thps += f.nr_pages() as i64;
        } else {
            anon_mapped += f.nr_pages_mapped as i64;
        }
        let o = f.order.get() as usize;
        if f.is_large() && o < 10 {
            nr_anon[o] += 1;
            partially[o] += i64::from(f.deferred.partially_mapped);
        }
    }
    assert_eq!(
        w.stats.nr_anon_mapped, anon_mapped,
        "after {op}: nr_anon_pages is {} but folios map {anon_mapped} pages",
        w.stats.nr_anon_mapped
    );
    assert_eq!(
        w.stats.nr_anon_thps, anon_thps,
        "after {op}: NR_ANON_THPS is {} pages but PMD-mapped folios hold {anon_thps}",
        w.stats.nr_anon_thps
    );
    for o in 2..10 {
        let order = Order::new(o as u8);
        assert_eq!(
            w.stats.mthp_stat(order, crate::stats::MthpStat::NrAnon),
            nr_anon[o],
            "after {op}: {order} nr_anon gauge disagrees with the folio table"
        );
        assert_eq!(
            w.stats.mthp_stat(order, crate::stats::MthpStat::NrAnonPartiallyMapped),
            partially[o],
            "after {op}: {order} nr_anon_partially_mapped gauge disagrees"
        );
    }
    let mut pt_pages = 0i64;
    for (_, node) in w.pt.iter() {
        pt_pages += if node.level == Level::Pgd { PGD_ALLOCATION_ORDER.nr_pages() as i64 } else { 1 };
        pt_pages += node.deposited().len() as i64;
    }
    assert_eq!(
        w.stats.nr_page_table_pages, pt_pages,
        "after {op}: nr_page_table_pages is {} but {pt_pages} table pages exist",
        w.stats.nr_page_table_pages
    );
}
