//! A `tojson` filter that writes what Python's `json.dumps` writes.
//!
//! transformers replaces Jinja's own `tojson` (which HTML-escapes `<`, `>`, `&`, `'`) with
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`
//! (transformers/utils/chat_template_utils.py). Tool schemas rendered into prompts go
//! through it, so every byte matters: separators `", "`/`": "` (`","` with an indent),
//! no HTML escaping, non-ASCII kept, floats spelled like Python's `repr`.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// How `json.dumps` was asked to write.
struct Style {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
    /// The most bytes one call may write: a value built to be exponentially large when
    /// written (a dict holding itself twice, a lazily doubled list) stops here, not at the
    /// end of the machine's memory.
    max_bytes: usize,
}

/// The filter: `value | tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False)`;
/// the first two may be given positionally, in transformers' order. Writes at most
/// `max_bytes` (the template's output limit).
pub(crate) fn tojson_filter(
    value: Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
    max_bytes: usize,
) -> Result<Value, Error> {
    let pick = |positional: Option<Value>, name: &str| -> Result<Option<Value>, Error> {
        match positional {
            Some(v) => Ok(Some(v)),
            None => kwargs.get::<Option<Value>>(name),
        }
    };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match pick(indent, "indent")? {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(indent_string(&v)?),
    };
    let (item_sep, key_sep) = match pick(None, "separators")? {
        Some(v) if !(v.is_none() || v.is_undefined()) => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] => (
                    a.as_str().ok_or_else(|| bad("separators must be two strings"))?.to_string(),
                    b.as_str().ok_or_else(|| bad("separators must be two strings"))?.to_string(),
                ),
                _ => return Err(bad("separators must be a pair (item_separator, key_separator)")),
            }
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let sort_keys = pick(None, "sort_keys")?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let style = Style { indent, item_sep, key_sep, sort_keys, ensure_ascii, max_bytes };
    let mut out = String::new();
    write_value(&mut out, &value, &style, 0)?;
    Ok(Value::from(out))
}

fn check_size(out: &str, style: &Style) -> Result<(), Error> {
    if out.len() > style.max_bytes {
        return Err(too_large(style));
    }
    Ok(())
}

fn too_large(style: &Style) -> Error {
    bad(&format!("the JSON text would exceed the template output limit of {} bytes", style.max_bytes))
}

fn bad(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("tojson: {msg}"))
}

/// Python: an int indent is that many spaces (negative: none), a string is used as is.
fn indent_string(v: &Value) -> Result<String, Error> {
    if let Some(s) = v.as_str() {
        return Ok(s.to_string());
    }
    match i64::try_from(v.clone()) {
        Ok(n) => Ok(" ".repeat(n.clamp(0, 64) as usize)),
        Err(_) => Err(bad("indent must be an integer or a string")),
    }
}

fn newline_indent(out: &mut String, style: &Style, depth: usize) {
    if let Some(ind) = &style.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(ind);
        }
    }
}

fn write_value(out: &mut String, value: &Value, style: &Style, depth: usize) -> Result<(), Error> {
    if depth > 256 {
        return Err(bad("value nested too deeply"));
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Undefined => {
            // json.dumps(Undefined) raises in Python; do the same rather than invent `null`.
            return Err(bad("Object of type Undefined is not JSON serializable"));
        }
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, value),
        ValueKind::String => write_str(out, value.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::Bytes => {
            let text = String::from_utf8_lossy(value.as_bytes().unwrap_or_default()).into_owned();
            write_str(out, &text, style.ensure_ascii)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            // Item by item, never collected: a lazy sequence may be far longer than memory.
            out.push('[');
            let mut empty = true;
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                empty = false;
                newline_indent(out, style, depth + 1);
                write_value(out, &item, style, depth + 1)?;
                check_size(out, style)?;
            }
            if !empty {
                newline_indent(out, style, depth);
            }
            out.push(']');
        }
        ValueKind::Map => {
            let mut pairs: Vec<(String, Value)> = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                pairs.push((key_string(&key)?, item));
                if pairs.len() > style.max_bytes / 4 {
                    return Err(too_large(style));
                }
            }
            if style.sort_keys {
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if pairs.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline_indent(out, style, depth + 1);
                write_str(out, k, style.ensure_ascii);
                out.push_str(&style.key_sep);
                write_value(out, v, style, depth + 1)?;
                check_size(out, style)?;
            }
            newline_indent(out, style, depth);
            out.push('}');
        }
        ValueKind::Plain => write_str(out, &value.to_string(), style.ensure_ascii),
        ValueKind::Invalid => return Err(bad("cannot serialize an invalid value")),
        _ => write_str(out, &value.to_string(), style.ensure_ascii),
    }
    Ok(())
}

/// Python converts int/float/bool/None keys to strings; anything else is a TypeError.
fn key_string(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_string()),
        ValueKind::None => Ok("null".to_string()),
        ValueKind::Number => {
            let mut s = String::new();
            write_number(&mut s, key);
            Ok(s)
        }
        other => Err(bad(&format!("keys must be str, int, float, bool or None, not {other}"))),
    }
}

fn write_number(out: &mut String, value: &Value) {
    if value.is_integer() {
        // i64/u64/i128/u128 all print their exact decimal digits.
        out.push_str(&value.to_string());
    } else {
        match f64::try_from(value.clone()) {
            Ok(f) => out.push_str(&python_float_repr(f)),
            Err(_) => out.push_str(&value.to_string()),
        }
    }
}

/// `repr(float)` in Python: the shortest digits that read back, positional for
/// 1e-4 <= |x| < 1e16, otherwise `d.ddde+XX` with at least two exponent digits.
pub(crate) fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let mut out = String::new();
    if f.is_sign_negative() {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp + 1;
            if n <= int_len {
                out.push_str(&digits);
                for _ in 0..(int_len - n) {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len as usize]);
                out.push('.');
                out.push_str(&digits[int_len as usize..]);
            }
        } else {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
    out
}

/// A JSON string as Python writes it (`ensure_ascii` also escapes everything past `~`).
fn write_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::python_float_repr;

    #[test]
    fn floats_like_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.1, "0.1"),
            (1e100, "1e+100"),
            (123.456, "123.456"),
            (0.0, "0.0"),
        ];
        for (f, want) in cases {
            assert_eq!(python_float_repr(f), want, "{f}");
        }
    }
}
