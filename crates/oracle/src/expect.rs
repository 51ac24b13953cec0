//! Checks a scenario's `expect` statements against an observation.
//!
//! The same check runs on the model's observation and on the live kernel's,
//! so a scenario's expectations hold on both backends or fail on one with a
//! message that quotes the statement: `expected p1 A AnonHugePages 2048 kB,
//! found 0 kB`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use thpsim_workload::expect::fmt_size;
use thpsim_workload::{Cmp, ContentWant, Expectation, ExpectedState, PageProp, Place, SmapsField, VmaProp};

use crate::{Observation, OpResult, PageObs, PageState, RegionObs, VmaObs};

/// Bytes in a base page.
const PAGE_SIZE: u64 = 4096;

/// Checks one expectation. `obs` is the observation taken at the `expect`
/// step (of the regions the step carries); `last` is the result of the most
/// recent operation. The error says what was expected and what was found.
pub fn check_expectation(exp: &Expectation, obs: &Observation, last: &OpResult) -> Result<(), String> {
    match exp {
        Expectation::Ok => match last {
            Ok(()) => Ok(()),
            Err(errno) => Err(format!("expected ok, found errno {errno}")),
        },
        Expectation::Errno(want) => match last {
            Err(errno) if errno == want => Ok(()),
            Err(errno) => Err(format!("expected errno {want}, found errno {errno}")),
            Ok(()) => Err(format!("expected errno {want}, found ok")),
        },
        Expectation::Vmstat { counter, cmp } => {
            let found =
                *obs.vmstat.get(counter).ok_or_else(|| format!("vmstat {counter} is not in the observation"))?;
            compare(exp, *cmp, found, |v| format!("{v:+}"))
        }
        Expectation::Mthp { size_kb, stat, cmp } => {
            let key = format!("{size_kb}kB/{stat}");
            let found =
                *obs.mthp.get(&key).ok_or_else(|| format!("mthp {size_kb}kB {stat} is not in the observation"))?;
            compare(exp, *cmp, found, |v| format!("{v:+}"))
        }
        Expectation::Khugepaged { counter, cmp } => {
            let key = format!("khugepaged/{counter}");
            let found =
                *obs.vmstat.get(&key).ok_or_else(|| format!("khugepaged {counter} is not in the observation"))?;
            compare(exp, *cmp, found, |v| format!("{v:+}"))
        }
        Expectation::Meminfo { field, cmp } => {
            let pages = match field.as_str() {
                "PageTables" => obs.vmstat.get("nr_page_table_pages").copied(),
                _ => None,
            };
            let found = pages.ok_or_else(|| format!("meminfo {field} is not in the observation"))? * 4;
            compare(exp, *cmp, found, |v| format!("{v:+} kB"))
        }
        Expectation::Vmas { at, len, count, .. } => {
            let region = find_region(obs, at)?;
            let start = region.addr + at.offset;
            let end = start + len;
            let vmas: Vec<&VmaObs> = region.vmas.iter().filter(|v| v.start < end && start < v.end).collect();
            if count.holds(to_i64(vmas.len() as u64)) {
                return Ok(());
            }
            let shown: Vec<String> = vmas.iter().map(|v| vma_bounds(region, v)).collect();
            Err(format!("expected {exp}, found count={} [{}]", vmas.len(), shown.join(" ")))
        }
        Expectation::Vma { at, props } => {
            let region = find_region(obs, at)?;
            let addr = region.addr + at.offset;
            let vma = region
                .vmas
                .iter()
                .find(|v| v.start <= addr && addr < v.end)
                .ok_or_else(|| format!("expected {exp}, found no VMA at {at}"))?;
            for prop in props {
                let holds = match prop {
                    VmaProp::Start(p) => place_addr(obs, p)? == vma.start,
                    VmaProp::End(p) => place_addr(obs, p)? == vma.end,
                    VmaProp::ThpEligible(b) => vma.thp_eligible == *b,
                    VmaProp::Flag { name, set } => vma.vm_flags.iter().any(|f| f == name) == *set,
                };
                if !holds {
                    let eligible = if vma.thp_eligible { "THPeligible" } else { "!THPeligible" };
                    return Err(format!(
                        "expected {exp}, found {} {eligible} VmFlags: {}",
                        vma_bounds(region, vma),
                        vma.vm_flags.join(" ")
                    ));
                }
            }
            Ok(())
        }
        Expectation::Content { at, len, want, .. } => {
            let region = find_region(obs, at)?;
            let addr = region.addr + at.offset;
            let read = obs
                .contents
                .iter()
                .find(|c| c.proc == at.proc && c.addr == addr)
                .ok_or_else(|| format!("the content of {at} was not read"))?;
            let nr_pages = (len / PAGE_SIZE) as usize;
            for (i, &word) in read.read.words.iter().take(nr_pages).enumerate() {
                let expected = match want {
                    ContentWant::Pattern { tag, .. } => thpsim_workload::pattern_word(*tag, i as u64),
                    ContentWant::Zero => 0,
                };
                if word != expected {
                    let here = Place { offset: at.offset + i as u64 * PAGE_SIZE, ..at.clone() };
                    let what = if word == 0 { "0 (never written, or zero)".to_string() } else { format!("{word:#x}") };
                    return Err(format!(
                        "expected {exp}, found {here} (page {} of {}) holds {what}, not {expected:#x}",
                        i + 1,
                        nr_pages
                    ));
                }
            }
            match read.read.error {
                Some(errno) if read.read.words.len() < nr_pages => {
                    let here = Place { offset: at.offset + read.read.words.len() as u64 * PAGE_SIZE, ..at.clone() };
                    Err(format!("expected {exp}, found {here} cannot be read: {errno}"))
                }
                _ if read.read.words.len() < nr_pages => {
                    Err(format!("expected {exp}, found only {} of {nr_pages} pages read", read.read.words.len()))
                }
                _ => Ok(()),
            }
        }
        Expectation::VmPte { proc, proc_name, cmp } => {
            let found = obs
                .procs
                .iter()
                .find(|p| p.proc == *proc)
                .ok_or_else(|| format!("{proc_name} is not in the observation"))?
                .vm_pte_kb;
            compare(exp, *cmp, to_i64(found), |v| format!("{v} kB"))
        }
        Expectation::Smaps { at, len, field, cmp, .. } => {
            let region = find_region(obs, at)?;
            let start = region.addr + at.offset;
            let end = start + len;
            let sum: u64 =
                region.vmas.iter().filter(|v| v.start < end && start < v.end).map(|v| smaps_field(v, *field)).sum();
            compare(exp, *cmp, to_i64(sum), |v| format!("{v} kB"))
        }
        Expectation::Page { at, pages, props } => {
            let region = find_region(obs, at)?;
            let first = at.offset / PAGE_SIZE;
            // Pages of one run look alike: each run is checked once, and a
            // failure is reported at the run's first page.
            for (range, page) in runs_covering(region, at, first..first.saturating_add(*pages))? {
                for prop in props {
                    if let Err(why) = check_prop(obs, page, prop) {
                        let i = range.start - first;
                        let here = Place { offset: at.offset + i * PAGE_SIZE, ..at.clone() };
                        let which = if *pages > 1 { format!(" (page {} of {pages})", i + 1) } else { String::new() };
                        return Err(format!("expected {exp}, found {here}{which}: {}{why}", describe(page)));
                    }
                }
            }
            Ok(())
        }
        Expectation::Folios { at, len, order, count, .. } => {
            let region = find_region(obs, at)?;
            let first = at.offset / PAGE_SIZE;
            let mut by_order: BTreeMap<u8, BTreeSet<u32>> = BTreeMap::new();
            for (_, page) in runs_covering(region, at, first..first.saturating_add(len / PAGE_SIZE))? {
                if let (PageState::Present, Some(folio)) = (page.state, page.folio) {
                    by_order.entry(page.order).or_default().insert(folio);
                }
            }
            let found = match order {
                Some(order) => by_order.get(order).map_or(0, BTreeSet::len),
                None => by_order.values().map(BTreeSet::len).sum(),
            };
            if count.holds(to_i64(found as u64)) {
                return Ok(());
            }
            let summary: Vec<String> = by_order.iter().map(|(o, set)| format!("{} of order {o}", set.len())).collect();
            let summary = if summary.is_empty() { "no folios".to_string() } else { summary.join(", ") };
            Err(format!("expected {exp}, found count={found} ({summary})"))
        }
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn compare(exp: &Expectation, cmp: Cmp, found: i64, show: impl Fn(i64) -> String) -> Result<(), String> {
    if cmp.holds(found) {
        Ok(())
    } else {
        Err(format!("expected {exp}, found {}", show(found)))
    }
}

/// A VMA's bounds relative to the region: `A+0..A+1M`, or absolute
/// addresses where it reaches outside the region.
fn vma_bounds(region: &RegionObs, vma: &VmaObs) -> String {
    let at = |addr: u64| {
        if addr >= region.addr && addr <= region.addr + region.len {
            format!("{}+{}", region.name, fmt_size(addr - region.addr))
        } else {
            format!("{addr:#x}")
        }
    };
    format!("{}..{}", at(vma.start), at(vma.end))
}

/// The address of a place, from the observation's region table.
fn place_addr(obs: &Observation, at: &Place) -> Result<u64, String> {
    Ok(find_region(obs, at)?.addr + at.offset)
}

fn smaps_field(vma: &VmaObs, field: SmapsField) -> u64 {
    match field {
        SmapsField::Rss => vma.rss_kb,
        SmapsField::Pss => vma.pss_kb,
        SmapsField::SharedClean => vma.shared_clean_kb,
        SmapsField::SharedDirty => vma.shared_dirty_kb,
        SmapsField::PrivateClean => vma.private_clean_kb,
        SmapsField::PrivateDirty => vma.private_dirty_kb,
        SmapsField::LazyFree => vma.lazyfree_kb,
        SmapsField::Anonymous => vma.anonymous_kb,
        SmapsField::AnonHugePages => vma.anon_huge_pages_kb,
        SmapsField::Swap => vma.swap_kb,
    }
}

fn find_region<'o>(obs: &'o Observation, at: &Place) -> Result<&'o RegionObs, String> {
    let proc = obs
        .procs
        .iter()
        .find(|p| p.proc == at.proc)
        .ok_or_else(|| format!("{} is not in the observation", at.proc_name))?;
    proc.regions
        .iter()
        .find(|r| r.name == at.region)
        .ok_or_else(|| format!("{} {} is not in the observation", at.proc_name, at.region))
}

