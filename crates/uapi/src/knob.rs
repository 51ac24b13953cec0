//! The THP tunables under /sys/kernel/mm/transparent_hugepage: which files
//! exist, the values each accepts, how sysfs prints them, and the order a
//! save/restore writes them in.
//!
//! Models: mm/huge_memory.c (`enabled_store()`, `defrag_store()`,
//! `thpsize_enabled_store()`, `use_zero_page_store()`,
//! `shrink_underused_store()`) and mm/khugepaged.c (the `khugepaged/`
//! files), Linux 6.18 on x86-64 with 4K pages.
//! Not modelled: `shmem_enabled` and the per-size `shmem_enabled` files
//! (thpsim models anonymous memory only), which the Linux backend still
//! saves and restores.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::words;

/// Where the THP knobs live.
pub const THP_ROOT: &str = "/sys/kernel/mm/transparent_hugepage";

/// `HPAGE_PMD_NR - 1`: the largest `max_ptes_*` value.
const MAX_PTES_MAX: u64 = 511;

words! {
    /// Top-level `enabled`.
    pub enum ThpEnabled {
        Always = "always",
        Madvise = "madvise",
        Never = "never",
    }
}

words! {
    /// `defrag`: how hard a THP fault allocation may try (`vma_thp_gfp_mask()`).
    pub enum Defrag {
        Always = "always",
        Defer = "defer",
        DeferMadvise = "defer+madvise",
        Madvise = "madvise",
        Never = "never",
    }
}

words! {
    /// Per-size `hugepages-<size>kB/enabled`.
    pub enum MthpEnabled {
        Always = "always",
        Inherit = "inherit",
        Madvise = "madvise",
        Never = "never",
    }
}

/// The `0`/`1` files.
const BOOL_WORDS: &[&str] = &["0", "1"];

/// An anonymous mTHP size with a `hugepages-<size>kB` directory: order 2
/// (16K) to order 9 (2M) on x86-64. Order 1 is never used for anonymous
/// memory (`THP_ORDERS_ALL_ANON`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MthpSize(u8);

/// The per-size directories' sizes in kB, ascending.
pub const MTHP_SIZES_KB: &[u64] = &[16, 32, 64, 128, 256, 512, 1024, 2048];

impl MthpSize {
    /// The anonymous mTHP orders.
    pub const ORDERS: std::ops::RangeInclusive<u8> = 2..=9;
    /// Every size, ascending.
    pub const ALL: [MthpSize; 8] =
        [MthpSize(2), MthpSize(3), MthpSize(4), MthpSize(5), MthpSize(6), MthpSize(7), MthpSize(8), MthpSize(9)];
    /// PMD size, 2M.
    pub const PMD: MthpSize = MthpSize(9);

    pub const fn from_order(order: u8) -> Option<MthpSize> {
        if order >= *Self::ORDERS.start() && order <= *Self::ORDERS.end() {
            Some(MthpSize(order))
        } else {
            None
        }
    }
    pub fn from_kb(kb: u64) -> Option<MthpSize> {
        Self::ALL.into_iter().find(|s| s.kb() == kb)
    }
    pub const fn order(self) -> u8 {
        self.0
    }
    pub const fn kb(self) -> u64 {
        4 << self.0
    }
    /// Whether this is a size the kernel has a directory for (a deserialised
    /// value may not be).
    pub const fn is_valid(self) -> bool {
        Self::from_order(self.0).is_some()
    }
}

/// The values a knob accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnobValues {
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A decimal number in this inclusive range.
    Range(u64, u64),
}

impl fmt::Display for KnobValues {
    /// `always, madvise, never` or `a number from 0 to 511`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnobValues::OneOf(list) => f.write_str(&list.join(", ")),
            KnobValues::Range(lo, hi) => write!(f, "a number from {lo} to {hi}"),
        }
    }
}

/// A THP sysfs file the model knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Knob {
    Enabled,
    Defrag,
    UseZeroPage,
    ShrinkUnderused,
    KhugepagedDefrag,
    KhugepagedAllocSleepMillisecs,
    KhugepagedMaxPtesNone,
    KhugepagedMaxPtesSwap,
    KhugepagedMaxPtesShared,
    KhugepagedPagesToScan,
    KhugepagedScanSleepMillisecs,
    MthpEnabled(MthpSize),
}

