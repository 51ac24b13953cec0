//! `machine ram=` on the live kernel: the scenario's processes run in a
//! memory cgroup (v1: this host's kernels mount only the v1 memory
//! controller, at /sys/fs/cgroup/memory) whose `memory.limit_in_bytes` is
//! the scenario's RAM. Each worker the controller spawns is moved into it
//! before it touches anything; workers forked from it inherit it. The
//! group is removed when the backend shuts down, and a group left by a run
//! killed with SIGKILL is removed at the next start (and by `thpsim
//! restore`).
//!
//! What the kernel does at the limit, measured (docs/fidelity.md): with
//! no swap, memcg reclaim finds nothing to reclaim in anonymous memory,
//! and the memcg OOM killer kills the worker that faults (SIGKILL; the
//! group's `memory.oom_control` counts `oom_kill`). A page fault never
//! answers ENOMEM. The backend reports that as a backend failure naming
//! the OOM kill.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the v1 memory controller is mounted.
pub const MEMCG_ROOT: &str = "/sys/fs/cgroup/memory";
/// Groups are named `<prefix><controller pid>`.
const PREFIX: &str = "thpsim-oracle-";

/// A memory cgroup of the backend's; removed when dropped.
pub(crate) struct MemCgroup {
    path: PathBuf,
    removed: bool,
}

impl MemCgroup {
    /// Makes the group with a limit of `limit_bytes`.
    pub(crate) fn create(root: &Path, limit_bytes: u64) -> io::Result<MemCgroup> {
        let path = root.join(format!("{PREFIX}{}", std::process::id()));
        if path.exists() {
            remove_group(&path)?;
        }
        fs::create_dir(&path)?;
        let group = MemCgroup { path, removed: false };
        fs::write(group.path.join("memory.limit_in_bytes"), limit_bytes.to_string())?;
        Ok(group)
    }

    /// Moves a process (and so its later children) into the group.
    pub(crate) fn add(&self, pid: libc::pid_t) -> io::Result<()> {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
    }

    /// The limit as the kernel holds it (rounded to pages).
    pub(crate) fn limit(&self) -> io::Result<u64> {
        read_u64(&self.path.join("memory.limit_in_bytes"))
    }

    /// How many processes the memcg OOM killer killed in this group.
    pub(crate) fn oom_kills(&self) -> io::Result<u64> {
        let text = fs::read_to_string(self.path.join("memory.oom_control"))?;
        Ok(text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0))
    }

    /// Removes the group; its processes must be gone.
    pub(crate) fn remove(&mut self) -> io::Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        remove_group(&self.path)
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Err(err) = self.remove() {
            eprintln!("thpsim linux backend: could not remove {}: {err}", self.path.display());
        }
    }
}

fn read_u64(path: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    text.trim().parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// rmdir, retrying briefly while the last killed processes leave the group.
fn remove_group(path: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) if tries < 200 && err.raw_os_error() == Some(libc::EBUSY) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Removes the groups that runs killed with SIGKILL left under `root`,
/// killing any process still in one (a worker whose controller died exits
/// by itself; this is the backstop). Call with the host lock held.
/// Returns what was removed.
pub fn remove_stale(root: &Path) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) || !entry.path().is_dir() {
            continue;
        }
        let procs = fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<libc::pid_t>().ok()) {
            // SAFETY: kill takes integers; these processes are in a group
            // only thpsim makes, left by a controller that is gone.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        remove_group(&entry.path())?;
        removed.push(entry.path().display().to_string());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_groups_are_found_by_prefix_only() {
        let root = std::env::temp_dir().join(format!("thpsim-memcg-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("thpsim-oracle-123")).unwrap();
        fs::create_dir_all(root.join("process_api")).unwrap();
        let removed = remove_stale(&root).unwrap();
        assert_eq!(removed, vec![root.join("thpsim-oracle-123").display().to_string()]);
        assert!(root.join("process_api").exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
