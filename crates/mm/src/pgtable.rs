//! Page tables: a real 4-level x86-64 tree of 512-entry nodes, each node a
//! page taken from the buddy allocator, and the PTE tables deposited under
//! PMD leaves.
//!
//! Models: include/linux/pgtable.h, arch/x86/include/asm/pgtable*.h and
//! mm/pgtable-generic.c (`pgtable_trans_huge_deposit()`/`_withdraw()`).
//! P4D is folded, as with 4-level paging. One entry type serves every
//! level; a leaf at PMD or PUD level maps a whole folio.
//! Not modelled yet: swap and migration entries (later issues add them as
//! variants of `Entry`). Every match on `Entry` names every variant (no
//! catch-all arm), so a new variant makes the compiler list every decision;
//! walks go through pagewalk.rs.

use crate::types::{FolioId, Pfn, PtId, Vaddr, PAGE_SHIFT, PTRS_PER_TABLE};

/// A level of the tree, named as the kernel names it. A node "at level L"
/// holds L entries: a `Pmd` node is a PMD table, whose entries point to PTE
/// tables or map PMD-sized folios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Pte,
    Pmd,
    Pud,
    Pgd,
}

impl Level {
    /// Address bits below this level's index.
    pub const fn shift(self) -> u32 {
        match self {
            Level::Pte => PAGE_SHIFT,
            Level::Pmd => PAGE_SHIFT + 9,
            Level::Pud => PAGE_SHIFT + 18,
            Level::Pgd => PAGE_SHIFT + 27,
        }
    }
    /// Bytes one entry of this level maps.
    pub const fn entry_size(self) -> u64 {
        1 << self.shift()
    }
    /// The index of `addr` in a node of this level.
    pub const fn index(self, addr: Vaddr) -> usize {
        ((addr.0 >> self.shift()) & (PTRS_PER_TABLE - 1)) as usize
    }
    /// The level the entries of this level point to.
    pub const fn below(self) -> Option<Level> {
        match self {
            Level::Pgd => Some(Level::Pud),
            Level::Pud => Some(Level::Pmd),
            Level::Pmd => Some(Level::Pte),
            Level::Pte => None,
        }
    }
    pub fn event_level(self) -> crate::events::PtLevel {
        match self {
            Level::Pte => crate::events::PtLevel::Pte,
            Level::Pmd => crate::events::PtLevel::Pmd,
            Level::Pud => crate::events::PtLevel::Pud,
            Level::Pgd => crate::events::PtLevel::Pgd,
        }
    }
}

/// A present mapping of a folio: of page `page` at PTE level, of the whole
/// folio at PMD level (`page` is then 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub folio: FolioId,
    pub page: u32,
    pub writable: bool,
    pub dirty: bool,
    pub young: bool,
}

/// One slot of a page-table node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Entry {
    #[default]
    None,
    /// Points to the next level's node.
    Table(PtId),
    /// Maps a folio page (PTE) or a whole folio (PMD, PUD).
    Page(Leaf),
    /// The shared zero page at PTE level, the huge zero folio at PMD level.
    /// Always read-only; it has no folio in the folio table.
    Zero,
}

impl Entry {
    pub fn is_none(&self) -> bool {
        matches!(self, Entry::None)
    }
    pub fn leaf(&self) -> Option<&Leaf> {
        match self {
            Entry::Page(leaf) => Some(leaf),
            Entry::None | Entry::Table(_) | Entry::Zero => None,
        }
    }
}

/// A page-table page.
#[derive(Clone, Debug)]
pub struct PtNode {
    /// The physical page holding this table.
    pub pfn: Pfn,
    pub level: Level,
    pub entries: Box<[Entry]>,
    /// Entries that are not `Entry::None`.
    pub nr_used: u16,
    /// PTE tables deposited under this PMD table's huge entries, a stack as
    /// `pmd_huge_pte` is (split PMD ptlocks: one list per PMD table). Only
    /// huge_memory/deposit.rs pushes and pops.
    deposit: Vec<Pfn>,
}

