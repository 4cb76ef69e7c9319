//! One module per subcommand.

pub mod auto;
pub mod bench;
pub mod compare;
pub mod conformance;
pub mod continual;
pub mod distill;
pub mod eval;
pub mod factorize;
pub mod inspect;
pub mod nas;
pub mod optimize;
pub mod output;
pub mod pipeline;
pub mod profile;
pub mod prune;
pub mod prune_channel;
pub mod qat;
pub mod quantize;
pub mod run;
pub mod train;
pub mod ui;
pub mod zoo;
