//! One module per subcommand.

pub mod compare;
pub mod conformance;
pub mod eval;
pub mod inspect;
pub mod optimize;
pub mod quantize;
pub mod bench;
pub mod conformance;
pub mod eval;
pub mod inspect;
pub mod profile;
pub mod run;
pub mod zoo;