fn page_at<'o>(region: &'o RegionObs, at: &Place, index: u64) -> Result<&'o PageObs, String> {
    region.page(index).ok_or_else(|| missing_page(region, at, index))
}

/// The runs of `pages`, clipped to them; an error names the first page the
/// observation lacks.
fn runs_covering<'o>(
    region: &'o RegionObs,
    at: &Place,
    pages: Range<u64>,
) -> Result<Vec<(Range<u64>, &'o PageObs)>, String> {
    let runs: Vec<_> = region.runs_in(pages.clone()).collect();
    let mut next = pages.start;
    for (range, _) in &runs {
        if range.start != next {
            break;
        }
        next = range.end;
    }
    if next < pages.end {
        return Err(missing_page(region, at, next));
    }
    Ok(runs)
}

fn missing_page(region: &RegionObs, at: &Place, index: u64) -> String {
    format!(
        "the observation of {} {} has {} pages, not one at {}",
        at.proc_name,
        at.region,
        region.runs.last().map_or(0, |r| r.first + r.nr_pages),
        fmt_size(index * PAGE_SIZE)
    )
}

/// A page the way a `page` expectation would state it.
fn describe(page: &PageObs) -> String {
    let state = match page.state {
        PageState::None => return "none".to_string(),
        PageState::Swapped => return "swapped".to_string(),
        PageState::Present => "present",
    };
    let not = |b: bool| if b { "" } else { "!" };
    let zero = if page.zero_page { " zero" } else { "" };
    // The kpageflags bits only where they are not what a mapped anonymous
    // folio usually shows (lru swapbacked !swapcache).
    let mut flags = String::new();
    if !page.zero_page {
        for (set, usual, name) in
            [(page.lru, true, "lru"), (page.swapbacked, true, "swapbacked"), (page.swapcache, false, "swapcache")]
        {
            if set != usual {
                flags.push_str(&format!(" {}{name}", not(set)));
            }
        }
    }
    format!(
        "{state}{zero} order={} {}pmd mapcount={} {}exclusive{flags}",
        page.order,
        not(page.pmd_mapped),
        page.mapcount,
        not(page.exclusive)
    )
}

