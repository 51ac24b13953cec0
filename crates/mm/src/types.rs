//! Typed addresses, ids and sizes shared by every part of the model.
//!
//! Models: the `pfn`/`unsigned long addr`/`order` conventions of the kernel's
//! mm, as distinct types so that a PFN never slips in where a virtual address
//! belongs. All are `u64`-based (never `usize`) so results are identical on
//! every host.

use std::fmt;

/// Bytes in a base page (x86-64 `PAGE_SIZE`).
pub const PAGE_SIZE: u64 = 4096;
/// `PAGE_SHIFT` on x86-64.
pub const PAGE_SHIFT: u32 = 12;
/// Entries in one page-table page (`PTRS_PER_PTE` and friends on x86-64).
pub const PTRS_PER_TABLE: u64 = 512;
/// Bytes mapped by one PMD entry.
pub const PMD_SIZE: u64 = PAGE_SIZE * PTRS_PER_TABLE;
/// Bytes mapped by one PUD entry.
pub const PUD_SIZE: u64 = PMD_SIZE * PTRS_PER_TABLE;
/// Bytes mapped by one PGD entry (4-level paging).
pub const PGDIR_SIZE: u64 = PUD_SIZE * PTRS_PER_TABLE;
/// One past the highest user address with 4-level paging (`TASK_SIZE_MAX`
/// rounded to the page-table geometry: 128 TiB).
pub const TASK_SIZE: u64 = PGDIR_SIZE * 256;

/// A page frame number: a physical address shifted right by `PAGE_SHIFT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(pub u64);

impl Pfn {
    pub const fn add(self, nr: u64) -> Pfn {
        Pfn(self.0 + nr)
    }
}

impl fmt::LowerHex for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A user virtual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Vaddr(pub u64);

impl Vaddr {
    pub const fn add(self, bytes: u64) -> Vaddr {
        Vaddr(self.0 + bytes)
    }
    pub const fn align_down(self, size: u64) -> Vaddr {
        Vaddr(self.0 & !(size - 1))
    }
    pub const fn align_up(self, size: u64) -> Vaddr {
        Vaddr((self.0 + size - 1) & !(size - 1))
    }
    pub const fn is_aligned(self, size: u64) -> bool {
        self.0 & (size - 1) == 0
    }
    /// The virtual page number.
    pub const fn vpn(self) -> u64 {
        self.0 >> PAGE_SHIFT
    }
}

impl fmt::Display for Vaddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for Vaddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A folio order: the folio spans `1 << order` base pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Order(u8);

impl Order {
    pub const BASE: Order = Order(0);
    pub const PMD: Order = Order(9);
    pub const PUD: Order = Order(18);
    /// The largest order the buddy allocator manages (the model allows PUD
    /// order so that 1 GiB folios can be allocated by a later proposal; the
    /// kernel's `MAX_PAGE_ORDER` is 10 on x86-64 and gigantic pages come
    /// from CMA or `alloc_contig_range()`).
    pub const MAX: Order = Order(18);

    /// Panics on an order above `Order::MAX`: orders come from code, never
    /// from user input unchecked (see `Order::from_size`).
    pub const fn new(order: u8) -> Order {
        assert!(order <= Self::MAX.0, "order above Order::MAX");
        Order(order)
    }
    pub const fn get(self) -> u8 {
        self.0
    }
    pub const fn nr_pages(self) -> u64 {
        1 << self.0
    }
    pub const fn bytes(self) -> u64 {
        PAGE_SIZE << self.0
    }
    /// The order of a power-of-two size of at least one page, if it is one.
    pub fn from_size(bytes: u64) -> Option<Order> {
        if bytes < PAGE_SIZE || !bytes.is_power_of_two() {
            return None;
        }
        let order = (bytes / PAGE_SIZE).trailing_zeros();
        (order <= Self::MAX.0 as u32).then_some(Order(order as u8))
    }
    pub fn is_large(self) -> bool {
        self.0 > 0
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order-{}", self.0)
    }
}

macro_rules! index_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u32);
        impl $name {
            pub const fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

index_id!(
    /// An index into the folio table.
    FolioId
);
index_id!(
    /// An index into the page-table node arena.
    PtId
);
index_id!(
    /// A process id in the model (not the host's pid).
    Pid
);
index_id!(
    /// A GUP pin handle returned by `pin_user_pages`.
    PinId
);

/// The `mm_id` of an mm_struct (`CONFIG_MM_ID`): a small number allocated
/// from an IDA, used by large folios to remember up to two owning mms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MmId(pub u32);

/// Rounds `bytes` up to whole pages.
pub const fn pages_for(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_from_size_accepts_only_powers_of_two_pages() {
        assert_eq!(Order::from_size(4096), Some(Order::BASE));
        assert_eq!(Order::from_size(2 << 20), Some(Order::PMD));
        assert_eq!(Order::from_size(1 << 30), Some(Order::PUD));
        assert_eq!(Order::from_size(3 << 12), None);
        assert_eq!(Order::from_size(2048), None);
        assert_eq!(Order::from_size(2 << 30), None);
    }

    #[test]
    fn vaddr_alignment() {
        let a = Vaddr(0x20_1000);
        assert_eq!(a.align_down(PMD_SIZE), Vaddr(0x20_0000));
        assert_eq!(a.align_up(PMD_SIZE), Vaddr(0x40_0000));
        assert!(!a.is_aligned(PMD_SIZE));
        assert!(Vaddr(0x40_0000).is_aligned(PMD_SIZE));
    }
}
