//! The buddy allocator against a naive model of the same policy, one flag
//! per page: fixed seeds through `random_op()`, and proptest cases that
//! shrink to a short failing sequence. Both compare every PFN, every free
//! block and every pageblock type after every operation.

use proptest::prelude::*;

use super::test_util::{blocks, Rng};
use super::{AllocFailure, AllocFlags, AllocWatermark, BuddyAllocator, Migratetype, Watermarks, NR_PAGE_ORDERS};
use crate::types::{Order, Pfn};

/// The same allocator, obviously correct and slow: one flag per page
/// and one type per pageblock. Its free blocks are computed by carving
/// each run of free pages into maximal aligned blocks, and allocation
/// applies the policy the buddy allocator's docs state directly to that
/// list, so the two must agree on every PFN and every pageblock type:
///
/// - own blocks first: the lowest of the smallest order among the blocks
///   of at least pageblock order (any type) and the smaller blocks in
///   pageblocks of the requested type;
/// - then, below pageblock order, claim: from order 8 down, the lowest
///   block of that order in a pageblock of the other type; stop at the
///   first order below 4 for a movable request; claim the pageblock if
///   it lies in the zone and at least 256 of its pages are free, then
///   take an own block;
/// - then steal: the lowest of the smallest order among the blocks below
///   pageblock order in pageblocks of the other type.
///
/// Taking a block of pageblock order or above types the pageblocks the
/// allocation comes out of; a pageblock whose pages are all free reads
/// movable. (Plain first-fit, the lowest aligned free range, would pick
/// differently: it ignores a smaller exact fit higher up.)
struct NaiveFreeSet {
    free: Vec<bool>,
    /// How many of `free` are true.
    nr_free: u64,
    watermarks: Watermarks,
    /// One per pageblock, the last one possibly partial.
    pageblock_types: Vec<Migratetype>,
}

/// The step of `__rmqueue()` that served an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RmqueuePath {
    Smallest,
    Claim,
    Steal,
}

const NAIVE_PAGEBLOCK: u64 = 512;

impl NaiveFreeSet {
    fn new(nr_pages: u64, watermarks: Watermarks) -> Self {
        NaiveFreeSet {
            free: vec![true; nr_pages as usize],
            nr_free: nr_pages,
            watermarks,
            pageblock_types: vec![Migratetype::Movable; nr_pages.div_ceil(NAIVE_PAGEBLOCK) as usize],
        }
    }

    fn is_free(&self, pfn: u64) -> bool {
        self.free.get(pfn as usize).copied().unwrap_or(false)
    }

    fn type_of(&self, pfn: u64) -> Migratetype {
        self.pageblock_types[(pfn / NAIVE_PAGEBLOCK) as usize]
    }

    fn blocks(&self) -> Vec<(u64, u8)> {
        let nr_pages = self.free.len() as u64;
        let mut blocks = Vec::new();
        let mut run_start = 0;
        while run_start < nr_pages {
            if !self.free[run_start as usize] {
                run_start += 1;
                continue;
            }
            let mut run_end = run_start;
            while self.is_free(run_end) {
                run_end += 1;
            }
            let mut pfn = run_start;
            while pfn < run_end {
                let mut o = 0u8;
                while o < Order::MAX.get() && pfn % (2 << o) == 0 && pfn + (2 << o) <= run_end {
                    o += 1;
                }
                blocks.push((pfn, o));
                pfn += 1 << o;
            }
            run_start = run_end;
        }
        blocks
    }

