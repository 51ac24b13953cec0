//! thpsim-mm: an executable model of Linux anonymous memory and transparent
//! huge pages, as Linux 6.18 manages them.
//!
//! The model is deterministic and does no I/O: a `World` is a simulated
//! machine (buddy allocator, folios, real 4-level page tables, processes)
//! driven through system-call-shaped methods (`mmap`, `touch`, `fork`,
//! `madvise`, ...). Modules mirror the kernel's mm/ files; see
//! docs/architecture.md for the map.
#![forbid(unsafe_code)]

pub mod compaction;
pub mod config;
pub mod errno;
pub mod events;
pub mod fault_inject;
pub mod folio;
pub mod fork;
pub mod gfp;
pub mod gup;
pub mod huge_memory;
mod invariants;
pub mod khugepaged;
pub mod madvise;
pub mod memory;
pub mod mlock;
pub mod mman;
pub mod mmap;
pub mod mprotect;
pub mod mremap;
pub mod page_alloc;
pub mod pagewalk;
pub mod pgtable;
pub mod proc;
pub mod rmap;
pub mod stats;
pub mod types;
pub mod vma;
pub mod vmscan;
pub mod world;

pub use config::{Config, Knob, Policy, Setting};
pub use errno::*;
pub use events::MmEvent;
pub use fault_inject::{FailAttr, FailPoint};
pub use mman::{Access, Advice, Fill, Prot, ThpDisable};
pub use proc::{Meminfo, PageInfo, PageInfoRun, PageState, SmapsVma};
pub use stats::{MthpStat, Stats, VmEvent};
pub use types::*;
pub use world::{Machine, Mm, World};
