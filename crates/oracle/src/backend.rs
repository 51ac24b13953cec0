//! The interface both backends implement: apply an operation, observe.

use thpsim_mm::Errno;
use thpsim_workload::Op;
pub use thpsim_workload::RegionRef;

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

/// A backend runs operations and reports what memory looks like.
pub trait Backend {
    /// `model` or `linux`.
    fn name(&self) -> &'static str;
    /// Performs one operation.
    fn apply(&mut self, op: &Op) -> Result<OpResult, BackendError>;
    /// Describes the given regions of the live processes, and the counter
    /// deltas since the backend was created.
    fn observe(&mut self, regions: &[RegionRef]) -> Result<Observation, BackendError>;
    /// Returns and forgets the warnings gathered so far: what did not stop
    /// the scenario but may make an observation less trustworthy (on Linux,
    /// khugepaged collapsing in the background during a step). None by default.
    fn take_warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
}
