//! The THP tunables under /sys/kernel/mm/transparent_hugepage, and the
//! switches for the proposals later issues add.
//!
//! Models: mm/huge_memory.c (`enabled_store()`, `defrag_store()`,
//! `thpsize_enabled_store()`, `use_zero_page`, `shrink_underused`) and
//! mm/khugepaged.c (the `khugepaged/` files). Defaults are Linux 6.18's with
//! `CONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y`, as on our machines.

use crate::errno::Errno;
use crate::types::Order;

/// The knob table (paths, values, print form, save/restore order) lives in
/// `thpsim_uapi::knob`; the value types are the model's too.
pub use thpsim_uapi::knob::{Defrag, Knob, KnobError, MthpEnabled, MthpSize, Setting, ThpEnabled};

/// The `khugepaged/` directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KhugepagedConfig {
    pub defrag: bool,
    pub max_ptes_none: u32,
    pub max_ptes_swap: u32,
    pub max_ptes_shared: u32,
    pub pages_to_scan: u32,
    pub scan_sleep_millisecs: u32,
    pub alloc_sleep_millisecs: u32,
}

/// Anonymous mTHP orders on x86-64: 16K (order 2) to 2M (order 9).
/// Order 1 is never used for anonymous memory (`THP_ORDERS_ALL_ANON`).
pub const MTHP_ORDERS: std::ops::RangeInclusive<u8> = MthpSize::ORDERS;

/// Every tunable the model reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub enabled: ThpEnabled,
    pub defrag: Defrag,
    pub use_zero_page: bool,
    pub shrink_underused: bool,
    /// `hugepages-<size>kB/enabled`, indexed by order (entries 0 and 1 unused).
    pub mthp_enabled: [MthpEnabled; 10],
    pub khugepaged: KhugepagedConfig,
    /// Proposal switches (`policy` statements; see `Policy`).
    pub deposit: Deposit,
    pub pmd_swap_entries: PmdSwapEntries,
    pub pud_thp: PudThp,
    pub pmd_cow: PmdCow,
}

impl Default for Config {
    fn default() -> Self {
        let mut mthp_enabled = [MthpEnabled::Never; 10];
        mthp_enabled[Order::PMD.get() as usize] = MthpEnabled::Inherit;
        Config {
            enabled: ThpEnabled::Madvise,
            defrag: Defrag::Madvise,
            use_zero_page: true,
            shrink_underused: true,
            mthp_enabled,
            khugepaged: KhugepagedConfig {
                defrag: true,
                max_ptes_none: 511,
                max_ptes_swap: 64,
                max_ptes_shared: 256,
                pages_to_scan: 4096,
                scan_sleep_millisecs: 10000,
                alloc_sleep_millisecs: 60000,
            },
            deposit: Deposit::Eager,
            pmd_swap_entries: PmdSwapEntries::Off,
            pud_thp: PudThp::Off,
            pmd_cow: PmdCow::Off,
        }
    }
}

impl Config {
    /// Writes one sysfs file, as `echo value > path` would; `Errno::Inval`
    /// for a value the kernel would refuse (possible only for a `Setting`
    /// built by hand or deserialised: `Knob::parse` checks values).
    pub fn set(&mut self, setting: Setting) -> Result<(), Errno> {
        if !setting.in_range() {
            return Err(Errno::Inval);
        }
        let k = &mut self.khugepaged;
        match setting {
            Setting::Enabled(v) => self.enabled = v,
            Setting::Defrag(v) => self.defrag = v,
            Setting::UseZeroPage(v) => self.use_zero_page = v,
            Setting::ShrinkUnderused(v) => self.shrink_underused = v,
            Setting::MthpEnabled(size, v) => self.mthp_enabled[size.order() as usize] = v,
            Setting::KhugepagedDefrag(v) => k.defrag = v,
            Setting::KhugepagedAllocSleepMillisecs(v) => k.alloc_sleep_millisecs = v,
            Setting::KhugepagedMaxPtesNone(v) => k.max_ptes_none = v,
            Setting::KhugepagedMaxPtesSwap(v) => k.max_ptes_swap = v,
            Setting::KhugepagedMaxPtesShared(v) => k.max_ptes_shared = v,
            Setting::KhugepagedPagesToScan(v) => k.pages_to_scan = v,
            Setting::KhugepagedScanSleepMillisecs(v) => k.scan_sleep_millisecs = v,
        }
        Ok(())
    }

