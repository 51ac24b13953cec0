//! thpsim scenario language.
#![forbid(unsafe_code)]
pub mod expect;
pub mod op;
mod parse;
pub mod plan;
pub mod scenario;

pub use expect::{Cmp, CmpOp, ContentWant, Expectation, ExpectedState, PageProp, Place, SmapsField, VmaProp};
pub use op::*;
pub use scenario::{
    decode_scenario, escape_controls, parse_scenario, quote_word, Injection, Machine, ParseError, PolicyLine, Scenario,
    Step, StepKind, MAX_SCENARIO_BYTES,
};
