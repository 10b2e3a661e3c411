//! Checks that a text is canonical JSON without building its value: a received entry's
//! values are checked this way, in memory that does not grow with their number of elements
//! (a parsed `[0,0,...]` takes about 30 times its text).
//!
//! Canonical means what [`super::canonical`] gives back: serde_json's compact form of the
//! parsed value, with this crate's features (`arbitrary_precision`: numbers keep their
//! text). Which texts are canonical is part of what makes an entry valid, so this must
//! agree with [`super::canonical`] on every text: a test compares the two on generated
//! texts, and so does the `json_canonical` fuzz target.

/// Deepest nesting serde_json parses (its recursion limit of 128 counts the outermost
/// container): a deeper text is not JSON to [`super::canonical`].
const MAX_PARSE_DEPTH: usize = 127;

/// The nesting depth of `text` (0 for a scalar, one more than its deepest member for an
/// array or object) if `text` is canonical JSON (`canonical(text) == text`), else `None`.
/// Memory: the open containers and their last keys, at most the text's length.
pub fn canonical_depth(text: &str) -> Option<usize> {
    let mut reader = Canonical {
        text: text.as_bytes(),
        at: 0,
        open: Vec::new(),
        depth: 0,
    };
    reader.value()?;
    (reader.at == reader.text.len()).then_some(reader.depth)
}

/// An open array (`None`) or object (`Some(the last key read, decoded)`).
type Open = Option<Vec<u8>>;

struct Canonical<'a> {
    text: &'a [u8],
    at: usize,
    open: Vec<Open>,
    depth: usize,
}

