//! whittle's local web UI (`whittle ui`): a server with embedded assets and one JSON API
//! that the page and the tests both use; jobs run whittle-pipeline recipes (the compress
//! and continual forms become one) or whittle-search's auto-optimizer, and report through
//! the pipeline's `Observer`, so the UI, the CLI and the tests run the same steps and get
//! the same numbers.
//!
//! - [`server`]: binding, the token, the allowed folders; [`routes`]: the endpoints.
//! - [`api`]: the API's request and response types, errors as `{"error"}`.
//! - [`form`]: the compress form as a recipe; paths confined to the allowed folders.
//!   [`fields`]: the field checks the forms share.
//! - [`auto_form`]: the auto-optimizer form as a search; [`continual_form`]: the
//!   continual-learning form as a one-step recipe.
//! - [`jobs`]: bounded concurrent jobs, their event history and live streams.
//! - [`security`]: the token check and path confinement; [`assets`]: the embedded page.
//!   The inspect page shows `whittle_pipeline::inspect`, as `whittle inspect` does.

pub mod api;
pub mod assets;
pub mod auto_form;
pub mod continual_form;
pub mod fields;
pub mod form;
pub mod jobs;
pub mod routes;
pub mod security;
pub mod server;

pub use server::{run, Options, Server};
