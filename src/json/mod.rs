//! JSON values as stores keep them (one canonical text per value), and the JSON form of
//! the types records hold.

mod check;
pub mod pointer;

pub use check::canonical_depth;

use crate::error::{Error, Result};

/// Parses `text` and returns its canonical form (no insignificant white space, object keys
/// sorted), so that equal values have equal bytes in every entry on every machine.
pub fn canonical(text: &str) -> Result<String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("value is not valid JSON: {e}")))?;
    Ok(encode(&value))
}

/// The compact text of `value` (object keys in order: serde_json's maps here are sorted).
/// Written into a byte buffer: `Display` (`value.to_string()`) writes the same through a
/// formatter, at more cost per call.
pub fn encode(value: &serde_json::Value) -> String {
    serde_json::to_string(value).expect("a JSON value always encodes")
}

/// Gives a type with `to_text()` and `parse(&str) -> Result<Self>` the serde form of its text,
/// so records that hold ids and keys store them as they are shown everywhere else.
macro_rules! serde_as_text {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_text())
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                <$type>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_as_text;

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
