//! Helpers the allocator's tests share: sizes, free-block lists, capturing
//! an expected panic, draining a zone, a seeded random number generator,
//! and zones with unmovable pageblocks.

use super::{AllocFlags, BuddyAllocator, PAGEBLOCK_NR_PAGES};
use crate::types::{Order, Pfn, PAGE_SIZE};

pub(super) const GIB: u64 = 1 << 30;
pub(super) const MIB: u64 = 1 << 20;
pub(super) const KIB: u64 = 1 << 10;
pub(super) const ONE_TIB_PAGES: u64 = 1 << 28;

pub(super) fn pages(bytes: u64) -> u64 {
    bytes / PAGE_SIZE
}

pub(super) fn order(o: u8) -> Order {
    Order::new(o)
}

pub(super) fn blocks(zone: &BuddyAllocator) -> Vec<(u64, u8)> {
    zone.free_blocks().map(|(pfn, o)| (pfn.0, o.get())).collect()
}

thread_local! {
    /// Set while `panic_message()` runs a call that is meant to panic.
    static EXPECTING_PANIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, which must panic, and returns its panic message. The panic
/// is not printed: the hook installed here stays quiet on the thread
/// that expects it and passes every other panic to the previous hook.
pub(super) fn panic_message(f: impl FnOnce()) -> String {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !EXPECTING_PANIC.with(|expecting| expecting.get()) {
                previous(info);
            }
        }));
    });
    EXPECTING_PANIC.with(|expecting| expecting.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    EXPECTING_PANIC.with(|expecting| expecting.set(false));
    let payload = result.expect_err("expected a panic, but the call returned");
    if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else if let Some(message) = payload.downcast_ref::<&str>() {
        message.to_string()
    } else {
        String::from("<non-string panic payload>")
    }
}

/// Allocates order-0 pages ignoring watermarks until `target` pages are free.
pub(super) fn drain_to(zone: &mut BuddyAllocator, target: u64) {
    while zone.nr_free_pages() > target {
        zone.alloc(Order::BASE, AllocFlags::NO_WATERMARKS).unwrap();
    }
}

/// splitmix64: small, fast and good enough to drive a fuzzer.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(super) const MOVABLE: AllocFlags = AllocFlags::NO_WATERMARKS;
pub(super) const UNMOVABLE: AllocFlags = AllocFlags::NO_WATERMARKS.unmovable();

pub(super) fn pageblock_of(pfn: &Pfn) -> u64 {
    pfn.0 / PAGEBLOCK_NR_PAGES
}

pub(super) fn alloc_n(zone: &mut BuddyAllocator, n: u64, flags: AllocFlags) -> Vec<Pfn> {
    (0..n).map(|_| zone.alloc(Order::BASE, flags).unwrap()).collect()
}

/// A 16 MiB zone (8 pageblocks) with pageblock 0 full of unmovable
/// pages, then `movable_pageblocks` pageblocks full of movable ones.
pub(super) fn zone_with_full_unmovable_pageblock(movable_pageblocks: u64) -> BuddyAllocator {
    let mut zone = BuddyAllocator::new(pages(16 * MIB));
    let unmovable = alloc_n(&mut zone, PAGEBLOCK_NR_PAGES, UNMOVABLE);
    assert!(unmovable.iter().all(|pfn| pageblock_of(pfn) == 0));
    alloc_n(&mut zone, movable_pageblocks * PAGEBLOCK_NR_PAGES, MOVABLE);
    zone.check_invariants();
    zone
}

pub(super) fn free_range(zone: &mut BuddyAllocator, pfns: std::ops::Range<u64>) {
    for pfn in pfns {
        zone.free(Pfn(pfn), Order::BASE);
    }
    zone.check_invariants();
}
