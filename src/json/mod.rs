//! JSON values as stores keep them (one canonical text per value), and the JSON form of
//! the types records hold.

mod check;
mod input;
pub mod part;
pub mod pointer;

pub use check::canonical_depth;
pub use input::parse;

use crate::error::{Error, Result};

/// An object key that serde_json (with `arbitrary_precision`, which keeps numbers' digits)
/// reads, as an object's first key, as the number in its value: `{"<this>":"1"}` parses as
/// `1`. A value with it there is refused, never silently changed.
pub const NUMBER_MARKER: &str = "$serde_json::private::Number";

/// Parses `text` and returns its canonical form (no insignificant white space, object keys
/// sorted), so that equal values have equal bytes in every entry on every machine.
/// [`Error::InvalidArgument`] for text that is not JSON, for an object with a key twice,
/// and for an object whose first key, as written or once sorted, is [`NUMBER_MARKER`].
pub fn canonical(text: &str) -> Result<String> {
    canonical_of(&parse(text)?)
}

/// The canonical text of `value`; [`Error::InvalidArgument`] if an object's first key,
/// once sorted, is [`NUMBER_MARKER`] (the text would read back as a number). Without spare
/// capacity: a transaction holds it until it commits, and the encoder starts at 128 bytes,
/// which for small values was most of what a transaction of many keys held.
pub fn canonical_of(value: &serde_json::Value) -> Result<String> {
    let mut canonical = encode(value);
    // Compact text has no white space and escapes every quote inside a string, so the
    // second test is exactly an object whose first key is the marker.
    if canonical.contains(NUMBER_MARKER) && canonical.contains(&format!("{{\"{NUMBER_MARKER}\":")) {
        return Err(marker_refused());
    }
    canonical.shrink_to_fit();
    Ok(canonical)
}

/// The error for a value or path that would give an object [`NUMBER_MARKER`] as first key.
pub(crate) fn marker_refused() -> Error {
    Error::invalid(format!(
        "the object key '{NUMBER_MARKER}' is reserved (JSON numbers are read with it); it \
         can be an object's key only after another key that sorts before it"
    ))
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

    #[test]
    fn an_object_led_by_the_number_marker_is_refused_not_changed() {
        let refused = |text: &str| {
            let err = super::canonical(text).expect_err(text);
            assert!(err.to_string().contains("is reserved"), "{text}: {err}");
        };
        // serde_json would read each as a number, or fail to read it.
        refused(r#"{"$serde_json::private::Number":"1"}"#);
        refused(r#"{ "a" : [ { "$serde_json::private::Number" : "42" } ] }"#);
        refused(r#"{"\u0024serde_json::private::Number":"1"}"#);
        refused(r#"{"$serde_json::private::Number":"1","x":2}"#);
        // Written after another key, it would sort first.
        refused(r#"{"x":2,"$serde_json::private::Number":"1"}"#);
        // Elsewhere it is an ordinary string or key.
        for kept in [
            r#"["$serde_json::private::Number"]"#,
            r#"{"a":"$serde_json::private::Number"}"#,
            r#"{"!":1,"$serde_json::private::Number":"1"}"#,
            r#"{"k":"{\"$serde_json::private::Number\":1}"}"#,
        ] {
            assert_eq!(super::canonical(kept).unwrap(), kept);
            assert!(super::canonical_depth(kept).is_some(), "{kept}");
        }
    }
}
