//! What a scenario's `expect` statements state, as values.
//!
//! The parser builds an `Expectation` with every name already checked: the
//! process and region exist at that point of the scenario, counter names are
//! ones an `Observation` carries. `thpsim_oracle::expect::check_expectation`
//! evaluates one against an observation; `Display` prints it back in the
//! scenario language, so a failure reads like the line that stated it.

use std::fmt;

use serde::{Deserialize, Serialize};
use thpsim_mm::Errno;

use crate::ProcId;

/// The /proc/vmstat counters an observation carries (as deltas since the
/// scenario started) and an `expect vmstat` may name; `thpsim_oracle`
/// re-exports this list.
pub const VMSTAT_COUNTERS: &[&str] = &[
    "nr_anon_pages",
    "nr_anon_transparent_hugepages",
    "thp_fault_alloc",
    "thp_fault_fallback",
    "thp_fault_fallback_charge",
    "thp_collapse_alloc",
    "thp_collapse_alloc_failed",
    "thp_split_page",
    "thp_split_page_failed",
    "thp_deferred_split_page",
    "thp_underused_split_page",
    "thp_split_pmd",
    "thp_scan_exceed_none_pte",
    "thp_scan_exceed_swap_pte",
    "thp_scan_exceed_share_pte",
    "thp_zero_page_alloc",
    "thp_zero_page_alloc_failed",
    "thp_swpout",
    "thp_swpout_fallback",
    "pswpin",
    "pswpout",
    "pgfault",
    "pgmajfault",
    "pglazyfree",
    "pglazyfreed",
    "nr_page_table_pages",
    "nr_swapcached",
];

/// khugepaged's counters under /sys/kernel/mm/transparent_hugepage/khugepaged/
/// that an observation carries (as deltas, in its `vmstat` map under
/// `khugepaged/<name>`) and an `expect khugepaged` may name.
pub const KHUGEPAGED_COUNTERS: &[&str] = &["pages_collapsed", "full_scans"];

/// The /proc/meminfo fields an `expect meminfo` may name, compared as
/// changes in kB since the scenario started. `PageTables` is
/// `nr_page_table_pages` in kB.
pub const MEMINFO_FIELDS: &[&str] = &["PageTables"];

/// The smaps `VmFlags` mnemonics the model keeps and an observation carries
/// (the Linux backend drops the others); `expect ... vma` may name them.
pub const VM_FLAGS: &[&str] = &["rd", "wr", "ex", "lo", "dc", "ac", "wf", "hg", "nh"];

/// The per-size stats (`hugepages-<size>kB/stats/<stat>`) an observation
/// carries and an `expect mthp` may name.
pub const MTHP_STATS: &[&str] = &[
    "anon_fault_alloc",
    "anon_fault_fallback",
    "anon_fault_fallback_charge",
    "swpout",
    "swpout_fallback",
    "split",
    "split_failed",
    "split_deferred",
    "nr_anon",
    "nr_anon_partially_mapped",
    "swpin",
    "swpin_fallback",
];

/// The folio sizes with per-size stats on x86-64, in kB.
pub use thpsim_uapi::knob::MTHP_SIZES_KB;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// How the scenario language spells it.
    pub const fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// "found `op` value": a comparison of an observed number with a stated one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cmp {
    pub op: CmpOp,
    pub value: i64,
}

impl Cmp {
    pub const fn eq(value: i64) -> Cmp {
        Cmp { op: CmpOp::Eq, value }
    }

    /// Whether `found` satisfies the comparison.
    pub fn holds(self, found: i64) -> bool {
        match self.op {
            CmpOp::Eq => found == self.value,
            CmpOp::Ne => found != self.value,
            CmpOp::Lt => found < self.value,
            CmpOp::Le => found <= self.value,
            CmpOp::Gt => found > self.value,
            CmpOp::Ge => found >= self.value,
        }
    }

    /// Prints a counter delta: `+1`, `-2`, `= 0`, `>= 1`.
    pub fn fmt_delta(self) -> String {
        match (self.op, self.value) {
            (CmpOp::Eq, 0) => "= 0".to_string(),
            (CmpOp::Eq, v) => format!("{v:+}"),
            (op, v) => format!("{} {v}", op.symbol()),
        }
    }

    /// Prints a change in kB: `+8 kB`, `-4 kB`, `= 0 kB`, `>= 4 kB`.
    pub fn fmt_delta_kb(self) -> String {
        match (self.op, self.value) {
            (CmpOp::Eq, 0) => "= 0 kB".to_string(),
            (CmpOp::Eq, v) => format!("{v:+} kB"),
            (op, v) => format!("{} {v} kB", op.symbol()),
        }
    }

