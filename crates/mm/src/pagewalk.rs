//! The one page-table walker: a range walk with per-level hooks, point
//! lookups, and the allocating descent of the fault path.
//!
//! Models: mm/pagewalk.c (`walk_page_range()` with `struct mm_walk_ops`:
//! `pud_entry`, `pmd_entry`, `pte_entry`, `pte_hole`; hooks decide whether
//! the walk descends, as `walk->action` does), the lookups of
//! `follow_page_mask()` / `page_vma_mapped_walk()` / `pmd_off()` /
//! `pte_offset_map()`, and mm/memory.c's `__pud_alloc()` / `__pmd_alloc()` /
//! `__pte_alloc()`.
//!
//! Every walk of the model goes through this file. The walker matches every
//! `Entry` kind at every level without a catch-all arm, and hands leaves to
//! hooks named by level (`pud_leaf`, `pmd_leaf`, `pte_entry`), so a new entry
//! kind or a new huge level shows up as compile errors or as the one hook
//! every walk must then decide on. The walk is written once for both
//! mutating walks (`World::walk`) and read-only ones (`World::walk_ro`):
//! hooks get the world as `&mut W` where `W` is `World` or `Ro`.

use crate::pgtable::{Entry, Level, PtNode};
use crate::types::*;
use crate::world::World;

/// The position of one entry: a table and an index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) table: PtId,
    pub(crate) index: usize,
}

/// What a hook tells the walk to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Go on: into the entry's table, or on to the next entry.
    Continue,
    /// Go on to the next entry without descending into this one
    /// (`ACTION_CONTINUE`).
    Skip,
    /// The hook handled `n` consecutive PTEs from this one (a folio batch).
    Advance(usize),
    /// The hook changed this entry (split it): look at it again
    /// (`ACTION_AGAIN`).
    Again,
    /// End the walk here.
    Stop,
}

/// How many times in a row a hook may ask to look at the same entry again.
/// One split turns a leaf into a table, and a second look sees the table;
/// more than this is a model bug (a hook that never makes progress).
pub(crate) const MAX_WALK_AGAIN: u32 = 3;

/// Gives the walker read access to the tree, whichever way hooks hold the world.
pub(crate) trait Walkable {
    fn world(&self) -> &World;
}

impl Walkable for World {
    fn world(&self) -> &World {
        self
    }
}

/// A world a read-only walk passes to its hooks.
pub(crate) struct Ro<'a>(pub(crate) &'a World);

impl Walkable for Ro<'_> {
    fn world(&self) -> &World {
        self.0
    }
}

/// What a walk does at each level (`struct mm_walk_ops`). Ranges given to a
/// hook are the part of the entry's span inside the walked range.
pub(crate) trait WalkOps<W: Walkable> {
    type Error;

    /// Whether the walk descends into PTE tables: an `mm_walk_ops` without
    /// `pte_entry` leaves them alone.
    const PTES: bool = true;

    /// A table entry at `level` (PGD, PUD or PMD) over `[start, end)`,
    /// before the walk descends into the table it points to.
    fn table(
        &mut self,
        _w: &mut W,
        _level: Level,
        _slot: Slot,
        _start: Vaddr,
        _end: Vaddr,
    ) -> Result<Walk, Self::Error> {
        Ok(Walk::Continue)
    }

