//! The zone's free lists, `zone->free_area[order].free_list[migratetype]`:
//! which list holds a block of a given order and migratetype, the mask of
//! the non-empty lists, and adding, removing and finding free blocks.
//!
//! Plays the part of mm/page_alloc.c's (Linux 6.18) `__add_to_free_list()`,
//! `__del_page_from_free_list()` and `get_page_from_free_area()`, and of
//! the `PageBuddy()` and `buddy_order()` lookups that find the free block
//! holding a page. Each list is a `FreeArea` ordered by PFN rather than a
//! LIFO list.

use super::free_area::FreeArea;
use super::{BuddyAllocator, Migratetype, NR_PAGE_ORDERS, PB_ORDER};
use crate::types::Order;

/// The orders with a free list per migratetype, `0..PB_ORDER`.
pub(super) const NR_TYPED_ORDERS: usize = PB_ORDER;
/// The free lists: one per order, then one more per order below
/// `PAGEBLOCK_ORDER` (see `BuddyAllocator::free_lists`).
pub(super) const NR_FREE_LISTS: usize = NR_PAGE_ORDERS + NR_TYPED_ORDERS;
/// Mask bits, one per order: the orders below `PAGEBLOCK_ORDER`.
pub(super) const TYPED_ORDERS_MASK: u32 = (1 << NR_TYPED_ORDERS) - 1;
/// Mask bits, one per order: every order.
const ALL_ORDERS_MASK: u32 = (1 << NR_PAGE_ORDERS) - 1;
/// Mask bits, one per order: `PAGEBLOCK_ORDER` and above.
const WHOLE_ORDERS_MASK: u32 = ALL_ORDERS_MASK & !TYPED_ORDERS_MASK;

impl BuddyAllocator {
    /// The free list that holds blocks of `order` in pageblocks of type
    /// `mt`: the type's own below `PAGEBLOCK_ORDER`, the shared one above.
    #[inline(always)]
    pub(super) fn free_area(&self, order: usize, mt: Migratetype) -> &FreeArea {
        &self.free_lists[list_index(order, mt)]
    }

    /// Every free list of `order`: one per type below `PAGEBLOCK_ORDER`,
    /// the shared one above.
    pub(super) fn free_areas_of_order(&self, order: usize) -> impl Iterator<Item = &FreeArea> {
        let unmovable = (order < PB_ORDER).then(|| &self.free_lists[NR_PAGE_ORDERS + order]);
        std::iter::once(&self.free_lists[order]).chain(unmovable)
    }

    /// Every free list once, as (order, its type or `None` if shared, list).
    pub(super) fn all_free_areas(&self) -> impl Iterator<Item = (usize, Option<Migratetype>, &FreeArea)> {
        self.free_lists.iter().enumerate().map(|(index, area)| {
            let order = index % NR_PAGE_ORDERS;
            let mt = if index >= NR_PAGE_ORDERS {
                Some(Migratetype::Unmovable)
            } else if order < PB_ORDER {
                Some(Migratetype::Movable)
            } else {
                None
            };
            (order, mt, area)
        })
    }

    /// The orders whose list an allocation of `mt` searches first is
    /// non-empty: its own below `PAGEBLOCK_ORDER`, the shared ones above.
    #[inline(always)]
    pub(super) fn nonempty_orders(&self, mt: Migratetype) -> u32 {
        let lists = self.nonempty_lists;
        ((lists >> list_offset(mt)) & TYPED_ORDERS_MASK) | (lists & WHOLE_ORDERS_MASK)
    }

    /// The orders with a free block of either type.
    #[inline(always)]
    pub(super) fn all_nonempty_orders(&self) -> u32 {
        (self.nonempty_lists & ALL_ORDERS_MASK) | (self.nonempty_lists >> NR_PAGE_ORDERS)
    }

    /// Adds a block to the free list of `order` for `mt`; false if it was
    /// already there.
    #[inline(always)]
    pub(super) fn add_to_free_area(&mut self, start: u64, order: usize, mt: Migratetype) -> bool {
        self.add_to_list(start, list_index(order, mt))
    }

