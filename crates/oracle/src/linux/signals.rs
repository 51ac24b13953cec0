//! What to undo if the controller is killed by SIGINT, SIGTERM, SIGHUP or
//! SIGQUIT while a scenario runs, and the handlers that undo it.
//!
//! The handlers may run at any instruction of any thread, so they only read
//! a process-global registry of atomics and make async-signal-safe calls:
//! `kill` every worker, write every saved THP knob back in the registry's
//! order (the same fixed order as the normal restore), remove the saved-
//! settings file, then re-raise the signal with its default action.
//! Registry entries are leaked on purpose: a handler running on another
//! thread may still read one while the backend is dropped.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use super::sys::cvt;

/// Knobs the registry can hold; more than the kernel has.
const MAX_SETTINGS: usize = 128;
/// Workers the registry can hold. Workers beyond it still exit on their
/// own when the controller dies (their socket reads end of file).
const MAX_WORKERS: usize = 1024;
/// The signals that restore the settings, as the kernel selftests' helpers do.
const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// One knob to write back: the absolute path and the value's bytes.
struct Restore {
    path: CString,
    value: Box<[u8]>,
}

static SETTINGS: [AtomicPtr<Restore>; MAX_SETTINGS] = [const { AtomicPtr::new(null_mut()) }; MAX_SETTINGS];
static NEXT_SETTING: AtomicUsize = AtomicUsize::new(0);
static WORKERS: [AtomicI32; MAX_WORKERS] = [const { AtomicI32::new(0) }; MAX_WORKERS];
static SAVED_FILE: AtomicPtr<CString> = AtomicPtr::new(null_mut());
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Adds a knob to the end of the restore list.
pub(crate) fn register_setting(path: &Path, value: &str) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a sysfs path with a NUL byte"))?;
    let entry = Box::into_raw(Box::new(Restore { path, value: value.as_bytes().into() }));
    let slot = NEXT_SETTING.fetch_add(1, Ordering::AcqRel);
    match SETTINGS.get(slot) {
        Some(cell) => {
            cell.store(entry, Ordering::Release);
            Ok(())
        }
        None => Err(io::Error::other("too many THP knobs to restore on a signal")),
    }
}

/// Empties the restore list (after the settings were restored normally).
pub(crate) fn clear_settings() {
    for cell in &SETTINGS {
        cell.store(null_mut(), Ordering::Release);
    }
    NEXT_SETTING.store(0, Ordering::Release);
}

/// Names the file that holds the saved settings, removed on a signal.
pub(crate) fn set_saved_file(path: Option<&Path>) {
    let entry = match path.and_then(|p| CString::new(p.as_os_str().as_bytes()).ok()) {
        Some(c) => Box::into_raw(Box::new(c)),
        None => null_mut(),
    };
    SAVED_FILE.store(entry, Ordering::Release);
}

/// Remembers a worker's pid so a handler can kill it.
pub(crate) fn register_worker(pid: libc::pid_t) {
    for cell in &WORKERS {
        if cell.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return;
        }
    }
}

/// Forgets a worker's pid; call before the worker can be reaped, so that a
/// handler never kills a recycled pid.
pub(crate) fn unregister_worker(pid: libc::pid_t) {
    for cell in &WORKERS {
        if cell.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return;
        }
    }
}

extern "C" fn on_fatal_signal(sig: libc::c_int) {
    for cell in &WORKERS {
        let pid = cell.load(Ordering::Acquire);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe and takes integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for cell in &SETTINGS {
        let entry = cell.load(Ordering::Acquire);
        if entry.is_null() {
            continue;
        }
        // SAFETY: registry entries are leaked boxes, never freed, so the
        // pointer stays valid; open, write and close are async-signal-safe.
        unsafe {
            let entry = &*entry;
            let fd = libc::open(entry.path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, entry.value.as_ptr() as *const libc::c_void, entry.value.len());
                libc::close(fd);
            }
        }
    }
    let saved = SAVED_FILE.load(Ordering::Acquire);
    if !saved.is_null() {
        // SAFETY: a leaked CString; unlink is async-signal-safe.
        unsafe { libc::unlink((*saved).as_ptr()) };
    }
    // SAFETY: sigaction and raise are async-signal-safe. The signal is
    // blocked while this handler runs, so the raised one stays pending and
    // terminates the process with the default action when we return.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
        libc::raise(sig);
    }
}

/// The installed handlers; dropping it puts the previous ones back.
pub(crate) struct SignalGuard {
    previous: [libc::sigaction; 4],
}

impl SignalGuard {
    /// Installs the restoring handler for SIGINT, SIGTERM, SIGHUP, SIGQUIT.
    pub(crate) fn install() -> io::Result<SignalGuard> {
        if INSTALLED.swap(true, Ordering::AcqRel) {
            return Err(io::Error::other("restore handlers are already installed by another Linux backend"));
        }
        // SAFETY: sigaction is a plain C struct for which all-zero is valid.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_fatal_signal as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: sa_mask is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        for sig in SIGNALS {
            // SAFETY: adds a valid signal number to a valid set.
            unsafe { libc::sigaddset(&mut action.sa_mask, sig) };
        }
        // SAFETY: all-zero sigactions, overwritten below.
        let mut previous: [libc::sigaction; 4] = unsafe { std::mem::zeroed() };
        for (i, sig) in SIGNALS.into_iter().enumerate() {
            // SAFETY: `action` is fully initialised and `previous[i]` is a valid out-pointer.
            if let Err(err) = cvt(unsafe { libc::sigaction(sig, &action, &mut previous[i]) }) {
                for (j, back) in SIGNALS.into_iter().enumerate().take(i) {
                    // SAFETY: puts back a sigaction the kernel gave us.
                    unsafe { libc::sigaction(back, &previous[j], std::ptr::null_mut()) };
                }
                INSTALLED.store(false, Ordering::Release);
                return Err(err);
            }
        }
        Ok(SignalGuard { previous })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (i, sig) in SIGNALS.into_iter().enumerate() {
            // SAFETY: puts back a sigaction the kernel gave us.
            unsafe { libc::sigaction(sig, &self.previous[i], std::ptr::null_mut()) };
        }
        INSTALLED.store(false, Ordering::Release);
    }
}

/// In a freshly forked worker: the default action for the four signals (a
/// worker just dies; the controller restores), SIGCHLD ignored so that the
/// worker's own forked children are reaped by the kernel, and no signal
/// blocked. Uses no memory allocation.
pub(crate) fn reset_in_worker() {
    // SAFETY: plain sigaction/sigprocmask calls on fully initialised values.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in SIGNALS {
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(libc::SIGCHLD, &ign, std::ptr::null_mut());
        libc::sigaction(libc::SIGPIPE, &ign, std::ptr::null_mut());
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}
