//! The folio table: every allocated anonymous folio with the kernel's
//! accounting fields.
//!
//! Models: `struct folio` (include/linux/mm_types.h) and its accessors in
//! include/linux/mm.h and include/linux/rmap.h: `_refcount`,
//! `_entire_mapcount`, `_large_mapcount`, `_nr_pages_mapped`, per-page
//! `_mapcount`, `PageAnonExclusive`, `_pincount`, and `CONFIG_MM_ID`'s
//! `_mm_id[2]`, `_mm_id_mapcount[2]` and "maybe mapped shared" bit.
//! Counts are stored as plain counts starting at 0 where the kernel stores
//! them biased by -1. Only `rmap.rs` and `gup.rs` change mapcounts and pins.

use crate::mman::{pattern_word, Fill, NONZERO_FILL};
use crate::types::{FolioId, MmId, Order, Pfn};

/// `GUP_PIN_COUNTING_BIAS`: what one FOLL_PIN adds to a small folio's refcount.
pub const GUP_PIN_COUNTING_BIAS: u32 = 1024;

/// One bit per page of a folio. The first 64 pages' bits are inline; a
/// larger folio allocates the rest on the first bit set beyond them, so a
/// THP whose first pages alone are marked costs no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageBits {
    first: u64,
    /// Words for pages 64 and up, allocated lazily; `rest_words` of them.
    rest: Option<Box<[u64]>>,
    rest_words: u32,
}

impl PageBits {
    pub fn new(nr_pages: u64) -> Self {
        PageBits { first: 0, rest: None, rest_words: nr_pages.saturating_sub(64).div_ceil(64) as u32 }
    }
    #[inline]
    pub fn get(&self, i: u64) -> bool {
        if i < 64 {
            return self.first >> i & 1 != 0;
        }
        self.rest.as_ref().is_some_and(|ws| ws[(i / 64 - 1) as usize] >> (i % 64) & 1 != 0)
    }
    #[inline]
    pub fn set(&mut self, i: u64, value: bool) {
        let (word, bit) = if i < 64 {
            (&mut self.first, i)
        } else {
            if !value && self.rest.is_none() {
                return;
            }
            let n = self.rest_words as usize;
            let ws = self.rest.get_or_insert_with(|| vec![0; n].into_boxed_slice());
            (&mut ws[(i / 64 - 1) as usize], i % 64)
        };
        if value {
            *word |= 1 << bit;
        } else {
            *word &= !(1 << bit);
        }
    }
    pub fn count_ones(&self) -> u64 {
        self.first.count_ones() as u64
            + self.rest.iter().flat_map(|ws| ws.iter()).map(|w| w.count_ones() as u64).sum::<u64>()
    }
    /// The bits of pages `first..first + nr` as a new set.
    pub fn slice(&self, first: u64, nr: u64) -> PageBits {
        let mut out = PageBits::new(nr);
        for i in 0..nr {
            if self.get(first + i) {
                out.set(i, true);
            }
        }
        out
    }
}

/// Why a folio is on the deferred-split queue, and whether it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeferredState {
    /// On `ds_queue->split_queue` (`!list_empty(&folio->_deferred_list)`).
    pub queued: bool,
    /// `folio_test_partially_mapped()`.
    pub partially_mapped: bool,
    /// The queue entry's sequence number while queued.
    pub seq: u64,
}

