//! Input shapes given as text, `NAME=DIMS`: the one syntax every command and recipe takes.

use std::collections::HashMap;

use crate::error::{IrError, Result};

/// Parses `NAME=DIMS` items into shapes by input name; the dimensions are whole numbers
/// joined by `x` or `,` (`x=1x3x224x224` and `x=1,3,224,224` are the same shape). Fails
/// naming the item, and on an input given twice.
pub fn parse_input_shapes(items: &[String]) -> Result<HashMap<String, Vec<usize>>> {
    let mut shapes = HashMap::new();
    for item in items {
        let invalid = |reason: &str| IrError::Invalid(format!("shape '{item}' {reason}"));
        let (name, dims) = item
            .split_once('=')
            .ok_or_else(|| invalid("must be NAME=DIMS, e.g. x=1x3x224x224 or x=1,3,224,224"))?;
        let dims = dims
            .split(['x', ','])
            .map(|d| d.trim().parse::<usize>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| invalid("has dimensions that are not numbers joined by 'x' or ','"))?;
        if shapes.insert(name.trim().to_string(), dims).is_some() {
            return Err(invalid("names an input already given"));
        }
    }
    Ok(shapes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(items: &[&str]) -> Result<HashMap<String, Vec<usize>>> {
        parse_input_shapes(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn both_separators_give_the_same_shape() {
        let x = parse(&["x=1x3x224x224"]).unwrap();
        assert_eq!(x, parse(&["x=1,3,224,224"]).unwrap());
        assert_eq!(x["x"], vec![1, 3, 224, 224]);
        assert_eq!(
            parse(&["ids=2x128", "mask=2,128"]).unwrap()["mask"],
            vec![2, 128]
        );
    }

    #[test]
    fn malformed_items_are_named() {
        let err = |items: &[&str]| parse(items).unwrap_err().to_string();
        assert!(err(&["x:1x3"]).contains("shape 'x:1x3' must be NAME=DIMS"));
        assert!(err(&["x=1xax3"]).contains("numbers joined by 'x' or ','"));
        assert!(err(&["x=1", "x=2"]).contains("already given"));
    }
}
