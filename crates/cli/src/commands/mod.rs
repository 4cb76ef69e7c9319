//! One module per subcommand.

pub mod conformance;
pub mod eval;
pub mod inspect;
pub mod run;
pub mod train;
