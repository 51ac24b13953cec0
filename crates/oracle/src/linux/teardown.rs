//! Waiting for a scenario's memory to be really gone before the next
//! scenario takes its baseline.
//!
//! A worker's address space is torn down before its pidfd says it exited,
//! but not everything it held: an io_uring ring closed by the process's
//! exit releases its fixed buffers in the ring's exit work
//! (`io_ring_exit_work()`, a workqueue), which unpins the folios and so
//! frees them later. Their `nr_anon` then fell in the next scenario's
//! counters (`hugepages-2048kB/stats/nr_anon: model +0, linux -1`). The
//! backend ends workers by asking them to exit (which unregisters their
//! buffers synchronously), and then polls the THP gauges until they are
//! back at their values from the run's start: the per-size `nr_anon` and
//! `nr_anon_partially_mapped`, and `nr_anon_transparent_hugepages` (what
//! meminfo's AnonHugePages shows). Another process on a shared host can
//! hold THPs that keep a gauge away from its old value; the wait is
//! bounded and says which gauges did not come back. A folio whose last
//! reference is another CPU's LRU batch is freed by one quiet khugepaged
//! wake (`khugepaged_do_scan()` starts with `lru_add_drain_all()`); the
//! next run's start moves khugepaged's cursor to a pass boundary anyway.

use std::collections::BTreeMap;
use std::io;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{khugepaged, procfs, sysfs};
use crate::MTHP_SIZES_KB;

/// The gauges read, keyed as in `Observation` (`"2048kB/nr_anon"`) and
/// `nr_anon_transparent_hugepages`.
pub(crate) fn read_gauges() -> io::Result<BTreeMap<String, i64>> {
    let _ = procfs::stat_refresh();
    let mut gauges = sysfs::read_mthp_stats(MTHP_SIZES_KB, &["nr_anon", "nr_anon_partially_mapped"])?;
    let vmstat = procfs::read_vmstat()?;
    if let Some(&thps) = vmstat.get("nr_anon_transparent_hugepages") {
        gauges.insert("nr_anon_transparent_hugepages".to_string(), thps);
    }
    Ok(gauges)
}

const POLL: Duration = Duration::from_millis(5);

/// Polls the gauges until they equal `base`, for at most `timeout`.
/// `Err` describes the gauges still away from their start.
pub(crate) fn wait_settled(base: &BTreeMap<String, i64>, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut drained = false;
    loop {
        let now = match read_gauges() {
            Ok(now) => now,
            Err(err) => return Err(format!("reading the THP gauges after the run: {err}")),
        };
        let away = differences(base, &now);
        if away.is_empty() {
            return Ok(());
        }
        // A freed folio can still sit in another CPU's LRU batch, which
        // holds a reference until that CPU drains it. A khugepaged scan
        // starts with lru_add_drain_all(): one quiet wake drains them all.
        if !drained && start.elapsed() > Duration::from_millis(100) {
            drained = true;
            let _ = khugepaged::wake_once(khugepaged::QUIET_PAGES_TO_SCAN);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{timeout:?} after its processes were gone, the run's THP gauges had not come back to their start \
                 ({}): another process holds THPs, or the next run may see this one's memory freed",
                away.join(", ")
            ));
        }
        sleep(POLL);
    }
}

/// `name +delta` for each gauge of `now` that differs from `base`.
fn differences(base: &BTreeMap<String, i64>, now: &BTreeMap<String, i64>) -> Vec<String> {
    now.iter()
        .filter_map(|(name, &v)| {
            let b = *base.get(name)?;
            (v != b).then(|| format!("{} {:+}", shown(name), v - b))
        })
        .collect()
}

/// A gauge as sysfs or vmstat names it.
fn shown(name: &str) -> String {
    match name.split_once('/') {
        Some((size, stat)) => format!("hugepages-{size}/stats/{stat}"),
        None => name.to_string(),
    }
}

/// Reads the gauges until two reads 20 ms apart agree (at most `timeout`):
/// the values and whether they settled.
pub(crate) fn wait_stable(timeout: Duration) -> (io::Result<BTreeMap<String, i64>>, bool) {
    let deadline = Instant::now() + timeout;
    let mut last = match read_gauges() {
        Ok(g) => g,
        Err(err) => return (Err(err), false),
    };
    loop {
        sleep(Duration::from_millis(20));
        let now = match read_gauges() {
            Ok(g) => g,
            Err(err) => return (Err(err), false),
        };
        if now == last {
            return (Ok(now), true);
        }
        if Instant::now() >= deadline {
            return (Ok(now), false);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_away_from_their_start_are_named_as_sysfs_spells_them() {
        let base: BTreeMap<String, i64> =
            [("2048kB/nr_anon", 7), ("64kB/nr_anon", 0), ("nr_anon_transparent_hugepages", 7)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        let mut now = base.clone();
        assert!(differences(&base, &now).is_empty());
        now.insert("2048kB/nr_anon".into(), 8);
        now.insert("nr_anon_transparent_hugepages".into(), 8);
        assert_eq!(
            differences(&base, &now),
            vec!["hugepages-2048kB/stats/nr_anon +1", "nr_anon_transparent_hugepages +1"]
        );
    }
}
