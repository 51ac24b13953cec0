//! Small readers for what the kernel shows under /proc: /proc/vmstat (after
//! /proc/sys/vm/stat_refresh), /proc/<pid>/smaps, maps and status (`VmPTE`),
//! /proc/<pid>/pagemap, and /proc/kpageflags with /proc/kpagecount to find
//! each page's folio, order and mapcount.
//!
//! Encodings are the kernel's (Documentation/admin-guide/mm/pagemap.rst):
//! pagemap bit 63 present, 62 swapped, 56 exclusively mapped, 0-54 PFN;
//! kpageflags bit 15 COMPOUND_HEAD, 16 COMPOUND_TAIL, 24 ZERO_PAGE (the
//! folio's order comes from the compound bits, so THP (22) is not needed).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;

/// pagemap: the page is present in RAM.
pub(crate) const PM_PRESENT: u64 = 1 << 63;
/// pagemap: the page is in swap.
pub(crate) const PM_SWAP: u64 = 1 << 62;
/// pagemap: the page is mapped exactly once (PM_MMAP_EXCLUSIVE).
pub(crate) const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
/// pagemap: the PFN field of a present page.
pub(crate) const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// kpageflags bit numbers (include/uapi/linux/kernel-page-flags.h).
pub(crate) const KPF_COMPOUND_HEAD: u64 = 1 << 15;
pub(crate) const KPF_COMPOUND_TAIL: u64 = 1 << 16;
pub(crate) const KPF_ZERO_PAGE: u64 = 1 << 24;
pub(crate) const KPF_LRU: u64 = 1 << 5;
pub(crate) const KPF_SWAPCACHE: u64 = 1 << 13;
pub(crate) const KPF_SWAPBACKED: u64 = 1 << 14;

/// The largest folio walked: a PUD-sized one (order 18). A longer run of
/// tail pages means the flags changed under us or the reader is wrong.
const MAX_FOLIO_PAGES: u64 = 1 << 18;

/// Attaches the file name to an I/O error.
pub(crate) fn at(path: &str, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{path}: {err}"))
}

/// Reads a whole /proc or /sys file as text.
pub(crate) fn read_text(path: &str) -> io::Result<String> {
    fs::read_to_string(path).map_err(|e| at(path, e))
}

/// Writes `value` to a /proc or /sys file with one `write`.
pub(crate) fn write_text(path: &str, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| at(path, e))
}

/// Folds per-CPU counter deltas into the global counters, so `nr_*` gauges
/// read exactly.
pub(crate) fn stat_refresh() -> io::Result<()> {
    write_text("/proc/sys/vm/stat_refresh", "1")
}

