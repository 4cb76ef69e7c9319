//! One module per subcommand.

pub mod compare;
pub mod conformance;
pub mod eval;
pub mod inspect;
pub mod run;
