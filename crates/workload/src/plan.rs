//! The address planner: gives every region a scenario names a fixed virtual
//! address, so that both backends map it at the same place
//! (MAP_FIXED_NOREPLACE) and their observations compare address for address.
//!
//! Rules (docs/scenario.md, "Addresses"):
//! - Regions are placed from `MMAP_BASE` upwards. A new region of `len` bytes
//!   goes at `align_up(cursor, align) + offset` (default `align` 2 MiB,
//!   `offset` 0); the cursor then moves to its end plus `GUARD_GAP`, so two
//!   regions never touch and never merge into one VMA unless a scenario puts
//!   them side by side on purpose (`at=`).
//! - `at=B+off` places a region (mmap or mremap's destination) at a fixed
//!   address relative to another region instead.
//! - fork copies the parent's table to the child; exit drops the process.
//! - A name lives as long as it still holds some of the memory it named: a
//!   partial munmap keeps the name with its original range (observations
//!   show the hole); unmapping the rest of it, or moving it away with mremap,
//!   drops the name.
//! - mremap shrinks in place (`new_addr: None`); it moves to a fresh planned
//!   address (`MREMAP_FIXED`) whenever it grows or `align=`/`offset=` are
//!   given, since only then is the result's address known in advance.
//!
//! The planner assumes that every operation succeeds: an mmap that fails
//! on a backend still has its name here, and observes as an empty range.

use std::collections::BTreeMap;

use crate::{PinRef, ProcId, RegionRef};

/// Bytes in a base page.
pub const PAGE_SIZE: u64 = 4096;
/// The first address the planner hands out (32 TiB).
pub const MMAP_BASE: u64 = 0x2000_0000_0000;
/// The planner's regions stay below this address (80 TiB), clear of the
/// executor's own binary, heap, libraries and stack on the live kernel.
pub const PLAN_END: u64 = 0x5000_0000_0000;
/// Unmapped bytes left after every freshly placed region.
pub const GUARD_GAP: u64 = 2 << 20;
/// The alignment of a region that asks for none (PMD size).
pub const DEFAULT_ALIGN: u64 = 2 << 20;
/// The largest region, alignment, machine RAM or swap a scenario may state.
pub const MAX_SIZE: u64 = 1 << 40;
/// The most processes one scenario may create (exited ones included).
pub const MAX_PROCS: usize = 256;
/// The most named regions alive at once, over all live processes.
pub const MAX_LIVE_REGIONS: usize = 4096;
/// The most pins one scenario may create.
pub const MAX_PINS: usize = 4096;

/// A named range of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub addr: u64,
    pub len: u64,
    /// The parts of the range that still hold the memory this name mapped:
    /// not unmapped, not moved away by mremap, not replaced by an
    /// MREMAP_FIXED destination. The name goes when this is empty.
    held: RangeSet,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.addr + self.len
    }
}

/// Where a new region goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// At `align_up(cursor, align) + offset`. `align` is a power of two of at
    /// least a page; `offset` is page-aligned and below `align`.
    Fresh { align: u64, offset: u64 },
    /// At this address (page-aligned).
    At(u64),
}

impl Placement {
    pub const DEFAULT: Placement = Placement::Fresh { align: DEFAULT_ALIGN, offset: 0 };
}

/// Why a process can no longer be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcStatus {
    Live,
    /// Exited at this scenario line.
    Exited {
        line: u32,
    },
}

/// A set of disjoint, non-adjacent byte ranges: start → end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RangeSet(BTreeMap<u64, u64>);