/// Drains every CPU's LRU batches (`lru_cache_disable()`, which
/// `move_pages(2)` calls before moving anything, even for no pages), so
/// that folios just faulted are on the LRU and folios just marked lazyfree
/// have lost SWAPBACKED (and counted `pglazyfree`): the state the model,
/// which has no per-CPU batches, is always in. Without it, kpageflags LRU,
/// smaps LazyFree and `pglazyfree` for small folios depend on which CPU
/// faulted them and on what else drained since.
pub(crate) fn drain_lru_batches() -> io::Result<()> {
    let page: usize = 0;
    let node: i32 = 0;
    let mut status: i32 = 0;
    // SAFETY: move_pages of no pages of this process reads nothing from the
    // arrays, which are valid anyway.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            0usize,
            &page as *const usize,
            &node as *const i32,
            &mut status as *mut i32,
            0,
        )
    };
    if ret < 0 {
        return Err(at("move_pages", io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs the shrinkers: `echo 2 > /proc/sys/vm/drop_caches` (slab objects,
/// which includes the deferred-split and underused-THP shrinkers).
pub(crate) fn drop_caches() -> io::Result<()> {
    write_text("/proc/sys/vm/drop_caches", "2")
}

/// /proc/vmstat as name → value, with khugepaged's counters
/// (`KHUGEPAGED_COUNTERS`) as `khugepaged/<name>`.
pub(crate) fn read_vmstat() -> io::Result<BTreeMap<String, i64>> {
    let text = read_text("/proc/vmstat")?;
    let mut counters: BTreeMap<String, i64> = text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter_map(|(name, value)| Some((name.to_string(), value.trim().parse::<i64>().ok()?)))
        .collect();
    for name in crate::KHUGEPAGED_COUNTERS {
        let path = format!("/sys/kernel/mm/transparent_hugepage/khugepaged/{name}");
        let value = read_text(&path)?
            .trim()
            .parse::<i64>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))?;
        counters.insert(format!("khugepaged/{name}"), value);
    }
    Ok(counters)
}

/// The smaps fields of one VMA that an observation carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SmapsVma {
    pub start: u64,
    pub end: u64,
    pub rss_kb: u64,
    pub anonymous_kb: u64,
    pub anon_huge_pages_kb: u64,
    pub swap_kb: u64,
    pub pss_kb: u64,
    pub shared_clean_kb: u64,
    pub shared_dirty_kb: u64,
    pub private_clean_kb: u64,
    pub private_dirty_kb: u64,
    pub lazyfree_kb: u64,
    pub thp_eligible: bool,
    /// Every `VmFlags` mnemonic, as printed.
    pub vm_flags: Vec<String>,
}

/// Parses a `start-end` hex address range.
fn parse_range(text: &str) -> Option<(u64, u64)> {
    let (start, end) = text.split_once('-')?;
    Some((u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?))
}

/// Parses /proc/<pid>/smaps text.
pub(crate) fn parse_smaps(text: &str) -> Vec<SmapsVma> {
    let mut vmas: Vec<SmapsVma> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some(key) = first.strip_suffix(':') {
            let Some(vma) = vmas.last_mut() else { continue };
            let value = || words.clone().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            match key {
                "Rss" => vma.rss_kb = value(),
                "Anonymous" => vma.anonymous_kb = value(),
                "AnonHugePages" => vma.anon_huge_pages_kb = value(),
                "Swap" => vma.swap_kb = value(),
                "Pss" => vma.pss_kb = value(),
                "Shared_Clean" => vma.shared_clean_kb = value(),
                "Shared_Dirty" => vma.shared_dirty_kb = value(),
                "Private_Clean" => vma.private_clean_kb = value(),
                "Private_Dirty" => vma.private_dirty_kb = value(),
                "LazyFree" => vma.lazyfree_kb = value(),
                "THPeligible" => vma.thp_eligible = value() == 1,
                "VmFlags" => vma.vm_flags = words.clone().map(str::to_string).collect(),
                _ => {}
            }
        } else if let Some((start, end)) = parse_range(first) {
            vmas.push(SmapsVma { start, end, ..SmapsVma::default() });
        }
    }
    vmas
}

/// /proc/<pid>/smaps.
pub(crate) fn read_smaps(pid: i32) -> io::Result<Vec<SmapsVma>> {
    Ok(parse_smaps(&read_text(&format!("/proc/{pid}/smaps"))?))
}

/// `VmPTE` of /proc/<pid>/status, in kB.
pub(crate) fn read_vm_pte_kb(pid: i32) -> io::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = read_text(&path)?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmPTE:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: no VmPTE line")))
}

/// One line of /proc/<pid>/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MapsVma {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub inode: u64,
    pub name: String,
}

/// Parses /proc/<pid>/maps text.
pub(crate) fn parse_maps(text: &str) -> Vec<MapsVma> {
    let mut vmas = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(range), Some(perms), Some(_offset), Some(_dev), Some(inode)) =
            (words.next(), words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Some((start, end)) = parse_range(range) else {
            continue;
        };
        let perms = perms.as_bytes();
        vmas.push(MapsVma {
            start,
            end,
            read: perms.first() == Some(&b'r'),
            write: perms.get(1) == Some(&b'w'),
            exec: perms.get(2) == Some(&b'x'),
            inode: inode.parse().unwrap_or(0),
            name: words.collect::<Vec<_>>().join(" "),
        });
    }
    vmas
}

