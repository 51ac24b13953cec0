//! Named failure-injection points for allocations, driven by a seed, so
//! tests reach out-of-memory paths on purpose rather than only when a tiny
//! machine happens to run dry.
//!
//! Models: lib/fault-inject.c (`should_fail_ex()`: `probability`,
//! `interval`, `times`) and mm/fail_page_alloc.c (`should_fail_alloc_page()`,
//! called at the start of every page allocation). The kernel has one
//! `fail_page_alloc` attribute set; the model keeps one per named point, so a
//! test can fail "the third page-table allocation" without touching folios.
//! The random draw comes from a SplitMix64 generator seeded by the caller:
//! the same seed fails the same allocations on every host.

/// Where an allocation may be made to fail: the purpose of the allocation,
/// as the GFP flags of its call site give it (see `Gfp::point`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailPoint {
    /// A page-table page (`GFP_PGTABLE_USER`): PGD, PUD, PMD and PTE tables,
    /// and the PTE table deposited under a huge PMD.
    PageTable,
    /// A folio of any order: faults, COW copies, collapse, fork's copies of
    /// pinned pages, the huge zero folio.
    Folio,
}

impl FailPoint {
    pub const ALL: [FailPoint; 2] = [FailPoint::PageTable, FailPoint::Folio];

    /// The name scenarios use (`inject pgtable ...`).
    pub const fn name(self) -> &'static str {
        match self {
            FailPoint::PageTable => "pgtable",
            FailPoint::Folio => "folio",
        }
    }

    pub fn from_name(name: &str) -> Option<FailPoint> {
        FailPoint::ALL.into_iter().find(|p| p.name() == name)
    }

    const fn index(self) -> usize {
        match self {
            FailPoint::PageTable => 0,
            FailPoint::Folio => 1,
        }
    }
}

/// The attributes of one injection point, as the kernel's
/// `/sys/kernel/debug/fail_page_alloc/` files spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FailAttr {
    /// Percent chance (0..=100) that an allocation which passes `interval`
    /// fails.
    pub probability: u32,
    /// Only every `interval`-th allocation may fail (0 and 1 mean every one).
    pub interval: u64,
    /// How many failures in all; `None` is the kernel's -1, no limit.
    pub times: Option<u64>,
    /// The seed of the random draw.
    pub seed: u64,
}

impl FailAttr {
    /// Fails exactly the `n`-th allocation at the point, counting from the
    /// injection (`n` >= 1).
    pub const fn nth(n: u64) -> FailAttr {
        FailAttr { probability: 100, interval: n, times: Some(1), seed: 0 }
    }

    /// Fails each allocation with `percent` chance, without limit.
    pub const fn random(percent: u32, seed: u64) -> FailAttr {
        FailAttr { probability: percent, interval: 1, times: None, seed }
    }
}

/// The live state of one point.
#[derive(Clone, Debug)]
struct PointState {
    attr: FailAttr,
    /// Allocations seen since the injection (`attr->count`).
    count: u64,
    times_left: Option<u64>,
    rng: u64,
}

/// Every injection point of a machine; all off by default.
#[derive(Clone, Debug, Default)]
pub struct FaultInjection {
    points: [Option<PointState>; 2],
    /// Failures injected so far, by point.
    injected: [u64; 2],
}

impl FaultInjection {
    /// Arms `point` with `attr`, replacing what was there; counting restarts.
    pub fn set(&mut self, point: FailPoint, attr: FailAttr) {
        self.points[point.index()] =
            Some(PointState { attr, count: 0, times_left: attr.times, rng: attr.seed ^ 0x9e37_79b9_7f4a_7c15 });
    }

    /// Disarms `point`.
    pub fn clear(&mut self, point: FailPoint) {
        self.points[point.index()] = None;
    }

    /// Failures injected at `point` so far.
    pub fn nr_injected(&self, point: FailPoint) -> u64 {
        self.injected[point.index()]
    }

    /// Whether any point is armed.
    pub fn is_armed(&self) -> bool {
        self.points.iter().any(Option::is_some)
    }

    /// `should_fail_ex()`: whether this allocation at `point` fails.
    pub(crate) fn should_fail(&mut self, point: FailPoint) -> bool {
        let Some(state) = &mut self.points[point.index()] else { return false };
        if state.times_left == Some(0) {
            return false;
        }
        if state.attr.interval > 1 {
            state.count += 1;
            if !state.count.is_multiple_of(state.attr.interval) {
                return false;
            }
        }
        if state.attr.probability <= (splitmix64(&mut state.rng) % 100) as u32 {
            return false;
        }
        if let Some(t) = &mut state.times_left {
            *t -= 1;
        }
        self.injected[point.index()] += 1;
        true
    }
}

/// SplitMix64: a small, well-mixed deterministic generator.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fails(fi: &mut FaultInjection, point: FailPoint, n: usize) -> Vec<bool> {
        (0..n).map(|_| fi.should_fail(point)).collect()
    }

    #[test]
    fn nth_fails_exactly_that_allocation_once() {
        let mut fi = FaultInjection::default();
        fi.set(FailPoint::PageTable, FailAttr::nth(3));
        assert_eq!(fails(&mut fi, FailPoint::PageTable, 8), [false, false, true, false, false, false, false, false]);
        assert_eq!(fi.nr_injected(FailPoint::PageTable), 1);
        assert_eq!(fails(&mut fi, FailPoint::Folio, 4), [false; 4], "other points are not armed");
    }

    #[test]
    fn interval_and_times_bound_the_failures() {
        let mut fi = FaultInjection::default();
        fi.set(FailPoint::Folio, FailAttr { probability: 100, interval: 2, times: Some(2), seed: 0 });
        assert_eq!(fails(&mut fi, FailPoint::Folio, 8), [false, true, false, true, false, false, false, false]);
    }

    #[test]
    fn probability_is_seeded_and_roughly_right() {
        let run = |seed| {
            let mut fi = FaultInjection::default();
            fi.set(FailPoint::Folio, FailAttr::random(25, seed));
            fails(&mut fi, FailPoint::Folio, 10_000)
        };
        assert_eq!(run(7), run(7), "same seed, same failures");
        assert_ne!(run(7), run(8), "another seed, other failures");
        let n = run(7).iter().filter(|f| **f).count();
        assert!((2_200..2_800).contains(&n), "25% of 10,000 draws failed {n} times");
        let mut fi = FaultInjection::default();
        fi.set(FailPoint::Folio, FailAttr::random(0, 1));
        assert!(!fails(&mut fi, FailPoint::Folio, 1000).contains(&true), "probability 0 never fails");
    }
}
