//! Keeping khugepaged quiet while a scenario runs, and letting it run a
//! given number of full scans when the scenario asks for it.
//!
//! Quiet means `khugepaged/scan_sleep_millisecs` = 1 hour and
//! `pages_to_scan` = 1, so that an unexpected wake-up (writing `enabled`
//! restarts the thread, which scans at once) collapses at most one PMD.
//! khugepaged ignores registration wake-ups while its mm list is non-empty
//! (mm/khugepaged.c `khugepaged_wait_work()`), so the backend keeps a
//! sentinel process registered for the whole run. The sentinel holds no
//! THP-eligible VMA once registered (it unmaps its THP and marks every VMA
//! MADV_NOHUGEPAGE), so khugepaged never collapses in it and a scan goes
//! over it in one step without scanning a PMD. `pages_collapsed` is
//! checked around every step to catch what still slips through.
//!
//! A scenario's `khugepaged N` is run as the model runs it: one
//! `khugepaged_do_scan()` per wake with the scenario's `pages_to_scan` (the
//! model's default, 4096, unless it sets one), wakes until `full_scans`
//! moved by N, from a cursor that the backend put at the start of a pass
//! before the scenario began (`seek_pass_boundary`) and that moves in no
//! other wake. Starting with the cursor inside another mm made one wake
//! finish that pass and, its budget not spent, scan the scenario's mms a
//! second time (`pass_through_head` in `khugepaged_do_scan()`).

use std::fs;
use std::io;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::sysfs::{read_knob, write_knob};

/// `scan_sleep_millisecs` while quiet: one hour. It stays so during the
/// scenario's khugepaged steps too: each of their wakes is one store of it.
pub(crate) const QUIET_SCAN_SLEEP_MS: &str = "3600000";
/// `pages_to_scan` while quiet: the smallest value the kernel accepts.
pub(crate) const QUIET_PAGES_TO_SCAN: &str = "1";
/// `pages_to_scan` of a scenario's khugepaged steps unless it sets its own:
/// the model's default (`thpsim_mm::Config`), which is also the kernel's
/// (4096), so that both backends scan with one budget.
pub(crate) fn default_pages_to_scan() -> String {
    thpsim_mm::Config::default().khugepaged.pages_to_scan.to_string()
}

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

/// `voluntary_ctxt_switches` of the khugepaged thread: it grows each time
/// the thread goes to sleep, so a wake that ran is seen by it moving.
fn voluntary_switches(pid: i32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no voluntary_ctxt_switches in its status"))
}

/// How long one wake may take to finish its `khugepaged_do_scan()`.
const WAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs exactly one `khugepaged_do_scan()` with a budget of `pages_to_scan`
/// and waits until it is over, then puts the quiet budget back.
///
/// Storing `scan_sleep_millisecs` zeroes the thread's sleep deadline and
/// wakes it (`scan_sleep_millisecs_store()`); after its scan it sleeps for
/// the stored value again, an hour. So every wake is ours, and the scan
/// cursor (`khugepaged_scan.mm_slot`/`address`) moves only in our wakes, as
/// the model's does between its steps. The wake is seen to have run when
/// the thread's voluntary context switches moved and it is idle again.
pub(crate) fn wake_once(pages_to_scan: &str) -> io::Result<()> {
    let Some(pid) = thread_pid() else { return Ok(()) };
    write_knob("khugepaged/pages_to_scan", pages_to_scan)?;
    let before = voluntary_switches(pid)?;
    let woken = write_knob("khugepaged/scan_sleep_millisecs", QUIET_SCAN_SLEEP_MS);
    let deadline = Instant::now() + WAKE_TIMEOUT;
    let mut seen = 0;
    let mut done = false;
    while woken.is_ok() && Instant::now() < deadline {
        if voluntary_switches(pid)? > before && is_idle(pid) {
            seen += 1;
            if seen >= 2 {
                done = true;
                break;
            }
        } else {
            seen = 0;
        }
        sleep(Duration::from_millis(1));
    }
    let quieted = write_knob("khugepaged/pages_to_scan", QUIET_PAGES_TO_SCAN);
    woken?;
    quieted?;
    if done {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("khugepaged did not finish a scan within {WAKE_TIMEOUT:?}"),
        ))
    }
}

/// Moves the scan cursor to the start of a pass (`khugepaged_scan.mm_slot`
/// NULL), where the model's cursor starts: quiet wakes until `full_scans`
/// moves. Call before any scenario process registers, so these wakes scan
/// only the sentinel (and whatever other mm of the host is registered).
pub(crate) fn seek_pass_boundary(timeout: Duration) -> io::Result<bool> {
    if thread_pid().is_none() {
        return Ok(true);
    }
    let from = counter("full_scans")?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        wake_once(QUIET_PAGES_TO_SCAN)?;
        if counter("full_scans")? != from {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Lets khugepaged complete `full_scans` full passes over its mm list, one
/// controlled wake (`khugepaged_do_scan()` with `pages_to_scan`) at a time,
/// exactly as the model steps: until `khugepaged/full_scans` moved by
/// `full_scans`. The cursor stays where the last wake left it, as in the
/// kernel. Fails when the counter stops moving for `stall_timeout`.
pub(crate) fn run_full_scans(full_scans: u32, pages_to_scan: &str, stall_timeout: Duration) -> Result<(), RunError> {
    let from = counter("full_scans")?;
    let wanted = from + u64::from(full_scans);
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
        wake_once(pages_to_scan)?;
    }
}