    /// Removes a block from the free list of `order` for `mt`; false if it
    /// was not there.
    #[inline(always)]
    pub(super) fn del_from_free_area(&mut self, start: u64, order: usize, mt: Migratetype) -> bool {
        self.del_from_list(start, list_index(order, mt))
    }

    /// Adds a block to `free_lists[index]`; false if it was already there.
    #[inline(always)]
    pub(super) fn add_to_list(&mut self, start: u64, index: usize) -> bool {
        self.nonempty_lists |= 1 << index;
        self.free_lists[index].insert(start)
    }

    /// Removes a block from `free_lists[index]`; false if it was not there.
    #[inline(always)]
    pub(super) fn del_from_list(&mut self, start: u64, index: usize) -> bool {
        if self.nonempty_lists & (1 << index) == 0 {
            return false;
        }
        let area = &mut self.free_lists[index];
        let removed = area.remove(start);
        if area.is_empty() {
            self.nonempty_lists &= !(1 << index);
        }
        removed
    }

    /// Removes and returns the lowest block on the free list of `order` for
    /// `mt`, which must not be empty.
    #[inline(always)]
    pub(super) fn pop_first_from_free_area(&mut self, order: usize, mt: Migratetype) -> u64 {
        let index = list_index(order, mt);
        let area = &mut self.free_lists[index];
        let start = area.pop_first().expect("nonempty_lists has a bit for an empty free list");
        if area.is_empty() {
            self.nonempty_lists &= !(1 << index);
        }
        start
    }

    /// The free block, of `min_order` or larger, that contains page `pfn`.
    /// Below `PAGEBLOCK_ORDER` only the list of the pageblock's type can
    /// hold it.
    pub(super) fn free_block_containing(&self, pfn: u64, min_order: usize) -> Option<(u64, usize)> {
        let mt = self.pageblock_types.get(pfn);
        orders_in(self.nonempty_orders(mt), min_order).find_map(|order| {
            let start = pfn & !((1u64 << order) - 1);
            self.free_area(order, mt).contains(start).then_some((start, order))
        })
    }

    /// Some free block that shares a page with the aligned block of `order`
    /// at `start`: one that contains it, or a smaller one inside it.
    pub(super) fn find_overlapping_free_block(&self, start: u64, order: Order) -> Option<(u64, usize)> {
        let order = order.get() as usize;
        let end = start + (1u64 << order);
        self.free_block_containing(start, order).or_else(|| {
            orders_in(self.all_nonempty_orders(), 0).take_while(|&o| o < order).find_map(|o| {
                self.free_areas_of_order(o).find_map(|area| area.range(start, end).next().map(|block| (block, o)))
            })
        })
    }
}

/// The index in `BuddyAllocator::free_lists` of the list for blocks of
/// `order` in pageblocks of type `mt`.
#[inline(always)]
pub(super) fn list_index(order: usize, mt: Migratetype) -> usize {
    list_index_from(order, list_offset(mt))
}

/// What `list_index()` adds to an order below `PAGEBLOCK_ORDER` for `mt`,
/// for loops over orders to compute once.
#[inline(always)]
pub(super) const fn list_offset(mt: Migratetype) -> usize {
    match mt {
        Migratetype::Unmovable => NR_PAGE_ORDERS,
        Migratetype::Movable => 0,
    }
}

/// `list_index()` with the type's `list_offset()`.
#[inline(always)]
pub(super) fn list_index_from(order: usize, offset: usize) -> usize {
    if order < PB_ORDER {
        order + offset
    } else {
        order
    }
}

/// The smallest order at or above `order` whose bit is set in `mask`.
#[inline(always)]
pub(super) fn smallest_order_in(mask: u32, order: usize) -> Option<usize> {
    let above = mask >> order;
    (above != 0).then(|| order + above.trailing_zeros() as usize)
}

/// The orders at or above `order` whose bits are set in `mask`, ascending.
pub(super) fn orders_in(mask: u32, order: usize) -> impl Iterator<Item = usize> {
    (order..NR_PAGE_ORDERS).filter(move |&o| mask & (1 << o) != 0)
}
