//! The part of a JSON text a pointer's tokens lead to, read without building the rest.
//!
//! A stored value may be as large as an entry (16 MiB), and parsed whole into a tree it takes
//! about 30 times that when it holds many small elements (`[0,0,...]`). A read of one part
//! of it ([`crate::Database::get_path`]) walks the text instead: members and elements off
//! the path are skipped as they are read, and only the part itself is built. Its answer is
//! [`super::pointer::get`]'s on the whole value.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::pointer::index_of;
use super::NUMBER_MARKER;

/// The part of the JSON text `json` that `tokens` point at, if there is one. Fails only for
/// text that is not one JSON value.
pub fn part_of(json: &str, tokens: &[String]) -> serde_json::Result<Option<Value>> {
    let mut text = serde_json::Deserializer::from_str(json);
    let part = Path(tokens).deserialize(&mut text)?;
    text.end()?;
    Ok(part)
}

/// The tokens still to follow from the value being read.
struct Path<'t>(&'t [String]);

impl<'de> DeserializeSeed<'de> for Path<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, value: D) -> Result<Option<Value>, D::Error> {
        if self.0.is_empty() {
            return Value::deserialize(value).map(Some);
        }
        value.deserialize_any(self)
    }
}

/// A scalar has no parts: the path leads nowhere.
macro_rules! nothing_in {
    ($($visit:ident: $kind:ty),*) => {
        $(fn $visit<E>(self, _: $kind) -> Result<Option<Value>, E> {
            Ok(None)
        })*
    };
}

impl<'de> Visitor<'de> for Path<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    nothing_in!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E>(self) -> Result<Option<Value>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Option<Value>, A::Error> {
        let (token, rest) = self.0.split_first().expect("a path with a token");
        let mut found = None;
        let mut first = true;
        while let Some(name) = members.next_key::<String>()? {
            // A number, as serde_json's exact numbers reach a visitor (a stored object never
            // starts with this name: such an object is refused when written).
            if std::mem::take(&mut first) && name == NUMBER_MARKER {
                members.next_value::<IgnoredAny>()?;
                return Ok(None);
            }
            if name == *token {
                found = members.next_value_seed(Path(rest))?;
            } else {
                members.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Option<Value>, A::Error> {
        let (token, rest) = self.0.split_first().expect("a path with a token");
        let wanted = index_of(token);
        let mut found = None;
        let mut at = 0;
        loop {
            if Some(at) == wanted {
                match items.next_element_seed(Path(rest))? {
                    Some(part) => found = part,
                    None => break,
                }
            } else if items.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            at += 1;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::pointer::{get, parse};

    #[test]
    fn a_part_read_from_the_text_is_the_part_of_the_whole_value() {
        let texts = [
            r#"{"a":{"b":[10,{"c":"x"},[true,null]],"~/":1.50},"n":12345678901234567890123,"e":{}}"#,
            r#"[0,[1,[2,[3]]],{"0":"zero","01":"one"},-0.0,1e400,"s"]"#,
            r#""just text""#,
            "7",
            "null",
            r#"{"a\u00e9\"":{"k":[]}}"#,
        ];
        let pointers = [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/2/1",
            "/a/b/3",
            "/a/b/-",
            "/a/b/01",
            "/a/~0~1",
            "/n",
            "/n/0",
            "/n/$serde_json::private::Number",
            "/e",
            "/e/x",
            "/0",
            "/1/1/1/0",
            "/2/0",
            "/2/01",
            "/3",
            "/4",
            "/5/0",
            "/x",
            "/aé\"/k",
            "/aé\"/k/0",
        ];
        for text in texts {
            let whole: Value = serde_json::from_str(text).unwrap();
            for pointer in pointers {
                let tokens = parse(pointer).unwrap();
                let expected = get(&whole, &tokens).cloned();
                let found = part_of(text, &tokens).unwrap();
                assert_eq!(found, expected, "{text} at {pointer:?}");
                if let Some(part) = found {
                    assert_eq!(part.to_string(), expected.unwrap().to_string());
                }
            }
        }
    }

    #[test]
    fn text_that_is_not_one_value_fails() {
        let tokens = parse("/a").unwrap();
        for bad in ["", "{", r#"{"a":1} 2"#, "[1,]", r#"{"b":[1,2}"#] {
            assert!(part_of(bad, &tokens).is_err(), "{bad}");
        }
    }
}