/// Every top-level THP file a save/restore writes, in the order it writes
/// them, modelled or not: the kernel selftests' `thp_settings` order, except
/// that `khugepaged/scan_sleep_millisecs` comes last among khugepaged's
/// files, since writing it wakes khugepaged at once, which should then see
/// the final values. The per-size files (`PER_SIZE_RESTORE_ORDER`) follow,
/// by ascending size.
pub const RESTORE_ORDER: &[&str] = &[
    "enabled",
    "defrag",
    "shmem_enabled",
    "use_zero_page",
    "shrink_underused",
    "khugepaged/defrag",
    "khugepaged/alloc_sleep_millisecs",
    "khugepaged/max_ptes_none",
    "khugepaged/max_ptes_swap",
    "khugepaged/max_ptes_shared",
    "khugepaged/pages_to_scan",
    "khugepaged/scan_sleep_millisecs",
];
/// The files of each `hugepages-<size>kB` directory a save/restore writes, in order.
pub const PER_SIZE_RESTORE_ORDER: &[&str] = &["enabled", "shmem_enabled"];

/// The top-level knobs in `RESTORE_ORDER`, for `Knob::all`.
const TOP_LEVEL: [Knob; 11] = [
    Knob::Enabled,
    Knob::Defrag,
    Knob::UseZeroPage,
    Knob::ShrinkUnderused,
    Knob::KhugepagedDefrag,
    Knob::KhugepagedAllocSleepMillisecs,
    Knob::KhugepagedMaxPtesNone,
    Knob::KhugepagedMaxPtesSwap,
    Knob::KhugepagedMaxPtesShared,
    Knob::KhugepagedPagesToScan,
    Knob::KhugepagedScanSleepMillisecs,
];

/// A THP file path a scenario or a caller named that no `Knob` stands for,
/// or a value its knob does not accept. Messages name the path relative to
/// `THP_ROOT`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KnobError {
    #[error("expected a THP setting such as enabled, defrag, khugepaged/max_ptes_none or hugepages-64kB/enabled, found {path:?}")]
    Unknown { path: String },
    #[error("there is no {path}: per-size directories are hugepages-<size> for {}", sizes_list())]
    NoSuchSize { path: String },
    #[error("{path} is not modelled: thpsim models anonymous memory only")]
    NotModelled { path: String },
    #[error("{path} is read-only")]
    ReadOnly { path: String },
    #[error("{knob} takes {}, found {value:?}", knob.values())]
    BadValue { knob: Knob, value: String },
}

/// `16kB, 32kB, ..., 2048kB`.
pub fn sizes_list() -> String {
    MTHP_SIZES_KB.iter().map(|kb| format!("{kb}kB")).collect::<Vec<_>>().join(", ")
}

impl Knob {
    /// Every knob, in save/restore order (see `RESTORE_ORDER`).
    pub fn all() -> Vec<Knob> {
        let mut all = TOP_LEVEL.to_vec();
        all.extend(MthpSize::ALL.map(Knob::MthpEnabled));
        all
    }

    /// The path relative to `THP_ROOT`: `khugepaged/max_ptes_none`.
    pub fn path(self) -> String {
        let name = match self {
            Knob::Enabled => "enabled",
            Knob::Defrag => "defrag",
            Knob::UseZeroPage => "use_zero_page",
            Knob::ShrinkUnderused => "shrink_underused",
            Knob::KhugepagedDefrag => "khugepaged/defrag",
            Knob::KhugepagedAllocSleepMillisecs => "khugepaged/alloc_sleep_millisecs",
            Knob::KhugepagedMaxPtesNone => "khugepaged/max_ptes_none",
            Knob::KhugepagedMaxPtesSwap => "khugepaged/max_ptes_swap",
            Knob::KhugepagedMaxPtesShared => "khugepaged/max_ptes_shared",
            Knob::KhugepagedPagesToScan => "khugepaged/pages_to_scan",
            Knob::KhugepagedScanSleepMillisecs => "khugepaged/scan_sleep_millisecs",
            Knob::MthpEnabled(size) => return format!("hugepages-{}kB/enabled", size.kb()),
        };
        name.to_string()
    }

