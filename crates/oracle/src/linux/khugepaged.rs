//! Keeping khugepaged quiet while a scenario runs, and letting it run a
//! given number of full scans when the scenario asks for it.
//!
//! Quiet means `khugepaged/scan_sleep_millisecs` = 1 hour and
//! `pages_to_scan` = 1, so that an unexpected wake-up (writing `enabled`
//! restarts the thread, which scans at once) collapses at most one PMD.
//! khugepaged ignores registration wake-ups while its mm list is non-empty
//! (mm/khugepaged.c `khugepaged_wait_work()`), so the backend keeps a
//! sentinel process registered for the whole run. `pages_collapsed` is
//! checked around every step to catch what still slips through.

use std::fs;
use std::io;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::sysfs::{read_knob, write_knob};

/// `scan_sleep_millisecs` while quiet: one hour.
pub(crate) const QUIET_SCAN_SLEEP_MS: &str = "3600000";
/// `pages_to_scan` while quiet: the smallest value the kernel accepts.
pub(crate) const QUIET_PAGES_TO_SCAN: &str = "1";
/// `scan_sleep_millisecs` while a scenario's khugepaged step runs.
pub(crate) const RUN_SCAN_SLEEP_MS: &str = "10";
/// `pages_to_scan` while a scenario's khugepaged step runs (128 PMDs per wake).
pub(crate) const RUN_PAGES_TO_SCAN: &str = "65536";

/// How often counters and the thread's state are polled.
const POLL: Duration = Duration::from_millis(10);

/// A khugepaged counter (`pages_collapsed` or `full_scans`).
pub(crate) fn counter(name: &str) -> io::Result<u64> {
    let text = read_knob(&format!("khugepaged/{name}"))?;
    text.parse::<u64>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("khugepaged/{name} = {text:?}: {e}")))
}

/// The pid of the khugepaged kernel thread, if it runs (it stops when THP
/// is `never` at every size).
pub(crate) fn thread_pid() -> Option<i32> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.trim_end() != "khugepaged" {
            continue;
        }
        // Kernel threads are children of kthreadd (pid 2).
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some("2") {
            return Some(pid);
        }
    }
    None
}

/// Whether khugepaged sleeps between scans right now: state `S` with its
/// wait channel in `khugepaged()` itself (`khugepaged_wait_work()` is
/// inlined there), not in an allocation or a collapse.
fn is_idle(pid: i32) -> bool {
    let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    wchan.trim() == "khugepaged" && state == Some("S")
}

/// Waits until khugepaged is seen idle twice in a row, `POLL` apart.
/// Returns false on timeout (or true at once if the thread does not run).
pub(crate) fn wait_idle(timeout: Duration) -> bool {
    let Some(pid) = thread_pid() else { return true };
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    while Instant::now() < deadline {
        if is_idle(pid) {
            seen += 1;
            if seen >= 2 {
                return true;
            }
        } else {
            seen = 0;
        }
        sleep(POLL);
    }
    false
}

/// Puts khugepaged to sleep for an hour with the smallest scan budget.
/// `pages_to_scan` first: writing `scan_sleep_millisecs` wakes it for one
/// scan, which should already have the small budget.
pub(crate) fn quiet() -> io::Result<()> {
    write_knob("khugepaged/pages_to_scan", QUIET_PAGES_TO_SCAN)?;
    write_knob("khugepaged/scan_sleep_millisecs", QUIET_SCAN_SLEEP_MS)
}

/// Why a khugepaged step could not complete.
pub(crate) enum RunError {
    Io(io::Error),
    /// `full_scans` did not move for `stalled` (from, reached, wanted).
    Stalled {
        from: u64,
        reached: u64,
        wanted: u64,
        stalled: Duration,
    },
}

impl From<io::Error> for RunError {
    fn from(err: io::Error) -> Self {
        RunError::Io(err)
    }
}

/// Lets khugepaged complete `full_scans` full passes over its mm list. The
/// pass in progress when we start counts: scenario mms are registered after
/// the sentinel, at the tail of the list, so that pass still reaches them
/// (measured: waiting for one more increment scanned them once more than
/// the model). Fails when the counter stops
/// moving for `stall_timeout`. Quiets khugepaged again in every case; the
/// result says whether it was then seen idle.
pub(crate) fn run_full_scans(full_scans: u32, pages_to_scan: &str, stall_timeout: Duration) -> Result<bool, RunError> {
    let result = run_inner(full_scans, pages_to_scan, stall_timeout);
    let quieted = quiet();
    // A pass may still be running with the large budget it read at its
    // start; let it finish before the scenario goes on.
    let idle = wait_idle(Duration::from_secs(5));
    result?;
    quieted?;
    Ok(idle)
}

fn run_inner(full_scans: u32, pages_to_scan: &str, stall_timeout: Duration) -> Result<(), RunError> {
    let from = counter("full_scans")?;
    let wanted = from + u64::from(full_scans);
    write_knob("khugepaged/pages_to_scan", pages_to_scan)?;
    write_knob("khugepaged/scan_sleep_millisecs", RUN_SCAN_SLEEP_MS)?;
    let mut last = from;
    let mut last_move = Instant::now();
    loop {
        let now = counter("full_scans")?;
        if now >= wanted {
            return Ok(());
        }
        if now != last {
            last = now;
            last_move = Instant::now();
        } else if last_move.elapsed() > stall_timeout {
            return Err(RunError::Stalled { from, reached: now, wanted, stalled: stall_timeout });
        }
        sleep(POLL);
    }
}