    /// Prints a size in kB as smaps does: `2048 kB`, `>= 4 kB`.
    pub fn fmt_kb(self) -> String {
        match self.op {
            CmpOp::Eq => format!("{} kB", self.value),
            op => format!("{} {} kB", op.symbol(), self.value),
        }
    }

    /// Prints a keyed comparison: `count=2`, `mapcount>=1`.
    pub fn fmt_keyed(self, key: &str) -> String {
        format!("{key}{}{}", self.op.symbol(), self.value)
    }
}

/// The smaps fields an expectation can sum, under their smaps names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SmapsField {
    Rss,
    Pss,
    SharedClean,
    SharedDirty,
    PrivateClean,
    PrivateDirty,
    Anonymous,
    LazyFree,
    AnonHugePages,
    Swap,
}

impl SmapsField {
    /// In the order smaps prints them.
    pub const ALL: [SmapsField; 10] = [
        SmapsField::Rss,
        SmapsField::Pss,
        SmapsField::SharedClean,
        SmapsField::SharedDirty,
        SmapsField::PrivateClean,
        SmapsField::PrivateDirty,
        SmapsField::Anonymous,
        SmapsField::LazyFree,
        SmapsField::AnonHugePages,
        SmapsField::Swap,
    ];

    /// The field's name in /proc/<pid>/smaps.
    pub const fn name(self) -> &'static str {
        match self {
            SmapsField::Rss => "Rss",
            SmapsField::Pss => "Pss",
            SmapsField::SharedClean => "Shared_Clean",
            SmapsField::SharedDirty => "Shared_Dirty",
            SmapsField::PrivateClean => "Private_Clean",
            SmapsField::PrivateDirty => "Private_Dirty",
            SmapsField::Anonymous => "Anonymous",
            SmapsField::LazyFree => "LazyFree",
            SmapsField::AnonHugePages => "AnonHugePages",
            SmapsField::Swap => "Swap",
        }
    }

    pub fn from_name(name: &str) -> Option<SmapsField> {
        SmapsField::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A page of a named region: `p1 A+4K`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Place {
    pub proc: ProcId,
    /// The scenario's name of the process (`p1`), for messages.
    pub proc_name: String,
    /// The region's name (`A`).
    pub region: String,
    /// Bytes from the region's start; page-aligned and inside the region.
    pub offset: u64,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.proc_name, RegionAt(&self.region, self.offset))
    }
}

/// Prints `A` or `A+4K`.
struct RegionAt<'a>(&'a str, u64);

impl fmt::Display for RegionAt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            0 => write!(f, "{}", self.0),
            off => write!(f, "{}+{}", self.0, fmt_size(off)),
        }
    }
}

/// Prints a byte count in the largest binary unit that divides it exactly,
/// as the scenario language writes sizes: `4K`, `2M`, `1G`, `12288` stays
/// `12K`, `0` stays `0`.
pub fn fmt_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    if bytes == 0 {
        return "0".to_string();
    }
    for (unit, suffix) in UNITS {
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// What pagemap says backs a virtual page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedState {
    /// Neither present nor swapped.
    None,
    Present,
    Swapped,
}

impl ExpectedState {
    pub const fn name(self) -> &'static str {
        match self {
            ExpectedState::None => "none",
            ExpectedState::Present => "present",
            ExpectedState::Swapped => "swapped",
        }
    }
}

/// One property every page of a `page` expectation must have.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PageProp {
    /// `present`, `none`, `swapped`.
    State(ExpectedState),
    /// `order=N`: the page is present and its folio has this order (the
    /// shared zero page counts as order 0, the huge zero page as order 9).
    Order(u8),
    /// `pmd` / `!pmd`: mapped by a PMD leaf or not.
    Pmd(bool),
    /// `mapcount=N` (or `<`, `<=`, `>`, `>=`, `!=`): /proc/kpagecount.
    Mapcount(Cmp),
    /// `exclusive` / `!exclusive`: pagemap's PM_MMAP_EXCLUSIVE.
    Exclusive(bool),
    /// `zero` / `!zero`: the shared zero page or the huge zero page.
    Zero(bool),
    /// `same_folio=[p2:]B+8K` / `!same_folio=...`: the page belongs (or does
    /// not belong) to the folio of another page. Two zero pages of the same
    /// order count as the same folio; an absent page has no folio.
    SameFolio { same: bool, with: Place },
    /// `lru` / `!lru`: kpageflags LRU, after the per-CPU LRU batches drain.
    Lru(bool),
    /// `swapbacked` / `!swapbacked`: kpageflags SWAPBACKED (MADV_FREE clears it).
    SwapBacked(bool),
    /// `swapcache` / `!swapcache`: kpageflags SWAPCACHE.
    SwapCache(bool),
}