    /// What the kernel accepts when the file is written.
    pub const fn values(self) -> KnobValues {
        match self {
            Knob::Enabled => KnobValues::OneOf(ThpEnabled::NAMES),
            Knob::Defrag => KnobValues::OneOf(Defrag::NAMES),
            Knob::MthpEnabled(_) => KnobValues::OneOf(MthpEnabled::NAMES),
            Knob::UseZeroPage | Knob::ShrinkUnderused | Knob::KhugepagedDefrag => KnobValues::OneOf(BOOL_WORDS),
            Knob::KhugepagedMaxPtesNone | Knob::KhugepagedMaxPtesSwap | Knob::KhugepagedMaxPtesShared => {
                KnobValues::Range(0, MAX_PTES_MAX)
            }
            Knob::KhugepagedPagesToScan => KnobValues::Range(1, u32::MAX as u64),
            Knob::KhugepagedScanSleepMillisecs | Knob::KhugepagedAllocSleepMillisecs => {
                KnobValues::Range(0, u32::MAX as u64)
            }
        }
    }

    /// The knob a path names, relative to `THP_ROOT` or written with a
    /// `transparent_hugepage/` or the full `/sys/kernel/mm/transparent_hugepage/` prefix.
    pub fn from_path(path: &str) -> Result<Knob, KnobError> {
        let rel = path
            .strip_prefix("/sys/kernel/mm/transparent_hugepage/")
            .or_else(|| path.strip_prefix("transparent_hugepage/"))
            .unwrap_or(path);
        if let Some(&knob) = TOP_LEVEL.iter().find(|k| k.path() == rel) {
            return Ok(knob);
        }
        let err = |make: fn(String) -> KnobError| Err(make(rel.to_string()));
        if let Some((size, file)) = rel.strip_prefix("hugepages-").and_then(|r| r.split_once("kB/")) {
            if file == "enabled" {
                return match size.parse::<u64>().ok().and_then(MthpSize::from_kb) {
                    Some(size) => Ok(Knob::MthpEnabled(size)),
                    None => err(|path| KnobError::NoSuchSize { path }),
                };
            }
        }
        if rel.ends_with("shmem_enabled") || rel.starts_with("shmem") {
            return err(|path| KnobError::NotModelled { path });
        }
        if rel == "hpage_pmd_size"
            || rel.contains("/stats/")
            || rel == "khugepaged/pages_collapsed"
            || rel == "khugepaged/full_scans"
        {
            return err(|path| KnobError::ReadOnly { path });
        }
        err(|path| KnobError::Unknown { path })
    }

    /// The setting `echo value > path` makes, if the kernel accepts the
    /// value (exactly as written: no blanks).
    pub fn parse(self, value: &str) -> Result<Setting, KnobError> {
        let bad = || KnobError::BadValue { knob: self, value: value.to_string() };
        let number = || -> Result<u32, KnobError> {
            let KnobValues::Range(lo, hi) = self.values() else { unreachable!("a numeric knob") };
            let n = value.parse::<u64>().ok().filter(|n| (lo..=hi).contains(n)).ok_or_else(bad)?;
            u32::try_from(n).map_err(|_| bad())
        };
        let boolean = || match value {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(bad()),
        };
        Ok(match self {
            Knob::Enabled => Setting::Enabled(ThpEnabled::from_name(value).ok_or_else(bad)?),
            Knob::Defrag => Setting::Defrag(Defrag::from_name(value).ok_or_else(bad)?),
            Knob::MthpEnabled(size) => Setting::MthpEnabled(size, MthpEnabled::from_name(value).ok_or_else(bad)?),
            Knob::UseZeroPage => Setting::UseZeroPage(boolean()?),
            Knob::ShrinkUnderused => Setting::ShrinkUnderused(boolean()?),
            Knob::KhugepagedDefrag => Setting::KhugepagedDefrag(boolean()?),
            Knob::KhugepagedAllocSleepMillisecs => Setting::KhugepagedAllocSleepMillisecs(number()?),
            Knob::KhugepagedMaxPtesNone => Setting::KhugepagedMaxPtesNone(number()?),
            Knob::KhugepagedMaxPtesSwap => Setting::KhugepagedMaxPtesSwap(number()?),
            Knob::KhugepagedMaxPtesShared => Setting::KhugepagedMaxPtesShared(number()?),
            Knob::KhugepagedPagesToScan => Setting::KhugepagedPagesToScan(number()?),
            Knob::KhugepagedScanSleepMillisecs => Setting::KhugepagedScanSleepMillisecs(number()?),
        })
    }
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// A knob together with a value for it: what one write to a THP sysfs file
/// does. Built by `Knob::parse` (or `Setting::from_sysfs`), which check the
/// value; `in_range` checks one built by hand or deserialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Setting {
    Enabled(ThpEnabled),
    Defrag(Defrag),
    UseZeroPage(bool),
    ShrinkUnderused(bool),
    KhugepagedDefrag(bool),
    KhugepagedAllocSleepMillisecs(u32),
    KhugepagedMaxPtesNone(u32),
    KhugepagedMaxPtesSwap(u32),
    KhugepagedMaxPtesShared(u32),
    KhugepagedPagesToScan(u32),
    KhugepagedScanSleepMillisecs(u32),
    MthpEnabled(MthpSize, MthpEnabled),
}

