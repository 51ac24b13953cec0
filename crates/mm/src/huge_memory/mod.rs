//! Anonymous THP at PMD level, where mm/huge_memory.c keeps it: huge faults
//! and the huge zero folio, operations on PMD leaves, the PTE table
//! deposited under each, splitting PMDs and folios, and the deferred-split
//! queue with its shrinkers.
//!
//! Models: mm/huge_memory.c (Linux 6.18) and mm/pgtable-generic.c's deposit.
//! Not modelled: file and shmem THP, DAX, userfaultfd, PUD leaves (the
//! PUD-THP proposal adds them), splits to orders above 0 (no anonymous caller
//! asks for them in 6.18's baseline).
//!
//! - `fault`: `do_huge_pmd_anonymous_page()`, `do_huge_pmd_wp_page()`.
//! - `huge_zero`: the huge zero folio's references and shrinker.
//! - `pmd`: the PMD-leaf halves of zap, fork, mremap, mprotect and MADV_FREE.
//! - `deposit`: the deposited PTE table, the one place `Config::deposit` is read.
//! - `split`: `split_huge_pmd()`, `split_folio()`.
//! - `deferred`: the deferred-split queue, `deferred_split_scan()`,
//!   the underused-THP test.

mod deferred;
mod deposit;
mod fault;
mod huge_zero;
mod pmd;
mod split;
