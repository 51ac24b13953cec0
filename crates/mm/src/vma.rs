//! Virtual memory areas and the per-process VMA tree, with splitting and
//! merging as Linux does them for private anonymous mappings.
//!
//! Models: mm/vma.c (`__split_vma()`, `vma_merge_existing_range()`,
//! `is_mergeable_anon_vma()`), include/linux/mm.h (`VM_*` flags).
//! Only private anonymous VMAs exist in the model.

use std::collections::BTreeMap;

use crate::types::{Vaddr, PAGE_SHIFT};

/// `vm_flags` bits the model uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VmFlags(pub u32);

impl VmFlags {
    pub const READ: VmFlags = VmFlags(1 << 0);
    pub const WRITE: VmFlags = VmFlags(1 << 1);
    pub const EXEC: VmFlags = VmFlags(1 << 2);
    pub const DONTFORK: VmFlags = VmFlags(1 << 3);
    pub const HUGEPAGE: VmFlags = VmFlags(1 << 4);
    pub const NOHUGEPAGE: VmFlags = VmFlags(1 << 5);
    /// `VM_ACCOUNT`: the mapping is charged to the overcommit accounting.
    /// Not shown in the model's smaps flags, but it decides VMA merges.
    pub const ACCOUNT: VmFlags = VmFlags(1 << 6);
    /// `VM_LOCKED`: mlock()ed; not copied to a child at fork.
    pub const LOCKED: VmFlags = VmFlags(1 << 7);
    /// `VM_WIPEONFORK` (MADV_WIPEONFORK): the child gets the range empty.
    pub const WIPEONFORK: VmFlags = VmFlags(1 << 8);

    pub const fn contains(self, other: VmFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: VmFlags) -> VmFlags {
        VmFlags(self.0 | other.0)
    }
    pub const fn without(self, other: VmFlags) -> VmFlags {
        VmFlags(self.0 & !other.0)
    }
    /// The smaps `VmFlags` mnemonics (`show_smap_vma_flags()`), in the
    /// kernel's order.
    pub fn mnemonics(self) -> Vec<&'static str> {
        let table = [
            (VmFlags::READ, "rd"),
            (VmFlags::WRITE, "wr"),
            (VmFlags::EXEC, "ex"),
            (VmFlags::LOCKED, "lo"),
            (VmFlags::DONTFORK, "dc"),
            (VmFlags::ACCOUNT, "ac"),
            (VmFlags::WIPEONFORK, "wf"),
            (VmFlags::HUGEPAGE, "hg"),
            (VmFlags::NOHUGEPAGE, "nh"),
        ];
        table.iter().filter(|(f, _)| self.contains(*f)).map(|(_, m)| *m).collect()
    }
}

/// One anonymous VMA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: Vaddr,
    pub end: Vaddr,
    pub flags: VmFlags,
    /// `vm_pgoff`: for anonymous memory, the start address in pages when the
    /// VMA was created; kept by mremap, adjusted by splits.
    pub pgoff: u64,
    /// The anon_vma assigned at the first fault (`anon_vma_prepare()`).
    pub anon_vma: Option<u32>,
    /// The anon_vma chain links a parent's anon_vma too (the VMA was forked
    /// with one): `vma_had_uncowed_parents()`. Such a VMA does not merge
    /// with a neighbour that has no anon_vma.
    pub anon_vma_forked: bool,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end.0 - self.start.0
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
    pub fn contains(&self, addr: Vaddr) -> bool {
        self.start <= addr && addr < self.end
    }
    /// `linear_page_index()`.
    pub fn linear_page_index(&self, addr: Vaddr) -> u64 {
        self.pgoff + ((addr.0 - self.start.0) >> PAGE_SHIFT)
    }
    /// The address at which this VMA maps page index `index`, if it does.
    pub fn address_of_index(&self, index: u64) -> Option<Vaddr> {
        let npages = self.len() >> PAGE_SHIFT;
        (index >= self.pgoff && index < self.pgoff + npages)
            .then(|| Vaddr(self.start.0 + ((index - self.pgoff) << PAGE_SHIFT)))
    }
    pub fn readable(&self) -> bool {
        self.flags.contains(VmFlags::READ)
    }
    pub fn writable(&self) -> bool {
        self.flags.contains(VmFlags::WRITE)
    }
}