    /// After the walk has been through the table `slot` points to
    /// (post-order, as `free_pgd_range()` visits tables).
    fn table_done(
        &mut self,
        _w: &mut W,
        _level: Level,
        _slot: Slot,
        _start: Vaddr,
        _end: Vaddr,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    /// A PUD leaf. Linux 6.18 maps no anonymous memory by PUD; the PUD-THP
    /// proposal adds these leaves and, with them, a decision in every walk.
    fn pud_leaf(
        &mut self,
        _w: &mut W,
        slot: Slot,
        entry: Entry,
        start: Vaddr,
        _end: Vaddr,
    ) -> Result<Walk, Self::Error> {
        unreachable!("{entry:?} at PUD {slot:?} ({start}): PUD leaves exist only with the PUD-THP proposal")
    }

    /// A PMD leaf: a PMD-mapped folio or the huge zero folio
    /// (`pmd_entry` on a `pmd_trans_huge()` entry). Every walk decides.
    fn pmd_leaf(&mut self, w: &mut W, slot: Slot, entry: Entry, start: Vaddr, end: Vaddr) -> Result<Walk, Self::Error>;

    /// One PTE of the range, none ones included (`pte_entry`). `last` is
    /// the index in this table one past the walked range, for batching.
    fn pte_entry(
        &mut self,
        _w: &mut W,
        _slot: Slot,
        _entry: Entry,
        _addr: Vaddr,
        _last: usize,
    ) -> Result<Walk, Self::Error> {
        Ok(Walk::Continue)
    }

    /// `[start, end)` has no table below `level` (`pte_hole` with the depth
    /// of the none entry).
    fn hole(&mut self, _w: &mut W, _level: Level, _start: Vaddr, _end: Vaddr) -> Result<Walk, Self::Error> {
        Ok(Walk::Continue)
    }
}

/// `walk_page_range()` over `[start, end)` of `pid`'s tree.
pub(crate) fn walk_page_range<W: Walkable, O: WalkOps<W>>(
    w: &mut W,
    pid: Pid,
    start: Vaddr,
    end: Vaddr,
    ops: &mut O,
) -> Result<(), O::Error> {
    if start >= end {
        return Ok(());
    }
    let pgd = w.world().mm_ref(pid).pgd;
    walk_table(w, pgd, Level::Pgd, Vaddr(0), start, end, ops).map(|_| ())
}

/// Walks the entries of `node` (a table of `level` whose entry 0 maps
/// `base`) that intersect `[start, end)`. Returns false if a hook stopped
/// the walk.
fn walk_table<W: Walkable, O: WalkOps<W>>(
    w: &mut W,
    node: PtId,
    level: Level,
    base: Vaddr,
    start: Vaddr,
    end: Vaddr,
    ops: &mut O,
) -> Result<bool, O::Error> {
    let size = level.entry_size();
    let limit = end.min(base.add(size * PTRS_PER_TABLE));
    let mut addr = start.max(base);
    while addr < limit {
        let slot = Slot { table: node, index: level.index(addr) };
        let next = addr.align_down(size).add(size).min(limit);
        let mut again = 0;
        loop {
            let entry = w.world().pt[node].entries[slot.index];
            let step = match entry {
                Entry::None => ops.hole(w, level, addr, next)?,
                Entry::Table(_) => {
                    let step = ops.table(w, level, slot, addr, next)?;
                    if step == Walk::Continue && !descend(w, level, slot, addr, next, ops)? {
                        return Ok(false);
                    }
                    step
                }
                Entry::Page(_) | Entry::Zero => match level {
                    Level::Pmd => ops.pmd_leaf(w, slot, entry, addr, next)?,
                    Level::Pud => ops.pud_leaf(w, slot, entry, addr, next)?,
                    Level::Pgd | Level::Pte => panic!("{entry:?} at {level:?} {slot:?}: no leaves at this level"),
                },
            };
            match step {
                Walk::Continue | Walk::Skip => break,
                Walk::Again => {
                    again += 1;
                    assert!(
                        again <= MAX_WALK_AGAIN,
                        "{level:?} {slot:?} at {addr}: a hook asked {again} times to look again"
                    );
                }
                Walk::Stop => return Ok(false),
                Walk::Advance(_) => panic!("{level:?} {slot:?}: Walk::Advance batches PTEs only"),
            }
        }
        addr = next;
    }
    Ok(true)
}

/// Descends into the table under `slot` (if a hook has not replaced it),
/// then calls `table_done`.
fn descend<W: Walkable, O: WalkOps<W>>(
    w: &mut W,
    level: Level,
    slot: Slot,
    start: Vaddr,
    end: Vaddr,
    ops: &mut O,
) -> Result<bool, O::Error> {
    let Entry::Table(child) = w.world().pt[slot.table].entries[slot.index] else { return Ok(true) };
    let below = level.below().expect("a table entry below PTE level");
    let whole = start.align_down(level.entry_size());
    let went_on = match below {
        Level::Pte if !O::PTES => true,
        Level::Pte => walk_ptes(w, child, start, end, ops)?,
        Level::Pud | Level::Pmd => walk_table(w, child, below, whole, start, end, ops)?,
        Level::Pgd => unreachable!("no table points to a PGD"),
    };
    if went_on {
        ops.table_done(w, level, slot, start, end)?;
    }
    Ok(went_on)
}

/// Walks the PTEs of `table` in `[start, end)` (one PMD's span at most).
fn walk_ptes<W: Walkable, O: WalkOps<W>>(
    w: &mut W,
    table: PtId,
    start: Vaddr,
    end: Vaddr,
    ops: &mut O,
) -> Result<bool, O::Error> {
    let first = Level::Pte.index(start);
    let last = first + ((end.0 - start.0) / PAGE_SIZE) as usize;
    let base = start.align_down(PMD_SIZE);
    let mut i = first;
    let mut again = 0;
    while i < last {
        let entry = w.world().pt[table].entries[i];
        let addr = base.add(i as u64 * PAGE_SIZE);
        let step = match entry {
            Entry::None | Entry::Page(_) | Entry::Zero => {
                ops.pte_entry(w, Slot { table, index: i }, entry, addr, last)?
            }
            Entry::Table(t) => panic!("{table:?}[{i}] at {addr}: a PTE table points to table {t:?}"),
        };
        match step {
            Walk::Continue | Walk::Skip => i += 1,
            Walk::Advance(n) => {
                assert!(n >= 1 && i + n <= last, "{table:?}[{i}]: advance by {n} past {last}");
                i += n;
            }
            Walk::Again => {
                again += 1;
                assert!(again <= MAX_WALK_AGAIN, "{table:?}[{i}] at {addr}: a hook asked {again} times to look again");
                continue;
            }
            Walk::Stop => return Ok(false),
        }
        again = 0;
    }
    Ok(true)
}

/// What maps one address: the deepest entry a lookup reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// No PTE table and no leaf covers the address: an upper-level entry
    /// is none.
    Hole,
    /// A PUD leaf (only with the PUD-THP proposal).
    Pud { slot: Slot, entry: Entry },
    /// A PMD leaf: a PMD-mapped folio or the huge zero folio.
    Pmd { slot: Slot, entry: Entry },
    /// A PTE, possibly none.
    Pte { slot: Slot, entry: Entry },
}