    /// `echo value > path` with both as text (tests and examples);
    /// `Errno::Inval` for an unknown file too (the shell would say ENOENT;
    /// scenarios check names at parse time).
    pub fn write(&mut self, path: &str, value: &str) -> Result<(), Errno> {
        self.set(Setting::from_sysfs(path, value).map_err(|_| Errno::Inval)?)
    }

    /// A knob's current value.
    pub fn setting(&self, knob: Knob) -> Setting {
        let k = &self.khugepaged;
        match knob {
            Knob::Enabled => Setting::Enabled(self.enabled),
            Knob::Defrag => Setting::Defrag(self.defrag),
            Knob::UseZeroPage => Setting::UseZeroPage(self.use_zero_page),
            Knob::ShrinkUnderused => Setting::ShrinkUnderused(self.shrink_underused),
            Knob::MthpEnabled(size) => Setting::MthpEnabled(size, self.mthp_enabled[size.order() as usize]),
            Knob::KhugepagedDefrag => Setting::KhugepagedDefrag(k.defrag),
            Knob::KhugepagedAllocSleepMillisecs => Setting::KhugepagedAllocSleepMillisecs(k.alloc_sleep_millisecs),
            Knob::KhugepagedMaxPtesNone => Setting::KhugepagedMaxPtesNone(k.max_ptes_none),
            Knob::KhugepagedMaxPtesSwap => Setting::KhugepagedMaxPtesSwap(k.max_ptes_swap),
            Knob::KhugepagedMaxPtesShared => Setting::KhugepagedMaxPtesShared(k.max_ptes_shared),
            Knob::KhugepagedPagesToScan => Setting::KhugepagedPagesToScan(k.pages_to_scan),
            Knob::KhugepagedScanSleepMillisecs => Setting::KhugepagedScanSleepMillisecs(k.scan_sleep_millisecs),
        }
    }

    /// Reads one sysfs file as the kernel prints it (`always [madvise] never`).
    pub fn get(&self, knob: Knob) -> String {
        self.setting(knob).sysfs_print()
    }

    /// `hugepage_global_enabled()`.
    pub fn global_enabled(&self) -> bool {
        self.enabled != ThpEnabled::Never
    }

    /// `hugepage_global_always()`.
    pub fn global_always(&self) -> bool {
        self.enabled == ThpEnabled::Always
    }

    /// The anonymous orders sysfs allows for a VMA, as a bitmask by order:
    /// the "enforce sysfs" part of `__thp_vma_allowable_orders()`.
    pub fn sysfs_allowed_orders(&self, vm_hugepage: bool) -> u32 {
        let mut mask = 0;
        for order in MTHP_ORDERS {
            let allowed = match self.mthp_enabled[order as usize] {
                MthpEnabled::Always => true,
                MthpEnabled::Madvise => vm_hugepage,
                MthpEnabled::Inherit => self.global_always() || (vm_hugepage && self.global_enabled()),
                MthpEnabled::Never => false,
            };
            if allowed {
                mask |= 1 << order;
            }
        }
        mask
    }

    /// `hugepage_pmd_enabled()`: whether khugepaged has any work at PMD size.
    pub fn pmd_enabled(&self) -> bool {
        match self.mthp_enabled[Order::PMD.get() as usize] {
            MthpEnabled::Always | MthpEnabled::Madvise => true,
            MthpEnabled::Inherit => self.global_enabled(),
            MthpEnabled::Never => false,
        }
    }

    /// Whether a THP fault allocation may compact directly
    /// (`__GFP_DIRECT_RECLAIM` in `vma_thp_gfp_mask()`).
    pub fn fault_may_compact(&self, vm_hugepage: bool) -> bool {
        match self.defrag {
            Defrag::Always => true,
            Defrag::Defer => false,
            Defrag::DeferMadvise | Defrag::Madvise => vm_hugepage,
            Defrag::Never => false,
        }
    }
}

// A proposal switch is an enum whose variants are spelled as the `policy`
// statement's values, the first being Linux 6.18's behaviour.
thpsim_uapi::words! {
    /// Where the PTE table that a PMD split needs comes from. Linux 6.18
    /// deposits one at fault time (`pgtable_trans_huge_deposit()` in
    /// `__do_huge_pmd_anonymous_page()`); the lazy-allocation proposal (a
    /// later issue) adds `Lazy`.
    pub enum Deposit {
        Eager = "eager",
    }
}

