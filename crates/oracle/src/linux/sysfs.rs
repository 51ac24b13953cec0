//! The THP knobs under /sys/kernel/mm/transparent_hugepage: reading them as
//! sysfs spells them, saving all of them before a scenario changes any, and
//! writing them back in a fixed order on every way out (drop, error, signal,
//! and at the next start if a run was killed with SIGKILL), as the kernel
//! selftests' `thp_settings` helpers do. Also the per-size
//! `hugepages-<size>kB/stats/` counters.
//!
//! Order of the write-back: `thpsim_uapi::knob::RESTORE_ORDER`, then
//! `PER_SIZE_RESTORE_ORDER` in every `hugepages-<size>kB` directory by
//! ascending size, then any other knob a scenario wrote, in the order it
//! first wrote it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::signals::{self, SignalGuard};

pub use thpsim_uapi::knob::THP_ROOT;
use thpsim_uapi::knob::{parse_sysfs_print, PER_SIZE_RESTORE_ORDER, RESTORE_ORDER};

/// The absolute path of a knob given relative to `THP_ROOT`.
pub(crate) fn knob_path(rel: &str) -> PathBuf {
    Path::new(THP_ROOT).join(rel)
}

/// Whether `rel` is a path a scenario may name: relative, no `..`, no
/// empty or `.` components.
pub(crate) fn is_safe_knob_path(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.starts_with('/')
        && rel.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        && !rel.contains('\0')
}

/// Whether `rel` names a writable file (a knob, not a counter or a stat).
pub(crate) fn is_writable_knob(rel: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(knob_path(rel)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o222 != 0)
}

/// A knob's current value as written back: the bracketed choice of an
/// enum knob (`always [madvise] never` gives `madvise`), else the trimmed text.
pub(crate) fn parse_knob(text: &str) -> String {
    parse_sysfs_print(text).to_string()
}

/// Reads a knob (relative to `THP_ROOT`).
pub fn read_knob(rel: &str) -> io::Result<String> {
    Ok(parse_knob(&fs::read_to_string(knob_path(rel))?))
}

/// Writes a knob (relative to `THP_ROOT`) with a single `write`, as `echo` does.
pub(crate) fn write_knob(rel: &str, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(knob_path(rel))?;
    file.write_all(value.as_bytes())
}

/// Per-size directories `hugepages-<size>kB`, ascending by size.
fn per_size_dirs() -> io::Result<Vec<(u64, String)>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(THP_ROOT)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(kb) = name.strip_prefix("hugepages-").and_then(|s| s.strip_suffix("kB")) {
            if let Ok(kb) = kb.parse::<u64>() {
                dirs.push((kb, name));
            }
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Every THP knob present on this host, in write-back order.
pub(crate) fn knob_list() -> io::Result<Vec<String>> {
    let mut list: Vec<String> = Vec::new();
    for &rel in RESTORE_ORDER {
        if knob_path(rel).exists() {
            list.push(rel.to_string());
        }
    }
    let dirs = per_size_dirs()?;
    for file in PER_SIZE_RESTORE_ORDER {
        for (_, dir) in &dirs {
            let rel = format!("{dir}/{file}");
            if knob_path(&rel).exists() {
                list.push(rel);
            }
        }
    }
    Ok(list)
}

/// The values of every THP knob, in write-back order: what `LinuxBackend`
/// saves and restores. Public so tests can check nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThpSettings(pub Vec<(String, String)>);

impl ThpSettings {
    /// Reads every knob now.
    pub fn read() -> io::Result<ThpSettings> {
        let mut values = Vec::new();
        for rel in knob_list()? {
            let value = read_knob(&rel).map_err(|e| io::Error::new(e.kind(), format!("{rel}: {e}")))?;
            values.push((rel, value));
        }
        Ok(ThpSettings(values))
    }
}

/// Serialises saved settings: one `path<TAB>value` line per knob.
fn format_saved(values: &[(String, String)]) -> String {
    values.iter().map(|(rel, value)| format!("{rel}\t{value}\n")).collect()
}

fn parse_saved(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(rel, _)| is_safe_knob_path(rel))
        .map(|(rel, value)| (rel.to_string(), value.to_string()))
        .collect()
}

/// Writes `values` back in order; returns one message per knob that failed.
fn write_back(values: &[(String, String)]) -> Vec<String> {
    let mut errors = Vec::new();
    for (rel, value) in values {
        if let Err(err) = write_knob(rel, value) {
            errors.push(format!("could not restore {THP_ROOT}/{rel} to {value:?}: {err}"));
        }
    }
    errors
}

/// One knob written back from a saved-settings file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredKnob {
    /// Relative to `THP_ROOT`.
    pub knob: String,
    /// Its value before the write-back (`None` if it could not be read).
    pub was: Option<String>,
    /// The saved value written back.
    pub value: String,
    /// Why the write failed, if it did.
    pub error: Option<String>,
}

/// Writes back the settings saved in `saved_file` by a run that did not
/// finish (killed with SIGKILL), in the saved order, and removes the file
/// if every knob was restored. `Ok(None)` when there is no such file. Call
/// with the host lock held, so that the file is not a running backend's.
pub fn restore_saved_file(saved_file: &Path) -> io::Result<Option<Vec<RestoredKnob>>> {
    let text = match fs::read_to_string(saved_file) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut restored = Vec::new();
    for (rel, value) in parse_saved(&text) {
        let was = read_knob(&rel).ok();
        let error = write_knob(&rel, &value).err().map(|e| e.to_string());
        restored.push(RestoredKnob { knob: rel, was, value, error });
    }
    if restored.iter().all(|r| r.error.is_none()) {
        fs::remove_file(saved_file)?;
    }
    Ok(Some(restored))
}