impl PtNode {
    pub fn new(pfn: Pfn, level: Level) -> PtNode {
        PtNode {
            pfn,
            level,
            entries: vec![Entry::None; PTRS_PER_TABLE as usize].into_boxed_slice(),
            nr_used: 0,
            deposit: Vec::new(),
        }
    }

    /// The PTE tables deposited under this PMD table.
    pub fn deposited(&self) -> &[Pfn] {
        &self.deposit
    }
    pub(crate) fn deposit_push(&mut self, table: Pfn) {
        self.deposit.push(table);
    }
    pub(crate) fn deposit_pop(&mut self) -> Option<Pfn> {
        self.deposit.pop()
    }

    /// Sets one entry, keeping `nr_used` true.
    #[inline]
    pub fn set(&mut self, index: usize, entry: Entry) {
        let was_none = self.entries[index].is_none();
        match (was_none, entry.is_none()) {
            (true, false) => self.nr_used += 1,
            (false, true) => self.nr_used -= 1,
            _ => {}
        }
        self.entries[index] = entry;
    }
}

/// The arena of page-table nodes of every process.
#[derive(Clone, Debug, Default)]
pub struct PageTables {
    nodes: Vec<Option<PtNode>>,
    free_ids: Vec<u32>,
    nr_live: u64,
}

impl PageTables {
    pub(crate) fn insert(&mut self, node: PtNode) -> PtId {
        self.nr_live += 1;
        if let Some(id) = self.free_ids.pop() {
            self.nodes[id as usize] = Some(node);
            PtId(id)
        } else {
            self.nodes.push(Some(node));
            PtId(self.nodes.len() as u32 - 1)
        }
    }
    pub(crate) fn remove(&mut self, id: PtId) -> PtNode {
        let node = self.nodes[id.index()].take().unwrap_or_else(|| panic!("{id:?} freed twice"));
        self.free_ids.push(id.0);
        self.nr_live -= 1;
        node
    }
    pub fn len(&self) -> u64 {
        self.nr_live
    }
    pub fn is_empty(&self) -> bool {
        self.nr_live == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = (PtId, &PtNode)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| n.as_ref().map(|n| (PtId(i as u32), n)))
    }
}

impl std::ops::Index<PtId> for PageTables {
    type Output = PtNode;
    #[inline]
    fn index(&self, id: PtId) -> &PtNode {
        self.nodes[id.index()].as_ref().unwrap_or_else(|| panic!("{id:?} is not a live page table"))
    }
}

impl std::ops::IndexMut<PtId> for PageTables {
    #[inline]
    fn index_mut(&mut self, id: PtId) -> &mut PtNode {
        self.nodes[id.index()].as_mut().unwrap_or_else(|| panic!("{id:?} is not a live page table"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_x86_64_geometry() {
        let a = Vaddr(0x7f12_3456_7000);
        assert_eq!(Level::Pte.index(a), (0x7f12_3456_7000u64 >> 12) as usize & 511);
        assert_eq!(Level::Pmd.index(a), (0x7f12_3456_7000u64 >> 21) as usize & 511);
        assert_eq!(Level::Pgd.index(a), (0x7f12_3456_7000u64 >> 39) as usize & 511);
        assert_eq!(Level::Pmd.entry_size(), 2 << 20);
        assert_eq!(Level::Pud.entry_size(), 1 << 30);
    }

    #[test]
    fn nr_used_tracks_entries() {
        let mut n = PtNode::new(Pfn(1), Level::Pte);
        n.set(3, Entry::Zero);
        n.set(3, Entry::Zero);
        n.set(4, Entry::Zero);
        assert_eq!(n.nr_used, 2);
        n.set(3, Entry::None);
        assert_eq!(n.nr_used, 1);
    }
}
