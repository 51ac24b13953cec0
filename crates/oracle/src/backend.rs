//! The interface both backends implement: apply an operation, observe.

use thpsim_mm::Errno;
pub use thpsim_workload::RegionRef;
use thpsim_workload::{Op, ProcId};

use crate::Observation;

/// A backend failed in a way that is not the kernel's answer to the
/// operation: the host lacks something, the executor died, /proc could not be
/// read. The scenario cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("precondition not met: {0}")]
    Precondition(String),
    #[error("the operation is not supported by the {backend} backend: {what}")]
    Unsupported { backend: &'static str, what: String },
    #[error("host I/O failed: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("executor failed: {0}")]
    Executor(String),
}

/// The outcome of one operation as the kernel reports it: success, or the
/// errno of the failing system call.
pub type OpResult = Result<(), Errno>;

/// The words `Backend::read_words` loaded, and the errno that stopped it
/// early, if one did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WordsRead {
    pub words: Vec<u64>,
    pub error: Option<Errno>,
}

/// A backend runs operations and reports what memory looks like.
pub trait Backend {
    /// `model` or `linux`.
    fn name(&self) -> &'static str;
    /// Performs one operation.
    fn apply(&mut self, op: &Op) -> Result<OpResult, BackendError>;
    /// Describes the given regions of the live processes, and the counter
    /// deltas since the backend was created.
    fn observe(&mut self, regions: &[RegionRef]) -> Result<Observation, BackendError>;
    /// Loads the 64-bit word at the start of each of `nr_pages` pages from
    /// `addr` in `proc`, in order, as a program would (each load faults as
    /// a load does). Stops at the first page that cannot be read, with the
    /// words read so far and the errno (EFAULT for an unmapped page).
    fn read_words(&mut self, proc: ProcId, addr: u64, nr_pages: u64) -> Result<WordsRead, BackendError> {
        let _ = (proc, addr, nr_pages);
        Err(BackendError::Unsupported { backend: self.name(), what: "reading memory contents".into() })
    }
    /// Returns and forgets the warnings gathered so far: what did not stop
    /// the scenario but may make an observation less trustworthy (on Linux,
    /// khugepaged collapsing in the background during a step). None by default.
    fn take_warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
}