/// Whether a page has a property; the error adds detail to the page's
/// description (empty when the description says it all).
fn check_prop(obs: &Observation, page: &PageObs, prop: &PageProp) -> Result<(), String> {
    let holds = match prop {
        PageProp::State(state) => {
            let want = match state {
                ExpectedState::None => PageState::None,
                ExpectedState::Present => PageState::Present,
                ExpectedState::Swapped => PageState::Swapped,
            };
            page.state == want
        }
        PageProp::Order(order) => page.state == PageState::Present && page.order == *order,
        PageProp::Pmd(b) => page.pmd_mapped == *b,
        PageProp::Mapcount(cmp) => cmp.holds(to_i64(page.mapcount)),
        PageProp::Exclusive(b) => page.exclusive == *b,
        PageProp::Zero(b) => page.zero_page == *b,
        PageProp::Lru(b) => page.lru == *b,
        PageProp::SwapBacked(b) => page.swapbacked == *b,
        PageProp::SwapCache(b) => page.swapcache == *b,
        PageProp::SameFolio { same, with } => {
            let region = find_region(obs, with)?;
            let other = page_at(region, with, with.offset / PAGE_SIZE)?;
            if same_folio(page, other) == *same {
                return Ok(());
            }
            return Err(format!("; its folio is {}, {with}'s is {}", folio_name(page), folio_name(other)));
        }
    };
    if holds {
        Ok(())
    } else {
        Err(String::new())
    }
}

