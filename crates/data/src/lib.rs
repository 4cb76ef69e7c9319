//! Datasets for whittle: IDX files (MNIST, Fashion-MNIST), NPY/NPZ arrays, CSV tables and
//! image folders, named by dataset specs such as `mnist:DIR` that load a labelled
//! classification dataset into memory; a loader that batches, augments and prefetches it.

#![warn(missing_docs)]

mod arrays;
pub mod assets;
pub mod augment;
pub mod csv;
pub mod dataset;
pub mod error;
pub mod idx;
mod image_decode;
pub mod images;
pub mod loader;
mod mnist;
pub mod npy;
mod npy_header;
mod raw;
pub mod scenario;
pub mod spec;
#[cfg(test)]
mod testutil;

pub use arrays::read_npz;
pub use assets::assets_dir;
pub use augment::{Augment, Normalize};
pub use dataset::{Dataset, Split};
pub use error::{DataError, Result};
pub use idx::read_idx;
pub use loader::{Batch, Loader, LoaderOptions};
pub use npy::{read_npy, write_npy};
pub use spec::load;
