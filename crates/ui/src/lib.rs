//! whittle's local web UI (`whittle ui`): a server with embedded assets and one JSON API
//! that the page and the tests both use; jobs run whittle-pipeline steps and report through
//! its `Observer`.
