//! The model zoo: builders that emit ONNX graphs with initialised weights, ready to train.
//!
//! A spec names a model and optionally sets options: `NAME` or `NAME:key=value,...`
//! (a leading `zoo:`, as in `--model zoo:cnn`, is accepted and ignored). Every model
//! takes `input=CxHxW` (default `1x28x28`), `classes` (default 10) and `seed` (default 0)
//! besides its own options ([`catalog`]). Models are ONNX IR version 8, opset 17 of the
//! default domain, with one float input `input` [N, C, H, W] (symbolic batch `N`) and
//! one output `logits` [N, classes]. Conv and linear weights follow PyTorch's default
//! initialisation; BatchNormalization starts as the identity (scale 1, bias 0, mean 0,
//! variance 1). The same spec always gives the same bytes.
//!
//! ```
//! let model = whittle_zoo::build("cnn:channels=8-16,classes=4").unwrap();
//! assert_eq!(model.graph().output[0].name, "logits");
//! ```

#![warn(missing_docs)]

pub mod builder;
pub mod error;
pub mod init;
pub mod layers;
mod models;
pub mod spec;

use whittle_ir::Model;

pub use builder::{GraphBuilder, Var};
pub use error::{Result, ZooError};
pub use models::{INPUT, OUTPUT};
pub use spec::{ModelInfo, OptionInfo, Options, COMMON_OPTIONS};

/// Prefix a spec may carry (`zoo:cnn`), as model arguments of the CLI do.
pub const PREFIX: &str = "zoo:";

/// Metadata key under which a built model records its full spec.
pub const SPEC_KEY: &str = "whittle.zoo.spec";

/// Every model of the zoo, with its options.
pub fn catalog() -> &'static [ModelInfo] {
    models::ALL
}

/// The names of the zoo's models.
pub fn names() -> Vec<&'static str> {
    models::ALL.iter().map(|m| m.name).collect()
}

/// The model called `name`.
pub fn find(name: &str) -> Result<&'static ModelInfo> {
    models::ALL
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| ZooError::UnknownModel {
            name: name.to_string(),
            known: names().join(", "),
        })
}

/// Parses `[zoo:]NAME[:key=value,...]` into the model and its resolved options.
pub fn parse(spec: &str) -> Result<(&'static ModelInfo, Options)> {
    let spec = spec.trim();
    let spec = spec.strip_prefix(PREFIX).unwrap_or(spec);
    let (name, options) = spec.split_once(':').unwrap_or((spec, ""));
    let info = find(name.trim())?;
    Ok((info, Options::parse(info, options)?))
}

/// Builds the model `spec` describes (see the crate documentation), recording the full
/// spec in its metadata under [`SPEC_KEY`].
pub fn build(spec: &str) -> Result<Model> {
    let (info, options) = parse(spec)?;
    let mut model = (info.build)(&options).map_err(|e| match e {
        ZooError::Build(msg) => ZooError::Build(format!("{}: {msg}", info.name)),
        other => other,
    })?;
    model.set_metadata(SPEC_KEY, &options.canonical());
    Ok(model)
}
