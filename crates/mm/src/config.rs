//! The THP tunables under /sys/kernel/mm/transparent_hugepage, and the
//! switches for the proposals later issues add.
//!
//! Models: mm/huge_memory.c (`enabled_store()`, `defrag_store()`,
//! `thpsize_enabled_store()`, `use_zero_page`, `shrink_underused`) and
//! mm/khugepaged.c (the `khugepaged/` files). Defaults are Linux 6.18's with
//! `CONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y`, as on our machines.

use crate::errno::Errno;
use crate::types::Order;

/// Top-level `enabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThpEnabled {
    Always,
    Madvise,
    Never,
}

/// Per-size `hugepages-<size>kB/enabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MthpEnabled {
    Always,
    Inherit,
    Madvise,
    Never,
}

/// `defrag`: how hard a THP fault allocation may try (`vma_thp_gfp_mask()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defrag {
    Always,
    Defer,
    DeferMadvise,
    Madvise,
    Never,
}

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

/// Where the PTE table that a PMD split needs comes from. Linux 6.18
/// deposits one at fault time; the lazy-allocation proposal (a later issue)
/// adds `Lazy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deposit {
    Eager,
}

/// Anonymous mTHP orders on x86-64: 16K (order 2) to 2M (order 9).
/// Order 1 is never used for anonymous memory (`THP_ORDERS_ALL_ANON`).
pub const MTHP_ORDERS: std::ops::RangeInclusive<u8> = 2..=9;

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
    pub deposit: Deposit,
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
        }
    }
}

fn size_kb_to_order(kb: u64) -> Option<u8> {
    let order = Order::from_size(kb.checked_mul(1024)?)?;
    MTHP_ORDERS.contains(&order.get()).then_some(order.get())
}

fn parse_u32(value: &str, max: u32) -> Result<u32, Errno> {
    let v: u32 = value.trim().parse().map_err(|_| Errno::Inval)?;
    if v > max {
        return Err(Errno::Inval);
    }
    Ok(v)
}

fn parse_bool01(value: &str) -> Result<bool, Errno> {
    match value.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(Errno::Inval),
    }
}

