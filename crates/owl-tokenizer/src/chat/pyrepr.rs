//! How Jinja2 prints a value: Python's `str()`.
//!
//! minijinja prints `none`, `true`, `["a"]`; Jinja2 (what HF templates were written for)
//! prints `None`, `True`, `['a']`. A template that writes `{{ message.content }}` for a
//! tool-call turn whose content is null puts "None" in the prompt under transformers, so
//! owl installs this as the environment's formatter to print the same bytes.

use minijinja::value::ValueKind;
use minijinja::Value;

use super::pyjson::python_float_repr;

/// `str(value)` as Python would write it.
pub(crate) fn python_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        _ => {
            let mut out = String::new();
            python_repr(&mut out, value, 0);
            out
        }
    }
}

/// `repr(value)`: strings quoted, containers recursive.
fn python_repr(out: &mut String, value: &Value, depth: usize) {
    if depth > 64 {
        out.push_str("...");
        return;
    }
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else if let Ok(f) = f64::try_from(value.clone()) {
                out.push_str(&python_float_repr_for_str(f));
            } else {
                out.push_str(&value.to_string());
            }
        }
        ValueKind::String => python_str_repr(out, value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(iter) = value.try_iter() {
                for (i, item) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    python_repr(out, &item, depth + 1);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(iter) = value.try_iter() {
                for (i, key) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    python_repr(out, &key, depth + 1);
                    out.push_str(": ");
                    if let Ok(v) = value.get_item(&key) {
                        python_repr(out, &v, depth + 1);
                    }
                }
            }
            out.push('}');
        }
        _ => out.push_str(&value.to_string()),
    }
}

/// `repr(float)` differs from JSON only for the non-finite values.
fn python_float_repr_for_str(f: f64) -> String {
    if f.is_nan() {
        "nan".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        python_float_repr(f)
    }
}

/// `repr(str)`: single quotes unless the text has a `'` and no `"`; escapes for
/// backslash, the quote, `\n \r \t`, and characters Python does not print.
pub(crate) fn python_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_python_printable(c) => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// `str.isprintable()` for the characters that occur in practice: controls (Cc), the
/// format characters (Cf) and separators other than the ASCII space (Zs/Zl/Zp) that
/// show up in chat text. Unassigned code points are treated as printable.
fn is_python_printable(c: char) -> bool {
    let n = c as u32;
    !matches!(n,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad
        | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e
        | 0x1680 | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000 | 0xfeff | 0xfff9..=0xfffb
        | 0xe000..=0xf8ff | 0xf0000..=0x10ffff
        | 0x110bd | 0x110cd | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_like_python() {
        assert_eq!(python_str(&Value::from(())), "None");
        assert_eq!(python_str(&Value::from(true)), "True");
        assert_eq!(python_str(&Value::from(1.5)), "1.5");
        assert_eq!(python_str(&Value::from(2)), "2");
        assert_eq!(python_str(&Value::from("it's")), "it's");
        let v = Value::from(minijinja::value::Serde(serde_json::json!({"a": [1, "x", null, false], "b": "it's"})));
        assert_eq!(python_str(&v), r#"{'a': [1, 'x', None, False], 'b': "it's"}"#);
        let mut s = String::new();
        python_str_repr(&mut s, "a\u{200d}b\n\u{7}");
        assert_eq!(s, r"'a\u200db\n\x07'");
    }
}