impl Setting {
    /// `echo value > path` as a shell would do it: the value may end in a
    /// newline or blanks, as sysfs stores accept.
    pub fn from_sysfs(path: &str, value: &str) -> Result<Setting, KnobError> {
        Knob::from_path(path)?.parse(value.trim())
    }

    pub const fn knob(self) -> Knob {
        match self {
            Setting::Enabled(_) => Knob::Enabled,
            Setting::Defrag(_) => Knob::Defrag,
            Setting::UseZeroPage(_) => Knob::UseZeroPage,
            Setting::ShrinkUnderused(_) => Knob::ShrinkUnderused,
            Setting::KhugepagedDefrag(_) => Knob::KhugepagedDefrag,
            Setting::KhugepagedAllocSleepMillisecs(_) => Knob::KhugepagedAllocSleepMillisecs,
            Setting::KhugepagedMaxPtesNone(_) => Knob::KhugepagedMaxPtesNone,
            Setting::KhugepagedMaxPtesSwap(_) => Knob::KhugepagedMaxPtesSwap,
            Setting::KhugepagedMaxPtesShared(_) => Knob::KhugepagedMaxPtesShared,
            Setting::KhugepagedPagesToScan(_) => Knob::KhugepagedPagesToScan,
            Setting::KhugepagedScanSleepMillisecs(_) => Knob::KhugepagedScanSleepMillisecs,
            Setting::MthpEnabled(size, _) => Knob::MthpEnabled(size),
        }
    }

    /// The number of a numeric setting.
    pub const fn number(self) -> Option<u32> {
        match self {
            Setting::KhugepagedAllocSleepMillisecs(n)
            | Setting::KhugepagedMaxPtesNone(n)
            | Setting::KhugepagedMaxPtesSwap(n)
            | Setting::KhugepagedMaxPtesShared(n)
            | Setting::KhugepagedPagesToScan(n)
            | Setting::KhugepagedScanSleepMillisecs(n) => Some(n),
            _ => None,
        }
    }

    /// The value as written to the file: `defer+madvise`, `1`, `511`.
    pub fn value(self) -> String {
        let word = match self {
            Setting::Enabled(v) => v.name(),
            Setting::Defrag(v) => v.name(),
            Setting::MthpEnabled(_, v) => v.name(),
            Setting::UseZeroPage(b) | Setting::ShrinkUnderused(b) | Setting::KhugepagedDefrag(b) => {
                BOOL_WORDS[usize::from(b)]
            }
            _ => return self.number().map_or_else(String::new, |n| n.to_string()),
        };
        word.to_string()
    }

    /// Whether the kernel would accept this value (always true for one
    /// `Knob::parse` made).
    pub fn in_range(self) -> bool {
        let knob = self.knob();
        if let Knob::MthpEnabled(size) = knob {
            return size.is_valid();
        }
        match (knob.values(), self.number()) {
            (KnobValues::Range(lo, hi), Some(n)) => (lo..=hi).contains(&u64::from(n)),
            _ => true,
        }
    }

    /// The file's contents as the kernel prints them: the choices with the
    /// current one in brackets (`always [madvise] never`), or the number.
    pub fn sysfs_print(self) -> String {
        let value = self.value();
        match self.knob().values() {
            KnobValues::OneOf(list) if list != BOOL_WORDS => list
                .iter()
                .map(|o| if *o == value { format!("[{o}]") } else { (*o).to_string() })
                .collect::<Vec<_>>()
                .join(" "),
            _ => value,
        }
    }
}