impl fmt::Display for PageProp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |b: bool| if b { "" } else { "!" };
        match self {
            PageProp::State(state) => f.write_str(state.name()),
            PageProp::Order(order) => write!(f, "order={order}"),
            PageProp::Pmd(b) => write!(f, "{}pmd", not(*b)),
            PageProp::Mapcount(cmp) => f.write_str(&cmp.fmt_keyed("mapcount")),
            PageProp::Exclusive(b) => write!(f, "{}exclusive", not(*b)),
            PageProp::Zero(b) => write!(f, "{}zero", not(*b)),
            PageProp::SameFolio { same, with } => {
                write!(f, "{}same_folio={}:{}", not(*same), with.proc_name, RegionAt(&with.region, with.offset))
            }
            PageProp::Lru(b) => write!(f, "{}lru", not(*b)),
            PageProp::SwapBacked(b) => write!(f, "{}swapbacked", not(*b)),
            PageProp::SwapCache(b) => write!(f, "{}swapcache", not(*b)),
        }
    }
}

/// One property of the VMA that contains a page.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VmaProp {
    /// `start=B+off`: the VMA starts at that page.
    Start(Place),
    /// `end=B+off`: the VMA ends where that page starts (`end=A+2M` for a
    /// 2M region A).
    End(Place),
    /// `THPeligible` / `!THPeligible` (also written `thp_eligible`): smaps
    /// `THPeligible: 1`.
    ThpEligible(bool),
    /// `hg` / `!hg`: the mnemonic is (not) in smaps `VmFlags`.
    Flag { name: String, set: bool },
}

impl fmt::Display for VmaProp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |b: bool| if b { "" } else { "!" };
        match self {
            VmaProp::Start(at) => write!(f, "start={}", RegionAt(&at.region, at.offset)),
            VmaProp::End(at) => write!(f, "end={}", RegionAt(&at.region, at.offset)),
            VmaProp::ThpEligible(b) => write!(f, "{}THPeligible", not(*b)),
            VmaProp::Flag { name, set } => write!(f, "{}{name}", not(*set)),
        }
    }
}

/// What every page of a `content` expectation must hold at its start.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContentWant {
    /// `pattern=T`: page i of the range holds `pattern_word(tag, i)`, as
    /// `touch <the same range> write pattern=T` stored it.
    Pattern { name: String, tag: u64 },
    /// `zero`: every page reads 0 (never written, or written with zero).
    Zero,
}