/// An anonymous folio.
#[derive(Clone, Debug)]
pub struct Folio {
    pub(crate) pfn: Pfn,
    pub(crate) order: Order,
    /// `folio_ref_count()`: one per page-table entry that maps it, plus pins
    /// (1 each on a large folio, `GUP_PIN_COUNTING_BIAS` each on a small
    /// one), plus transient references the model takes and drops within one
    /// operation.
    pub(crate) refcount: u32,
    /// PMD (or PUD) mappings of the whole folio. The kernel's
    /// `_entire_mapcount` starts at -1; this starts at 0.
    pub(crate) entire_mapcount: u32,
    /// All mappings of a large folio: each PTE counts 1, each PMD counts 1
    /// (`_large_mapcount`, plain count). Equals the page's PTE mapcount for a
    /// small folio.
    pub(crate) large_mapcount: u32,
    /// Pages of this folio mapped by at least one PTE
    /// (`_nr_pages_mapped & FOLIO_PAGES_MAPPED`).
    pub(crate) nr_pages_mapped: u32,
    /// PTE mappings per page (`page->_mapcount + 1`); allocated on the first
    /// PTE mapping of a large folio.
    page_mapcount: Option<Box<[u32]>>,
    /// `PageAnonExclusive()` per page. For a PMD mapping only page 0's bit
    /// is meaningful, as in the kernel.
    pub(crate) anon_exclusive: PageBits,
    /// Per page: holds non-zero data. Splitting remaps all-zero subpages to
    /// the shared zero page, and the underused shrinker counts zero pages.
    /// Kept equal to "the page's word is not 0" by `set_word()`.
    pub(crate) written: PageBits,
    /// The 64-bit word at each page's start, where stores land. Allocated on
    /// the first store of a value other than 0 and `NONZERO_FILL`; without
    /// it a page's word is `NONZERO_FILL` when written and 0 otherwise, so a
    /// THP costs nothing here unless a scenario stores patterns into it.
    words: Option<Box<[u64]>>,
    /// `CONFIG_MM_ID`: up to two mms that map this large folio, with their
    /// mapping counts; `maybe_mapped_shared` is `FOLIO_MM_IDS_SHARED_BIT`.
    pub(crate) mm_ids: [Option<MmId>; 2],
    pub(crate) mm_id_mapcount: [u32; 2],
    pub(crate) maybe_mapped_shared: bool,
    /// FOLL_PIN pins (`_pincount` on large folios).
    pub(crate) pincount: u32,
    /// The linear page index (`folio->index`) of the folio's first page in
    /// the anonymous VMA that created it; rmap walks find mappings by it.
    pub(crate) index: u64,
    /// The anon_vma root: the family of mms (a fork tree) that may map it.
    pub(crate) family: u32,
    pub(crate) deferred: DeferredState,
    /// MADV_FREE cleared `PG_swapbacked`: reclaim may discard clean pages.
    pub(crate) lazyfree: bool,
    /// `PG_dirty`: set when a dirty PMD is split (`__split_huge_pmd_locked()`)
    /// and kept by a folio split; a freshly faulted folio is dirty in its
    /// PTEs only. MADV_FREE checks the mapcount only of a dirty folio.
    pub(crate) dirty: bool,
    /// `PG_referenced`/young, as khugepaged and reclaim read it.
    pub(crate) referenced: bool,
    /// On the inactive LRU list (MADV_COLD deactivates).
    pub(crate) inactive: bool,
}

impl Folio {
    pub(crate) fn new(pfn: Pfn, order: Order, index: u64, family: u32) -> Folio {
        let nr = order.nr_pages();
        Folio {
            pfn,
            order,
            refcount: 0,
            entire_mapcount: 0,
            large_mapcount: 0,
            nr_pages_mapped: 0,
            page_mapcount: None,
            anon_exclusive: PageBits::new(nr),
            written: PageBits::new(nr),
            words: None,
            mm_ids: [None; 2],
            mm_id_mapcount: [0; 2],
            maybe_mapped_shared: false,
            pincount: 0,
            index,
            family,
            deferred: DeferredState::default(),
            lazyfree: false,
            dirty: false,
            referenced: true,
            inactive: false,
        }
    }

    pub fn pfn(&self) -> Pfn {
        self.pfn
    }
    pub fn order(&self) -> Order {
        self.order
    }
    pub fn nr_pages(&self) -> u64 {
        self.order.nr_pages()
    }
    pub fn is_large(&self) -> bool {
        self.order.is_large()
    }
    pub fn refcount(&self) -> u32 {
        self.refcount
    }
    pub fn entire_mapcount(&self) -> u32 {
        self.entire_mapcount
    }
    pub fn nr_pages_mapped(&self) -> u32 {
        self.nr_pages_mapped
    }
    pub fn pincount(&self) -> u32 {
        self.pincount
    }
    pub fn deferred(&self) -> DeferredState {
        self.deferred
    }
    pub fn page_is_written(&self, page: u64) -> bool {
        self.written.get(page)
    }

    /// The 64-bit word at the start of `page`.
    pub fn word(&self, page: u64) -> u64 {
        match &self.words {
            Some(words) => words[page as usize],
            None if self.written.get(page) => u64::from(NONZERO_FILL),
            None => 0,
        }
    }

    /// Sets the word at the start of `page` (the page's other bytes are
    /// zero in the model), keeping `written` true to it.
    pub(crate) fn set_word(&mut self, page: u64, word: u64) {
        self.written.set(page, word != 0);
        if self.words.is_none() && (word == 0 || word == u64::from(NONZERO_FILL)) {
            return;
        }
        let nr = self.nr_pages() as usize;
        let written = &self.written;
        let words = self.words.get_or_insert_with(|| {
            (0..nr as u64).map(|p| if written.get(p) { u64::from(NONZERO_FILL) } else { 0 }).collect()
        });
        words[page as usize] = word;
    }

    /// A store of `fill` into page `page` of the touched range (page
    /// `index_in_range` of it): a byte for `NonZero` and `Zero`, a word for
    /// a pattern.
    pub(crate) fn store(&mut self, page: u64, fill: Fill, index_in_range: u64) {
        let old = self.word(page);
        let word = match fill {
            Fill::NonZero => (old & !0xff) | u64::from(NONZERO_FILL),
            Fill::Zero => old & !0xff,
            Fill::Pattern(tag) => pattern_word(tag, index_in_range),
        };
        self.set_word(page, word);
    }

    /// PTE mappings of one page (`page->_mapcount + 1`, without the entire mapcount).
    pub fn page_pte_mapcount(&self, page: u64) -> u32 {
        if !self.is_large() {
            // A small folio's only page: every mapping is a PTE mapping.
            return self.large_mapcount;
        }
        self.page_mapcount.as_ref().map_or(0, |m| m[page as usize])
    }