thpsim_uapi::words! {
    /// Whether a PMD-mapped THP can be swapped out as one PMD-sized swap
    /// entry. Linux 6.18 splits the PMD first (`Off`); the proposal adds a
    /// PMD swap entry.
    pub enum PmdSwapEntries {
        Off = "off",
    }
}

thpsim_uapi::words! {
    /// PUD-sized (1 GiB) anonymous THP. Linux 6.18 has none for anonymous
    /// memory (`Off`).
    pub enum PudThp {
        Off = "off",
    }
}

thpsim_uapi::words! {
    /// Copy-on-write of a whole PMD-mapped THP. Linux 6.18's
    /// `do_huge_pmd_wp_page()` splits the PMD and copies one page (`Off`).
    pub enum PmdCow {
        Off = "off",
    }
}

/// One proposal switch set to one value: what a scenario's
/// `policy <name> = <value>` statement or `--policy name=value` selects.
/// Each variant is a field of `Config`; the default `Config` holds Linux
/// 6.18's value of each (`Policy::defaults`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Policy {
    Deposit(Deposit),
    PmdSwapEntries(PmdSwapEntries),
    PudThp(PudThp),
    PmdCow(PmdCow),
}

/// A policy name or value nobody defined.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("there is no policy {name:?}; the policies are {}", Policy::NAMES.join(", "))]
    UnknownName { name: String },
    #[error("policy {name} takes {}, found {value:?}", values.join(", "))]
    BadValue { name: &'static str, value: String, values: &'static [&'static str] },
}

impl Policy {
    /// The policy names, in registry order.
    pub const NAMES: &'static [&'static str] = &["deposit", "pmd_swap_entries", "pud_thp", "pmd_cow"];

    /// Linux 6.18's value of every policy, in registry order.
    pub fn defaults() -> [Policy; 4] {
        let c = Config::default();
        [
            Policy::Deposit(c.deposit),
            Policy::PmdSwapEntries(c.pmd_swap_entries),
            Policy::PudThp(c.pud_thp),
            Policy::PmdCow(c.pmd_cow),
        ]
    }

    /// The values a policy takes, Linux 6.18's first.
    pub fn values(name: &str) -> Option<&'static [&'static str]> {
        Some(match name {
            "deposit" => Deposit::NAMES,
            "pmd_swap_entries" => PmdSwapEntries::NAMES,
            "pud_thp" => PudThp::NAMES,
            "pmd_cow" => PmdCow::NAMES,
            _ => return None,
        })
    }

    /// `policy <name> = <value>`.
    pub fn parse(name: &str, value: &str) -> Result<Policy, PolicyError> {
        let Some(&known) = Policy::NAMES.iter().find(|n| **n == name) else {
            return Err(PolicyError::UnknownName { name: name.to_string() });
        };
        let bad = || PolicyError::BadValue {
            name: known,
            value: value.to_string(),
            values: Policy::values(known).unwrap_or(&[]),
        };
        Ok(match known {
            "deposit" => Policy::Deposit(Deposit::from_name(value).ok_or_else(bad)?),
            "pmd_swap_entries" => Policy::PmdSwapEntries(PmdSwapEntries::from_name(value).ok_or_else(bad)?),
            "pud_thp" => Policy::PudThp(PudThp::from_name(value).ok_or_else(bad)?),
            _ => Policy::PmdCow(PmdCow::from_name(value).ok_or_else(bad)?),
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Policy::Deposit(_) => "deposit",
            Policy::PmdSwapEntries(_) => "pmd_swap_entries",
            Policy::PudThp(_) => "pud_thp",
            Policy::PmdCow(_) => "pmd_cow",
        }
    }

    pub const fn value(self) -> &'static str {
        match self {
            Policy::Deposit(v) => v.name(),
            Policy::PmdSwapEntries(v) => v.name(),
            Policy::PudThp(v) => v.name(),
            Policy::PmdCow(v) => v.name(),
        }
    }

    /// Linux 6.18's value of this policy.
    pub fn baseline(self) -> Policy {
        Policy::defaults().into_iter().find(|p| p.name() == self.name()).unwrap_or(self)
    }

    /// Whether this is what Linux 6.18 does (so the live kernel can run it).
    pub fn is_baseline(self) -> bool {
        self == self.baseline()
    }
}