/// One `expect` statement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Expectation {
    /// `expect p1 A[+off] [len] <field> [op] <size>`: an smaps field, in kB,
    /// summed over the VMAs that intersect the range (whole VMAs, as smaps
    /// prints them).
    Smaps {
        at: Place,
        /// Bytes from `at.offset`; page-aligned, inside the region.
        len: u64,
        /// Whether the scenario wrote the length (for printing only; when it
        /// did not, `len` runs to the region's end).
        explicit_len: bool,
        field: SmapsField,
        /// Compared with the sum, in kB.
        cmp: Cmp,
    },
    /// `expect p1 VmPTE [op] <size>`: /proc/<pid>/status VmPTE, in kB.
    VmPte { proc: ProcId, proc_name: String, cmp: Cmp },
    /// `expect vmstat <counter> <change>`: the counter's change since the
    /// scenario started.
    Vmstat { counter: String, cmp: Cmp },
    /// `expect mthp <size>kB <stat> <change>`: a per-size stat's change
    /// since the scenario started.
    Mthp { size_kb: u64, stat: String, cmp: Cmp },
    /// `expect p1 A[+off] page <props> [pages=N]`: every page of a run of
    /// `pages` pages from `at` has every property.
    Page { at: Place, pages: u64, props: Vec<PageProp> },
    /// `expect p1 A[+off] [len] folios [order=N] count<op>N`: the number of
    /// distinct folios (of that order, if given) with a present page in the
    /// range. Zero pages are not counted.
    Folios { at: Place, len: u64, explicit_len: bool, order: Option<u8>, count: Cmp },
    /// `expect khugepaged <counter> <change>`: a khugepaged counter's change
    /// since the scenario started.
    Khugepaged { counter: String, cmp: Cmp },
    /// `expect meminfo <field> <change in kB>`: a /proc/meminfo field's
    /// change since the scenario started, in kB.
    Meminfo { field: String, cmp: Cmp },
    /// `expect p1 A[+off] [len] vmas count<op>N`: the number of VMAs that
    /// intersect the range.
    Vmas { at: Place, len: u64, explicit_len: bool, count: Cmp },
    /// `expect p1 A[+off] vma <props>`: the VMA that contains the page has
    /// every property (no VMA contains it: the expectation fails).
    Vma { at: Place, props: Vec<VmaProp> },
    /// `expect p1 A[+off] [len] content pattern=T|zero`: the 64-bit word at
    /// the start of every page of the range, read back with a load (which
    /// faults like one: a never-written page reads 0 and maps the zero page).
    Content { at: Place, len: u64, explicit_len: bool, want: ContentWant },
    /// `expect ok`: the previous operation succeeded.
    Ok,
    /// `expect errno ENOMEM`: the previous operation failed with this errno.
    Errno(Errno),
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = |explicit: bool, len: u64| {
            if explicit {
                format!(" {}", fmt_size(len))
            } else {
                String::new()
            }
        };
        match self {
            Expectation::Smaps { at, len: l, explicit_len, field, cmp } => {
                write!(f, "{at}{} {} {}", len(*explicit_len, *l), field.name(), cmp.fmt_kb())
            }
            Expectation::VmPte { proc_name, cmp, .. } => {
                write!(f, "{proc_name} VmPTE {}", cmp.fmt_kb())
            }
            Expectation::Vmstat { counter, cmp } => {
                write!(f, "vmstat {counter} {}", cmp.fmt_delta())
            }
            Expectation::Mthp { size_kb, stat, cmp } => {
                write!(f, "mthp {size_kb}kB {stat} {}", cmp.fmt_delta())
            }
            Expectation::Page { at, pages, props } => {
                write!(f, "{at} page")?;
                for prop in props {
                    write!(f, " {prop}")?;
                }
                if *pages != 1 {
                    write!(f, " pages={pages}")?;
                }
                Ok(())
            }
            Expectation::Folios { at, len: l, explicit_len, order, count } => {
                write!(f, "{at}{} folios", len(*explicit_len, *l))?;
                if let Some(order) = order {
                    write!(f, " order={order}")?;
                }
                write!(f, " {}", count.fmt_keyed("count"))
            }
            Expectation::Khugepaged { counter, cmp } => {
                write!(f, "khugepaged {counter} {}", cmp.fmt_delta())
            }
            Expectation::Meminfo { field, cmp } => write!(f, "meminfo {field} {}", cmp.fmt_delta_kb()),
            Expectation::Vmas { at, len: l, explicit_len, count } => {
                write!(f, "{at}{} vmas {}", len(*explicit_len, *l), count.fmt_keyed("count"))
            }
            Expectation::Vma { at, props } => {
                write!(f, "{at} vma")?;
                for prop in props {
                    write!(f, " {prop}")?;
                }
                Ok(())
            }
            Expectation::Content { at, len: l, explicit_len, want } => {
                write!(f, "{at}{} content ", len(*explicit_len, *l))?;
                match want {
                    ContentWant::Pattern { name, .. } => write!(f, "pattern={name}"),
                    ContentWant::Zero => f.write_str("zero"),
                }
            }
            Expectation::Ok => f.write_str("ok"),
            Expectation::Errno(name) => write!(f, "errno {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        assert_eq!(fmt_size(0), "0");
        assert_eq!(fmt_size(4096), "4K");
        assert_eq!(fmt_size(12288), "12K");
        assert_eq!(fmt_size(2 << 20), "2M");
        assert_eq!(fmt_size(3 << 30), "3G");
        assert_eq!(fmt_size(1 << 40), "1T");
        assert_eq!(fmt_size(512), "512");
    }

    #[test]
    fn comparisons() {
        assert!(Cmp::eq(1).holds(1));
        assert!(!Cmp::eq(1).holds(2));
        assert!(Cmp { op: CmpOp::Ge, value: 1 }.holds(3));
        assert!(Cmp { op: CmpOp::Ne, value: 1 }.holds(0));
        assert!(Cmp { op: CmpOp::Lt, value: 0 }.holds(-1));
        assert_eq!(Cmp::eq(1).fmt_delta(), "+1");
        assert_eq!(Cmp::eq(-2).fmt_delta(), "-2");
        assert_eq!(Cmp::eq(0).fmt_delta(), "= 0");
        assert_eq!(Cmp { op: CmpOp::Ge, value: 1 }.fmt_delta(), ">= 1");
        assert_eq!(Cmp::eq(2048).fmt_kb(), "2048 kB");
        assert_eq!(Cmp { op: CmpOp::Le, value: 4 }.fmt_keyed("mapcount"), "mapcount<=4");
    }
}
