//! The allocator's invariant checker, which the model's own checker
//! (`crate::invariants`) runs after every public operation in debug and
//! test builds. It checks over the whole zone what CONFIG_DEBUG_VM's
//! `VM_BUG_ON`s in `__free_one_page()` and `expand()` and
//! `check_new_page()` (mm/page_alloc.c, Linux 6.18) catch one block at a
//! time, and that the model's own indexes agree with the free lists.

use super::{BuddyAllocator, PAGEBLOCK_NR_PAGES};
use crate::types::{Order, Pfn};

impl BuddyAllocator {
    /// Checks the free lists: every free block lies in the zone and is
    /// aligned to its order, no two overlap, no free block has a free buddy
    /// of its own order (the two would have merged), every free block below
    /// `PAGEBLOCK_ORDER` is on the list of its pageblock's migratetype, the
    /// pageblocks of a larger free block have no type (read `Movable`), the
    /// non-empty-order masks match the free lists, and `NR_FREE_PAGES` equals
    /// the sum of the free blocks. Panics on the first break, saying what,
    /// where, expected and found. Visits every free block.
    pub fn check_invariants(&self) {
        for (index, area) in self.free_lists.iter().enumerate() {
            let bit = self.nonempty_lists & (1 << index) != 0;
            assert_eq!(
                bit,
                !area.is_empty(),
                "buddy allocator: nonempty_lists bit {index} (order-{}) is {bit} but the free list holds {} \
                 blocks\n{self:?}",
                area.order,
                area.len(),
            );
        }
        self.pageblock_types.check(self.nr_pages);
        let mut sum = 0u64;
        for (order, list_type, area) in self.all_free_areas() {
            let size = 1u64 << order;
            area.check();
            for start in area.iter() {
                // A free list stores block numbers, so this holds unless
                // decoding them is wrong.
                assert_eq!(
                    start % size,
                    0,
                    "buddy allocator: free block pfn {start:#x} order-{order} is not aligned to its order: \
                     expected pfn % {size:#x} == 0, found {:#x}\n{self:?}",
                    start % size,
                );
                assert!(
                    start + size <= self.nr_pages,
                    "buddy allocator: free block pfn {start:#x} order-{order} ends at pfn {:#x}, past the \
                     zone's end {:#x}\n{self:?}",
                    start + size,
                    self.nr_pages,
                );
                if order < Order::MAX.get() as usize {
                    let buddy = start ^ size;
                    assert!(
                        !self.free_areas_of_order(order).any(|area| area.contains(buddy)),
                        "buddy allocator: free block pfn {start:#x} order-{order} and its buddy pfn {buddy:#x} \
                         are both free but not merged into order-{}\n{self:?}",
                        order + 1,
                    );
                }
                match list_type {
                    Some(mt) => {
                        let pageblock_type = self.pageblock_types.get(start);
                        assert_eq!(
                            pageblock_type,
                            mt,
                            "buddy allocator: free block pfn {start:#x} order-{order} is on the {mt:?} free list \
                             but its pageblock pfn {:#x} is {pageblock_type:?}\n{self:?}",
                            start & !(PAGEBLOCK_NR_PAGES - 1),
                        );
                    }
                    None => {
                        let typed = self.pageblock_types.first_unmovable_in(start, start + size);
                        assert_eq!(
                            typed, None,
                            "buddy allocator: free block pfn {start:#x} order-{order} is whole free pageblocks, \
                             which have no type, but a pageblock in it is marked Unmovable\n{self:?}",
                        );
                    }
                }
                sum += size;
            }
        }
        assert_eq!(
            sum, self.nr_free,
            "buddy allocator: NR_FREE_PAGES is {} but the free blocks add up to {sum} pages\n{self:?}",
            self.nr_free,
        );
        let mut previous: Option<(Pfn, Order)> = None;
        for (pfn, order) in self.free_blocks() {
            if let Some((prev_pfn, prev_order)) = previous {
                let prev_end = prev_pfn.0 + prev_order.nr_pages();
                assert!(
                    prev_end <= pfn.0,
                    "buddy allocator: free block pfn {:#x} {prev_order} (pages {:#x}..{prev_end:#x}) overlaps \
                     free block pfn {:#x} {order} (pages {:#x}..{:#x})\n{self:?}",
                    prev_pfn.0,
                    prev_pfn.0,
                    pfn.0,
                    pfn.0,
                    pfn.0 + order.nr_pages(),
                );
            }
            previous = Some((pfn, order));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_alloc::test_util::*;
    use crate::page_alloc::{AllocFlags, Migratetype};

    #[test]
    fn check_invariants_reports_unmerged_buddies_and_bad_counts() {
        let mut zone = BuddyAllocator::new(1024);
        zone.alloc(Order::BASE, AllocFlags::NO_WATERMARKS).unwrap();
        let mut broken = zone.clone();
        // Put the allocated page back behind the allocator's back, unmerged.
        broken.add_to_free_area(0, 0, Migratetype::Movable);
        broken.nr_free += 1;
        let message = panic_message(|| broken.check_invariants());
        assert!(message.contains("free block pfn 0x0 order-0 and its buddy pfn 0x1 are both free"), "{message}");

        let mut broken = zone.clone();
        broken.nr_free += 3;
        let message = panic_message(|| broken.check_invariants());
        assert!(message.contains("NR_FREE_PAGES is 1026 but the free blocks add up to 1023 pages"), "{message}");

        // 0    4 5 6   8
        // |held|h|f|o1 |o3 ...   then mark 4..8 free as one order-2 block.
        let mut zone = BuddyAllocator::new(1024);
        assert_eq!(zone.alloc(order(2), AllocFlags::NO_WATERMARKS), Ok(Pfn(0)));
        assert_eq!(zone.alloc(Order::BASE, AllocFlags::NO_WATERMARKS), Ok(Pfn(4)));
        let mut broken = zone.clone();
        broken.add_to_free_area(4, 2, Migratetype::Movable);
        broken.nr_free += 4;
        let message = panic_message(|| broken.check_invariants());
        assert!(
            message.contains("free block pfn 0x4 order-2 (pages 0x4..0x8) overlaps free block pfn 0x5 order-0"),
            "{message}"
        );
    }

    #[test]
    fn check_invariants_reports_free_lists_that_disagree_with_pageblock_types() {
        let mut zone = BuddyAllocator::new(1024);
        assert_eq!(zone.alloc(Order::BASE, UNMOVABLE), Ok(Pfn(0)));
        // Move the free page at pfn 1 to the movable list behind the
        // allocator's back.
        let mut broken = zone.clone();
        assert!(broken.del_from_free_area(1, 0, Migratetype::Unmovable));
        broken.add_to_free_area(1, 0, Migratetype::Movable);
        let message = panic_message(|| broken.check_invariants());
        assert!(
            message.contains(
                "free block pfn 0x1 order-0 is on the Movable free list but its pageblock pfn 0x0 is Unmovable"
            ),
            "{message}"
        );

        // Mark the wholly free pageblock at 512 unmovable.
        let mut broken = zone.clone();
        broken.pageblock_types.set_range(512, PAGEBLOCK_NR_PAGES, Migratetype::Unmovable);
        let message = panic_message(|| broken.check_invariants());
        assert!(
            message.contains(
                "free block pfn 0x200 order-9 is whole free pageblocks, which have no type, but a pageblock \
                 in it is marked Unmovable"
            ),
            "{message}"
        );
    }
}
