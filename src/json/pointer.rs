//! JSON Pointers (RFC 6901) and the path writes nested documents are merged from.
//!
//! A pointer is `""` (the whole value) or a sequence of `/`-prefixed tokens in which `~1`
//! stands for `/` and `~0` for `~`. Reading follows RFC 6901. Writing ([`place`]) makes the
//! containers a path needs: a member of an object is created when absent, an array element
//! is addressed by an index below the array's length (the length or `-` appends), and
//! any other value on the way (a scalar, or an array the token does not index) is replaced
//! by an object. So every write succeeds in a merge, and the same writes in the same order
//! give the same document on every machine. A caller's write that would replace an array
//! this way is refused when it is made ([`check_array_tokens`]): another copy's write may
//! still do it in a merge, where the array arrived after the write was made.

use serde_json::{Map, Value};

use crate::error::{quoted, Error, Result};

/// Most tokens a pointer may have.
pub const MAX_TOKENS: usize = 32;
/// Longest pointer, in bytes.
pub const MAX_POINTER: usize = 4096;
/// Deepest nesting a path write may produce: its tokens plus the depth of the value written.
/// Values parse back within serde_json's limit of 128 levels.
pub const MAX_WRITE_DEPTH: usize = 100;

/// The unescaped tokens of `pointer`; [`Error::InvalidArgument`] unless it is a valid JSON
/// Pointer within [`MAX_POINTER`] bytes and [`MAX_TOKENS`] tokens.
pub fn parse(pointer: &str) -> Result<Vec<String>> {
    if pointer.len() > MAX_POINTER {
        return Err(Error::invalid(format!(
            "a JSON Pointer is at most {MAX_POINTER} bytes"
        )));
    }
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(Error::invalid(format!(
            "a JSON Pointer is empty or starts with '/' (got {})",
            quoted(pointer)
        )));
    };
    let tokens = rest
        .split('/')
        .map(unescape)
        .collect::<Result<Vec<String>>>()?;
    if tokens.len() > MAX_TOKENS {
        return Err(Error::invalid(format!(
            "a JSON Pointer has at most {MAX_TOKENS} tokens"
        )));
    }
    Ok(tokens)
}

fn unescape(token: &str) -> Result<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => {
                return Err(Error::invalid(
                    "in a JSON Pointer '~' is followed by '0' or '1'",
                ))
            }
        }
    }
    Ok(out)
}

/// The array index a token names, as RFC 6901 spells them (no sign, no leading zero).
pub(super) fn index_of(token: &str) -> Option<usize> {
    let digits = token.bytes().all(|b| b.is_ascii_digit());
    if token.is_empty() || !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// The part of `value` that `tokens` point at, if there is one.
pub fn get<'a>(value: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(value, |node, token| match node {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(index_of(token)?),
        _ => None,
    })
}

/// How many of `tokens` lead, through objects, to an array that the next token goes into
/// (so `tokens[..n]` points at it), or `None` when a write at `tokens` in `value` meets no
/// array on the way (an array at `tokens` itself is replaced whole). Where a write goes into
/// an array depends on what came before (an index, or `-`, appends), unlike an object member.
pub fn array_on_the_way(value: &Value, tokens: &[String]) -> Option<usize> {
    let mut node = value;
    for (n, token) in tokens.iter().enumerate() {
        match node {
            Value::Array(_) => return Some(n),
            Value::Object(map) => node = map.get(token)?,
            _ => return None,
        }
    }
    None
}

