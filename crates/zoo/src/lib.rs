//! The model zoo: builders that emit ONNX graphs with initialised weights, ready to train.

#![warn(missing_docs)]