/// /proc/<pid>/maps.
pub(crate) fn read_maps(pid: i32) -> io::Result<Vec<MapsVma>> {
    Ok(parse_maps(&read_text(&format!("/proc/{pid}/maps"))?))
}

/// The pagemap entries of `nr_pages` pages from `addr` (page-aligned).
pub(crate) fn read_pagemap(pagemap: &File, addr: u64, nr_pages: u64) -> io::Result<Vec<u64>> {
    let mut bytes = vec![0u8; nr_pages as usize * 8];
    pagemap.read_exact_at(&mut bytes, (addr / 4096) * 8)?;
    Ok(bytes.chunks_exact(8).map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))).collect())
}

/// One folio as kpageflags shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FolioInfo {
    /// The head page's PFN: the raw folio key of an observation.
    pub head: u64,
    pub nr_pages: u64,
    pub order: u8,
    /// kpageflags ZERO_PAGE: the shared zero page or the huge zero page.
    pub zero: bool,
    /// The head page's kpageflags (LRU, SWAPBACKED and SWAPCACHE are folio
    /// flags, kept on the head).
    pub head_flags: u64,
}

/// Reads /proc/kpageflags and /proc/kpagecount, remembering every folio
/// found so that the 512 pages of a THP cost one walk, not 512.
pub(crate) struct Kpages {
    flags: File,
    count: File,
    folios: BTreeMap<u64, FolioInfo>,
    mapcounts: BTreeMap<u64, Vec<u64>>,
}

impl Kpages {
    pub(crate) fn open() -> io::Result<Kpages> {
        Ok(Kpages {
            flags: File::open("/proc/kpageflags").map_err(|e| at("/proc/kpageflags", e))?,
            count: File::open("/proc/kpagecount").map_err(|e| at("/proc/kpagecount", e))?,
            folios: BTreeMap::new(),
            mapcounts: BTreeMap::new(),
        })
    }

    /// Forgets what was read: folios change between observations.
    pub(crate) fn clear(&mut self) {
        self.folios.clear();
        self.mapcounts.clear();
    }

