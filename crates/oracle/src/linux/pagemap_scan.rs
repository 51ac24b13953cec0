//! The `PAGEMAP_SCAN` ioctl on /proc/<pid>/pagemap (Linux 6.7+): which
//! pages of a range a PMD leaf maps (`PAGE_IS_HUGE`). pagemap entries
//! cannot tell a PMD-mapped THP from a PTE-mapped one; this can.
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
const PAGE_IS_HUGE: u64 = 1 << 6;

/// Regions returned per ioctl call; the walk resumes at `walk_end`.
const VEC_LEN: usize = 256;

/// The [start, end) ranges within [start, end) that present PMD leaves map
/// (THPs and the huge zero page), ascending.
pub(crate) fn pmd_mapped_ranges(pagemap: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut vec = vec![PageRegion::default(); VEC_LEN];
    let mut from = start;
    while from < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: from,
            end,
            vec: vec.as_mut_ptr() as u64,
            vec_len: VEC_LEN as u64,
            category_mask: PAGE_IS_HUGE | PAGE_IS_PRESENT,
            return_mask: PAGE_IS_HUGE | PAGE_IS_PRESENT,
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
                Some(last) if last.1 == region.start => last.1 = region.end,
                _ => out.push((region.start, region.end)),
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
