//! thpsim's backends and the observation both produce.
//!
//! `Backend` is the interface; `ModelBackend` runs the model, `LinuxBackend`
//! drives the live kernel, and `Observation` is what both report.

pub mod backend;
pub mod diff;
pub mod expect;
pub mod linux;
pub mod model;
pub mod observation;
pub mod runner;

pub use backend::*;
pub use model::ModelBackend;
pub use observation::*;