impl World {
    /// A mutating walk of `[start, end)` of `pid` (see `WalkOps`).
    pub(crate) fn walk<O: WalkOps<World>>(
        &mut self,
        pid: Pid,
        start: Vaddr,
        end: Vaddr,
        ops: &mut O,
    ) -> Result<(), O::Error> {
        walk_page_range(self, pid, start, end, ops)
    }

    /// A read-only walk of `[start, end)` of `pid`.
    pub(crate) fn walk_ro<'a, O: WalkOps<Ro<'a>>>(
        &'a self,
        pid: Pid,
        start: Vaddr,
        end: Vaddr,
        ops: &mut O,
    ) -> Result<(), O::Error> {
        walk_page_range(&mut Ro(self), pid, start, end, ops)
    }

    /// What maps `addr` in `pid` (`follow_page_mask()`'s descent).
    pub(crate) fn lookup(&self, pid: Pid, addr: Vaddr) -> Lookup {
        let pgd = self.mm_ref(pid).pgd;
        let mut node = pgd;
        for level in [Level::Pgd, Level::Pud, Level::Pmd, Level::Pte] {
            let slot = Slot { table: node, index: level.index(addr) };
            let entry = self.pt[node].entries[slot.index];
            match entry {
                Entry::None if level == Level::Pte => return Lookup::Pte { slot, entry },
                Entry::None => return Lookup::Hole,
                Entry::Table(t) => node = t,
                Entry::Page(_) | Entry::Zero => {
                    return match level {
                        Level::Pte => Lookup::Pte { slot, entry },
                        Level::Pmd => Lookup::Pmd { slot, entry },
                        Level::Pud => Lookup::Pud { slot, entry },
                        Level::Pgd => panic!("{pid:?} {addr}: {entry:?} in the PGD"),
                    }
                }
            }
        }
        unreachable!("{pid:?} {addr}: a PTE table points to another table")
    }

