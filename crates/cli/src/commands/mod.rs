//! One module per subcommand.

pub mod bench;
pub mod conformance;
pub mod eval;
pub mod inspect;
pub mod profile;
pub mod run;
