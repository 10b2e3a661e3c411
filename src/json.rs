//! JSON values as stores keep them: one canonical text per value.

use crate::error::{Error, Result};

/// Parses `text` and returns its canonical form (no insignificant white space, object keys
/// sorted), so that equal values have equal bytes in every entry on every machine.
pub fn canonical(text: &str) -> Result<String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("value is not valid JSON: {e}")))?;
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical_sorts_keys_and_strips_space() {
        assert_eq!(
            super::canonical(r#"{ "b": 1, "a": [true, null] }"#).unwrap(),
            r#"{"a":[true,null],"b":1}"#
        );
        assert!(super::canonical("{").is_err());
        assert!(super::canonical("").is_err());
    }
}