    /// `pmd_off()`: the PMD slot covering `addr`, if the PUD and PMD tables
    /// exist. Panics on a PUD leaf, which has no PMD slot.
    #[inline]
    pub(crate) fn pmd_off(&self, pid: Pid, addr: Vaddr) -> Option<Slot> {
        let mut node = self.mm_ref(pid).pgd;
        for level in [Level::Pgd, Level::Pud] {
            match self.pt[node].entries[level.index(addr)] {
                Entry::Table(t) => node = t,
                Entry::None => return None,
                e @ (Entry::Page(_) | Entry::Zero) => panic!("{pid:?} {addr}: {e:?} at {level:?} has no PMD slot"),
            }
        }
        Some(Slot { table: node, index: Level::Pmd.index(addr) })
    }

    /// `pte_offset_map()`: the PTE slot covering `addr`, if a PTE table exists
    /// there (none under a PMD leaf).
    #[inline]
    pub(crate) fn pte_off(&self, pid: Pid, addr: Vaddr) -> Option<Slot> {
        let pmd = self.pmd_off(pid, addr)?;
        match self.pt[pmd.table].entries[pmd.index] {
            Entry::Table(t) => Some(Slot { table: t, index: Level::Pte.index(addr) }),
            Entry::None | Entry::Page(_) | Entry::Zero => None,
        }
    }

    /// Consecutive PTEs of `table` from `index` (below `last`) that map
    /// consecutive pages of one folio (`folio_pte_batch()`); 1 for any other
    /// entry.
    pub(crate) fn pte_batch(&self, table: PtId, index: usize, last: usize) -> usize {
        let entries = &self.pt[table].entries;
        let first = match entries[index] {
            Entry::Page(leaf) => leaf,
            Entry::None | Entry::Zero | Entry::Table(_) => return 1,
        };
        let mut n = 1;
        while index + n < last {
            match entries[index + n] {
                Entry::Page(l) if l.folio == first.folio && l.page == first.page + n as u32 => n += 1,
                Entry::Page(_) | Entry::None | Entry::Zero | Entry::Table(_) => break,
            }
        }
        n
    }

    /// The entry in a slot.
    #[inline]
    pub(crate) fn entry(&self, slot: Slot) -> Entry {
        self.pt[slot.table].entries[slot.index]
    }

    /// Sets the entry in a slot, keeping the table's count of used entries.
    #[inline]
    pub(crate) fn set_entry(&mut self, slot: Slot, entry: Entry) {
        self.pt[slot.table].set(slot.index, entry);
    }

    /// `__pud_alloc()` + `__pmd_alloc()`: the PMD slot covering `addr`,
    /// allocating the PUD and PMD tables that are missing.
    pub(crate) fn pmd_alloc(&mut self, pid: Pid, addr: Vaddr) -> Result<Slot, crate::gfp::AllocError> {
        let mut node = self.mm_ref(pid).pgd;
        for level in [Level::Pgd, Level::Pud] {
            let index = level.index(addr);
            node = match self.pt[node].entries[index] {
                Entry::Table(t) => t,
                Entry::None => self.install_table(pid, Slot { table: node, index }, level.below().expect("below"))?,
                e @ (Entry::Page(_) | Entry::Zero) => panic!("{pid:?} {addr}: pmd_alloc under {e:?} at {level:?}"),
            };
        }
        Ok(Slot { table: node, index: Level::Pmd.index(addr) })
    }

    /// `pte_alloc()`: the PTE table under the PMD slot, allocating it if the
    /// entry is none. The entry must not be a leaf.
    pub(crate) fn pte_alloc(&mut self, pid: Pid, pmd: Slot) -> Result<PtId, crate::gfp::AllocError> {
        match self.entry(pmd) {
            Entry::Table(t) => Ok(t),
            Entry::None => self.install_table(pid, pmd, Level::Pte),
            e @ (Entry::Page(_) | Entry::Zero) => panic!("{pid:?} {pmd:?}: pte_alloc over the PMD leaf {e:?}"),
        }
    }

    /// Allocates a table of `level` and installs it in `slot`, which must be none.
    pub(crate) fn install_table(&mut self, pid: Pid, slot: Slot, level: Level) -> Result<PtId, crate::gfp::AllocError> {
        debug_assert!(self.entry(slot).is_none(), "install_table over {:?}", self.entry(slot));
        let pfn = self.alloc_pt_page(pid, level)?;
        let id = self.pt.insert(PtNode::new(pfn, level));
        self.set_entry(slot, Entry::Table(id));
        Ok(id)
    }
}
