//! Counters under their kernel names: /proc/vmstat events and node stats,
//! the per-size `hugepages-<size>kB/stats/` files, and khugepaged's
//! counters.
//!
//! Models: mm/vmstat.c (`vmstat_text`), include/linux/vm_event_item.h,
//! include/linux/huge_mm.h (`enum mthp_stat_item`). Node stats are kept in
//! pages, as the kernel keeps them; `nr_anon_transparent_hugepages` is printed
//! in PMD units, as `vmstat_show()` does.

use crate::types::Order;

macro_rules! counters {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();
            /// The kernel's spelling.
            pub const fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }
    };
}

counters!(
    /// /proc/vmstat event counters (`enum vm_event_item`) that anonymous
    /// memory can move.
    VmEvent {
        PgFault => "pgfault",
        ThpFaultAlloc => "thp_fault_alloc",
        ThpFaultFallback => "thp_fault_fallback",
        ThpFaultFallbackCharge => "thp_fault_fallback_charge",
        ThpCollapseAlloc => "thp_collapse_alloc",
        ThpCollapseAllocFailed => "thp_collapse_alloc_failed",
        ThpSplitPage => "thp_split_page",
        ThpSplitPageFailed => "thp_split_page_failed",
        ThpDeferredSplitPage => "thp_deferred_split_page",
        ThpUnderusedSplitPage => "thp_underused_split_page",
        ThpSplitPmd => "thp_split_pmd",
        ThpScanExceedNonePte => "thp_scan_exceed_none_pte",
        ThpScanExceedSwapPte => "thp_scan_exceed_swap_pte",
        ThpScanExceedSharePte => "thp_scan_exceed_share_pte",
        ThpZeroPageAlloc => "thp_zero_page_alloc",
        ThpZeroPageAllocFailed => "thp_zero_page_alloc_failed",
        ThpSwpout => "thp_swpout",
        ThpSwpoutFallback => "thp_swpout_fallback",
        Pswpin => "pswpin",
        Pswpout => "pswpout",
        CompactStall => "compact_stall",
        CompactSuccess => "compact_success",
        CompactFail => "compact_fail",
        CompactMigrateScanned => "compact_migrate_scanned",
        PgmigrateSuccess => "pgmigrate_success",
        PgLazyFree => "pglazyfree",
        PgLazyFreed => "pglazyfreed",
    }
);

counters!(
    /// Per-size events and gauges under `hugepages-<size>kB/stats/`
    /// (`enum mthp_stat_item`).
    MthpStat {
        AnonFaultAlloc => "anon_fault_alloc",
        AnonFaultFallback => "anon_fault_fallback",
        AnonFaultFallbackCharge => "anon_fault_fallback_charge",
        Zswpout => "zswpout",
        Swpin => "swpin",
        SwpinFallback => "swpin_fallback",
        SwpinFallbackCharge => "swpin_fallback_charge",
        Swpout => "swpout",
        SwpoutFallback => "swpout_fallback",
        Split => "split",
        SplitFailed => "split_failed",
        SplitDeferred => "split_deferred",
        NrAnon => "nr_anon",
        NrAnonPartiallyMapped => "nr_anon_partially_mapped",
    }
);

/// Every counter of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    events: [u64; VmEvent::COUNT],
    /// `NR_ANON_MAPPED` in pages: pages of anonymous folios mapped at least once.
    pub(crate) nr_anon_mapped: i64,
    /// `NR_ANON_THPS` in pages: PMD-mapped anonymous THP, counted once per folio.
    pub(crate) nr_anon_thps: i64,
    /// `NR_PAGETABLE` in pages: every page-table page, deposited ones included.
    pub(crate) nr_page_table_pages: i64,
    /// Indexed by order, then `MthpStat`; entries for orders 0 and 1 stay 0.
    mthp: [[i64; MthpStat::COUNT]; 10],
    /// khugepaged/pages_collapsed.
    pub(crate) khugepaged_pages_collapsed: u64,
    /// khugepaged/full_scans.
    pub(crate) khugepaged_full_scans: u64,
    /// khugepaged/pages_scanned (progress units, as the kernel counts them).
    pub(crate) khugepaged_pages_scanned: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            events: [0; VmEvent::COUNT],
            nr_anon_mapped: 0,
            nr_anon_thps: 0,
            nr_page_table_pages: 0,
            mthp: [[0; MthpStat::COUNT]; 10],
            khugepaged_pages_collapsed: 0,
            khugepaged_full_scans: 0,
            khugepaged_pages_scanned: 0,
        }
    }
}

impl Stats {
    /// `count_vm_event()`.
    pub(crate) fn count(&mut self, event: VmEvent) {
        self.events[event as usize] += 1;
    }

    /// `count_vm_events()`.
    pub(crate) fn count_n(&mut self, event: VmEvent, n: u64) {
        self.events[event as usize] += n;
    }

    /// `count_mthp_stat()` / `mod_mthp_stat()`: orders without per-size
    /// stats (0, 1, above PMD) are ignored, as in the kernel.
    pub(crate) fn mthp(&mut self, order: Order, stat: MthpStat, delta: i64) {
        let o = order.get() as usize;
        if (2..=9).contains(&o) {
            self.mthp[o][stat as usize] += delta;
        }
    }

    pub fn event(&self, event: VmEvent) -> u64 {
        self.events[event as usize]
    }

    pub fn mthp_stat(&self, order: Order, stat: MthpStat) -> i64 {
        self.mthp.get(order.get() as usize).map_or(0, |s| s[stat as usize])
    }

    pub fn nr_anon_pages(&self) -> i64 {
        self.nr_anon_mapped
    }

    /// In PMD units, as /proc/vmstat prints it.
    pub fn nr_anon_transparent_hugepages(&self) -> i64 {
        self.nr_anon_thps / Order::PMD.nr_pages() as i64
    }

    pub fn nr_page_table_pages(&self) -> i64 {
        self.nr_page_table_pages
    }

    pub fn khugepaged_pages_collapsed(&self) -> u64 {
        self.khugepaged_pages_collapsed
    }

    pub fn khugepaged_full_scans(&self) -> u64 {
        self.khugepaged_full_scans
    }

    /// `name value` pairs as /proc/vmstat prints them, node stats first.
    pub fn vmstat(&self) -> Vec<(&'static str, i64)> {
        let mut lines = vec![
            ("nr_anon_pages", self.nr_anon_pages()),
            ("nr_anon_transparent_hugepages", self.nr_anon_transparent_hugepages()),
            ("nr_page_table_pages", self.nr_page_table_pages),
        ];
        lines.extend(VmEvent::ALL.iter().map(|e| (e.name(), self.event(*e) as i64)));
        lines
    }

    /// One `vmstat` value by its kernel name.
    pub fn vmstat_value(&self, name: &str) -> Option<i64> {
        self.vmstat().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}