    fn read_u64s(file: &File, name: &str, first_pfn: u64, n: u64) -> io::Result<Vec<u64>> {
        let mut bytes = vec![0u8; n as usize * 8];
        file.read_exact_at(&mut bytes, first_pfn * 8)
            .map_err(|e| io::Error::new(e.kind(), format!("{name} at pfn {first_pfn:#x}: {e}")))?;
        Ok(bytes.chunks_exact(8).map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))).collect())
    }

    /// The kpageflags of `n` consecutive PFNs.
    pub(crate) fn flags(&self, first_pfn: u64, n: u64) -> io::Result<Vec<u64>> {
        Self::read_u64s(&self.flags, "/proc/kpageflags", first_pfn, n)
    }

    /// The folio that contains `pfn`: walks back over tail pages to the
    /// head, and forward over the head's tails to count the folio's pages.
    pub(crate) fn folio_of(&mut self, pfn: u64) -> io::Result<FolioInfo> {
        if let Some((_, folio)) = self.folios.range(..=pfn).next_back() {
            if pfn < folio.head + folio.nr_pages {
                return Ok(*folio);
            }
        }
        let flags = self.flags(pfn, 1)?[0];
        let (head, head_flags) = if flags & KPF_COMPOUND_TAIL != 0 { self.find_head(pfn)? } else { (pfn, flags) };
        let nr_pages = if head_flags & KPF_COMPOUND_HEAD != 0 { 1 + self.count_tails(head + 1)? } else { 1 };
        if !nr_pages.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("compound page at pfn {head:#x} has {nr_pages} pages, not a power of two"),
            ));
        }
        let folio = FolioInfo {
            head,
            nr_pages,
            order: nr_pages.trailing_zeros() as u8,
            zero: head_flags & KPF_ZERO_PAGE != 0,
            head_flags,
        };
        self.folios.insert(head, folio);
        Ok(folio)
    }

    /// Walks back from a tail page to its head: (head PFN, head flags).
    fn find_head(&self, tail: u64) -> io::Result<(u64, u64)> {
        const CHUNK: u64 = 64;
        let mut end = tail; // Exclusive: PFNs below `end` are still to look at.
        while end > 0 && tail - end < MAX_FOLIO_PAGES {
            let start = end.saturating_sub(CHUNK);
            let flags = self.flags(start, end - start)?;
            for (i, f) in flags.iter().enumerate().rev() {
                if f & KPF_COMPOUND_TAIL == 0 {
                    let pfn = start + i as u64;
                    if f & KPF_COMPOUND_HEAD == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("tail page at pfn {tail:#x} follows pfn {pfn:#x}, which is no compound head"),
                        ));
                    }
                    return Ok((pfn, *f));
                }
            }
            end = start;
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, format!("no compound head found below tail page {tail:#x}")))
    }

    /// Counts the tail pages from `first` on.
    fn count_tails(&self, first: u64) -> io::Result<u64> {
        const CHUNK: usize = 512;
        let mut tails = 0;
        let mut bytes = vec![0u8; CHUNK * 8];
        while tails < MAX_FOLIO_PAGES {
            // A short read near the end of memory is fine: kpageflags ends
            // at the highest PFN.
            let got = self
                .flags
                .read_at(&mut bytes, (first + tails) * 8)
                .map_err(|e| io::Error::new(e.kind(), format!("/proc/kpageflags at pfn {:#x}: {e}", first + tails)))?;
            if got < 8 {
                return Ok(tails);
            }
            for chunk in bytes[..got - got % 8].chunks_exact(8) {
                let f = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
                if f & KPF_COMPOUND_TAIL == 0 {
                    return Ok(tails);
                }
                tails += 1;
            }
        }
        Ok(tails)
    }

    /// /proc/kpagecount of `pfn`, a page of `folio`: the page's precise
    /// mapcount. Read once per folio.
    pub(crate) fn mapcount(&mut self, folio: &FolioInfo, pfn: u64) -> io::Result<u64> {
        if !self.mapcounts.contains_key(&folio.head) {
            let counts = Self::read_u64s(&self.count, "/proc/kpagecount", folio.head, folio.nr_pages)?;
            self.mapcounts.insert(folio.head, counts);
        }
        let counts = &self.mapcounts[&folio.head];
        counts.get((pfn - folio.head) as usize).copied().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("pfn {pfn:#x} is outside folio {:#x}", folio.head))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_fields_of_each_vma() {
        let text = "\
200000000000-200000200000 rw-p 00000000 00:00 0 
Size:               2048 kB
Rss:                2048 kB
Anonymous:          2048 kB
AnonHugePages:      2048 kB
Swap:                  0 kB
THPeligible:           1
VmFlags: rd wr mr mw me ac sd hg
7f0000000000-7f0000001000 r--p 00000000 08:01 1234   /usr/lib/libc.so.6
Rss:                   4 kB
THPeligible:           0
VmFlags: rd mr mw me sd
";
        let vmas = parse_smaps(text);
        assert_eq!(vmas.len(), 2);
        assert_eq!(vmas[0].start, 0x2000_0000_0000);
        assert_eq!(vmas[0].end, 0x2000_0020_0000);
        assert_eq!((vmas[0].rss_kb, vmas[0].anonymous_kb, vmas[0].anon_huge_pages_kb), (2048, 2048, 2048));
        assert!(vmas[0].thp_eligible);
        assert!(vmas[0].vm_flags.contains(&"hg".to_string()));
        assert_eq!(vmas[1].rss_kb, 4);
        assert!(!vmas[1].thp_eligible);
    }

    #[test]
    fn maps_lines() {
        let vmas = parse_maps(
            "200000000000-200000200000 rw-p 00000000 00:00 0 \n7f00-7f10 r-xp 00001000 08:01 99  /usr/lib/x y\n",
        );
        assert_eq!(vmas.len(), 2);
        assert!(vmas[0].read && vmas[0].write && !vmas[0].exec && vmas[0].inode == 0);
        assert!(vmas[1].exec && vmas[1].inode == 99 && vmas[1].name == "/usr/lib/x y");
    }
}