/// Fails with [`Error::InvalidArgument`] when a write at `tokens` in `value` would go into
/// an array with a token that does not index it (an index below its length, or its length
/// or `-` to append): [`place`] would replace that array with an object, dropping its
/// elements. A merge must take such a write as it comes; a caller making one is refused.
pub fn check_array_tokens(value: &Value, tokens: &[String]) -> Result<()> {
    let mut node = value;
    for (n, token) in tokens.iter().enumerate() {
        match node {
            Value::Object(map) => match map.get(token) {
                Some(member) => node = member,
                None => return Ok(()),
            },
            Value::Array(items) => {
                if token == "-" || index_of(token) == Some(items.len()) {
                    return Ok(());
                }
                let Some(item) = index_of(token).and_then(|i| items.get(i)) else {
                    return Err(Error::invalid(format!(
                        "{} is an array of {len} elements: a path into it takes an index \
                         from 0 to {len} ({len} or '-' appends), not {}",
                        describe(&tokens[..n]),
                        quoted(token),
                        len = items.len(),
                    )));
                };
                node = item;
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// How an error names the part of a value at `tokens`.
fn describe(tokens: &[String]) -> String {
    if tokens.is_empty() {
        "the value".to_string()
    } else {
        format!("the value at {}", quoted(&pointer_of(tokens)))
    }
}

/// The pointer of `tokens` (escaping `~` as `~0` and `/` as `~1`).
pub fn pointer_of(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// Whether the pointer `pointer` is `above` or a path under it, both written by
/// [`pointer_of`] (a token's `/` is escaped, so a path under `above` goes on with `/`).
pub fn is_at_or_under(pointer: &str, above: &str) -> bool {
    pointer
        .strip_prefix(above)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Nesting depth of a value: 0 for a scalar, one more than its deepest member otherwise.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Fails with [`Error::InvalidArgument`] unless a write at `tokens` of a value
/// `value_depth` deep ([`depth`]) stays within [`MAX_WRITE_DEPTH`].
pub fn check_write_depth(tokens: &[String], value_depth: usize) -> Result<()> {
    if tokens.len() + value_depth > MAX_WRITE_DEPTH {
        return Err(Error::invalid(format!(
            "a path write nests at most {MAX_WRITE_DEPTH} levels (its tokens plus its value's depth)"
        )));
    }
    Ok(())
}

/// Writes `value` at `tokens` in `node`, making the containers the path needs (see the
/// module documentation).
pub fn place(node: &mut Value, tokens: &[String], value: Value) {
    let Some((token, rest)) = tokens.split_first() else {
        *node = value;
        return;
    };
    if let Value::Array(items) = node {
        if token == "-" || index_of(token) == Some(items.len()) {
            items.push(Value::Null);
            let last = items.last_mut().expect("pushed");
            return place(last, rest, value);
        }
        if let Some(item) = index_of(token).and_then(|i| items.get_mut(i)) {
            return place(item, rest, value);
        }
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    let Value::Object(map) = node else {
        unreachable!("made an object above")
    };
    place(map.entry(token.clone()).or_insert(Value::Null), rest, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tokens(p: &str) -> Vec<String> {
        parse(p).unwrap()
    }

    #[test]
    fn parses_rfc_6901_examples() {
        let doc = json!({"foo": ["bar", "baz"], "": 0, "a/b": 1, "m~n": 8, " ": 7});
        assert_eq!(get(&doc, &tokens("")), Some(&doc));
        assert_eq!(get(&doc, &tokens("/foo/0")), Some(&json!("bar")));
        assert_eq!(get(&doc, &tokens("/")), Some(&json!(0)));
        assert_eq!(get(&doc, &tokens("/a~1b")), Some(&json!(1)));
        assert_eq!(get(&doc, &tokens("/m~0n")), Some(&json!(8)));
        assert_eq!(get(&doc, &tokens("/ ")), Some(&json!(7)));
        assert_eq!(get(&doc, &tokens("/foo/01")), None);
        assert_eq!(get(&doc, &tokens("/foo/2")), None);
        assert_eq!(get(&doc, &tokens("/nope/x")), None);
    }

    #[test]
    fn finds_the_first_array_a_write_goes_into() {
        let doc = json!({"a": {"l": [{"m": [1]}]}, "s": 5, "top": [1]});
        assert_eq!(array_on_the_way(&doc, &tokens("/a/l/0/m/-")), Some(2));
        assert_eq!(array_on_the_way(&doc, &tokens("/a/l/-")), Some(2));
        assert_eq!(array_on_the_way(&doc, &tokens("/a/l")), None);
        assert_eq!(array_on_the_way(&doc, &tokens("/a/x/y")), None);
        assert_eq!(array_on_the_way(&doc, &tokens("/s/x")), None);
        assert_eq!(array_on_the_way(&json!([1]), &tokens("/0")), Some(0));
        for p in ["/a~1b/~0c", "/", "//x", "/a/-"] {
            assert_eq!(pointer_of(&tokens(p)), p);
        }
    }

    #[test]
    fn refuses_bad_pointers() {
        for bad in ["a", "/~", "/~2", "/a~"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&"/a".repeat(MAX_TOKENS + 1)).is_err());
        assert!(parse(&"/a".repeat(MAX_TOKENS)).is_ok());
        assert!(parse(&format!("/{}", "x".repeat(MAX_POINTER))).is_err());
    }

    #[test]
    fn place_makes_the_containers_a_path_needs() {
        let mut doc = Value::Null;
        place(&mut doc, &tokens("/address/city"), json!("Oslo"));
        assert_eq!(doc, json!({"address": {"city": "Oslo"}}));
        place(&mut doc, &tokens("/address/city/x"), json!(1));
        assert_eq!(doc, json!({"address": {"city": {"x": 1}}}));
        place(&mut doc, &tokens("/tags"), json!(["a"]));
        place(&mut doc, &tokens("/tags/0"), json!("b"));
        place(&mut doc, &tokens("/tags/-"), json!("c"));
        place(&mut doc, &tokens("/tags/2"), json!("d"));
        assert_eq!(doc["tags"], json!(["b", "c", "d"]));
        place(&mut doc, &tokens("/tags/9"), json!("e"));
        assert_eq!(doc["tags"], json!({"9": "e"}));
        place(&mut doc, &tokens(""), json!(3));
        assert_eq!(doc, json!(3));
    }

    #[test]
    fn a_token_that_would_replace_an_array_is_refused() {
        let doc = json!({"l": [1, {"m": [2]}], "s": "x"});
        for fine in [
            "/l/0",
            "/l/2",
            "/l/-",
            "/l/1/m/1/x",
            "/l/1/n",
            "/s/x",
            "/new/9",
            "/l",
        ] {
            assert!(
                check_array_tokens(&doc, &tokens(fine)).is_ok(),
                "{fine} refused"
            );
        }
        for (bad, said) in [
            ("/l/3", "'/l'"),
            ("/l/x", "'/l'"),
            ("/l/01", "'/l'"),
            ("/l/1/m/5", "'/l/1/m'"),
        ] {
            let message = check_array_tokens(&doc, &tokens(bad))
                .unwrap_err()
                .to_string();
            assert!(message.contains(said), "{bad}: {message}");
        }
        assert!(check_array_tokens(&json!([]), &tokens("/1")).is_err());
    }

    #[test]
    fn write_depth_is_bounded() {
        let deep = (0..MAX_WRITE_DEPTH).fold(json!(1), |v, _| json!([v]));
        assert!(check_write_depth(&[], depth(&deep)).is_ok());
        assert!(check_write_depth(&tokens("/a"), depth(&deep)).is_err());
    }
}