/// Two pages share a folio if both have the same normalised folio, or both
/// are the zero page of the same order (the shared zero page, or the huge
/// zero page).
fn same_folio(a: &PageObs, b: &PageObs) -> bool {
    let present = |p: &PageObs| p.state == PageState::Present;
    if !present(a) || !present(b) {
        return false;
    }
    match (a.folio, b.folio) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.zero_page && b.zero_page && a.order == b.order,
        _ => false,
    }
}

fn folio_name(page: &PageObs) -> String {
    match (page.state, page.folio) {
        (PageState::Present, Some(id)) => format!("#{id}"),
        (PageState::Present, None) if page.zero_page && page.order > 0 => "the huge zero page".to_string(),
        (PageState::Present, None) if page.zero_page => "the zero page".to_string(),
        (PageState::Present, None) => "unknown".to_string(),
        (PageState::Swapped, _) => "swapped out".to_string(),
        (PageState::None, _) => "absent".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProcObs;
    use thpsim_mm::Errno;
    use thpsim_workload::{parse_scenario, ProcId, StepKind};

    const BASE: u64 = 0x2000_0000_0000;

    /// The expectations of `expect` lines, after a prelude mapping p1's A
    /// (4M at BASE) and forking p2.
    fn expectations(lines: &str) -> Vec<Expectation> {
        let text = format!("p1: A = mmap 4M\np2 = fork p1\n{lines}");
        let scenario = parse_scenario("t.thp", &text).unwrap_or_else(|e| panic!("{e}"));
        scenario
            .steps
            .into_iter()
            .filter_map(|s| match s.kind {
                StepKind::Expect { expectation, .. } => Some(expectation),
                _ => None,
            })
            .collect()
    }

    #[track_caller]
    fn check(line: &str, obs: &Observation, last: &OpResult) -> Result<(), String> {
        let exps = expectations(line);
        assert_eq!(exps.len(), 1);
        check_expectation(&exps[0], obs, last)
    }

    fn thp_page(folio: u32, mapcount: u64, exclusive: bool) -> PageObs {
        PageObs {
            state: PageState::Present,
            folio: Some(folio),
            order: 9,
            pmd_mapped: true,
            mapcount,
            exclusive,
            zero_page: false,
            lru: true,
            swapbacked: true,
            swapcache: false,
        }
    }

    // A     +2M   +4M
    // |THP 0|-----|   p1: one PMD-mapped folio, then nothing
    // |THP 0 by PTEs, +4K: order-0 copy (folio 1)|-----|   p2
    fn observation() -> Observation {
        let mut p1_pages = vec![thp_page(0, 2, false); 512];
        p1_pages.extend(vec![PageObs::default(); 512]);
        let mut p2_pages: Vec<PageObs> =
            (0..512).map(|_| PageObs { pmd_mapped: false, mapcount: 1, ..thp_page(0, 2, false) }).collect();
        p2_pages[1] = PageObs { order: 0, mapcount: 1, exclusive: true, ..thp_page(1, 1, true) };
        p2_pages[1].pmd_mapped = false;
        p2_pages.extend(vec![PageObs::default(); 512]);
        p2_pages[600] = PageObs {
            state: PageState::Present,
            folio: None,
            order: 0,
            pmd_mapped: false,
            mapcount: 0,
            exclusive: false,
            zero_page: true,
            ..PageObs::default()
        };
        p2_pages[601] = p2_pages[600];
        p2_pages[700].state = PageState::Swapped;
        let vma = |start, end, rss, ahp| VmaObs {
            start,
            end,
            rss_kb: rss,
            anonymous_kb: rss,
            anon_huge_pages_kb: ahp,
            swap_kb: 0,
            thp_eligible: true,
            vm_flags: vec![],
            ..VmaObs::default()
        };
        let region = |pages: Vec<PageObs>, vmas| RegionObs {
            name: "A".into(),
            addr: BASE,
            len: 4 << 20,
            vmas,
            runs: crate::runs_of_pages(&pages),
        };
        Observation {
            procs: vec![
                ProcObs {
                    proc: ProcId(0),
                    name: "p1".into(),
                    vm_pte_kb: 12,
                    regions: vec![region(p1_pages, vec![vma(BASE, BASE + (4 << 20), 2048, 2048)])],
                },
                ProcObs {
                    proc: ProcId(1),
                    name: "p2".into(),
                    vm_pte_kb: 16,
                    regions: vec![region(
                        p2_pages,
                        vec![vma(BASE, BASE + (1 << 20), 1024, 0), vma(BASE + (1 << 20), BASE + (4 << 20), 1028, 0)],
                    )],
                },
            ],
            vmstat: BTreeMap::from([("thp_split_pmd".to_string(), 1), ("thp_deferred_split_page".to_string(), 0)]),
            mthp: BTreeMap::from([("2048kB/anon_fault_alloc".to_string(), 1)]),
            contents: Vec::new(),
        }
    }

    #[test]
    fn ok_and_errno() {
        let obs = Observation::default();
        assert_eq!(check("p1: madvise A hugepage\nexpect ok", &obs, &Ok(())), Ok(()));
        assert_eq!(
            check("p1: madvise A hugepage\nexpect ok", &obs, &Err(Errno::Inval)),
            Err("expected ok, found errno EINVAL".into())
        );
        assert_eq!(check("p1: madvise A collapse\nexpect errno EAGAIN", &obs, &Err(Errno::Again)), Ok(()));
        assert_eq!(
            check("p1: madvise A collapse\nexpect errno EAGAIN", &obs, &Err(Errno::Inval)),
            Err("expected errno EAGAIN, found errno EINVAL".into())
        );
        assert_eq!(
            check("p1: madvise A collapse\nexpect errno EAGAIN", &obs, &Ok(())),
            Err("expected errno EAGAIN, found ok".into())
        );
    }

    #[test]
    fn counters() {
        let obs = observation();
        assert_eq!(check("expect vmstat thp_split_pmd +1", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect vmstat thp_split_pmd >= 1", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect vmstat thp_deferred_split_page = 0", &obs, &Ok(())), Ok(()));
        assert_eq!(
            check("expect vmstat thp_split_pmd = 0", &obs, &Ok(())),
            Err("expected vmstat thp_split_pmd = 0, found +1".into())
        );
        assert_eq!(
            check("expect vmstat thp_split_pmd +2", &obs, &Ok(())),
            Err("expected vmstat thp_split_pmd +2, found +1".into())
        );
        assert_eq!(
            check("expect vmstat pswpout +2", &obs, &Ok(())),
            Err("vmstat pswpout is not in the observation".into())
        );
        assert_eq!(check("expect mthp 2M anon_fault_alloc +1", &obs, &Ok(())), Ok(()));
        assert_eq!(
            check("expect mthp 2048kB anon_fault_alloc = 0", &obs, &Ok(())),
            Err("expected mthp 2048kB anon_fault_alloc = 0, found +1".into())
        );
    }

    #[test]
    fn smaps_and_vmpte() {
        let obs = observation();
        assert_eq!(check("expect p1 A AnonHugePages 2048kB", &obs, &Ok(())), Ok(()));
        assert_eq!(
            check("expect p2 A AnonHugePages 2048kB", &obs, &Ok(())),
            Err("expected p2 A AnonHugePages 2048 kB, found 0 kB".into())
        );
        // Summed over every VMA that intersects the range.
        assert_eq!(check("expect p2 A Rss 2052kB", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect p2 A 1M Rss 1024kB", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect p2 A+1M Anonymous 1028 kB", &obs, &Ok(())), Ok(()));
        assert_eq!(
            check("expect p2 A+1M Rss < 1M", &obs, &Ok(())),
            Err("expected p2 A+1M Rss < 1024 kB, found 1028 kB".into())
        );
        assert_eq!(check("expect p1 VmPTE 12kB", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect p2 VmPTE 16kB", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect p2 VmPTE 8kB", &obs, &Ok(())), Err("expected p2 VmPTE 8 kB, found 16 kB".into()));
        let empty = Observation::default();
        assert_eq!(check("expect p2 VmPTE 8kB", &empty, &Ok(())), Err("p2 is not in the observation".into()));
        assert_eq!(check("expect p2 A Rss 0", &empty, &Ok(())), Err("p2 is not in the observation".into()));
    }

    #[test]
    fn pages() {
        let obs = observation();
        let ok = |line: &str| assert_eq!(check(line, &obs, &Ok(())), Ok(()), "{line}");
        ok("expect p1 A page present order=9 pmd mapcount=2 !exclusive pages=512");
        ok("expect p1 A+2M page none pages=all");
        ok("expect p2 A page present order=9 !pmd same_folio=p1:A+0");
        ok("expect p2 A+4K page present order=0 mapcount=1 exclusive !same_folio=p1:A");
        ok("expect p2 A+8K page order=9 same_folio=A pages=510");
        ok("expect p2 A+2400K page present zero order=0 mapcount=0 same_folio=A+2404K");
        ok("expect p2 A+2800K page swapped !pmd");
        assert_eq!(
            check("expect p1 A page present order=9 pmd pages=513", &obs, &Ok(())).unwrap_err(),
            "expected p1 A page present order=9 pmd pages=513, found p1 A+2M (page 513 of 513): none"
        );
        assert_eq!(
            check("expect p2 A page present order=9 pages=2", &obs, &Ok(())).unwrap_err(),
            "expected p2 A page present order=9 pages=2, found p2 A+4K (page 2 of 2): present order=0 !pmd \
             mapcount=1 exclusive"
        );
        assert_eq!(
            check("expect p2 A+4K page same_folio=p1:A", &obs, &Ok(())).unwrap_err(),
            "expected p2 A+4K page same_folio=p1:A, found p2 A+4K: present order=0 !pmd mapcount=1 exclusive; its \
             folio is #1, p1 A's is #0"
        );
        assert_eq!(
            check("expect p2 A+2400K page same_folio=A+2M", &obs, &Ok(())).unwrap_err(),
            "expected p2 A+2400K page same_folio=p2:A+2M, found p2 A+2400K: present zero order=0 !pmd mapcount=0 \
             !exclusive; its folio is the zero page, p2 A+2M's is absent"
        );
        assert_eq!(
            check("expect p2 A+2800K page order=0", &obs, &Ok(())).unwrap_err(),
            "expected p2 A+2800K page order=0, found p2 A+2800K: swapped"
        );
        assert_eq!(
            check("expect p1 A page mapcount<=1", &obs, &Ok(())).unwrap_err(),
            "expected p1 A page mapcount<=1, found p1 A: present order=9 pmd mapcount=2 !exclusive"
        );
    }

    #[test]
    fn folios() {
        let obs = observation();
        assert_eq!(check("expect p1 A folios order=9 count=1", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect p1 A+2M folios count=0", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect p2 A folios count=2", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect p2 A 4K folios order=9 count=1", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect p2 A+4K 4K folios order=9 count=0", &obs, &Ok(())), Ok(()));
        assert_eq!(
            check("expect p2 A folios order=9 count=2", &obs, &Ok(())).unwrap_err(),
            "expected p2 A folios order=9 count=2, found count=1 (1 of order 0, 1 of order 9)"
        );
        assert_eq!(
            check("expect p1 A+2M folios count>=1", &obs, &Ok(())).unwrap_err(),
            "expected p1 A+2M folios count>=1, found count=0 (no folios)"
        );
    }

    #[test]
    fn vmas_vma_and_content() {
        let mut obs = observation();
        assert_eq!(check("expect p2 A vmas count=2", &obs, &Ok(())), Ok(()));
        assert_eq!(check("expect p2 A+1M vma start=A+1M end=A+4M THPeligible", &obs, &Ok(())), Ok(()));
        assert_eq!(
            check("expect p2 A vma end=A+2M", &obs, &Ok(())).unwrap_err(),
            "expected p2 A vma end=A+2M, found A+0..A+1M THPeligible VmFlags: "
        );
        assert_eq!(
            check("expect p1 A vmas count=2", &obs, &Ok(())).unwrap_err(),
            "expected p1 A vmas count=2, found count=1 [A+0..A+4M]"
        );
        let tag = thpsim_workload::pattern_tag("T");
        let words = vec![thpsim_workload::pattern_word(tag, 0), 0];
        obs.contents =
            vec![crate::ContentObs { proc: ProcId(0), addr: BASE, read: crate::WordsRead { words, error: None } }];
        assert_eq!(check("expect p1 A 4K content pattern=T", &obs, &Ok(())), Ok(()));
        let err = check("expect p1 A 8K content pattern=T", &obs, &Ok(())).unwrap_err();
        assert!(err.starts_with("expected p1 A 8K content pattern=T, found p1 A+4K (page 2 of 2) holds 0 (never written, or zero), not 0x"), "{err}");
        obs.contents[0].read.error = Some(Errno::Fault);
        obs.contents[0].read.words.truncate(1);
        assert_eq!(
            check("expect p1 A 8K content pattern=T", &obs, &Ok(())).unwrap_err(),
            "expected p1 A 8K content pattern=T, found p1 A+4K cannot be read: EFAULT"
        );
    }
}
