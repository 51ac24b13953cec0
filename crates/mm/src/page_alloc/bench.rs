//! Timings of alloc+free round trips on large, steady and fragmented
//! zones. They only print: run with
//! `cargo test --release -p thpsim-mm bench -- --nocapture`.

use super::test_util::*;
use super::{AllocFlags, BuddyAllocator};
use crate::types::{Order, Pfn};

/// Prints the best of five timings, to see past other load on the host.
fn time_round_trips(name: &str, zone: &mut BuddyAllocator, order: Order, iterations: u64) {
    time_round_trips_with(name, zone, order, AllocFlags::WMARK_LOW, iterations);
}

/// `time_round_trips()` with the given flags.
fn time_round_trips_with(name: &str, zone: &mut BuddyAllocator, order: Order, flags: AllocFlags, iterations: u64) {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        for _ in 0..iterations {
            let pfn = zone.alloc(order, flags).expect("benchmark allocation failed");
            zone.free(std::hint::black_box(pfn), order);
        }
        best = best.min(started.elapsed().as_nanos() as f64 / iterations as f64);
    }
    println!("page_alloc bench: {name}: {best:.1} ns per alloc+free of {order}");
}

#[test]
fn bench_alloc_free_round_trips() {
    let iterations = if cfg!(debug_assertions) { 500 } else { 500_000 };
    // Worst case: every round trip splits an order-18 block all the way
    // down and merges it all the way back.
    let mut boot = BuddyAllocator::new(ONE_TIB_PAGES);
    time_round_trips("1 TiB boot state (full split+merge)", &mut boot, Order::BASE, iterations);
    time_round_trips("1 TiB boot state (full split+merge)", &mut boot, Order::PMD, iterations);

    // Steady state: 16 GiB, half allocated in a random mix of orders.
    let mut zone = BuddyAllocator::new(pages(16 * GIB));
    let mut rng = Rng(0xbe_4c4);
    let mut held = Vec::new();
    while zone.nr_free_pages() > pages(8 * GIB) {
        let order = if rng.below(4) == 0 { Order::PMD } else { Order::BASE };
        held.push((zone.alloc(order, AllocFlags::NO_WATERMARKS).unwrap(), order));
        if rng.below(3) == 0 {
            let (pfn, order) = held.swap_remove(rng.below(held.len() as u64) as usize);
            zone.free(pfn, order);
        }
    }
    println!(
        "page_alloc bench: steady state has {} free blocks, buddyinfo {:?}",
        zone.buddyinfo().iter().sum::<u64>(),
        zone.buddyinfo()
    );
    time_round_trips("16 GiB half-used steady state", &mut zone, Order::BASE, iterations);
    time_round_trips("16 GiB half-used steady state", &mut zone, Order::PMD, iterations);

    // Fragmented: every page allocated, then one pageblock in eight
    // freed whole and every other pageblock's pages freed at random, so
    // the low orders hold tens of thousands of scattered blocks.
    let nr_pages = if cfg!(debug_assertions) { pages(64 * MIB) } else { pages(GIB) };
    let mut zone = BuddyAllocator::new(nr_pages);
    drain_to(&mut zone, 0);
    for pageblock in (0..nr_pages).step_by(512) {
        let whole = rng.below(8) == 0;
        for pfn in pageblock..pageblock + 512 {
            if whole || rng.below(2) == 0 {
                zone.free(Pfn(pfn), Order::BASE);
            }
        }
    }
    println!(
        "page_alloc bench: fragmented zone has {} free blocks, buddyinfo {:?}",
        zone.buddyinfo().iter().sum::<u64>(),
        zone.buddyinfo()
    );
    time_round_trips("fragmented", &mut zone, Order::BASE, iterations);
    time_round_trips("fragmented", &mut zone, Order::PMD, iterations);

    // Page tables: one unmovable page held, so that its pageblock keeps
    // free pages on the unmovable lists, then unmovable round trips
    // from those lists, and movable ones beside them.
    let held = zone.alloc(Order::BASE, AllocFlags::WMARK_LOW.unmovable()).unwrap();
    let unmovable = AllocFlags::WMARK_LOW.unmovable();
    time_round_trips_with("fragmented, unmovable", &mut zone, Order::BASE, unmovable, iterations);
    time_round_trips("fragmented, unmovable pageblock held", &mut zone, Order::BASE, iterations);
    zone.free(held, Order::BASE);
}
