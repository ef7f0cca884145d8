//! Scalar helpers: YAML 1.2 core-schema number syntax, descriptions for messages, and the
//! mapping from offsets in an unescaped scalar value back to its source text.

use super::node::{Node, NodeKind};
use serde_saphyr::granit_parser::ScalarStyle;

/// "a string", "a list", ... for messages.
pub(super) fn describe(n: &Node) -> &'static str {
    match &n.kind {
        NodeKind::Map(_) => "a map",
        NodeKind::Seq(_) => "a list",
        NodeKind::Scalar(s) if s.style != ScalarStyle::Plain => "a string",
        NodeKind::Scalar(s) => match s.value.as_str() {
            "" | "~" | "null" | "Null" | "NULL" => "an empty value",
            "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => "a boolean",
            v if v
                .starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.')
                && (is_yaml_float(v) || is_digits(v.strip_prefix(['-', '+']).unwrap_or(v), 10)) =>
            {
                "a number"
            }
            _ => "a string",
        },
    }
}

/// Keywords of the `.net` language (not usable as names).
pub(super) const KEYWORDS: &[&str] = &[
    "import", "block", "model", "input", "output", "when", "else", "train", "shared", "frozen",
    "seq", "repeat", "residual", "shortcut", "with", "true", "false", "if", "then", "in",
];

pub(super) fn is_digits(s: &str, radix: u32) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_digit(radix))
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the YAML 1.2 core float.
pub(super) fn is_yaml_float(v: &str) -> bool {
    let v = v.strip_prefix(['-', '+']).unwrap_or(v);
    let (mantissa, exp) = match v.find(['e', 'E']) {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (a.is_empty() && is_digits(b, 10))
                || (is_digits(a, 10) && (b.is_empty() || is_digits(b, 10)))
        }
        None => is_digits(mantissa, 10),
    };
    let exp_ok = exp.is_none_or(|e| is_digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
    // A bare integer is not a float.
    mantissa_ok && exp_ok && (mantissa.contains('.') || exp.is_some())
}

/// Maps each byte offset of a scalar's `value` (and its end) to an offset in `raw`, the
/// source text from the scalar's first content character, by matching the value's characters
/// in order and skipping source characters that escapes, folding or indentation dropped.
pub(super) fn align(value: &str, raw: &str) -> Option<Vec<usize>> {
    let mut map = vec![0; value.len() + 1];
    let mut raw_chars = raw.char_indices();
    let mut last_end = 0;
    for (i, c) in value.char_indices() {
        let (j, _) = raw_chars
            .by_ref()
            .find(|&(_, r)| r == c || (c == ' ' && r == '\n'))?;
        // An escaped character starts at its backslash.
        let start = if j > last_end && raw[..j].ends_with('\\') {
            j - 1
        } else {
            j
        };
        map[i..i + c.len_utf8()].fill(start);
        last_end = j + raw[j..].chars().next().map_or(0, char::len_utf8);
    }
    map[value.len()] = last_end;
    Some(map)
}
