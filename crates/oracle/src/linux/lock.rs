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
    loop {
        match sys::try_lock_exclusive(file.as_fd()) {
            Ok(true) => break,
            Ok(false) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
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
