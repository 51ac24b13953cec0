//! Per-region THP coverage, as the kernel's `tools/mm/thpmaps` reports it.
//!
//! thpmaps walks a VMA's pagemap and kpageflags and sorts every page of an
//! anonymous THP into one bucket: mapped by a PMD
//! (`anon-thp-pmd-aligned-2048kB`, which is smaps `AnonHugePages`), part of
//! a folio mapped whole by PTEs at a naturally aligned address
//! (`anon-thp-pte-aligned-<size>kB`) or not (`anon-thp-pte-unaligned-<size>kB`),
//! or part of a folio only partly mapped here (`anon-thp-pte-partial`).
//! Values are in kB with a percentage of the Anonymous memory.
//!
//! Differences from thpmaps: thpsim reports per scenario region rather than
//! per VMA, so a folio that crosses the region's edge counts as partial, and
//! the percentage is of the region's own anonymous pages rather than the
//! VMA's smaps `Anonymous`. File THPs and `--cont` blocks are not reported.
//! A folio is recognised by its normalised id rather than by contiguous
//! PFNs; for anonymous memory the two agree, since a folio's pages are
//! always mapped in PFN order within one mm.

use serde::Serialize;
use thpsim_mm::{PAGE_SIZE, PMD_SIZE};
use thpsim_oracle::{PageRun, PageState, RegionObs};

const PMD_ORDER: u8 = 9;
/// thpmaps reports PTE-mapped folios of orders 2..=PMD_ORDER.
const MIN_REPORTED_ORDER: u8 = 2;
/// thpmaps' `label_field`: a label and its colon are padded to this width.
const LABEL_FIELD: usize = 32;

/// How one region's anonymous THP memory is mapped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// The region's anonymous memory (present pages other than zero pages).
    pub anon_kb: u64,
    /// PMD-mapped THP pages (what smaps calls AnonHugePages).
    pub pmd_kb: u64,
    /// Pages of folios mapped whole by PTEs at an aligned address, by order.
    pub pte_aligned_kb: [u64; PMD_ORDER as usize + 1],
    /// Pages of folios mapped whole by PTEs at an unaligned address, by order.
    pub pte_unaligned_kb: [u64; PMD_ORDER as usize + 1],
    /// Pages of large folios only partly mapped in the region.
    pub pte_partial_kb: u64,
}

impl Coverage {
    /// Sorts the region's pages into thpmaps' buckets, a run at a time.
    pub fn of_region(region: &RegionObs) -> Coverage {
        let mut cov = Coverage::default();
        let kb = PAGE_SIZE / 1024;
        let first_vpn = region.addr / PAGE_SIZE;
        let runs = &region.runs;
        let mut account = |run: &PageRun| {
            if run.page.state == PageState::Present && !run.page.zero_page {
                cov.anon_kb += run.nr_pages * kb;
                if run.page.pmd_mapped {
                    cov.pmd_kb += run.nr_pages * kb;
                }
            }
        };
        let mut folio_runs: Vec<(u64, u64, u8)> = Vec::new();
        let mut i = 0;
        while i < runs.len() {
            let run = &runs[i];
            i += 1;
            if run.page.state != PageState::Present || run.page.zero_page {
                continue;
            }
            account(run);
            // Consecutive pages of one large folio, over neighbouring runs.
            let Some(folio) = run.page.folio.filter(|_| run.page.order > 0) else {
                continue;
            };
            let mut end = run.first + run.nr_pages;
            while i < runs.len() && runs[i].first == end && runs[i].page.folio == Some(folio) {
                account(&runs[i]);
                end += runs[i].nr_pages;
                i += 1;
            }
            folio_runs.push((run.first, end - run.first, run.page.order));
        }
        for (start, nr, order) in folio_runs {
            if order <= PMD_ORDER && nr == 1u64 << order {
                let vpn = first_vpn + start;
                let bucket = if vpn.is_multiple_of(nr) { &mut cov.pte_aligned_kb } else { &mut cov.pte_unaligned_kb };
                bucket[order as usize] += nr * kb;
            } else {
                cov.pte_partial_kb += nr * kb;
            }
        }
        // PMD-mapped folios were counted as aligned order-9 folios too;
        // thpmaps subtracts them (clamping, as it does, at zero).
        let pmd = &mut cov.pte_aligned_kb[PMD_ORDER as usize];
        *pmd = pmd.saturating_sub(cov.pmd_kb);
        cov
    }

    /// Adds another region's coverage (thpmaps `--rollup`).
    pub fn add(&mut self, other: &Coverage) {
        self.anon_kb += other.anon_kb;
        self.pmd_kb += other.pmd_kb;
        for order in 0..=PMD_ORDER as usize {
            self.pte_aligned_kb[order] += other.pte_aligned_kb[order];
            self.pte_unaligned_kb[order] += other.pte_unaligned_kb[order];
        }
        self.pte_partial_kb += other.pte_partial_kb;
    }

    /// Every thpmaps label with its value in kB, in thpmaps' order.
    pub fn labels(&self) -> Vec<(String, u64)> {
        let size_kb = |order: u8| (PAGE_SIZE << order) / 1024;
        let mut out = vec![(format!("anon-thp-pmd-aligned-{}kB", PMD_SIZE / 1024), self.pmd_kb)];
        for order in MIN_REPORTED_ORDER..=PMD_ORDER {
            out.push((format!("anon-thp-pte-aligned-{}kB", size_kb(order)), self.pte_aligned_kb[order as usize]));
        }
        for order in MIN_REPORTED_ORDER..=PMD_ORDER {
            out.push((format!("anon-thp-pte-unaligned-{}kB", size_kb(order)), self.pte_unaligned_kb[order as usize]));
        }
        out.push(("anon-thp-pte-partial".to_string(), self.pte_partial_kb));
        out
    }

