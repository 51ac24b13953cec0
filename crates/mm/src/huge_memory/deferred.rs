//! The deferred-split queue: large folios that may be split later, either
//! because part of them was unmapped or because most of their pages were
//! never written (the underused-THP shrinker), and the shrinker that splits
//! them.
//!
//! Models: mm/huge_memory.c (Linux 6.18): `deferred_split_folio()`,
//! `folio_unqueue_deferred_split()`, `deferred_split_scan()`,
//! `thp_underused()`. The queue is one list (one node, no memcg). Removal is
//! lazy: an entry counts only while its folio is queued under the same
//! sequence number, so taking a folio off is O(1).

use crate::folio::FolioTable;
use crate::stats::{MthpStat, VmEvent};
use crate::types::*;
use crate::world::World;

impl World {
    pub(crate) fn deferred_split_add_tail(&mut self, id: FolioId) {
        let seq = self.next_deferred_seq;
        self.next_deferred_seq += 1;
        self.deferred_queue.push((id, seq));
        self.deferred_len += 1;
        let d = &mut self.folios[id].deferred;
        d.queued = true;
        d.seq = seq;
        // Drop dead entries once they outnumber the live ones.
        if self.deferred_queue.len() > 2 * self.deferred_len + 64 {
            let folios = &self.folios;
            self.deferred_queue.retain(|&(f, s)| Self::deferred_entry_live(folios, f, s));
        }
    }

    fn deferred_entry_live(folios: &FolioTable, id: FolioId, seq: u64) -> bool {
        folios.get(id).is_some_and(|f| f.deferred.queued && f.deferred.seq == seq)
    }

    /// The queued folios in list order.
    pub(crate) fn deferred_split_queue(&self) -> Vec<FolioId> {
        self.deferred_queue
            .iter()
            .filter(|&&(f, s)| Self::deferred_entry_live(&self.folios, f, s))
            .map(|&(f, _)| f)
            .collect()
    }

    /// Takes a folio off the queue, clearing `partially_mapped` with its
    /// gauge, as `folio_unqueue_deferred_split()` does.
    pub(crate) fn deferred_split_remove(&mut self, id: FolioId) {
        let folio = &mut self.folios[id];
        assert!(folio.deferred.queued, "{id:?} is not on the deferred queue");
        folio.deferred.queued = false;
        self.deferred_len -= 1;
        if folio.deferred.partially_mapped {
            folio.deferred.partially_mapped = false;
            let order = folio.order;
            self.stats.mthp(order, MthpStat::NrAnonPartiallyMapped, -1);
        }
    }

    pub fn deferred_split_queue_len(&self) -> usize {
        self.deferred_len
    }

    /// `deferred_split_folio()`: queues a large folio for the deferred-split
    /// shrinker; `partially_mapped` marks it (and counts it) as having
    /// unmapped pages.
    pub(crate) fn deferred_split_folio(&mut self, id: FolioId, partially_mapped: bool) {
        let folio = &self.folios[id];
        if folio.order.get() <= 1 {
            return;
        }
        if !partially_mapped && !self.config.shrink_underused {
            return;
        }
        let order = folio.order;
        if partially_mapped && !folio.deferred.partially_mapped {
            self.folios[id].deferred.partially_mapped = true;
            if order >= Order::PMD {
                self.stats.count(VmEvent::ThpDeferredSplitPage);
            }
            self.stats.mthp(order, MthpStat::SplitDeferred, 1);
            self.stats.mthp(order, MthpStat::NrAnonPartiallyMapped, 1);
        }
        if !self.folios[id].deferred.queued {
            self.deferred_split_add_tail(id);
        }
    }

    /// `thp_underused()`: more all-zero pages than `max_ptes_none` allows.
    fn thp_underused(&self, id: FolioId) -> bool {
        let max_ptes_none = self.config.khugepaged.max_ptes_none as u64;
        let nr = self.folios[id].nr_pages();
        if max_ptes_none == Order::PMD.nr_pages() - 1 {
            return false;
        }
        let (mut zero, mut filled) = (0, 0);
        for p in 0..nr {
            if self.folios[id].written.get(p) {
                filled += 1;
                if filled >= Order::PMD.nr_pages() - max_ptes_none {
                    return false;
                }
            } else {
                zero += 1;
                if zero > max_ptes_none {
                    return true;
                }
            }
        }
        false
    }

    /// `deferred_split_scan()` over the whole queue: splits partially mapped
    /// folios and underused ones; returns how many it split.
    pub(crate) fn deferred_split_scan(&mut self) -> u64 {
        let queued = self.deferred_split_queue();
        let mut split = 0;
        for id in queued {
            let partially_mapped = self.folios[id].deferred.partially_mapped;
            let mut underused = false;
            let mut did_split = false;
            if !partially_mapped {
                underused = self.thp_underused(id);
            }
            if (partially_mapped || underused) && self.split_folio(id).is_ok() {
                did_split = true;
                split += 1;
                if underused {
                    self.stats.count(VmEvent::ThpUnderusedSplitPage);
                }
            }
            if !did_split && !self.folios[id].deferred.partially_mapped {
                // Used (or failed while underused): off the queue for good.
                self.deferred_split_remove(id);
            }
        }
        split
    }
}
