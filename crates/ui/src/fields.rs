//! Checks of form fields that the compress, auto and continual forms share; each refusal is
//! a 400 whose message starts with the field's name.

use std::fmt;

use crate::api::ApiError;

/// Most epochs a form may ask for.
pub const MAX_EPOCHS: usize = 100;

/// A 400 naming `field`: `field: why`.
pub fn bad(field: &str, why: impl fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{field}: {why}"))
}

/// The `model` field names something.
pub fn model(text: &str) -> Result<(), ApiError> {
    match text.trim().is_empty() {
        true => Err(bad(
            "model",
            "choose a model: a path, an upload or a zoo model",
        )),
        false => Ok(()),
    }
}

/// A dataset SPEC `field` names something.
pub fn data(field: &str, spec: &str) -> Result<(), ApiError> {
    match spec.trim().is_empty() {
        true => Err(bad(field, "choose a dataset SPEC, e.g. mnist:DIR")),
        false => Ok(()),
    }
}

/// A sample count, when given, is at least one.
pub fn samples(field: &str, count: Option<usize>) -> Result<(), ApiError> {
    match count {
        Some(0) => Err(bad(field, "use at least one sample")),
        _ => Ok(()),
    }
}

/// An epoch count lies in `least..=MAX_EPOCHS`.
pub fn epochs(field: &str, epochs: usize, least: usize) -> Result<(), ApiError> {
    match (least..=MAX_EPOCHS).contains(&epochs) {
        true => Ok(()),
        false => Err(bad(
            field,
            format!("{epochs} is not in {least}..={MAX_EPOCHS}"),
        )),
    }
}