/// The VMAs of one mm, keyed by start address.
#[derive(Clone, Debug, Default)]
pub struct VmaTree {
    map: BTreeMap<u64, Vma>,
}

impl VmaTree {
    /// The VMA containing `addr` (`vma_lookup()`).
    pub fn find(&self, addr: Vaddr) -> Option<&Vma> {
        self.map.range(..=addr.0).next_back().map(|(_, v)| v).filter(|v| v.contains(addr))
    }
    pub fn find_mut(&mut self, addr: Vaddr) -> Option<&mut Vma> {
        self.map.range_mut(..=addr.0).next_back().map(|(_, v)| v).filter(|v| v.contains(addr))
    }
    /// VMAs intersecting `[start, end)`, ascending.
    pub fn overlapping(&self, start: Vaddr, end: Vaddr) -> impl Iterator<Item = &Vma> {
        let first = self.map.range(..=start.0).next_back().filter(|(_, v)| v.end > start).map(|(k, _)| *k);
        let from = first.unwrap_or(start.0);
        self.map.range(from..end.0).map(|(_, v)| v).filter(move |v| v.end > start)
    }
    /// Start addresses of the VMAs intersecting `[start, end)`.
    pub fn starts_overlapping(&self, start: Vaddr, end: Vaddr) -> Vec<Vaddr> {
        self.overlapping(start, end).map(|v| v.start).collect()
    }
    pub fn get(&self, start: Vaddr) -> Option<&Vma> {
        self.map.get(&start.0)
    }
    pub fn get_mut(&mut self, start: Vaddr) -> Option<&mut Vma> {
        self.map.get_mut(&start.0)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.map.values()
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn insert(&mut self, vma: Vma) {
        debug_assert!(self.overlapping(vma.start, vma.end).next().is_none(), "inserting overlapping {vma:?}");
        self.map.insert(vma.start.0, vma);
    }
    pub fn remove(&mut self, start: Vaddr) -> Option<Vma> {
        self.map.remove(&start.0)
    }
    /// The VMA ending at or before `addr` (`vma_prev()`-like).
    pub fn prev(&self, addr: Vaddr) -> Option<&Vma> {
        self.map.range(..addr.0).next_back().map(|(_, v)| v).filter(|v| v.end <= addr)
    }
    /// The first VMA starting at or after `addr`.
    pub fn next(&self, addr: Vaddr) -> Option<&Vma> {
        self.map.range(addr.0..).next().map(|(_, v)| v)
    }

    /// Splits the VMA straddling `addr` so that `addr` is a VMA boundary
    /// (`__split_vma()`); does nothing if no VMA straddles it.
    pub fn split_at(&mut self, addr: Vaddr) {
        let Some(vma) = self.find(addr).cloned() else { return };
        if vma.start == addr {
            return;
        }
        let tail = Vma {
            start: addr,
            end: vma.end,
            flags: vma.flags,
            pgoff: vma.linear_page_index(addr),
            anon_vma: vma.anon_vma,
            anon_vma_forked: vma.anon_vma_forked,
        };
        self.map.get_mut(&vma.start.0).expect("vma vanished").end = addr;
        self.map.insert(addr.0, tail);
    }

    /// Whether two adjacent VMAs can merge into one (`is_mergeable_vma()`
    /// and `is_mergeable_anon_vma()` for private anonymous memory).
    pub fn can_merge(prev: &Vma, next: &Vma) -> bool {
        prev.end == next.start
            && prev.flags == next.flags
            && prev.pgoff + (prev.len() >> PAGE_SHIFT) == next.pgoff
            && match (prev.anon_vma, next.anon_vma) {
                (Some(a), Some(b)) => a == b,
                (Some(_), None) => !prev.anon_vma_forked,
                (None, Some(_)) => !next.anon_vma_forked,
                (None, None) => true,
            }
    }

    /// Merges the VMA starting at `start` with its neighbours where they are
    /// compatible (`vma_merge_existing_range()` after a flag change, and
    /// `vma_merge_new_range()` for a new mapping). Returns the start of the
    /// resulting VMA.
    pub fn merge_around(&mut self, start: Vaddr) -> Vaddr {
        let mut start = start;
        if let Some(prev) = self.prev(start).cloned() {
            let cur = self.map[&start.0].clone();
            if Self::can_merge(&prev, &cur) {
                self.map.remove(&start.0);
                let p = self.map.get_mut(&prev.start.0).expect("prev vanished");
                p.end = cur.end;
                if p.anon_vma.is_none() {
                    p.anon_vma = cur.anon_vma;
                    p.anon_vma_forked = cur.anon_vma_forked;
                }
                start = prev.start;
            }
        }
        let cur = self.map[&start.0].clone();
        if let Some(next) = self.map.get(&cur.end.0).cloned() {
            if Self::can_merge(&cur, &next) {
                self.map.remove(&next.start.0);
                let c = self.map.get_mut(&start.0).expect("vma vanished");
                c.end = next.end;
                if c.anon_vma.is_none() {
                    c.anon_vma = next.anon_vma;
                    c.anon_vma_forked = next.anon_vma_forked;
                }
            }
        }
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64) -> Vma {
        Vma {
            start: Vaddr(start),
            end: Vaddr(end),
            flags: VmFlags::READ.union(VmFlags::WRITE),
            pgoff: start >> 12,
            anon_vma: Some(1),
            anon_vma_forked: false,
        }
    }

    #[test]
    fn forked_anon_vma_does_not_merge_with_an_unfaulted_neighbour() {
        let mut t = VmaTree::default();
        let mut a = vma(0x1000, 0x2000);
        a.anon_vma = None;
        let mut b = vma(0x2000, 0x3000);
        b.anon_vma_forked = true;
        assert!(!VmaTree::can_merge(&a, &b));
        b.anon_vma_forked = false;
        assert!(VmaTree::can_merge(&a, &b));
        t.insert(a);
        t.insert(b);
        t.merge_around(Vaddr(0x2000));
        assert_eq!(t.len(), 1);
    }

    // 0     4K    8K    12K
    // |AAAAAAAAAAAAAAAAA|     one VMA
    // |AAAAA|BBBBB|AAAAA|     mprotect(4K, 4K): split in three
    // |AAAAAAAAAAAAAAAAA|     protection restored: merged again
    #[test]
    fn split_then_merge_restores_one_vma() {
        let mut t = VmaTree::default();
        t.insert(vma(0x1000_0000, 0x1000_3000));
        t.split_at(Vaddr(0x1000_1000));
        t.split_at(Vaddr(0x1000_2000));
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(Vaddr(0x1000_2000)).unwrap().pgoff, 0x1_0002);
        t.get_mut(Vaddr(0x1000_1000)).unwrap().flags = VmFlags::READ;
        assert_eq!(t.merge_around(Vaddr(0x1000_1000)), Vaddr(0x1000_1000));
        assert_eq!(t.len(), 3);
        t.get_mut(Vaddr(0x1000_1000)).unwrap().flags = VmFlags::READ.union(VmFlags::WRITE);
        assert_eq!(t.merge_around(Vaddr(0x1000_1000)), Vaddr(0x1000_0000));
        assert_eq!(t.len(), 1);
        assert_eq!(t.find(Vaddr(0x1000_2fff)).unwrap().end, Vaddr(0x1000_3000));
    }

    #[test]
    fn moved_vma_does_not_merge_with_non_contiguous_pgoff() {
        let mut t = VmaTree::default();
        t.insert(vma(0x1000_0000, 0x1000_1000));
        let mut moved = vma(0x1000_1000, 0x1000_2000);
        moved.pgoff = 0x5_0000;
        t.insert(moved);
        t.merge_around(Vaddr(0x1000_1000));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn overlapping_finds_straddling_vmas() {
        let mut t = VmaTree::default();
        t.insert(vma(0x1000, 0x3000));
        t.insert(vma(0x5000, 0x6000));
        let starts: Vec<_> = t.overlapping(Vaddr(0x2000), Vaddr(0x5001)).map(|v| v.start.0).collect();
        assert_eq!(starts, vec![0x1000, 0x5000]);
        assert!(t.overlapping(Vaddr(0x3000), Vaddr(0x5000)).next().is_none());
    }
}