fn bracketed(options: &[&str], current: &str) -> String {
    options
        .iter()
        .map(|o| if *o == current { format!("[{o}]") } else { (*o).to_string() })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Config {
    /// The sysfs files the model knows, relative to
    /// /sys/kernel/mm/transparent_hugepage, in the order a save/restore writes them.
    pub fn knob_paths() -> Vec<String> {
        let mut paths: Vec<String> =
            ["enabled", "defrag", "use_zero_page", "shrink_underused"].map(String::from).to_vec();
        for order in MTHP_ORDERS {
            paths.push(format!("hugepages-{}kB/enabled", Order::new(order).bytes() / 1024));
        }
        for k in [
            "defrag",
            "max_ptes_none",
            "max_ptes_swap",
            "max_ptes_shared",
            "pages_to_scan",
            "scan_sleep_millisecs",
            "alloc_sleep_millisecs",
        ] {
            paths.push(format!("khugepaged/{k}"));
        }
        paths
    }

    /// Writes one sysfs file, as `echo value > path` would; `Errno::Inval`
    /// for a value the kernel would refuse, `Errno::Inval` too for an unknown
    /// file (the shell would say ENOENT; scenarios check names at parse time).
    pub fn set(&mut self, path: &str, value: &str) -> Result<(), Errno> {
        let value = value.trim();
        let hpage_pmd_nr = Order::PMD.nr_pages() as u32;
        match path {
            "enabled" => {
                self.enabled = match value {
                    "always" => ThpEnabled::Always,
                    "madvise" => ThpEnabled::Madvise,
                    "never" => ThpEnabled::Never,
                    _ => return Err(Errno::Inval),
                }
            }
            "defrag" => {
                self.defrag = match value {
                    "always" => Defrag::Always,
                    "defer" => Defrag::Defer,
                    "defer+madvise" => Defrag::DeferMadvise,
                    "madvise" => Defrag::Madvise,
                    "never" => Defrag::Never,
                    _ => return Err(Errno::Inval),
                }
            }
            "use_zero_page" => self.use_zero_page = parse_bool01(value)?,
            "shrink_underused" => self.shrink_underused = parse_bool01(value)?,
            "khugepaged/defrag" => self.khugepaged.defrag = parse_bool01(value)?,
            "khugepaged/max_ptes_none" => self.khugepaged.max_ptes_none = parse_u32(value, hpage_pmd_nr - 1)?,
            "khugepaged/max_ptes_swap" => self.khugepaged.max_ptes_swap = parse_u32(value, hpage_pmd_nr - 1)?,
            "khugepaged/max_ptes_shared" => self.khugepaged.max_ptes_shared = parse_u32(value, hpage_pmd_nr - 1)?,
            "khugepaged/pages_to_scan" => {
                let v = parse_u32(value, u32::MAX)?;
                if v == 0 {
                    return Err(Errno::Inval);
                }
                self.khugepaged.pages_to_scan = v;
            }
            "khugepaged/scan_sleep_millisecs" => self.khugepaged.scan_sleep_millisecs = parse_u32(value, u32::MAX)?,
            "khugepaged/alloc_sleep_millisecs" => self.khugepaged.alloc_sleep_millisecs = parse_u32(value, u32::MAX)?,
            _ => {
                let order = path
                    .strip_prefix("hugepages-")
                    .and_then(|rest| rest.strip_suffix("kB/enabled"))
                    .and_then(|kb| kb.parse::<u64>().ok())
                    .and_then(size_kb_to_order)
                    .ok_or(Errno::Inval)?;
                self.mthp_enabled[order as usize] = match value {
                    "always" => MthpEnabled::Always,
                    "inherit" => MthpEnabled::Inherit,
                    "madvise" => MthpEnabled::Madvise,
                    "never" => MthpEnabled::Never,
                    _ => return Err(Errno::Inval),
                };
            }
        }
        Ok(())
    }

    /// Reads one sysfs file as the kernel prints it (`always [madvise] never`).
    pub fn get(&self, path: &str) -> Option<String> {
        let k = &self.khugepaged;
        Some(match path {
            "enabled" => bracketed(
                &["always", "madvise", "never"],
                match self.enabled {
                    ThpEnabled::Always => "always",
                    ThpEnabled::Madvise => "madvise",
                    ThpEnabled::Never => "never",
                },
            ),
            "defrag" => bracketed(
                &["always", "defer", "defer+madvise", "madvise", "never"],
                match self.defrag {
                    Defrag::Always => "always",
                    Defrag::Defer => "defer",
                    Defrag::DeferMadvise => "defer+madvise",
                    Defrag::Madvise => "madvise",
                    Defrag::Never => "never",
                },
            ),
            "use_zero_page" => u8::from(self.use_zero_page).to_string(),
            "shrink_underused" => u8::from(self.shrink_underused).to_string(),
            "khugepaged/defrag" => u8::from(k.defrag).to_string(),
            "khugepaged/max_ptes_none" => k.max_ptes_none.to_string(),
            "khugepaged/max_ptes_swap" => k.max_ptes_swap.to_string(),
            "khugepaged/max_ptes_shared" => k.max_ptes_shared.to_string(),
            "khugepaged/pages_to_scan" => k.pages_to_scan.to_string(),
            "khugepaged/scan_sleep_millisecs" => k.scan_sleep_millisecs.to_string(),
            "khugepaged/alloc_sleep_millisecs" => k.alloc_sleep_millisecs.to_string(),
            _ => {
                let order = path
                    .strip_prefix("hugepages-")
                    .and_then(|rest| rest.strip_suffix("kB/enabled"))
                    .and_then(|kb| kb.parse::<u64>().ok())
                    .and_then(size_kb_to_order)?;
                bracketed(
                    &["always", "inherit", "madvise", "never"],
                    match self.mthp_enabled[order as usize] {
                        MthpEnabled::Always => "always",
                        MthpEnabled::Inherit => "inherit",
                        MthpEnabled::Madvise => "madvise",
                        MthpEnabled::Never => "never",
                    },
                )
            }
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_knob_round_trips_through_sysfs_strings() {
        let mut c = Config::default();
        assert_eq!(c.get("enabled").unwrap(), "always [madvise] never");
        c.set("enabled", "always").unwrap();
        assert_eq!(c.get("enabled").unwrap(), "[always] madvise never");
        c.set("hugepages-64kB/enabled", "inherit").unwrap();
        assert_eq!(c.get("hugepages-64kB/enabled").unwrap(), "always [inherit] madvise never");
        c.set("defrag", "defer+madvise").unwrap();
        assert_eq!(c.get("defrag").unwrap(), "always defer [defer+madvise] madvise never");
        for path in Config::knob_paths() {
            assert!(c.get(&path).is_some(), "{path} unreadable");
        }
    }

    #[test]
    fn bad_values_are_refused_like_the_kernel() {
        let mut c = Config::default();
        assert_eq!(c.set("enabled", "sometimes"), Err(Errno::Inval));
        assert_eq!(c.set("khugepaged/max_ptes_none", "512"), Err(Errno::Inval));
        assert_eq!(c.set("hugepages-8kB/enabled", "always"), Err(Errno::Inval));
        assert_eq!(c.set("hugepages-4096kB/enabled", "always"), Err(Errno::Inval));
        assert_eq!(c, Config::default());
    }

    #[test]
    fn allowed_orders_follow_inherit_and_madvise() {
        let mut c = Config::default();
        assert_eq!(c.sysfs_allowed_orders(false), 0);
        assert_eq!(c.sysfs_allowed_orders(true), 1 << 9);
        c.set("hugepages-64kB/enabled", "always").unwrap();
        assert_eq!(c.sysfs_allowed_orders(false), 1 << 4);
        c.set("enabled", "never").unwrap();
        assert_eq!(c.sysfs_allowed_orders(true), 1 << 4);
    }
}
