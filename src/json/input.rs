//! JSON text a caller gives, checked for what parsing would silently change: an object that
//! repeats a key (the parser keeps the last value, losing the others) and an object led by
//! [`NUMBER_MARKER`] (read as a number). Both are refused, never stored changed.

use std::collections::HashSet;

use super::NUMBER_MARKER;
use crate::error::{quoted, Error, Result};

/// Parses a JSON value given by a caller. [`Error::InvalidArgument`] for text that is not
/// JSON, for an object that has a key twice, and for an object whose first key as written
/// is [`NUMBER_MARKER`] (which would parse as a number).
pub fn parse(text: &str) -> Result<serde_json::Value> {
    if starts_an_object_with_marker(text) {
        return Err(super::marker_refused());
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let why = e.to_string();
        if why.starts_with("recursion limit exceeded") {
            Error::invalid("a JSON value nests at most 127 arrays or objects")
        } else if why.contains("hex escape") || why.contains("surrogate") {
            // serde_json's own words can mislead ("lone leading surrogate" for a trailing
            // half alone): said plainly, with where.
            Error::invalid(format!(
                "value is not valid JSON: a \\u escape near line {} column {} is not one \
                 Unicode character (a \\u escape spells one, or a surrogate pair as two \
                 escapes, \\uD800-\\uDBFF then \\uDC00-\\uDFFF; half of a pair alone is \
                 refused)",
                e.line(),
                e.column()
            ))
        } else {
            Error::invalid(format!("value is not valid JSON: {why}"))
        }
    })?;
    // Each member written has one colon outside strings; the parsed value holds fewer
    // members only if a key came again. (The slower search for the key runs only then.)
    let written = members_written(text);
    if written > 0 && members_parsed(&value) < written {
        let key = repeated_key(text).unwrap_or_default();
        return Err(Error::invalid(format!(
            "a JSON object has the key {} more than once (only one of its values would be kept)",
            quoted(&key)
        )));
    }
    Ok(value)
}

/// What a walk through JSON text meets outside strings and at each string.
enum Token<'a> {
    /// A byte outside strings, white space aside.
    Byte(u8),
    /// A string, quotes and escapes as written, and the byte before it outside strings.
    Text { raw: &'a str, after: Option<u8> },
}

/// Walks `text`, calling `visit` for each token until it returns false or the text ends (or
/// turns out not to be JSON: an unterminated string ends the walk). False if `visit` did.
fn walk<'a>(text: &'a str, mut visit: impl FnMut(Token<'a>) -> bool) -> bool {
    let bytes = text.as_bytes();
    let mut last_outside = None;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if byte != b'"' {
            if !byte.is_ascii_whitespace() {
                last_outside = Some(byte);
                if !visit(Token::Byte(byte)) {
                    return false;
                }
            }
            at += 1;
            continue;
        }
        let start = at;
        at += 1;
        loop {
            match bytes.get(at) {
                None => return true,
                Some(b'\\') => at += 2,
                Some(b'"') => break,
                Some(_) => at += 1,
            }
        }
        at += 1;
        let Some(raw) = text.get(start..at) else {
            return true;
        };
        if !visit(Token::Text {
            raw,
            after: last_outside,
        }) {
            return false;
        }
        last_outside = Some(b'"');
    }
    true
}

/// A string token's text, decoded (`None` if it does not decode).
fn decoded(raw: &str) -> Option<String> {
    serde_json::from_str(raw).ok()
}

/// Whether some object in `text` has [`NUMBER_MARKER`] as its first key as written (a key
/// may spell it with escapes). `text` need not be JSON: anything that is not reads false.
fn starts_an_object_with_marker(text: &str) -> bool {
    if !text.contains('\\') && !text.contains(NUMBER_MARKER) {
        return false; // the common case: no walk
    }
    !walk(text, |token| match token {
        Token::Text {
            raw,
            after: Some(b'{'),
        } => decoded(raw).as_deref() != Some(NUMBER_MARKER),
        _ => true,
    })
}

/// The members of the objects `text` writes: its colons outside strings.
fn members_written(text: &str) -> usize {
    if !text.contains(':') {
        return 0;
    }
    let mut colons = 0;
    walk(text, |token| {
        colons += usize::from(matches!(token, Token::Byte(b':')));
        true
    });
    colons
}

/// The members of the objects in `value`.
fn members_parsed(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => {
            map.len() + map.values().map(members_parsed).sum::<usize>()
        }
        serde_json::Value::Array(items) => items.iter().map(members_parsed).sum(),
        _ => 0,
    }
}

/// The first key that an object of `text` (JSON) has twice, decoded.
fn repeated_key(text: &str) -> Option<String> {
    // One set of keys per open container (`None` for an array), and the last string read.
    let mut open: Vec<Option<HashSet<String>>> = Vec::new();
    let mut last_text = None;
    let mut repeated = None;
    walk(text, |token| {
        match token {
            Token::Byte(b'{') => open.push(Some(HashSet::new())),
            Token::Byte(b'[') => open.push(None),
            Token::Byte(b'}' | b']') => drop(open.pop()),
            Token::Byte(b':') => {
                let key = last_text.take().and_then(decoded).unwrap_or_default();
                if let Some(Some(keys)) = open.last_mut() {
                    if !keys.insert(key.clone()) {
                        repeated = Some(key);
                        return false;
                    }
                }
            }
            Token::Byte(_) => {}
            Token::Text { raw, .. } => last_text = Some(raw),
        }
        true
    });
    repeated
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn an_object_with_a_key_twice_is_refused_naming_it() {
        for (text, key) in [
            (r#"{"a":1,"a":2}"#, "'a'"),
            (r#"{ "x" : { "b" : 1 , "c" : 2 , "b" : 3 } }"#, "'b'"),
            (r#"[{"k":1},{"k":2,"\u006b":3}]"#, "'k'"),
            (r#"{"é":1,"\u00e9":2}"#, "'é'"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.contains(&format!("the key {key} more than once")),
                "{text}: {err}"
            );
        }
        // The same key in different objects, and keys in strings, are fine.
        for text in [
            r#"{"a":{"a":1},"b":[{"a":2},{"a":3}]}"#,
            r#"{"a":"b:c","d":"{\"a\":1,\"a\":2}"}"#,
            r#"["a:b",":"]"#,
        ] {
            parse(text).expect(text);
        }
    }
}