impl fmt::Display for Setting {
    /// As a scenario writes it: `enabled = always`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", self.knob(), self.value())
    }
}

/// The current value in a file's contents as sysfs prints them: the
/// bracketed choice (`always [madvise] never` gives `madvise`), else the
/// trimmed text.
pub fn parse_sysfs_print(text: &str) -> &str {
    let text = text.trim();
    if let (Some(open), Some(close)) = (text.find('['), text.find(']')) {
        if open < close {
            return &text[open + 1..close];
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_knob_parses_its_own_path_and_every_value_round_trips() {
        for knob in Knob::all() {
            assert_eq!(Knob::from_path(&knob.path()), Ok(knob));
            assert_eq!(Knob::from_path(&format!("{THP_ROOT}/{}", knob.path())), Ok(knob));
            let samples: Vec<String> = match knob.values() {
                KnobValues::OneOf(list) => list.iter().map(|s| s.to_string()).collect(),
                KnobValues::Range(lo, hi) => vec![lo.to_string(), hi.to_string()],
            };
            for value in samples {
                let setting = knob.parse(&value).unwrap();
                assert_eq!(setting.knob(), knob);
                assert_eq!(setting.value(), value);
                assert!(setting.in_range());
                assert_eq!(parse_sysfs_print(&setting.sysfs_print()), value);
                assert_eq!(setting.to_string(), format!("{} = {value}", knob.path()));
            }
        }
    }

    #[test]
    fn bad_paths_and_values_say_why() {
        let path = |p: &str| Knob::from_path(p).unwrap_err().to_string();
        assert_eq!(
            path("hugepages-48kB/enabled"),
            format!(
                "there is no hugepages-48kB/enabled: per-size directories are hugepages-<size> for {}",
                sizes_list()
            )
        );
        assert_eq!(path("shmem_enabled"), "shmem_enabled is not modelled: thpsim models anonymous memory only");
        assert_eq!(
            path("hugepages-64kB/shmem_enabled"),
            "hugepages-64kB/shmem_enabled is not modelled: thpsim models anonymous memory only"
        );
        assert_eq!(path("hpage_pmd_size"), "hpage_pmd_size is read-only");
        assert!(path("enable").starts_with("expected a THP setting"));
        let value = |k: Knob, v: &str| k.parse(v).unwrap_err().to_string();
        assert_eq!(value(Knob::Enabled, "sometimes"), "enabled takes always, madvise, never, found \"sometimes\"");
        assert_eq!(
            value(Knob::KhugepagedMaxPtesNone, "512"),
            "khugepaged/max_ptes_none takes a number from 0 to 511, found \"512\""
        );
        assert!(Knob::KhugepagedPagesToScan.parse("0").is_err());
        assert!(Knob::KhugepagedPagesToScan.parse("4294967296").is_err());
        assert!(!Setting::KhugepagedMaxPtesNone(512).in_range());
        assert_eq!(Setting::from_sysfs("enabled", "never\n"), Ok(Setting::Enabled(ThpEnabled::Never)));
    }

    #[test]
    fn print_form_is_the_kernels() {
        assert_eq!(Setting::Enabled(ThpEnabled::Madvise).sysfs_print(), "always [madvise] never");
        assert_eq!(Setting::Defrag(Defrag::DeferMadvise).sysfs_print(), "always defer [defer+madvise] madvise never");
        assert_eq!(
            Setting::MthpEnabled(MthpSize::PMD, MthpEnabled::Inherit).sysfs_print(),
            "always [inherit] madvise never"
        );
        assert_eq!(Setting::UseZeroPage(true).sysfs_print(), "1");
        assert_eq!(parse_sysfs_print("10000\n"), "10000");
    }

    #[test]
    fn knobs_follow_the_restore_order() {
        let all: Vec<String> = Knob::all().iter().map(|k| k.path()).collect();
        let top: Vec<&str> = RESTORE_ORDER.iter().copied().filter(|p| Knob::from_path(p).is_ok()).collect();
        assert_eq!(&all[..top.len()], top.as_slice());
        let sizes: Vec<u64> = MthpSize::ALL.iter().map(|s| s.kb()).collect();
        assert_eq!(sizes, MTHP_SIZES_KB);
        assert_eq!(all.len(), TOP_LEVEL.len() + MthpSize::ALL.len());
    }
}
