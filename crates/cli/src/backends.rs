//! Making backends, and running a scenario on one with the model's
//! invariant checks turned into a value.
//!
//! The model stops with a panic when an invariant breaks (as
//! CONFIG_DEBUG_VM does). For `thpsim` that is a finding, not a crash: the
//! panic is caught, its message kept, and the caller reports it under its
//! own exit code. The default panic hook still prints the message and
//! location unless `quiet_panics` is on (the random fuzzer re-runs failing
//! scenarios many times while shrinking).

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use thpsim_oracle::runner::{run_scenario, RunOutcome};
use thpsim_oracle::{Backend, BackendError};
use thpsim_workload::Scenario;

/// Which backend runs a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The Rust model of Linux mm.
    Model,
    /// The live kernel of this machine (needs root; changes THP sysfs
    /// knobs for the run and restores them after).
    Linux,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Model => "model",
            BackendKind::Linux => "linux",
        }
    }
}

/// Makes fresh backends for each run. The oracle and bench take one so that
/// tests can stand in small fakes for the model and the kernel.
pub trait BackendFactory {
    fn make(&self, kind: BackendKind, scenario: &Scenario) -> Result<Box<dyn Backend>, BackendError>;
}

/// The real backends.
pub struct HostBackends;

impl BackendFactory for HostBackends {
    fn make(&self, kind: BackendKind, scenario: &Scenario) -> Result<Box<dyn Backend>, BackendError> {
        match kind {
            BackendKind::Model => model_backend(scenario),
            BackendKind::Linux => linux_backend(scenario),
        }
    }
}

fn model_backend(scenario: &Scenario) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(thpsim_oracle::ModelBackend::for_scenario(scenario)))
}

/// The live kernel. Needs root; takes the host-wide oracle lock for the
/// backend's lifetime and restores every THP knob when dropped. The
/// scenario's processes run in a memory cgroup limited to its `ram=`.
/// Refuses a scenario with a model-only policy or an injection (callers
/// check this first and report it as bad input; this is the backstop).
fn linux_backend(scenario: &Scenario) -> Result<Box<dyn Backend>, BackendError> {
    thpsim_oracle::linux::refuse_model_only(scenario)
        .map_err(|err| BackendError::Unsupported { backend: "linux", what: err.to_string() })?;
    let options = thpsim_oracle::linux::LinuxOptions { ram_limit: Some(scenario.machine.ram), ..Default::default() };
    Ok(Box::new(thpsim_oracle::linux::LinuxBackend::with_options(options)?))
}

/// How one run on one backend ended.
#[derive(Debug)]
pub enum RunEnd {
    Done(RunOutcome),
    /// The backend could not be made or failed mid-run.
    Backend(BackendError),
    /// The model panicked: one of its invariants broke. The panic's message.
    Invariant(String),
}

thread_local! {
    static QUIET: RefCell<bool> = const { RefCell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Keeps panic messages for `run_guarded` and, while `quiet_panics(true)`,
/// does not print them.
fn install_hook() {
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = match info.payload().downcast_ref::<&str>() {
                Some(s) => s.to_string(),
                None => info.payload().downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".to_string()),
            };
            let located = match info.location() {
                Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
                None => message,
            };
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(located));
            if !QUIET.with(|q| *q.borrow()) {
                default(info);
            }
        }));
    });
}

/// Stops (or resumes) printing caught panics on this thread.
pub fn quiet_panics(quiet: bool) {
    install_hook();
    QUIET.with(|q| *q.borrow_mut() = quiet);
}

/// Makes a backend of `kind` and runs the scenario on it, catching a panic.
pub fn run_guarded(factory: &dyn BackendFactory, kind: BackendKind, scenario: &Scenario) -> RunEnd {
    run_guarded_timed(factory, kind, scenario).0
}

/// `run_guarded`, also returning the wall time of the run itself (making
/// the backend is not counted).
pub fn run_guarded_timed(factory: &dyn BackendFactory, kind: BackendKind, scenario: &Scenario) -> (RunEnd, Duration) {
    install_hook();
    let mut elapsed = Duration::ZERO;
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut backend = factory.make(kind, scenario)?;
        let start = Instant::now();
        let outcome = run_scenario(scenario, backend.as_mut());
        elapsed = start.elapsed();
        outcome
    }));
    let end = match result {
        Ok(Ok(outcome)) => RunEnd::Done(outcome),
        Ok(Err(err)) => RunEnd::Backend(err),
        Err(_) => {
            let message = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panic".to_string());
            match kind {
                BackendKind::Model => RunEnd::Invariant(message),
                // The Linux backend has no invariants of its own: a panic
                // there is the executor failing.
                BackendKind::Linux => RunEnd::Backend(BackendError::Executor(format!("panicked: {message}"))),
            }
        }
    };
    (end, elapsed)
}

/// `thpsim restore`: after a live run was killed with SIGKILL (or the host
/// rebooted into a changed state file), writes back the THP settings it
/// saved and says what it restored. Waits for the host lock first, so that
/// it never undoes a running backend's scenario.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// How long to wait for a running Linux backend to finish, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub wait: u64,
}

pub fn restore_main(args: &RestoreArgs, out: &mut dyn std::io::Write) -> Result<crate::Status, crate::CliError> {
    use thpsim_oracle::linux::{restore_saved_file, HostLock, LinuxOptions, THP_ROOT};
    let options = LinuxOptions::default();
    let lock_path = options.lock_path.clone().unwrap_or_else(|| thpsim_oracle::linux::DEFAULT_LOCK_PATH.into());
    let _lock = HostLock::acquire(&lock_path, Duration::from_secs(args.wait)).map_err(crate::CliError::backend)?;
    let saved = &options.saved_settings_path;
    let mut text = String::new();
    let mut status = crate::Status::Ok;
    match restore_saved_file(saved) {
        Ok(None) => text.push_str(&format!(
            "nothing to restore: {} does not exist (every live run so far restored its settings)\n",
            saved.display()
        )),
        Ok(Some(knobs)) => {
            let changed = knobs.iter().filter(|k| k.was.as_deref() != Some(k.value.as_str())).count();
            text.push_str(&format!(
                "restored {} THP settings under {THP_ROOT} from {} ({changed} had changed):\n",
                knobs.len(),
                saved.display()
            ));
            for k in &knobs {
                let was = k.was.as_deref().unwrap_or("?");
                let line = match &k.error {
                    Some(err) => {
                        status = crate::Status::Backend;
                        format!("  {}: {was}, could not write {}: {err}\n", k.knob, k.value)
                    }
                    None if was == k.value => format!("  {}: {} (unchanged)\n", k.knob, k.value),
                    None => format!("  {}: {was} -> {}\n", k.knob, k.value),
                };
                text.push_str(&line);
            }
        }
        Err(err) => {
            return Err(crate::CliError::backend(
                anyhow::Error::new(err).context(format!("reading {}", saved.display())),
            ))
        }
    }
    match thpsim_oracle::linux::remove_stale_cgroups(std::path::Path::new(thpsim_oracle::linux::MEMCG_ROOT)) {
        Ok(groups) => {
            for group in groups {
                text.push_str(&format!("removed the memory cgroup {group} (left by a run that did not finish)\n"));
            }
        }
        Err(err) => {
            status = crate::Status::Backend;
            text.push_str(&format!("could not remove the memory cgroups a killed run left: {err}\n"));
        }
    }
    crate::run::write_out(out, &text)?;
    Ok(status)
}
