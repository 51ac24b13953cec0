//! thpsim's backends and the observation both produce.
//!
//! `Backend` is the interface; `ModelBackend` runs the model, `LinuxBackend`
//! drives the live kernel, and `Observation` is what both report.

pub mod backend;
pub mod observation;

pub use backend::*;
pub use observation::*;