impl RangeSet {
    #[cfg(test)]
    fn insert(&mut self, start: u64, end: u64) {
        let (mut start, mut end) = (start, end);
        // Absorb every range that overlaps or touches [start, end).
        let touching: Vec<(u64, u64)> =
            self.0.range(..=end).rev().take_while(|&(_, &e)| e >= start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touching {
            self.0.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    fn remove(&mut self, start: u64, end: u64) {
        let overlapping: Vec<(u64, u64)> =
            self.0.range(..end).rev().take_while(|&(_, &e)| e > start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in overlapping {
            self.0.remove(&s);
            if s < start {
                self.0.insert(s, start);
            }
            if e > end {
                self.0.insert(end, e);
            }
        }
    }

    #[cfg(test)]
    fn intersects(&self, start: u64, end: u64) -> bool {
        self.0.range(..end).next_back().is_some_and(|(_, &e)| e > start)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn whole(start: u64, end: u64) -> RangeSet {
        RangeSet(BTreeMap::from([(start, end)]))
    }
}

#[derive(Clone, Debug)]
struct ProcState {
    name: String,
    status: ProcStatus,
    /// Named regions in creation order.
    regions: Vec<Region>,
}

/// Why a pin can no longer be unpinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PinStatus {
    Held,
    Unpinned {
        line: u32,
    },
    /// Its process exited at this line, which released it.
    Released {
        line: u32,
    },
}

#[derive(Clone, Debug)]
struct PinState {
    pin: PinRef,
    proc: ProcId,
    status: PinStatus,
}

/// The planner's state at one point of a scenario.
#[derive(Clone, Debug)]
pub struct Planner {
    cursor: u64,
    procs: Vec<ProcState>,
    /// Pins by name; a name may be reused once its pin is gone.
    pins: BTreeMap<String, PinState>,
    nr_pins: u32,
    nr_live_regions: usize,
}

impl Default for Planner {
    fn default() -> Self {
        Planner::new()
    }
}

impl Planner {
    pub fn new() -> Self {
        Planner { cursor: MMAP_BASE, procs: Vec::new(), pins: BTreeMap::new(), nr_pins: 0, nr_live_regions: 0 }
    }

    /// Every process name ever created, by `ProcId` index.
    pub fn proc_names(&self) -> Vec<String> {
        self.procs.iter().map(|p| p.name.clone()).collect()
    }

    /// The process of that name, live or exited.
    pub fn proc_id(&self, name: &str) -> Option<ProcId> {
        self.procs.iter().position(|p| p.name == name).map(|i| ProcId(i as u32))
    }

    pub fn proc_name(&self, proc: ProcId) -> &str {
        &self.procs[proc.0 as usize].name
    }

    pub fn proc_status(&self, proc: ProcId) -> ProcStatus {
        self.procs[proc.0 as usize].status
    }

    /// Creates a process with an empty address space.
    pub fn spawn(&mut self, name: &str) -> Result<ProcId, String> {
        if self.procs.len() >= MAX_PROCS {
            return Err(format!("too many processes: a scenario may create at most {MAX_PROCS}"));
        }
        let proc = ProcId(self.procs.len() as u32);
        self.procs.push(ProcState { name: name.to_string(), status: ProcStatus::Live, regions: Vec::new() });
        Ok(proc)
    }

    /// Creates `child` with a copy of `parent`'s region table.
    pub fn fork(&mut self, parent: ProcId, child: &str) -> Result<ProcId, String> {
        let regions = self.procs[parent.0 as usize].regions.clone();
        self.reserve_regions(regions.len())?;
        let id = self.spawn(child)?;
        self.nr_live_regions += regions.len();
        self.procs[id.0 as usize].regions = regions;
        Ok(id)
    }

    /// The process exits: its regions go, and so do its pins.
    pub fn exit(&mut self, proc: ProcId, line: u32) {
        let state = &mut self.procs[proc.0 as usize];
        state.status = ProcStatus::Exited { line };
        self.nr_live_regions -= state.regions.len();
        state.regions.clear();
        for pin in self.pins.values_mut() {
            if pin.proc == proc && pin.status == PinStatus::Held {
                pin.status = PinStatus::Released { line };
            }
        }
    }

    /// The live region of that name in the process.
    pub fn region(&self, proc: ProcId, name: &str) -> Option<&Region> {
        self.procs[proc.0 as usize].regions.iter().find(|r| r.name == name)
    }

    /// The names of the process's live regions, in creation order.
    pub fn region_names(&self, proc: ProcId) -> Vec<&str> {
        self.procs[proc.0 as usize].regions.iter().map(|r| r.name.as_str()).collect()
    }

    fn reserve_regions(&self, more: usize) -> Result<(), String> {
        if self.nr_live_regions + more > MAX_LIVE_REGIONS {
            return Err(format!(
                "too many regions: at most {MAX_LIVE_REGIONS} may be alive at once over all processes"
            ));
        }
        Ok(())
    }

    /// Chooses the address of a new range of `len` bytes and moves the cursor
    /// past it.
    fn place(&mut self, len: u64, placement: Placement) -> Result<u64, String> {
        let addr = match placement {
            Placement::Fresh { align, offset } => {
                self.cursor.checked_next_multiple_of(align).and_then(|a| a.checked_add(offset)).unwrap_or(u64::MAX)
            }
            Placement::At(addr) => addr,
        };
        let end = addr.saturating_add(len);
        if end > PLAN_END {
            return Err(format!(
                "the planner's address space is full: {} bytes at {addr:#x} would end past {PLAN_END:#x}",
                len
            ));
        }
        if addr < MMAP_BASE {
            return Err(format!("address {addr:#x} is below the planner's base {MMAP_BASE:#x}"));
        }
        self.cursor = self.cursor.max(end + GUARD_GAP);
        Ok(addr)
    }

    /// Where a new mapping of `len` bytes would go, without placing it.
    fn fresh_addr(&self, placement: Placement) -> u64 {
        match placement {
            Placement::Fresh { align, offset } => {
                self.cursor.checked_next_multiple_of(align).and_then(|a| a.checked_add(offset)).unwrap_or(u64::MAX)
            }
            Placement::At(addr) => addr,
        }
    }

    /// Maps a new named region and returns its address. The caller has
    /// checked that `name` is not a live region of `proc`.
    pub fn mmap(&mut self, proc: ProcId, name: &str, len: u64, placement: Placement) -> Result<u64, String> {
        self.reserve_regions(1)?;
        let addr = self.place(len, placement)?;
        self.procs[proc.0 as usize].regions.push(Region {
            name: name.to_string(),
            addr,
            len,
            held: RangeSet::whole(addr, addr + len),
        });
        self.nr_live_regions += 1;
        Ok(addr)
    }

    /// Maps `name` at `addr` with MAP_FIXED: the range leaves every name
    /// that held it (names left holding nothing go), then `name` holds it.
    pub fn mmap_fixed(&mut self, proc: ProcId, name: &str, len: u64, addr: u64) -> Result<u64, String> {
        self.release(proc, &[(addr, addr + len)]);
        if self.region(proc, name).is_some() {
            return Err(format!(
                "{} already has a region named {name} outside the range mapped over",
                self.proc_name(proc)
            ));
        }
        self.mmap(proc, name, len, Placement::At(addr))
    }

    /// Plans `name = mremap(old_addr, old_len, new_len)` without
    /// MREMAP_MAYMOVE: the mapping stays at `old_addr` and grows or shrinks
    /// there. The planner assumes it succeeds (a growth into a mapped range
    /// fails with ENOMEM on both backends, and the name then observes what
    /// is left).
    pub fn mremap_in_place(
        &mut self,
        proc: ProcId,
        name: &str,
        old_addr: u64,
        old_len: u64,
        new_len: u64,
    ) -> Result<(), String> {
        self.release(proc, &[(old_addr, old_addr + old_len)]);
        if self.region(proc, name).is_some() {
            return Err(format!("{} already has a region named {name}", self.proc_name(proc)));
        }
        self.mmap(proc, name, new_len, Placement::At(old_addr)).map(|_| ())
    }

    /// Unmaps a range; names left holding nothing go.
    pub fn munmap(&mut self, proc: ProcId, addr: u64, len: u64) {
        self.release(proc, &[(addr, addr + len)]);
    }

    /// Takes the ranges away from every name of the process and drops the
    /// names left holding nothing.
    fn release(&mut self, proc: ProcId, ranges: &[(u64, u64)]) {
        let state = &mut self.procs[proc.0 as usize];
        let before = state.regions.len();
        for region in &mut state.regions {
            for &(start, end) in ranges {
                region.held.remove(start, end);
            }
        }
        state.regions.retain(|r| !r.held.is_empty());
        self.nr_live_regions -= before - state.regions.len();
    }

    /// Plans `name = mremap(old_addr, old_len, new_len)` and returns the
    /// `new_addr` of `Op::Mremap`. `placement` is the destination the
    /// scenario asked for (`align=`, `offset=` or `at=`), if any.
    ///
    /// The old range moves to `name`, and a fixed destination replaces what
    /// was there: names left holding nothing go.
    pub fn mremap(
        &mut self,
        proc: ProcId,
        name: &str,
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        placement: Option<Placement>,
    ) -> Result<Option<u64>, String> {
        let moves = placement.is_some() || new_len > old_len;
        let dest = if moves {
            let placement = placement.unwrap_or(Placement::DEFAULT);
            // The destination must not overlap the source: MREMAP_FIXED
            // onto the old range is EINVAL, and the planner would lose track.
            let addr = self.fresh_addr(placement);
            let (old_end, new_end) = (old_addr + old_len, addr.saturating_add(new_len));
            if addr < old_end && old_addr < new_end {
                return Err(format!(
                    "the destination {addr:#x}..{new_end:#x} overlaps the range being moved {old_addr:#x}..{old_end:#x}"
                ));
            }
            Some(self.place(new_len, placement)?)
        } else {
            None
        };
        let new_addr = dest.unwrap_or(old_addr);
        let new_end = new_addr + new_len;
        // MREMAP_FIXED replaces whatever the destination held.
        match dest {
            Some(_) => self.release(proc, &[(old_addr, old_addr + old_len), (new_addr, new_end)]),
            None => self.release(proc, &[(old_addr, old_addr + old_len)]),
        }
        if self.region(proc, name).is_some() {
            return Err(format!("{} already has a region named {name}", self.proc_name(proc)));
        }
        self.reserve_regions(1)?;
        self.procs[proc.0 as usize].regions.push(Region {
            name: name.to_string(),
            addr: new_addr,
            len: new_len,
            held: RangeSet::whole(new_addr, new_end),
        });
        self.nr_live_regions += 1;
        Ok(dest)
    }

    /// Creates a named pin held by `proc`.
    pub fn pin(&mut self, proc: ProcId, name: &str) -> Result<PinRef, String> {
        if let Some(PinState { status: PinStatus::Held, .. }) = self.pins.get(name) {
            return Err(format!("pin {name} is already held; unpin it first or choose another name"));
        }
        if self.nr_pins as usize >= MAX_PINS {
            return Err(format!("too many pins: a scenario may create at most {MAX_PINS}"));
        }
        let pin = PinRef(self.nr_pins);
        self.nr_pins += 1;
        self.pins.insert(name.to_string(), PinState { pin, proc, status: PinStatus::Held });
        Ok(pin)
    }

    /// Releases a held pin; `proc`, if given, must be the one that holds it.
    pub fn unpin(&mut self, name: &str, proc: Option<ProcId>, line: u32) -> Result<PinRef, String> {
        let holder_name = |planner: &Planner, p: ProcId| planner.proc_name(p).to_string();
        let Some(state) = self.pins.get(name) else {
            return Err(format!("there is no pin named {name}"));
        };
        match state.status {
            PinStatus::Held => {}
            PinStatus::Unpinned { line } => return Err(format!("pin {name} was already unpinned at line {line}")),
            PinStatus::Released { line } => {
                return Err(format!(
                    "pin {name} was released when {} exited at line {line}",
                    holder_name(self, state.proc)
                ))
            }
        }
        if let Some(proc) = proc {
            if proc != state.proc {
                return Err(format!(
                    "pin {name} is held by {}, not {}",
                    holder_name(self, state.proc),
                    self.proc_name(proc)
                ));
            }
        }
        let pin = state.pin;
        if let Some(state) = self.pins.get_mut(name) {
            state.status = PinStatus::Unpinned { line };
        }
        Ok(pin)
    }

    /// The table of every live process's regions: `ProcId` order, then
    /// creation order.
    pub fn regions(&self) -> Vec<RegionRef> {
        (0..self.procs.len()).flat_map(|i| self.proc_regions(ProcId(i as u32))).collect()
    }

    /// The process's live regions in creation order.
    pub fn proc_regions(&self, proc: ProcId) -> Vec<RegionRef> {
        let state = &self.procs[proc.0 as usize];
        state
            .regions
            .iter()
            .map(|r| RegionRef { proc, proc_name: state.name.clone(), name: r.name.clone(), addr: r.addr, len: r.len })
            .collect()
    }

    /// How many regions `regions()` would list.
    pub fn nr_live_regions(&self) -> usize {
        self.nr_live_regions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;
    const K: u64 = 1 << 10;

    #[test]
    fn range_set_merges_and_splits() {
        let mut set = RangeSet::default();
        set.insert(0, 10);
        set.insert(20, 30);
        set.insert(10, 20);
        assert_eq!(set.0.iter().map(|(&s, &e)| (s, e)).collect::<Vec<_>>(), vec![(0, 30)]);
        set.remove(5, 8);
        assert_eq!(set.0.iter().map(|(&s, &e)| (s, e)).collect::<Vec<_>>(), vec![(0, 5), (8, 30)]);
        assert!(set.intersects(4, 6));
        assert!(!set.intersects(5, 8));
        assert!(set.intersects(7, 9));
        set.remove(0, 100);
        assert!(set.0.is_empty());
    }

    // BASE  +4M+2M gap
    // |AAAA|  |BB|  |
    #[test]
    fn fresh_regions_are_aligned_and_separated_by_a_guard_gap() {
        let mut plan = Planner::new();
        let p = plan.spawn("p1").unwrap();
        let a = plan.mmap(p, "A", 4 * M, Placement::DEFAULT).unwrap();
        assert_eq!(a, MMAP_BASE);
        let b = plan.mmap(p, "B", 2 * M, Placement::DEFAULT).unwrap();
        assert_eq!(b, MMAP_BASE + 6 * M);
        let c = plan.mmap(p, "C", 4 * K, Placement::Fresh { align: 1 << 30, offset: 4 * K }).unwrap();
        assert_eq!(c, MMAP_BASE + (1 << 30) + 4 * K);
        let d = plan.mmap(p, "D", 4 * K, Placement::Fresh { align: 4 * K, offset: 0 }).unwrap();
        assert_eq!(d, c + 4 * K + GUARD_GAP);
    }

    #[test]
    fn fork_copies_the_table_and_exit_drops_it() {
        let mut plan = Planner::new();
        let p1 = plan.spawn("p1").unwrap();
        plan.mmap(p1, "A", 2 * M, Placement::DEFAULT).unwrap();
        plan.mmap(p1, "B", 2 * M, Placement::DEFAULT).unwrap();
        let p2 = plan.fork(p1, "p2").unwrap();
        assert_eq!(plan.region(p2, "A"), plan.region(p1, "A"));
        assert_eq!(plan.region(p2, "B"), plan.region(p1, "B"));
        let table = plan.regions();
        let names: Vec<_> = table.iter().map(|r| format!("{}:{}", r.proc_name, r.name)).collect();
        assert_eq!(names, ["p1:A", "p1:B", "p2:A", "p2:B"]);
        // The child's table is a copy: unmapping in one leaves the other.
        plan.munmap(p2, MMAP_BASE, 2 * M);
        assert!(plan.region(p2, "A").is_none());
        assert!(plan.region(p1, "A").is_some());
        plan.exit(p1, 9);
        assert_eq!(plan.proc_status(p1), ProcStatus::Exited { line: 9 });
        assert_eq!(plan.nr_live_regions(), 1);
        assert_eq!(plan.regions().len(), 1);
    }

    #[test]
    fn a_name_lives_while_any_of_it_is_mapped() {
        let mut plan = Planner::new();
        let p = plan.spawn("p1").unwrap();
        let a = plan.mmap(p, "A", 4 * M, Placement::DEFAULT).unwrap();
        plan.munmap(p, a, 2 * M);
        assert_eq!(plan.region(p, "A").map(|r| (r.addr, r.len)), Some((a, 4 * M)));
        plan.munmap(p, a + 2 * M, 2 * M);
        assert!(plan.region(p, "A").is_none());
    }

    #[test]
    fn mremap_shrinks_in_place_and_moves_when_growing() {
        let mut plan = Planner::new();
        let p = plan.spawn("p1").unwrap();
        let a = plan.mmap(p, "A", 4 * M, Placement::DEFAULT).unwrap();
        assert_eq!(plan.mremap(p, "B", a, 4 * M, 2 * M, None), Ok(None));
        assert!(plan.region(p, "A").is_none());
        assert_eq!(plan.region(p, "B").map(|r| (r.addr, r.len)), Some((a, 2 * M)));
        let dest = plan.mremap(p, "C", a, 2 * M, 8 * M, None).unwrap();
        // The cursor was at A's end plus the gap: 6M.
        assert_eq!(dest, Some(a + 6 * M));
        assert!(plan.region(p, "B").is_none());
        // Moving a part keeps the rest of the name.
        let c = a + 6 * M;
        let d = plan.mremap(p, "D", c, 2 * M, 2 * M, Some(Placement::Fresh { align: 2 * M, offset: 4 * K })).unwrap();
        assert_eq!(d, Some(c + 10 * M + 4 * K));
        assert!(plan.region(p, "C").is_some());
    }

    #[test]
    fn mremap_at_a_fixed_place_next_to_another_region() {
        let mut plan = Planner::new();
        let p = plan.spawn("p1").unwrap();
        let a = plan.mmap(p, "A", 2 * M, Placement::DEFAULT).unwrap();
        let b = plan.mmap(p, "B", 2 * M, Placement::DEFAULT).unwrap();
        assert_eq!(plan.mremap(p, "C", b, 2 * M, 2 * M, Some(Placement::At(a + 2 * M))), Ok(Some(a + 2 * M)));
        assert!(plan.region(p, "B").is_none());
        let err = plan.mremap(p, "D", a, 2 * M, 2 * M, Some(Placement::At(a + M))).unwrap_err();
        assert!(err.contains("overlaps the range being moved"), "{err}");
    }

    #[test]
    fn the_address_space_runs_out_with_an_error() {
        let mut plan = Planner::new();
        let p = plan.spawn("p1").unwrap();
        for i in 0..48 {
            let name = format!("R{i}");
            plan.mmap(p, &name, MAX_SIZE - 4 * M, Placement::DEFAULT).unwrap();
        }
        let err = plan.mmap(p, "X", MAX_SIZE, Placement::DEFAULT).unwrap_err();
        assert!(err.contains("address space is full"), "{err}");
    }

    #[test]
    fn pins_number_in_creation_order_and_die_with_their_process() {
        let mut plan = Planner::new();
        let p1 = plan.spawn("p1").unwrap();
        let p2 = plan.spawn("p2").unwrap();
        assert_eq!(plan.pin(p1, "P1"), Ok(PinRef(0)));
        assert_eq!(plan.pin(p2, "P2"), Ok(PinRef(1)));
        assert!(plan.pin(p1, "P1").is_err());
        assert_eq!(plan.unpin("P1", None, 5), Ok(PinRef(0)));
        assert_eq!(plan.unpin("P1", None, 6), Err("pin P1 was already unpinned at line 5".to_string()));
        assert_eq!(plan.pin(p1, "P1"), Ok(PinRef(2)));
        plan.exit(p2, 7);
        assert_eq!(plan.unpin("P2", None, 8), Err("pin P2 was released when p2 exited at line 7".to_string()));
        assert_eq!(plan.unpin("P1", Some(p2), 9), Err("pin P1 is held by p1, not p2".to_string()));
    }
}
