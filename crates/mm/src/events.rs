//! The event stream a later cost model turns into time.
//!
//! The model counts; it never times. Each operation that costs something on
//! real hardware (a fault, zeroing, copying, a split, a page-table
//! allocation, a TLB flush) is reported here, in the order it happens.

use crate::types::{Order, Pid, Vaddr};

/// Which level of the page-table tree an event concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PtLevel {
    Pte,
    Pmd,
    Pud,
    P4d,
    Pgd,
}

/// One costed step of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MmEvent {
    /// A page fault was handled. `order` is the size of what got mapped (0
    /// for a base page or the zero page); `fallback` is true when a larger
    /// order was tried first and failed.
    Fault { pid: Pid, addr: Vaddr, write: bool, order: Order, fallback: bool },
    /// Bytes of a new folio cleared (`folio_zero_user()`, `clear_page()`).
    Zeroed { bytes: u64 },
    /// Bytes copied (COW, collapse, migration).
    Copied { bytes: u64 },
    /// A PMD mapping was split into PTEs (`__split_huge_pmd_locked()`).
    SplitPmd { pid: Pid, addr: Vaddr },
    /// A large folio was split (`__folio_split()`).
    SplitFolio { order: Order, new_order: Order },
    /// A page-table page was allocated.
    PtAlloc { level: PtLevel },
    /// A page-table page was freed.
    PtFree { level: PtLevel },
    /// A TLB flush over a range of one process.
    TlbFlush { pid: Pid, start: Vaddr, end: Vaddr },
    /// A folio was migrated (compaction).
    Migrate { order: Order },
    /// `huge_memory:mm_khugepaged_scan_pmd`: one PMD range scanned.
    KhugepagedScanPmd { pid: Pid, addr: Vaddr, referenced: u32, none_or_zero: u32, status: &'static str, unmapped: u32 },
    /// A khugepaged or MADV_COLLAPSE collapse succeeded.
    Collapse { pid: Pid, addr: Vaddr },
}

/// Where events go: nowhere (the default, for speed) or a buffer.
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    buf: Option<Vec<MmEvent>>,
}

impl EventLog {
    pub fn enable(&mut self) {
        self.buf.get_or_insert_with(Vec::new);
    }
    pub fn is_enabled(&self) -> bool {
        self.buf.is_some()
    }
    #[inline]
    pub(crate) fn emit(&mut self, event: impl FnOnce() -> MmEvent) {
        if let Some(buf) = &mut self.buf {
            buf.push(event());
        }
    }
    /// Takes the events recorded so far.
    pub fn drain(&mut self) -> Vec<MmEvent> {
        self.buf.as_mut().map(std::mem::take).unwrap_or_default()
    }
}