/// Restores the settings a killed run left in `saved_file`, if any, and
/// removes the file. Call with the host lock held. Returns what was done.
pub(crate) fn recover_stale(saved_file: &Path) -> io::Result<Vec<String>> {
    let Some(restored) = restore_saved_file(saved_file)? else {
        return Ok(Vec::new());
    };
    let changed: Vec<String> = restored
        .iter()
        .filter(|r| r.was.as_deref() != Some(r.value.as_str()))
        .map(|r| format!("{} {} -> {}", r.knob, r.was.as_deref().unwrap_or("?"), r.value))
        .collect();
    let mut notes = vec![format!(
        "{} was left by a run that did not finish; restored its {} THP settings first ({})",
        saved_file.display(),
        restored.len(),
        if changed.is_empty() { "none had changed".to_string() } else { changed.join(", ") }
    )];
    for r in &restored {
        if let Some(err) = &r.error {
            notes.push(format!("could not restore {THP_ROOT}/{} to {:?}: {err}", r.knob, r.value));
        }
    }
    Ok(notes)
}

/// The saved settings of a running backend. Restores them when dropped.
pub(crate) struct SettingsGuard {
    saved: Vec<(String, String)>,
    saved_file: Option<PathBuf>,
    restored: bool,
    _signals: SignalGuard,
}

impl SettingsGuard {
    /// Saves every knob, records them in `saved_file` (for recovery after a
    /// SIGKILL) and in the signal handlers' registry, and installs the handlers.
    pub(crate) fn save(saved_file: Option<PathBuf>) -> io::Result<SettingsGuard> {
        let ThpSettings(saved) = ThpSettings::read()?;
        let signals = SignalGuard::install()?;
        signals::clear_settings();
        for (rel, value) in &saved {
            signals::register_setting(&knob_path(rel), value)?;
        }
        signals::set_saved_file(saved_file.as_deref());
        let guard = SettingsGuard { saved, saved_file, restored: false, _signals: signals };
        guard.persist()?;
        Ok(guard)
    }

    fn persist(&self) -> io::Result<()> {
        let Some(path) = &self.saved_file else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, format_saved(&self.saved))?;
        fs::rename(&tmp, path)
    }

    /// Saves a knob outside the usual list before a scenario first writes it.
    pub(crate) fn track(&mut self, rel: &str) -> io::Result<()> {
        if self.saved.iter().any(|(r, _)| r == rel) {
            return Ok(());
        }
        let value = read_knob(rel)?;
        signals::register_setting(&knob_path(rel), &value)?;
        self.saved.push((rel.to_string(), value));
        self.persist()
    }

    /// Writes every saved knob back, in order. Idempotent; returns one
    /// message per knob that could not be restored.
    pub(crate) fn restore(&mut self) -> Vec<String> {
        if self.restored {
            return Vec::new();
        }
        let errors = write_back(&self.saved);
        self.restored = true;
        signals::clear_settings();
        signals::set_saved_file(None);
        if let Some(path) = &self.saved_file {
            if errors.is_empty() {
                let _ = fs::remove_file(path);
            }
        }
        errors
    }
}

impl Drop for SettingsGuard {
    fn drop(&mut self) {
        // Nobody is left to return these to; a host left with changed THP
        // settings must not go unnoticed.
        for error in self.restore() {
            eprintln!("thpsim linux backend: {error}");
        }
    }
}

/// The per-size stats `hugepages-<size>kB/stats/<stat>` of the given sizes
/// and stats that exist on this host, keyed `"<size>kB/<stat>"`.
pub(crate) fn read_mthp_stats(sizes_kb: &[u64], stats: &[&str]) -> io::Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for size in sizes_kb {
        for stat in stats {
            let path = knob_path(&format!("hugepages-{size}kB/stats/{stat}"));
            match fs::read_to_string(&path) {
                Ok(text) => {
                    let value = text
                        .trim()
                        .parse::<i64>()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
                    out.insert(format!("{size}kB/{stat}"), value);
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io::Error::new(err.kind(), format!("{}: {err}", path.display()))),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knob_values_as_sysfs_spells_them() {
        assert_eq!(parse_knob("always [madvise] never\n"), "madvise");
        assert_eq!(parse_knob("always defer defer+madvise [madvise] never"), "madvise");
        assert_eq!(parse_knob("10000\n"), "10000");
    }

    #[test]
    fn unsafe_knob_paths_are_refused() {
        assert!(is_safe_knob_path("enabled"));
        assert!(is_safe_knob_path("hugepages-64kB/enabled"));
        assert!(!is_safe_knob_path("../../../proc/sys/vm/drop_caches"));
        assert!(!is_safe_knob_path("khugepaged/../enabled"));
        assert!(!is_safe_knob_path("/etc/passwd"));
        assert!(!is_safe_knob_path(""));
        assert!(!is_safe_knob_path("a//b"));
    }

    #[test]
    fn saved_file_round_trips() {
        let values = vec![("enabled".to_string(), "madvise".to_string()), ("khugepaged/defrag".into(), "1".into())];
        assert_eq!(parse_saved(&format_saved(&values)), values);
    }
}
