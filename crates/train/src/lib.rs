//! Training of ONNX graphs through whittle's executor: losses, optimizers, learning-rate
//! schedules and the trainer loop that fine-tuning, QAT and distillation share.

#![warn(missing_docs)]