    /// The lines thpmaps prints: non-zero labels only, unless `inc_empty`.
    pub fn render(&self, inc_empty: bool) -> Vec<String> {
        self.labels()
            .into_iter()
            .filter(|&(_, kb)| kb != 0 || inc_empty)
            .map(|(label, kb)| stat_line(&label, kb, self.anon_kb))
            .collect()
    }
}

/// One thpmaps line: `label:` padded to 32 columns, the value in an 8-wide
/// field, ` kB`, and the percentage of `total_kb` formatted as Python's
/// `{:3.0%}` formats it.
pub fn stat_line(label: &str, kb: u64, total_kb: u64) -> String {
    let pad = LABEL_FIELD.saturating_sub(label.len() + 1);
    let percent = if total_kb > 0 {
        // Python multiplies the float ratio by 100 and rounds half to even,
        // as Rust's `{:.0}` does.
        let pct = format!("{:.0}%", kb as f64 / total_kb as f64 * 100.0);
        format!(" ({pct:>3})")
    } else {
        String::new()
    };
    format!("{label}:{}{kb:8} kB{percent}", " ".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use thpsim_oracle::PageObs;

    fn page(folio: u32, order: u8, pmd_mapped: bool) -> PageObs {
        PageObs {
            state: PageState::Present,
            folio: Some(folio),
            order,
            pmd_mapped,
            mapcount: 1,
            exclusive: true,
            zero_page: false,
            lru: true,
            swapbacked: true,
            swapcache: false,
        }
    }

    fn region(addr: u64, pages: Vec<PageObs>) -> RegionObs {
        RegionObs {
            name: "A".into(),
            addr,
            len: pages.len() as u64 * PAGE_SIZE,
            vmas: vec![],
            runs: thpsim_oracle::runs_of_pages(&pages),
        }
    }

    #[test]
    fn stat_line_matches_thpmaps_layout() {
        assert_eq!(
            stat_line("anon-thp-pmd-aligned-2048kB", 2048, 2048),
            "anon-thp-pmd-aligned-2048kB:        2048 kB (100%)"
        );
        assert_eq!(stat_line("anon-thp-pte-partial", 40, 800), "anon-thp-pte-partial:                 40 kB ( 5%)");
        assert_eq!(
            stat_line("anon-thp-pte-aligned-64kB", 1024, 2048),
            "anon-thp-pte-aligned-64kB:          1024 kB (50%)"
        );
        // No anonymous memory: no percentage, as thpmaps.
        assert_eq!(stat_line("anon-thp-pte-partial", 0, 0), "anon-thp-pte-partial:                  0 kB");
        // 12.5% rounds half to even, as Python's format does.
        assert_eq!(stat_line("x", 1, 8), "x:                                     1 kB (12%)");
    }

    // 0        2M        4M
    // |PPPPPPPP|pp..........|   first block PMD-mapped; then 16 pages of a
    //                           PTE-mapped THP whose other pages are gone
    #[test]
    fn pmd_mapped_and_partial_thps() {
        let mut pages: Vec<PageObs> = (0..512).map(|_| page(0, 9, true)).collect();
        pages.extend((0..16).map(|_| page(1, 9, false)));
        pages.extend((0..496).map(|_| PageObs::default()));
        let cov = Coverage::of_region(&region(0x20_0000, pages));
        assert_eq!(cov.anon_kb, 2048 + 64);
        assert_eq!(
            cov.render(false),
            vec![
                "anon-thp-pmd-aligned-2048kB:        2048 kB (97%)".to_string(),
                "anon-thp-pte-partial:                 64 kB ( 3%)".to_string(),
            ]
        );
    }

    // 0    64K   128K  192K
    // |aaaa|.bbbb|b|cc|      a: aligned 64K mTHP; b: 64K mTHP at an
    //                        unaligned address; c: two order-0 pages
    #[test]
    fn mthp_aligned_unaligned_and_small_pages() {
        let mut pages: Vec<PageObs> = (0..16).map(|_| page(0, 4, false)).collect();
        pages.push(PageObs::default());
        pages.extend((0..16).map(|_| page(1, 4, false)));
        pages.push(page(2, 0, false));
        pages.push(page(3, 0, false));
        let cov = Coverage::of_region(&region(0x10_0000, pages));
        assert_eq!(cov.anon_kb, 136);
        assert_eq!(
            cov.render(false),
            vec![
                "anon-thp-pte-aligned-64kB:            64 kB (47%)".to_string(),
                "anon-thp-pte-unaligned-64kB:          64 kB (47%)".to_string(),
            ]
        );
    }

    #[test]
    fn whole_pte_mapped_thp_and_zero_pages() {
        // A PTE-mapped order-9 folio (after fork and a child's write, the
        // child's copy), then a huge-zero-page block that is not anonymous.
        let mut pages: Vec<PageObs> = (0..512).map(|_| page(0, 9, false)).collect();
        pages[7] = page(1, 0, false);
        let zero =
            PageObs { state: PageState::Present, order: 9, pmd_mapped: true, zero_page: true, ..PageObs::default() };
        pages.extend((0..512).map(|_| zero));
        let cov = Coverage::of_region(&region(0x20_0000, pages));
        assert_eq!(cov.anon_kb, 2048);
        assert_eq!(cov.pmd_kb, 0);
        assert_eq!(cov.pte_partial_kb, 2044);
        let mut total = cov.clone();
        total.add(&cov);
        assert_eq!(total.render(false), vec!["anon-thp-pte-partial:               4088 kB (100%)".to_string()]);
    }
}