    pub(crate) fn page_pte_mapcount_mut(&mut self, page: u64) -> &mut u32 {
        let nr = self.nr_pages() as usize;
        &mut self.page_mapcount.get_or_insert_with(|| vec![0; nr].into_boxed_slice())[page as usize]
    }

    /// Drops the per-page array once no PTE maps the folio, so a PMD-mapped
    /// THP costs no per-page memory.
    pub(crate) fn trim_page_mapcounts(&mut self) {
        if self.nr_pages_mapped == 0 {
            self.page_mapcount = None;
        }
    }

    /// `folio_precise_page_mapcount()`: PTE mappings of the page plus
    /// mappings of the whole folio.
    pub fn precise_page_mapcount(&self, page: u64) -> u32 {
        self.page_pte_mapcount(page) + self.entire_mapcount
    }

    /// `folio_mapcount()`: all mappings of the folio.
    pub fn mapcount(&self) -> u32 {
        self.large_mapcount
    }

    /// `folio_mapped()`.
    pub fn mapped(&self) -> bool {
        self.large_mapcount > 0
    }

    /// `folio_maybe_dma_pinned()`.
    pub fn maybe_dma_pinned(&self) -> bool {
        if self.is_large() {
            self.pincount > 0
        } else {
            self.refcount >= GUP_PIN_COUNTING_BIAS
        }
    }

    /// `folio_maybe_mapped_shared()` with `CONFIG_MM_ID`: a small folio is
    /// shared when mapped more than once; a large one when its
    /// maybe-shared bit is set.
    pub fn maybe_mapped_shared(&self) -> bool {
        if self.is_large() {
            self.maybe_mapped_shared
        } else {
            self.large_mapcount > 1
        }
    }

    /// Whether every page is mapped by some PTE or the folio is mapped whole.
    pub fn entirely_mapped(&self) -> bool {
        self.entire_mapcount > 0
    }
}

/// An arena of folios with id reuse, deterministic: the most recently
/// freed id is taken first.
#[derive(Clone, Debug, Default)]
pub struct FolioTable {
    slots: Vec<Option<Folio>>,
    free_ids: Vec<u32>,
    nr_live: u64,
}

impl FolioTable {
    pub(crate) fn insert(&mut self, folio: Folio) -> FolioId {
        self.nr_live += 1;
        if let Some(id) = self.free_ids.pop() {
            self.slots[id as usize] = Some(folio);
            FolioId(id)
        } else {
            self.slots.push(Some(folio));
            FolioId(self.slots.len() as u32 - 1)
        }
    }

    pub(crate) fn remove(&mut self, id: FolioId) -> Folio {
        let folio = self.slots[id.index()].take().unwrap_or_else(|| panic!("{id:?} freed twice"));
        self.free_ids.push(id.0);
        self.nr_live -= 1;
        folio
    }

    pub fn get(&self, id: FolioId) -> Option<&Folio> {
        self.slots.get(id.index()).and_then(Option::as_ref)
    }

    pub fn len(&self) -> u64 {
        self.nr_live
    }

    pub fn is_empty(&self) -> bool {
        self.nr_live == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (FolioId, &Folio)> {
        self.slots.iter().enumerate().filter_map(|(i, f)| f.as_ref().map(|f| (FolioId(i as u32), f)))
    }
}

impl std::ops::Index<FolioId> for FolioTable {
    type Output = Folio;
    fn index(&self, id: FolioId) -> &Folio {
        self.slots[id.index()].as_ref().unwrap_or_else(|| panic!("{id:?} is not a live folio"))
    }
}

impl std::ops::IndexMut<FolioId> for FolioTable {
    fn index_mut(&mut self, id: FolioId) -> &mut Folio {
        self.slots[id.index()].as_mut().unwrap_or_else(|| panic!("{id:?} is not a live folio"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_bits_inline_and_boxed() {
        for nr in [1, 16, 64, 512] {
            let mut b = PageBits::new(nr);
            b.set(0, true);
            b.set(nr - 1, true);
            assert!(b.get(0) && b.get(nr - 1));
            assert_eq!(b.count_ones(), if nr == 1 { 1 } else { 2 });
            b.set(0, false);
            assert!(!b.get(0));
        }
        let mut b = PageBits::new(512);
        b.set(100, true);
        assert!(b.slice(64, 64).get(36));
    }

    #[test]
    fn folio_ids_are_reused_last_freed_first() {
        let mut t = FolioTable::default();
        let a = t.insert(Folio::new(Pfn(0), Order::BASE, 0, 0));
        let b = t.insert(Folio::new(Pfn(1), Order::BASE, 0, 0));
        t.remove(a);
        let c = t.insert(Folio::new(Pfn(2), Order::BASE, 0, 0));
        assert_eq!(a, c);
        assert_ne!(b, c);
        assert_eq!(t.len(), 2);
    }
}
