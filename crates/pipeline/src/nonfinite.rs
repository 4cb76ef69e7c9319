//! Figures that may be infinite or NaN in JSON: JSON has no such numbers (serde_json writes
//! them as `null`, which reads back as a missing figure), so a finite `f64` is written as a
//! number and any other as the string `"inf"`, `"-inf"` or `"NaN"`, read back as the same
//! value. An exact model's SQNR is infinite, and must stay so after a round trip.
//!
//! Use as `#[serde(with = "crate::nonfinite")]` on an `f64` and
//! `#[serde(default, with = "crate::nonfinite::option")]` on an `Option<f64>` (`null` and a
//! missing field stay `None`).

use serde::{Deserialize, Deserializer, Serializer};

/// Writes `v` as a number when finite, else as its name.
pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_str(&v.to_string())
    }
}

/// Reads a number, or one of the names [`serialize`] writes.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }
    match Repr::deserialize(d)? {
        Repr::Number(v) => Ok(v),
        Repr::Text(t) => match t.as_str() {
            "inf" | "-inf" | "NaN" => Ok(t.parse().expect("a name of a non-finite f64")),
            other => Err(serde::de::Error::custom(format!(
                "expected a number, \"inf\", \"-inf\" or \"NaN\", found \"{other}\""
            ))),
        },
    }
}

/// The same for an optional figure.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `None` as `null`, a figure as [`super::serialize`] does.
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    /// Reads `null` as `None`, a figure as [`super::deserialize`] does.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct Figure(#[serde(with = "super")] f64);
        Ok(Option::<Figure>::deserialize(d)?.map(|f| f.0))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Figures {
        #[serde(with = "super")]
        plain: f64,
        #[serde(default, with = "super::option")]
        maybe: Option<f64>,
    }

    fn round_trip(plain: f64, maybe: Option<f64>) -> (String, Figures) {
        let json = serde_json::to_string(&Figures { plain, maybe }).unwrap();
        let back = serde_json::from_str(&json).unwrap();
        (json, back)
    }

    #[test]
    fn infinities_and_nan_survive_json() {
        let (json, back) = round_trip(f64::NEG_INFINITY, Some(f64::INFINITY));
        assert_eq!(json, r#"{"plain":"-inf","maybe":"inf"}"#);
        assert_eq!(
            (back.plain, back.maybe),
            (f64::NEG_INFINITY, Some(f64::INFINITY))
        );
        let (json, back) = round_trip(f64::NAN, None);
        assert_eq!(json, r#"{"plain":"NaN","maybe":null}"#);
        assert!(back.plain.is_nan() && back.maybe.is_none());
        let (json, back) = round_trip(1.5, Some(-2.0));
        assert_eq!(json, r#"{"plain":1.5,"maybe":-2.0}"#);
        assert_eq!(
            back,
            Figures {
                plain: 1.5,
                maybe: Some(-2.0)
            }
        );
        let missing: Figures = serde_json::from_str(r#"{"plain":0}"#).unwrap();
        assert_eq!(missing.maybe, None);
    }

    #[test]
    fn other_strings_are_refused_by_name() {
        let err = serde_json::from_str::<Figures>(r#"{"plain":"lots"}"#).unwrap_err();
        assert!(err.to_string().contains("found \"lots\""), "{err}");
    }
}
