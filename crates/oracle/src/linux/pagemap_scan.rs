//! The `PAGEMAP_SCAN` ioctl on /proc/<pid>/pagemap (Linux 6.7+): which
//! pages of a range are present or swapped, as ranges, so that holes cost
//! nothing per page; and which a PMD leaf maps (`PAGE_IS_HUGE`): pagemap
//! entries cannot tell a PMD-mapped THP from a PTE-mapped one; this can.
//!
//! Structures and numbers from include/uapi/linux/fs.h (Linux 6.18).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`: pages [start, end) share `categories`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as libc::c_ulong) << 16) | ((b'f' as libc::c_ulong) << 8) | 16;

/// Page categories (`PAGE_IS_*`).
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_HUGE: u64 = 1 << 6;

/// Regions returned per ioctl call; the walk resumes at `walk_end`.
const VEC_LEN: usize = 256;

/// The [start, end) ranges within [start, end) that present PMD leaves map
/// (THPs and the huge zero page), ascending.
pub(crate) fn pmd_mapped_ranges(pagemap: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let huge = PAGE_IS_HUGE | PAGE_IS_PRESENT;
    let ranges = scan(pagemap, start, end, huge, 0, huge)?;
    Ok(ranges.into_iter().map(|r| (r.start, r.end)).collect())
}

/// A range of pages PAGEMAP_SCAN found present or swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PopulatedRange {
    pub start: u64,
    pub end: u64,
    /// `PAGE_IS_HUGE`: a present PMD leaf maps the range.
    pub pmd_mapped: bool,
}

/// The ranges within [start, end) whose pages are present or swapped,
/// ascending; a range is PMD-mapped throughout or not at all. Everything
/// else is a hole the kernel skips without a per-page cost to us.
pub(crate) fn populated_ranges(pagemap: &File, start: u64, end: u64) -> io::Result<Vec<PopulatedRange>> {
    let any = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
    let ranges = scan(pagemap, start, end, 0, any, any | PAGE_IS_HUGE)?;
    Ok(ranges
        .into_iter()
        .map(|r| PopulatedRange {
            start: r.start,
            end: r.end,
            pmd_mapped: r.categories & (PAGE_IS_HUGE | PAGE_IS_PRESENT) == PAGE_IS_HUGE | PAGE_IS_PRESENT,
        })
        .collect())
}

/// Runs PAGEMAP_SCAN over [start, end): pages with every category of
/// `all_of` and one of `any_of`, reported with their `report` categories;
/// neighbouring regions with equal categories are merged.
fn scan(pagemap: &File, start: u64, end: u64, all_of: u64, any_of: u64, report: u64) -> io::Result<Vec<PageRegion>> {
    let mut out: Vec<PageRegion> = Vec::new();
    let mut vec = vec![PageRegion::default(); VEC_LEN];
    let mut from = start;
    while from < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: from,
            end,
            vec: vec.as_mut_ptr() as u64,
            vec_len: VEC_LEN as u64,
            category_mask: all_of,
            category_anyof_mask: any_of,
            return_mask: report,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points to VEC_LEN
        // writable page_regions; the kernel writes `walk_end` back into `arg`.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg as *mut PmScanArg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for region in &vec[..(n as usize).min(VEC_LEN)] {
            match out.last_mut() {
                Some(last) if last.end == region.start && last.categories == region.categories => last.end = region.end,
                _ => out.push(*region),
            }
        }
        if arg.walk_end <= from {
            return Err(io::Error::other(format!("PAGEMAP_SCAN made no progress at {from:#x}")));
        }
        from = arg.walk_end;
    }
    Ok(out)
}

/// Whether this kernel has `PAGEMAP_SCAN`: scans one page of our own stack.
pub(crate) fn available() -> io::Result<bool> {
    let pagemap = File::open("/proc/self/pagemap")?;
    let probe = 0u64;
    let page = (&probe as *const u64 as u64) & !4095;
    match pmd_mapped_ranges(&pagemap, page, page + 4096) {
        Ok(_) => Ok(true),
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EINVAL)) => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_the_uapi_header() {
        // _IOWR('f', 16, struct pm_scan_arg) with a 96-byte argument.
        assert_eq!(std::mem::size_of::<PmScanArg>(), 96);
        assert_eq!(PAGEMAP_SCAN, 0xc060_6610);
    }
}