impl Canonical<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// One whole value, containers included, iteratively (no recursion on nesting).
    fn value(&mut self) -> Option<()> {
        loop {
            // A value starts here.
            match self.peek()? {
                b'[' | b'{' => {
                    let object = self.next()? == b'{';
                    if self.open.len() == MAX_PARSE_DEPTH {
                        return None;
                    }
                    self.open.push(object.then(Vec::new));
                    self.depth = self.depth.max(self.open.len());
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                        self.open.pop();
                    } else {
                        if object {
                            self.member_key(true)?;
                        }
                        continue;
                    }
                }
                b'"' => self.string(None)?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => self.number()?,
            }
            // A value ended: close containers until one goes on, or the text's value ends.
            loop {
                let Some(open) = self.open.last() else {
                    return Some(());
                };
                let object = open.is_some();
                match self.next()? {
                    b',' => {
                        if object {
                            self.member_key(false)?;
                        }
                        break;
                    }
                    b'}' if object => {
                        self.open.pop();
                    }
                    b']' if !object => {
                        self.open.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// An object member's key and its colon: keys strictly ascending (bytewise, decoded).
    fn member_key(&mut self, first: bool) -> Option<()> {
        let mut key = Vec::new();
        self.string(Some(&mut key))?;
        if self.next()? != b':' {
            return None;
        }
        let last = self.open.last_mut()?.as_mut()?;
        if (first && key == super::NUMBER_MARKER.as_bytes()) || (!first && key <= *last) {
            return None;
        }
        *last = key;
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.text.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A number as JSON writes it. serde_json keeps a number's text as written, except an
    /// integer that fits 64 bits, which it writes back from its value: the same text,
    /// but for `-0`, which comes back as `0`.
    fn number(&mut self) -> Option<()> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let zero = match self.next()? {
            b'0' => true,
            b'1'..=b'9' => {
                self.digits();
                false
            }
            _ => return None,
        };
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
            integer = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.some_digits()?;
            integer = false;
        }
        (!(negative && zero && integer)).then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// A string as serde_json writes one: every character as itself, except `"` and `\`
    /// (escaped with a backslash) and control characters (`\b \t \n \f \r`, the others
    /// `\u00xx` in lower case). Decoded into `decoded` if given.
    fn string(&mut self, mut decoded: Option<&mut Vec<u8>>) -> Option<()> {
        if self.next()? != b'"' {
            return None;
        }
        loop {
            let byte = match self.next()? {
                b'"' => return Some(()),
                b'\\' => match self.next()? {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'u' => self.control_escape()?,
                    _ => return None,
                },
                byte if byte < 0x20 => return None,
                byte => byte,
            };
            if let Some(decoded) = decoded.as_deref_mut() {
                decoded.push(byte);
            }
        }
    }

    /// The four hex digits of a `\u` escape, which serde_json writes only for a control
    /// character that has no short escape, in lower case.
    fn control_escape(&mut self) -> Option<u8> {
        let hex = self.text.get(self.at..self.at + 4)?;
        self.at += 4;
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        if hex[..2] != *b"00" {
            return None;
        }
        let value = digit(hex[2])? * 16 + digit(hex[3])?;
        let short = matches!(value, 0x08 | b'\t' | b'\n' | 0x0c | b'\r');
        (value < 0x20 && !short).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_depth;
    use crate::json::{canonical, pointer};

    /// What `canonical_depth` must answer: `canonical`'s verdict, and the parsed depth.
    fn expected(text: &str) -> Option<usize> {
        let parsed: serde_json::Value = serde_json::from_str(text).ok()?;
        (canonical(text).ok()? == text).then(|| pointer::depth(&parsed))
    }

    fn agrees(text: &str) {
        assert_eq!(canonical_depth(text), expected(text), "{text:?}");
    }

    #[test]
    fn agrees_with_canonical_on_chosen_texts() {
        let texts = [
            "",
            " ",
            "0",
            "-0",
            "01",
            "-",
            "1.",
            "1.0",
            ".5",
            "1e5",
            "1E5",
            "1e+5",
            "1e-05",
            "[-0]",
            "-0.0",
            "-00",
            "-0e0",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "-123456789012345678901234567890",
            "1.5E+10",
            "-1.25e-3",
            "1e",
            "1e+",
            "00",
            "123456789012345678901234567890",
            "1e999999",
            "true",
            "false",
            "null",
            "nul",
            "truex",
            "tru",
            "\"\"",
            "\"a\"",
            "\"\\u0041\"",
            "\"\\u001f\"",
            "\"\\u001F\"",
            "\"\\u0008\"",
            "\"\\b\"",
            "\"\\/\"",
            "\"/\"",
            "\"\\u007f\"",
            "\"\u{7f}\"",
            "\"\\ud83d\\ude00\"",
            "\"\u{1F600}\"",
            "\"\\ud83d\"",
            "\"\t\"",
            "\"\\t\"",
            "\"\\\"\"",
            "\"\\\\\"",
            "\"\\x\"",
            "\"\\u00\"",
            "[]",
            "{}",
            "[ ]",
            "[1,2]",
            "[1, 2]",
            "[1,]",
            "[,1]",
            "[[]]",
            "{\"a\":1}",
            "{\"a\" :1}",
            "{\"b\":1,\"a\":2}",
            "{\"a\":1,\"a\":2}",
            "{\"a\":1,\"b\":[{}]}",
            "{\"\\\"\":1,\"#\":2}",
            "{\"#\":1,\"\\\"\":2}",
            "{\"\\n\":1,\"a\":2}",
            "{1:2}",
            "{\"a\"}",
            "{\"a\":}",
            "[1]]",
            "[1",
            "{\"a\":1",
            "1 ",
            " 1",
            "[1]x",
            "\"a\"\"b\"",
            "{\"$serde_json::private::Number\":\"1\"}",
            "{\"$serde_json::private::Number\":1}",
            "{\"!\":0,\"$serde_json::private::Number\":\"1\"}",
            "{\"$serde_json::private::Number\":\"1\",\"a\":2}",
            "{\"$serde_json::private::Numbe\":\"1\"}",
            "\"é\"",
            "{\"é\":1,\"z\":2}",
            "{\"z\":1,\"é\":2}",
        ];
        for text in texts {
            agrees(text);
        }
    }

    #[test]
    fn agrees_with_canonical_on_deep_nesting() {
        for depth in 120..135 {
            agrees(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
            let object = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            agrees(&object);
        }
    }

    /// Random texts from pieces JSON is made of, many of them canonical.
    #[test]
    fn agrees_with_canonical_on_generated_texts() {
        const PIECES: &[&str] = &[
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "\"a\"",
            "\"b\"",
            "\"\"",
            "\"\\n\"",
            "\"\\u0001\"",
            "\"\\u00e9\"",
            "\"é\"",
            "0",
            "-0",
            "-1",
            "1.5",
            "2e3",
            "1E-2",
            "true",
            "null",
            " ",
            "\"",
            "\\",
            "{\"a\":",
            "{\"b\":",
            ",\"b\":",
            ",\"a\":",
            ",\"c\":",
            "[0",
            "\"$serde_json",
            "{\"$serde_json::private::Number\":",
            "\"1\"",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut canonical_seen = 0;
        for _ in 0..200_000 {
            let len = (next() % 12) as usize;
            let text: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            agrees(&text);
            canonical_seen += usize::from(expected(&text).is_some());
        }
        assert!(canonical_seen > 1000, "{canonical_seen}");
    }
}
