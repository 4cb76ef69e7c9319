//! Datasets for whittle: IDX files (MNIST, Fashion-MNIST), NPY files, and dataset specs
//! such as `mnist:DIR` that load a labelled classification dataset into memory.

#![warn(missing_docs)]

pub mod assets;
pub mod augment;
pub mod dataset;
pub mod error;
pub mod idx;
pub mod loader;
pub mod npy;
mod npy_header;
mod raw;
pub mod spec;
#[cfg(test)]
mod testutil;

pub use assets::assets_dir;
pub use augment::{Augment, Normalize};
pub use dataset::{Dataset, Split};
pub use error::{DataError, Result};
pub use idx::read_idx;
pub use loader::{Batch, Loader, LoaderOptions};
pub use npy::{read_npy, write_npy};
pub use spec::load;
