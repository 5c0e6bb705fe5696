//! heck's vocabulary of checks, and the pure check state machine.
//!
//! Invariant: nothing here reads a clock or touches the network. A probe (crate `heck-probe`)
//! produces an [`Outcome`]; the node feeds it, with the time it observed, to a [`CheckState`],
//! which answers with at most one [`Transition`]. Every other crate speaks these types.
//!
//! * [`spec`] — what to check: [`TargetInput`] is the raw form (TOML `[[target]]` or JSON on the
//!   API); [`TargetInput::resolve`] validates it against [`Defaults`] into a [`TargetSpec`], or says
//!   which field is wrong and why.
//! * [`outcome`] — what one probe attempt found.
//! * [`state`] — rise/fall thresholds turning outcomes into a [`Status`].

pub mod node;
pub mod outcome;
pub mod spec;
pub mod state;

pub use node::{MAX_NODE_NAME_LEN, NodeName};
pub use outcome::{ErrorKind, Outcome};
pub use spec::{
    Defaults, HumanDuration, ProbeKind, SpecError, StatusMatch, StatusSet, TargetInput, TargetName,
    TargetSpec, TargetUrl, Thresholds, TlsOverrides,
};
pub use state::{CheckState, Status, Transition};