    fn alloc(&mut self, order: u8, flags: AllocFlags) -> Result<(u64, RmqueuePath), AllocFailure> {
        let nr = 1u64 << order;
        let nr_free = self.nr_free;
        if nr_free < nr {
            return Err(AllocFailure::OutOfMemory);
        }
        let mark = match flags.wmark {
            AllocWatermark::Min => Some(self.watermarks.min),
            AllocWatermark::Low => Some(self.watermarks.low),
            AllocWatermark::High => Some(self.watermarks.high),
            AllocWatermark::NoWatermarks => None,
        };
        if let Some(mut mark) = mark {
            if flags.min_reserve {
                mark = mark.div_ceil(2);
                if flags.non_block {
                    mark -= mark / 4;
                }
            }
            if flags.oom {
                mark = mark.div_ceil(2);
            }
            // What is left after the allocation must reach the mark.
            if nr_free - nr < mark {
                return Err(AllocFailure::BelowWatermark);
            }
        }
        let mt = flags.migratetype;
        let blocks = self.blocks();
        if let Some(block) = self.own_block(&blocks, order, mt) {
            return Ok((self.take(block, order, mt), RmqueuePath::Smallest));
        }
        if order >= 9 {
            return Err(AllocFailure::NoBlockOfOrder);
        }
        for current in (order..9).rev() {
            let Some(&(candidate, _)) =
                blocks.iter().filter(|&&(pfn, o)| o == current && self.type_of(pfn) != mt).min()
            else {
                continue;
            };
            if current < 4 && mt == Migratetype::Movable {
                break;
            }
            let first = candidate / NAIVE_PAGEBLOCK * NAIVE_PAGEBLOCK;
            let end = first + NAIVE_PAGEBLOCK;
            let nr_free_in_pageblock = (first..end).filter(|&pfn| self.is_free(pfn)).count() as u64;
            if end <= self.free.len() as u64 && nr_free_in_pageblock >= NAIVE_PAGEBLOCK / 2 {
                self.pageblock_types[(first / NAIVE_PAGEBLOCK) as usize] = mt;
                let block = self
                    .own_block(&blocks, order, mt)
                    .expect("naive model: a claimed pageblock has no block to allocate");
                return Ok((self.take(block, order, mt), RmqueuePath::Claim));
            }
        }
        let Some(&block) = blocks
            .iter()
            .filter(|&&(pfn, o)| o >= order && o < 9 && self.type_of(pfn) != mt)
            .min_by_key(|&&(pfn, o)| (o, pfn))
        else {
            return Err(AllocFailure::NoBlockOfOrder);
        };
        Ok((self.take(block, order, mt), RmqueuePath::Steal))
    }

    /// The block an allocation of `order` and `mt` takes without falling back.
    fn own_block(&self, blocks: &[(u64, u8)], order: u8, mt: Migratetype) -> Option<(u64, u8)> {
        blocks
            .iter()
            .copied()
            .filter(|&(pfn, o)| o >= order && (o >= 9 || self.type_of(pfn) == mt))
            .min_by_key(|&(pfn, o)| (o, pfn))
    }

    /// Allocates the first `2^order` pages of the free block `(start, o)`.
    fn take(&mut self, (start, o): (u64, u8), order: u8, mt: Migratetype) -> u64 {
        self.set_range(start, 1 << order, false);
        if o >= 9 {
            let typed_pages = (1u64 << order).max(NAIVE_PAGEBLOCK);
            for pfn in (start..start + typed_pages).step_by(NAIVE_PAGEBLOCK as usize) {
                self.pageblock_types[(pfn / NAIVE_PAGEBLOCK) as usize] = mt;
            }
        }
        start
    }

    fn alloc_exact(&mut self, pfn: u64, order: u8) -> bool {
        let nr = 1u64 << order;
        if !(pfn..pfn + nr).all(|p| self.is_free(p)) {
            return false;
        }
        self.set_range(pfn, nr, false);
        true
    }

    fn free(&mut self, pfn: u64, order: u8) {
        for p in pfn..pfn + (1 << order) {
            assert!(!self.is_free(p), "naive model: page {p:#x} freed twice");
        }
        self.set_range(pfn, 1 << order, true);
        let nr_pages = self.free.len() as u64;
        let first = pfn / NAIVE_PAGEBLOCK * NAIVE_PAGEBLOCK;
        for pageblock in (first..pfn + (1 << order)).step_by(NAIVE_PAGEBLOCK as usize) {
            let end = pageblock + NAIVE_PAGEBLOCK;
            if end <= nr_pages && (pageblock..end).all(|p| self.is_free(p)) {
                self.pageblock_types[(pageblock / NAIVE_PAGEBLOCK) as usize] = Migratetype::Movable;
            }
        }
    }