impl std::fmt::Display for Policy {
    /// `deposit = eager`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}", self.name(), self.value())
    }
}

impl Config {
    /// Sets one proposal switch.
    pub fn set_policy(&mut self, policy: Policy) {
        match policy {
            Policy::Deposit(v) => self.deposit = v,
            Policy::PmdSwapEntries(v) => self.pmd_swap_entries = v,
            Policy::PudThp(v) => self.pud_thp = v,
            Policy::PmdCow(v) => self.pmd_cow = v,
        }
    }

    /// Linux 6.18's defaults with these policies applied, in order.
    pub fn with_policies(policies: impl IntoIterator<Item = Policy>) -> Config {
        let mut config = Config::default();
        for policy in policies {
            config.set_policy(policy);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_knob_round_trips_through_sysfs_strings() {
        let mut c = Config::default();
        assert_eq!(c.get(Knob::Enabled), "always [madvise] never");
        c.write("enabled", "always").unwrap();
        assert_eq!(c.get(Knob::Enabled), "[always] madvise never");
        let size64 = MthpSize::from_kb(64).unwrap();
        c.write("hugepages-64kB/enabled", "inherit").unwrap();
        assert_eq!(c.get(Knob::MthpEnabled(size64)), "always [inherit] madvise never");
        c.write("defrag", "defer+madvise").unwrap();
        assert_eq!(c.get(Knob::Defrag), "always defer [defer+madvise] madvise never");
        for knob in Knob::all() {
            let setting = c.setting(knob);
            assert_eq!(setting.knob(), knob);
            let mut d = Config::default();
            d.set(setting).unwrap();
            assert_eq!(d.setting(knob), setting, "{knob} does not round-trip");
        }
    }

    #[test]
    fn bad_values_are_refused_like_the_kernel() {
        let mut c = Config::default();
        assert_eq!(c.write("enabled", "sometimes"), Err(Errno::Inval));
        assert_eq!(c.write("khugepaged/max_ptes_none", "512"), Err(Errno::Inval));
        assert_eq!(c.set(Setting::KhugepagedMaxPtesNone(512)), Err(Errno::Inval));
        assert_eq!(c.set(Setting::KhugepagedPagesToScan(0)), Err(Errno::Inval));
        assert_eq!(c.write("hugepages-8kB/enabled", "always"), Err(Errno::Inval));
        assert_eq!(c.write("hugepages-4096kB/enabled", "always"), Err(Errno::Inval));
        assert_eq!(c, Config::default());
    }

    #[test]
    fn allowed_orders_follow_inherit_and_madvise() {
        let mut c = Config::default();
        assert_eq!(c.sysfs_allowed_orders(false), 0);
        assert_eq!(c.sysfs_allowed_orders(true), 1 << 9);
        c.write("hugepages-64kB/enabled", "always").unwrap();
        assert_eq!(c.sysfs_allowed_orders(false), 1 << 4);
        c.write("enabled", "never").unwrap();
        assert_eq!(c.sysfs_allowed_orders(true), 1 << 4);
    }

    #[test]
    fn policy_registry_defaults_are_linux_6_18() {
        for name in Policy::NAMES {
            let values = Policy::values(name).unwrap();
            let default = Policy::parse(name, values[0]).unwrap();
            assert!(default.is_baseline(), "{default}");
            assert!(Policy::defaults().contains(&default));
            assert_eq!(Config::with_policies([default]), Config::default());
        }
        assert_eq!(Policy::parse("deposit", "eager"), Ok(Policy::Deposit(Deposit::Eager)));
        assert_eq!(Policy::Deposit(Deposit::Eager).to_string(), "deposit = eager");
    }

    #[test]
    fn unknown_policies_and_values_list_the_valid_ones() {
        assert_eq!(
            Policy::parse("lazy_deposit", "on").unwrap_err().to_string(),
            "there is no policy \"lazy_deposit\"; the policies are deposit, pmd_swap_entries, pud_thp, pmd_cow"
        );
        assert_eq!(
            Policy::parse("deposit", "lazy").unwrap_err().to_string(),
            "policy deposit takes eager, found \"lazy\""
        );
        assert_eq!(Policy::parse("pmd_cow", "on").unwrap_err().to_string(), "policy pmd_cow takes off, found \"on\"");
    }
}
