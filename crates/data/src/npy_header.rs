//! The Python-literal dict in an NPY header: `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.

use crate::error::{DataError, Result};

/// The three fields every NPY header dict holds.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyHeader {
    /// The numpy type string, e.g. `<f4`.
    pub descr: String,
    /// True when the data is stored column-major.
    pub fortran_order: bool,
    /// The array shape (empty for a scalar).
    pub shape: Vec<usize>,
}

/// A value of the header dict.
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses the header dict text; `file` names the source in errors.
pub fn parse_header(text: &str, file: &str) -> Result<NpyHeader> {
    let fail =
        |reason: String| DataError::format(file, format!("bad NPY header {text:?}: {reason}"));
    let entries = Cursor::new(text).dict().map_err(fail)?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    for (key, value) in entries {
        match (key.as_str(), value) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("descr", _) => return Err(fail("structured dtypes are not supported".into())),
            ("fortran_order", Value::Bool(b)) => fortran_order = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            (other, _) => return Err(fail(format!("unexpected key or value for '{other}'"))),
        }
    }
    match (descr, fortran_order, shape) {
        (Some(descr), Some(fortran_order), Some(shape)) => Ok(NpyHeader {
            descr,
            fortran_order,
            shape,
        }),
        _ => Err(fail(
            "needs the keys 'descr', 'fortran_order' and 'shape'".into(),
        )),
    }
}

/// The header dict text numpy writes for a C-ordered array (without padding).
pub fn format_header(descr: &str, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}")
}

/// A position in the header text; every method skips leading whitespace.
struct Cursor<'a> {
    rest: &'a str,
}

type Parse<T> = std::result::Result<T, String>;

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { rest: text }
    }

    /// True (and consumes it) when the next non-blank character is `c`.
    fn eat(&mut self, c: char) -> bool {
        self.rest = self.rest.trim_start();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Parse<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{c}' at {:?}", self.rest))
        }
    }

    /// `{key: value, ...}` with an optional trailing comma, followed only by blanks.
    fn dict(&mut self) -> Parse<Vec<(String, Value)>> {
        self.expect('{')?;
        let mut entries = Vec::new();
        while !self.eat('}') {
            let key = self.string()?;
            self.expect(':')?;
            entries.push((key, self.value()?));
            if !self.eat(',') {
                self.expect('}')?;
                break;
            }
        }
        if !self.rest.trim().is_empty() {
            return Err(format!("unexpected text after the dict: {:?}", self.rest));
        }
        Ok(entries)
    }

    fn value(&mut self) -> Parse<Value> {
        self.rest = self.rest.trim_start();
        for (word, b) in [("True", true), ("False", false)] {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Ok(Value::Bool(b));
            }
        }
        if self.rest.starts_with('(') {
            return self.tuple().map(Value::Tuple);
        }
        if self.rest.starts_with('[') {
            return Err("structured dtypes are not supported".into());
        }
        self.string().map(Value::Str)
    }

    /// A quoted string without escapes (numpy never writes any in headers).
    fn string(&mut self) -> Parse<String> {
        self.rest = self.rest.trim_start();
        let quote = match self.rest.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(format!("expected a string at {:?}", self.rest)),
        };
        let body = &self.rest[1..];
        let end = body.find(quote).ok_or("unterminated string")?;
        self.rest = &body[end + 1..];
        Ok(body[..end].to_string())
    }

    /// `()`, `(n,)` or `(a, b, ...)` of non-negative integers (a Python 2 `L` suffix is allowed).
    fn tuple(&mut self) -> Parse<Vec<usize>> {
        self.expect('(')?;
        let mut dims = Vec::new();
        while !self.eat(')') {
            dims.push(self.integer()?);
            if !self.eat(',') {
                self.expect(')')?;
                break;
            }
        }
        Ok(dims)
    }

    fn integer(&mut self) -> Parse<usize> {
        self.rest = self.rest.trim_start();
        let len = self
            .rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest.len());
        let digits = &self.rest[..len];
        let n = digits
            .parse::<usize>()
            .map_err(|_| format!("expected a dimension at {:?}", self.rest))?;
        self.rest = &self.rest[len..];
        self.rest = self.rest.strip_prefix('L').unwrap_or(self.rest);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> NpyHeader {
        parse_header(text, "f.npy").unwrap()
    }

    #[test]
    fn parses_numpy_headers_of_every_shape_kind() {
        let h = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
        assert_eq!(h.descr, "<f4");
        assert!(!h.fortran_order);
        assert_eq!(h.shape, [2, 3]);
        assert_eq!(
            header("{'descr': '|u1', 'fortran_order': False, 'shape': (), }").shape,
            []
        );
        assert_eq!(
            header("{'descr': '<i8', 'fortran_order': True, 'shape': (5,), }").shape,
            [5]
        );
        let loose = header("{\"shape\":(4L,0),\"descr\":\">f8\",\"fortran_order\":True}   \n");
        assert_eq!((loose.shape, loose.descr.as_str()), (vec![4, 0], ">f8"));
        assert!(loose.fortran_order);
    }

    #[test]
    fn formats_like_numpy() {
        assert_eq!(
            format_header("<f4", &[2, 3]),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
        );
        assert!(format_header("|b1", &[7]).ends_with("'shape': (7,), }"));
        assert!(format_header("<f8", &[]).ends_with("'shape': (), }"));
        for shape in [vec![], vec![1], vec![3, 1, 2]] {
            assert_eq!(header(&format_header("<u2", &shape)).shape, shape);
        }
    }

    #[test]
    fn malformed_headers_are_errors() {
        let err = |t: &str| parse_header(t, "f.npy").unwrap_err().to_string();
        assert!(
            err("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}")
                .contains("structured dtypes")
        );
        assert!(err("{'descr': '<f4', 'shape': (1,)}").contains("needs the keys"));
        assert!(
            err("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}")
                .contains("expected a dimension")
        );
        assert!(err("{'descr': '<f4', 'extra': 'x'}").contains("'extra'"));
        assert!(err("{'descr': '<f4").contains("unterminated"));
        assert!(err("{'shape': (1,)} x").contains("after the dict"));
        assert!(err("{'shape': (99999999999999999999999,)}").contains("expected a dimension"));
        let full = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        for cut in 0..full.len() {
            assert!(parse_header(&full[..cut], "f").is_err(), "cut {cut}");
        }
    }
}
