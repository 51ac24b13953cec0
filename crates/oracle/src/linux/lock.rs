//! The host-wide lock: one Linux backend at a time, since THP knobs and
//! counters are shared by the whole machine. A backend takes it for its
//! lifetime; a caller that runs many backends in a row (a corpus, a test
//! that compares the knobs before and after) can hold it across all of them
//! and start each backend with `LinuxOptions::lock_path = None`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{precondition, sys};
use crate::BackendError;

/// Where the lock lives unless told otherwise.
pub const DEFAULT_LOCK_PATH: &str = "/run/thpsim-oracle.lock";

/// The held lock: an exclusive `flock` on the lock file, released when
/// dropped (or when the process dies).
#[derive(Debug)]
pub struct HostLock {
    _file: File,
}

impl HostLock {
    /// Takes the lock at `path`, waiting up to `wait` for whoever holds it.
    pub fn acquire(path: &Path, wait: Duration) -> Result<HostLock, BackendError> {
        acquire_lock(path, wait).map(|file| HostLock { _file: file })
    }
}

/// Takes the host-wide lock, waiting up to `wait` for another backend.
fn acquire_lock(path: &Path, wait: Duration) -> Result<File, BackendError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| precondition(format!("cannot open the lock file {}: {e}", path.display())))?;
    let deadline = Instant::now() + wait;
    let mut said = false;
    loop {
        match sys::try_lock_exclusive(file.as_fd()) {
            Ok(true) => break,
            Ok(false) if Instant::now() < deadline => {
                if !said {
                    // Once per wait, so that a user knows why nothing happens.
                    eprintln!("{}", waiting_message(path, &std::fs::read_to_string(path).unwrap_or_default(), wait));
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(false) => {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                return Err(precondition(format!(
                    "another thpsim Linux backend (pid {}) holds {} and did not release it within {wait:?}",
                    holder.trim(),
                    path.display()
                )));
            }
            Err(e) => return Err(precondition(format!("flock {}: {e}", path.display()))),
        }
    }
    // Who holds it, for the message above; the lock is what counts.
    let _ = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

/// What the oracle says on standard error while it waits for the lock.
fn waiting_message(path: &Path, holder: &str, wait: Duration) -> String {
    let holder = match holder.trim() {
        "" => String::new(),
        pid => format!(" (pid {pid})"),
    };
    format!(
        "thpsim: waiting for {}: another thpsim Linux backend{holder} is using the live kernel (giving up after {}s)",
        path.display(),
        wait.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_announced_with_the_holder() {
        assert_eq!(
            waiting_message(Path::new("/run/thpsim-oracle.lock"), "1234\n", Duration::from_secs(300)),
            "thpsim: waiting for /run/thpsim-oracle.lock: another thpsim Linux backend (pid 1234) is using the live kernel (giving up after 300s)"
        );
        assert!(!waiting_message(Path::new("/l"), "", Duration::from_secs(1)).contains("pid"));
    }
}
