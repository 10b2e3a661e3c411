//! The key range of a prefix scan, as bounds that a sorted key index can seek to.
//!
//! Keys sort bytewise (by their UTF-8 bytes, which is also code point order). The keys
//! starting with `prefix` are exactly those from `prefix` (inclusive) up to the prefix's
//! successor (exclusive): the prefix with its last character replaced by the next Unicode
//! scalar value, after dropping trailing U+10FFFF characters (which have no next one). A
//! prefix made only of U+10FFFF characters, and the empty prefix, have no upper bound.

/// How much of a range [`super::Backend::cells_range`] returns at most.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeLimit {
    /// At most this many cells (0: no limit).
    pub cells: usize,
    /// Stop before a cell once the cells before it hold at least this many bytes of keys and
    /// values together (0: no limit). The first cell in range is always returned, whatever
    /// its size, so the cells returned hold less than this plus one cell.
    pub bytes: usize,
}

impl RangeLimit {
    /// The whole range.
    pub const NONE: RangeLimit = RangeLimit { cells: 0, bytes: 0 };

    /// At most `cells` cells (0: no limit), whatever their size.
    pub fn cells(cells: usize) -> RangeLimit {
        RangeLimit { cells, bytes: 0 }
    }

    /// Whether cells holding `spent` bytes of keys and values leave room for another.
    pub fn has_room_after(&self, spent: usize) -> bool {
        self.bytes == 0 || spent < self.bytes
    }
}

/// The bytes a cell counts for in [`RangeLimit::bytes`]: its key's and its value's.
pub(crate) fn cell_bytes(key: &str, value: Option<&str>) -> usize {
    key.len() + value.map_or(0, str::len)
}

/// The keys `Backend::cells_range` asks for: after `lower` (or from it, when `inclusive`)
/// and before `upper` (when there is one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRange {
    /// The first key, or the key just before the first.
    pub lower: String,
    /// Whether `lower` itself belongs to the range.
    pub inclusive: bool,
    /// The first key beyond the range, if any key is.
    pub upper: Option<String>,
}

impl KeyRange {
    /// The keys starting with `prefix` that sort after `after` (`None`: from the first), or
    /// `None` when no key can be both.
    pub fn new(prefix: &str, after: Option<&str>) -> Option<KeyRange> {
        let upper = successor(prefix);
        let (lower, inclusive) = match after {
            Some(after) if after >= prefix => (after.to_string(), false),
            _ => (prefix.to_string(), true),
        };
        if upper
            .as_deref()
            .is_some_and(|upper| lower.as_str() >= upper)
        {
            return None;
        }
        Some(KeyRange {
            lower,
            inclusive,
            upper,
        })
    }

    /// Whether `key` lies in the range (for backends that filter rather than seek).
    #[cfg(test)]
    fn contains(&self, key: &str) -> bool {
        let above = if self.inclusive {
            key >= self.lower.as_str()
        } else {
            key > self.lower.as_str()
        };
        above && self.upper.as_deref().is_none_or(|upper| key < upper)
    }
}

/// The least string greater than every string starting with `prefix`, if there is one.
fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = next_char(last) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The next Unicode scalar value after `c` (surrogates are not scalar values).
fn next_char(c: char) -> Option<char> {
    match c {
        '\u{D7FF}' => Some('\u{E000}'),
        '\u{10FFFF}' => None,
        c => char::from_u32(u32::from(c) + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_successor_bounds_every_key_with_the_prefix() {
        assert_eq!(successor("user/").as_deref(), Some("user0"));
        assert_eq!(successor("a\u{7f}").as_deref(), Some("a\u{80}"));
        assert_eq!(successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(successor(""), None);
    }

    #[test]
    fn ranges_hold_exactly_the_prefixed_keys_after_after() {
        let keys = [
            "",
            "a",
            "a\u{7f}",
            "a\u{80}",
            "aé",
            "a\u{10FFFF}",
            "a\u{10FFFF}x",
            "b",
            "user",
            "user/",
            "user/1",
            "user/\u{10FFFF}",
            "user0",
            "users",
            "\u{10FFFF}",
            "\u{10FFFF}z",
        ];
        let cases: [(&str, Option<&str>); 9] = [
            ("", None),
            ("a", None),
            ("a", Some("a\u{7f}")),
            ("a", Some("")),
            ("a", Some("zz")),
            ("user/", None),
            ("user/", Some("user/1")),
            ("\u{10FFFF}", None),
            ("\u{10FFFF}", Some("\u{10FFFF}")),
        ];
        for (prefix, after) in cases {
            let expected: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| *k > a))
                .collect();
            let found: Vec<&str> = match KeyRange::new(prefix, after) {
                Some(range) => keys.iter().copied().filter(|k| range.contains(k)).collect(),
                None => Vec::new(),
            };
            assert_eq!(found, expected, "prefix {prefix:?} after {after:?}");
        }
        assert_eq!(KeyRange::new("a", Some("b")), None);
        assert_eq!(
            KeyRange::new("a", Some("a\u{10FFFF}\u{10FFFF}")).map(|r| r.inclusive),
            Some(false)
        );
    }
}
