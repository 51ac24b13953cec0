//! The PTE table kept under each huge PMD so that splitting it needs no
//! allocation: pre-allocated before the PMD is set (fault, huge zero page,
//! fork, collapse), deposited under the PMD table, moved with the PMD by
//! mremap, withdrawn by a split (it becomes the PTE table) or freed by a zap.
//!
//! Models: mm/pgtable-generic.c (`pgtable_trans_huge_deposit()`,
//! `pgtable_trans_huge_withdraw()`, one stack per PMD table as with split
//! PMD ptlocks) and mm/huge_memory.c (`zap_deposited_table()`, the
//! `pte_alloc_one()` calls before a huge PMD is installed).
//!
//! **Architecture invariant:** only this file changes a PMD table's deposit
//! stack, and `deposits()` is the one place that reads `Config::deposit`.
//! Linux 6.18 deposits eagerly; the lazy-allocation proposal adds a value
//! for which `deposits()` is false and `withdraw_for_split()` allocates.

use crate::config::Deposit;
use crate::gfp::AllocError;
use crate::pgtable::Level;
use crate::types::*;
use crate::world::World;

impl World {
    /// Whether a huge PMD carries a deposited PTE table.
    pub(crate) fn deposits(&self) -> bool {
        match self.config.deposit {
            Deposit::Eager => true,
        }
    }

    /// The deposits a PMD table holding `huge_leaves` PMD leaves must have.
    pub(crate) fn expected_deposits(&self, huge_leaves: usize) -> usize {
        if self.deposits() {
            huge_leaves
        } else {
            0
        }
    }

    /// `pte_alloc_one()` before a huge PMD of `pid` is installed: the table
    /// to deposit, or `None` when huge PMDs carry none. Taken first, so a
    /// failure leaves nothing to undo.
    pub(crate) fn prealloc_deposit(&mut self, pid: Pid) -> Result<Option<Pfn>, AllocError> {
        if !self.deposits() {
            return Ok(None);
        }
        self.alloc_pt_page(pid, Level::Pte).map(Some)
    }

    /// `pte_free()` of a pre-allocated table that was not used after all.
    pub(crate) fn free_prealloc(&mut self, pid: Pid, table: Option<Pfn>) {
        if let Some(pfn) = table {
            self.free_pt_page(pid, Level::Pte, pfn);
        }
    }

    /// `pgtable_trans_huge_deposit()` under the PMD table `pmd_table`.
    pub(crate) fn deposit(&mut self, pmd_table: PtId, table: Option<Pfn>) {
        if let Some(pfn) = table {
            self.pt[pmd_table].deposit_push(pfn);
        }
    }

    /// The page that becomes the PTE table when a huge PMD under
    /// `pmd_table` is split: the deposited one (`pgtable_trans_huge_withdraw()`).
    pub(crate) fn withdraw_for_split(&mut self, _pid: Pid, pmd_table: PtId) -> Result<Pfn, AllocError> {
        Ok(self.pt[pmd_table].deposit_pop().unwrap_or_else(|| panic!("{pmd_table:?}: huge PMD without a deposit")))
    }

    /// `zap_deposited_table()`: frees the deposit of a huge PMD being zapped.
    pub(crate) fn zap_deposited_table(&mut self, pid: Pid, pmd_table: PtId) {
        if self.deposits() {
            let pfn =
                self.pt[pmd_table].deposit_pop().unwrap_or_else(|| panic!("{pmd_table:?}: zap without a deposit"));
            self.free_pt_page(pid, Level::Pte, pfn);
        }
    }

    /// `move_huge_pmd()`'s deposit: the table follows the PMD to its new
    /// PMD table.
    pub(crate) fn move_deposit(&mut self, from: PtId, to: PtId) {
        if self.deposits() {
            let pfn = self.pt[from].deposit_pop().unwrap_or_else(|| panic!("{from:?}: moving a PMD without a deposit"));
            self.pt[to].deposit_push(pfn);
        }
    }

    /// `collapse_huge_page()`: the emptied PTE table of a collapsed range
    /// becomes the new PMD's deposit, or is freed when PMDs carry none.
    pub(crate) fn deposit_collapsed_table(&mut self, pid: Pid, pmd_table: PtId, old_table: Pfn) {
        if self.deposits() {
            self.pt[pmd_table].deposit_push(old_table);
        } else {
            self.free_pt_page(pid, Level::Pte, old_table);
        }
    }
}
