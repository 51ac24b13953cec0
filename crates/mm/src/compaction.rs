//! Direct compaction: freeing an aligned block for a high-order allocation
//! by migrating the movable folios out of it.
//!
//! Models: mm/compaction.c (`compact_zone_order()`, `compaction_suitable()`)
//! and mm/migrate.c (`migrate_pages()`), simplified: the kernel's migrate
//! scanner walks up from the zone start while the free scanner walks down
//! from its end; the model picks, deterministically, the aligned block with
//! the fewest pages to move that holds nothing unmovable (page tables, the
//! huge zero folio, pinned folios), and moves each folio to the lowest free
//! block elsewhere. The choice is written down in docs/fidelity.md.

use std::collections::BTreeMap;

use crate::events::MmEvent;
use crate::page_alloc::AllocFlags;
use crate::stats::VmEvent;
use crate::types::*;
use crate::world::World;

impl World {
    /// Tries to make one free block of `order`. Returns true on success.
    pub(crate) fn compact_zone_order(&mut self, order: Order) -> bool {
        self.stats.count(VmEvent::CompactStall);
        let ok = self.try_compact(order);
        self.stats.count(if ok { VmEvent::CompactSuccess } else { VmEvent::CompactFail });
        ok
    }

    fn try_compact(&mut self, order: Order) -> bool {
        let block_pages = order.nr_pages();
        // compaction_suitable(): enough free memory above the low watermark.
        let wm = self.buddy.watermarks();
        if self.buddy.nr_free_pages() < wm.low + 2 * block_pages {
            return false;
        }
        // Occupancy per aligned block: movable pages, or unmovable.
        let mut used: BTreeMap<u64, u64> = BTreeMap::new();
        let mut unmovable: std::collections::BTreeSet<u64> = Default::default();
        for (_, folio) in self.folios.iter() {
            let block = folio.pfn.0 / block_pages;
            if folio.order >= order || folio.refcount != folio.mapcount() {
                unmovable.insert(block);
            } else {
                *used.entry(block).or_default() += folio.nr_pages();
            }
        }
        for (_, node) in self.pt.iter() {
            unmovable.insert(node.pfn.0 / block_pages);
            for d in node.deposited() {
                unmovable.insert(d.0 / block_pages);
            }
        }
        if let Some(hz) = self.huge_zero {
            unmovable.insert(hz.pfn.0 / block_pages);
        }
        let nr_blocks = self.buddy.nr_total_pages() / block_pages;
        let Some((&target, &to_move)) =
            used.iter().filter(|(b, _)| !unmovable.contains(b) && **b < nr_blocks).min_by_key(|(b, n)| (**n, **b))
        else {
            return false;
        };
        let start = Pfn(target * block_pages);
        if self.buddy.nr_free_pages() - self.buddy.nr_free_in_range(start, block_pages) < to_move + wm.min {
            return false;
        }
        // Isolate the block's free pieces so migration targets land elsewhere.
        let free_pieces: Vec<(Pfn, Order)> = self
            .buddy
            .free_blocks()
            .filter(|(p, o)| p.0 >= start.0 && p.0 + o.nr_pages() <= start.0 + block_pages)
            .collect();
        for (p, o) in &free_pieces {
            assert!(self.buddy.alloc_exact(*p, *o), "isolating a free block failed");
        }
        let movers: Vec<FolioId> = self
            .folios
            .iter()
            .filter(|(_, f)| f.pfn.0 >= start.0 && f.pfn.0 < start.0 + block_pages)
            .map(|(id, _)| id)
            .collect();
        let mut moved = Vec::new();
        let mut ok = true;
        for id in movers {
            let o = self.folios[id].order;
            match self.buddy.alloc(o, AllocFlags::WMARK_MIN) {
                Ok(new_pfn) => {
                    let old_pfn = std::mem::replace(&mut self.folios[id].pfn, new_pfn);
                    moved.push((old_pfn, o));
                    self.stats.count_n(VmEvent::PgmigrateSuccess, o.nr_pages());
                    self.events.emit(|| MmEvent::Migrate { order: o });
                    self.events.emit(|| MmEvent::Copied { bytes: o.bytes() });
                }
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        self.stats.count_n(VmEvent::CompactMigrateScanned, block_pages);
        // Give back what was isolated and what the movers left.
        for (p, o) in free_pieces.into_iter().chain(moved) {
            self.buddy.free(p, o);
        }
        ok
    }
}