    fn set_range(&mut self, pfn: u64, nr: u64, free: bool) {
        self.free[pfn as usize..(pfn + nr) as usize].fill(free);
        if free {
            self.nr_free += nr;
        } else {
            self.nr_free -= nr;
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc {
        order: u8,
        flags: AllocFlags,
    },
    /// Frees the held block at this index (modulo the number held).
    Free {
        index: usize,
    },
    /// Claims an aligned block, as compaction does (pfn modulo the zone).
    AllocExact {
        pfn: u64,
        order: u8,
    },
    /// Splits a held block into its two halves, each held on its own, so
    /// that later frees cover part of an allocation (as freeing the pages
    /// of a split folio one by one does).
    SplitHeld {
        index: usize,
    },
    /// Compares the range and per-page queries at this PFN.
    Query {
        pfn: u64,
        nr: u64,
    },
}

struct Differential {
    buddy: BuddyAllocator,
    naive: NaiveFreeSet,
    held: Vec<(u64, u8)>,
    /// Allocations served by each `RmqueuePath`, in its order.
    paths: [u64; 3],
}

impl Differential {
    fn new(nr_pages: u64) -> Self {
        let buddy = BuddyAllocator::new(nr_pages);
        let naive = NaiveFreeSet::new(nr_pages, buddy.watermarks());
        Differential { buddy, naive, held: Vec::new(), paths: [0; 3] }
    }

    /// Applies `op` to both models and asserts they agree; `at` names
    /// the run and step for the failure message. Returns the outcome of
    /// an allocation.
    fn step(&mut self, op: Op, at: &str) -> Option<Result<u64, AllocFailure>> {
        let mut outcome = None;
        match op {
            Op::Alloc { order, flags } => {
                let got = self.buddy.alloc(Order::new(order), flags).map(|pfn| pfn.0);
                let want = self.naive.alloc(order, flags);
                if let Ok((_, path)) = want {
                    self.paths[path as usize] += 1;
                }
                let want = want.map(|(pfn, _)| pfn);
                assert_eq!(got, want, "{at}: {op:?}: buddy vs naive");
                if let Ok(pfn) = got {
                    self.held.push((pfn, order));
                }
                outcome = Some(got);
            }
            Op::Free { index } => {
                if self.held.is_empty() {
                    return None;
                }
                let (pfn, order) = self.held.swap_remove(index % self.held.len());
                self.buddy.free(Pfn(pfn), Order::new(order));
                self.naive.free(pfn, order);
            }
            Op::AllocExact { pfn, order } => {
                let nr_blocks = self.buddy.nr_total_pages() >> order;
                if nr_blocks == 0 {
                    return None;
                }
                let pfn = (pfn % nr_blocks) << order;
                let got = self.buddy.alloc_exact(Pfn(pfn), Order::new(order));
                let want = self.naive.alloc_exact(pfn, order);
                assert_eq!(got, want, "{at}: alloc_exact({pfn:#x}, order-{order}): buddy vs naive");
                if got {
                    self.held.push((pfn, order));
                }
            }
            Op::SplitHeld { index } => {
                if self.held.is_empty() {
                    return None;
                }
                let index = index % self.held.len();
                let (pfn, order) = self.held[index];
                if order > 0 {
                    self.held[index] = (pfn, order - 1);
                    self.held.push((pfn + (1 << (order - 1)), order - 1));
                }
            }
            Op::Query { pfn, nr } => {
                let pfn = pfn % (self.buddy.nr_total_pages() + 2);
                let want = (pfn..pfn + nr).filter(|&p| self.naive.is_free(p)).count() as u64;
                assert_eq!(self.buddy.nr_free_in_range(Pfn(pfn), nr), want, "{at}: nr_free_in_range({pfn:#x}, {nr})");
                assert_eq!(self.buddy.is_free(Pfn(pfn)), self.naive.is_free(pfn), "{at}: is_free({pfn:#x})");
                let want: Vec<_> = self
                    .naive
                    .blocks()
                    .into_iter()
                    .filter(|&(start, o)| start >= pfn && start + (1 << o) <= pfn + nr)
                    .collect();
                let got: Vec<_> =
                    self.buddy.free_blocks_in_range(Pfn(pfn), nr).map(|(start, o)| (start.0, o.get())).collect();
                assert_eq!(got, want, "{at}: free_blocks_in_range({pfn:#x}, {nr})");
            }
        }
        self.buddy.check_invariants();
        assert_eq!(self.buddy.nr_free_pages(), self.naive.nr_free, "{at}: {op:?}: free page counts differ");
        let naive_blocks = self.naive.blocks();
        assert_eq!(blocks(&self.buddy), naive_blocks, "{at}: {op:?}: free blocks differ");
        let mut buddyinfo = [0u64; NR_PAGE_ORDERS];
        for &(_, o) in &naive_blocks {
            buddyinfo[o as usize] += 1;
        }
        assert_eq!(self.buddy.buddyinfo(), buddyinfo, "{at}: buddyinfo");
        for (index, &want) in self.naive.pageblock_types.iter().enumerate() {
            let pfn = index as u64 * NAIVE_PAGEBLOCK;
            assert_eq!(
                self.buddy.pageblock_migratetype(Pfn(pfn)),
                want,
                "{at}: {op:?}: type of pageblock pfn {pfn:#x}"
            );
        }
        let nr_unmovable = self.naive.pageblock_types.iter().filter(|&&mt| mt == Migratetype::Unmovable).count() as u64;
        assert_eq!(self.buddy.nr_pageblocks(Migratetype::Unmovable), nr_unmovable, "{at}: unmovable pageblocks");
        assert_eq!(
            self.buddy.largest_free_order().map(Order::get),
            naive_blocks.iter().map(|&(_, o)| o).max(),
            "{at}: largest_free_order"
        );
        outcome
    }
}

fn random_flags(rng: &mut Rng) -> AllocFlags {
    let wmark = match rng.below(5) {
        0 => AllocWatermark::Min,
        1 | 2 => AllocWatermark::Low,
        3 => AllocWatermark::High,
        _ => AllocWatermark::NoWatermarks,
    };
    let bits = rng.below(8);
    AllocFlags {
        wmark,
        min_reserve: bits & 1 != 0,
        non_block: bits & 2 != 0,
        oom: bits & 4 != 0 && rng.below(4) == 0,
        migratetype: if rng.below(3) == 0 { Migratetype::Unmovable } else { Migratetype::Movable },
    }
}

/// An op for step `step`: phases of 1000 steps alternate between filling
/// the zone and draining it, so runs cross the watermarks both ways.
fn random_op(rng: &mut Rng, step: u64, max_order: u8) -> Op {
    let filling = (step / 1000) & 1 == 0;
    let order = match rng.below(10) {
        0..=5 => 0,
        6 => 9.min(max_order),
        _ => rng.below(max_order as u64 + 1) as u8,
    };
    match rng.below(100) {
        r if r < if filling { 60 } else { 35 } => Op::Alloc { order, flags: random_flags(rng) },
        r if r < 88 => Op::Free { index: rng.next() as usize },
        r if r < 93 => Op::AllocExact { pfn: rng.next(), order },
        r if r < 97 => Op::SplitHeld { index: rng.next() as usize },
        _ => Op::Query { pfn: rng.next(), nr: rng.below(600) },
    }
}

const FIXED_SEEDS: [u64; 4] = [0x7e57, 0x5eed_0001, 0x0b0d_d1e5, 0xdead_beef];
/// Zone sizes for the seeds: 16 MiB + 12 KiB, and three odd ones. Small,
/// so that the naive model's page-by-page scans stay fast in debug
/// builds; `Order::MAX` merges are covered by the unit tests.
const DIFFERENTIAL_SIZES: [u64; 4] = [4096 + 3, 2999, 1537, 1027];
const DIFFERENTIAL_STEPS: u64 = 20_000;

#[test]
fn buddy_allocator_matches_naive_free_set() {
    for (seed, nr_pages) in FIXED_SEEDS.into_iter().zip(DIFFERENTIAL_SIZES) {
        let mut rng = Rng(seed);
        let mut diff = Differential::new(nr_pages);
        let max_order = nr_pages.ilog2().min(Order::MAX.get() as u32) as u8;
        let mut outcomes = [0u64; 4];
        for step in 0..DIFFERENTIAL_STEPS {
            let op = random_op(&mut rng, step, max_order);
            let at = format!("seed {seed:#x} nr_pages {nr_pages} step {step}");
            if let Some(outcome) = diff.step(op, &at) {
                outcomes[match outcome {
                    Ok(_) => 0,
                    Err(AllocFailure::OutOfMemory) => 1,
                    Err(AllocFailure::BelowWatermark) => 2,
                    Err(AllocFailure::NoBlockOfOrder) => 3,
                }] += 1;
            }
        }
        let paths = diff.paths;
        println!(
            "seed {seed:#x} nr_pages {nr_pages}: outcomes [ok, oom, below wmark, no block] = {outcomes:?}, \
             paths [smallest, claim, steal] = {paths:?}"
        );
        // The run must have reached every outcome and every step of
        // `__rmqueue()`, or it tested less than it seems.
        assert!(
            outcomes.iter().all(|&n| n > 0),
            "seed {seed:#x}: outcomes [ok, oom, below wmark, no block] = {outcomes:?}"
        );
        assert!(paths.iter().all(|&n| n > 0), "seed {seed:#x}: paths [smallest, claim, steal] = {paths:?}");
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let flags = (0..4u8, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(w, min_reserve, non_block, oom, unmovable)| AllocFlags {
            wmark: [AllocWatermark::Min, AllocWatermark::Low, AllocWatermark::High, AllocWatermark::NoWatermarks]
                [w as usize],
            min_reserve,
            non_block,
            oom,
            migratetype: Migratetype::ALL[unmovable as usize],
        },
    );
    prop_oneof![
        4 => (0..=10u8, flags).prop_map(|(order, flags)| Op::Alloc { order, flags }),
        3 => any::<usize>().prop_map(|index| Op::Free { index }),
        1 => (any::<u64>(), 0..=10u8).prop_map(|(pfn, order)| Op::AllocExact { pfn, order }),
        1 => any::<usize>().prop_map(|index| Op::SplitHeld { index }),
        1 => (any::<u64>(), 0..300u64).prop_map(|(pfn, nr)| Op::Query { pfn, nr }),
    ]
}

proptest! {
    #[test]
    fn buddy_allocator_matches_naive_free_set_shrinking(
        nr_pages in 1..1200u64,
        ops in proptest::collection::vec(op_strategy(), 1..200),
    ) {
        let mut diff = Differential::new(nr_pages);
        for (step, op) in ops.into_iter().enumerate() {
            diff.step(op, &format!("nr_pages {nr_pages} step {step}"));
        }
    }
}

#[test]
fn same_ops_give_identical_state() {
    let run = || {
        let mut rng = Rng(0x7e57);
        let mut diff = Differential::new(4096 + 3);
        for step in 0..2000 {
            diff.step(random_op(&mut rng, step, 12), "determinism");
        }
        (blocks(&diff.buddy), diff.held)
    };
    assert_eq!(run(), run(), "nondeterminism: seed 0x7e57 gave two results");
}
