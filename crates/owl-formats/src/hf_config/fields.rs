//! Typed access to the fields of a JSON object, with errors that name the field.
//!
//! `config.json` files are read as a `serde_json::Value` first and then picked apart field
//! by field: serde's derive would report "invalid type: string, expected u64 at line 9"
//! where we want "field `rope_parameters.factor`: expected a number, found string".

use serde_json::{Map, Value};

use super::HfConfigError;

/// What a key holds: nothing at all, an explicit `null`, or a value. transformers treats
/// "absent" (use the class default) and `null` (feature off) differently for some fields,
/// e.g. Gemma 2's `attn_logit_softcapping`.
pub(crate) enum Slot<'a> {
    Absent,
    Null,
    Present(&'a Value),
}

/// A JSON object plus the dotted path it sits at (`""` for the top level), so that errors
/// can name `text_config.hidden_size` or `rope_parameters.full_attention.factor`.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

/// A short description of a JSON value's kind, for error messages.
pub(crate) fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() <= 40 => format!("string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

impl<'a> Fields<'a> {
    pub(crate) fn new(obj: &'a Map<String, Value>, prefix: &'a str) -> Self {
        Fields { obj, prefix }
    }

    /// The full dotted name of `key` (for errors).
    pub(crate) fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    pub(crate) fn slot(&self, key: &str) -> Slot<'a> {
        match self.obj.get(key) {
            None => Slot::Absent,
            Some(Value::Null) => Slot::Null,
            Some(v) => Slot::Present(v),
        }
    }

    /// The value of `key`, treating `null` like an absent key.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        match self.slot(key) {
            Slot::Present(v) => Some(v),
            Slot::Absent | Slot::Null => None,
        }
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn wrong(&self, key: &str, expected: &'static str, found: &Value) -> HfConfigError {
        HfConfigError::WrongType { field: self.name(key), expected, found: kind_of(found) }
    }

    pub(crate) fn invalid(&self, key: &str, reason: impl Into<String>) -> HfConfigError {
        HfConfigError::Invalid { field: self.name(key), reason: reason.into() }
    }

    pub(crate) fn missing(&self, key: &str) -> HfConfigError {
        HfConfigError::MissingField { field: self.name(key) }
    }

    /// Converts a JSON number to a non-negative integer; integral floats (`4096.0`) pass.
    fn as_usize(&self, key: &str, v: &Value) -> Result<usize, HfConfigError> {
        if let Some(u) = v.as_u64() {
            return usize::try_from(u).map_err(|_| self.invalid(key, format!("{u} does not fit in usize")));
        }
        if let Some(f) = v.as_f64() {
            if f >= 0.0 && f.fract() == 0.0 && f < 9.007_199_254_740_992e15 {
                return Ok(f as usize);
            }
            return Err(self.wrong(key, "a non-negative integer", v));
        }
        Err(self.wrong(key, "a non-negative integer", v))
    }

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>, HfConfigError> {
        self.get(key).map(|v| self.as_usize(key, v)).transpose()
    }

    pub(crate) fn req_usize(&self, key: &str) -> Result<usize, HfConfigError> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    /// A required integer that must be at least 1 (a size or a count we divide by).
    pub(crate) fn req_positive(&self, key: &str) -> Result<usize, HfConfigError> {
        let v = self.req_usize(key)?;
        if v == 0 {
            return Err(self.invalid(key, "must be at least 1"));
        }
        Ok(v)
    }

    pub(crate) fn opt_u32(&self, key: &str) -> Result<Option<u32>, HfConfigError> {
        match self.opt_usize(key)? {
            None => Ok(None),
            Some(u) => u32::try_from(u).map(Some).map_err(|_| self.invalid(key, format!("{u} does not fit in u32"))),
        }
    }

    fn as_f64(&self, key: &str, v: &Value) -> Result<f64, HfConfigError> {
        let f = v.as_f64().ok_or_else(|| self.wrong(key, "a number", v))?;
        if !f.is_finite() {
            return Err(self.invalid(key, "must be finite"));
        }
        Ok(f)
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>, HfConfigError> {
        self.get(key).map(|v| self.as_f64(key, v)).transpose()
    }

    pub(crate) fn req_f64(&self, key: &str) -> Result<f64, HfConfigError> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    /// A number where absent means `default` but an explicit `null` means "off" (`None`).
    pub(crate) fn f64_or_default_unless_null(
        &self,
        key: &str,
        default: Option<f64>,
    ) -> Result<Option<f64>, HfConfigError> {
        match self.slot(key) {
            Slot::Absent => Ok(default),
            Slot::Null => Ok(None),
            Slot::Present(v) => self.as_f64(key, v).map(Some),
        }
    }

    /// Like [`Self::f64_or_default_unless_null`] for integers.
    pub(crate) fn usize_or_default_unless_null(
        &self,
        key: &str,
        default: Option<usize>,
    ) -> Result<Option<usize>, HfConfigError> {
        match self.slot(key) {
            Slot::Absent => Ok(default),
            Slot::Null => Ok(None),
            Slot::Present(v) => self.as_usize(key, v).map(Some),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, HfConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "a boolean", v)),
        }
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, HfConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub(crate) fn req_str(&self, key: &str) -> Result<&'a str, HfConfigError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn opt_object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, HfConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(self.wrong(key, "an object", v)),
        }
    }

    fn opt_array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, HfConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong(key, "an array", v)),
        }
    }

    pub(crate) fn opt_f64_vec(&self, key: &str) -> Result<Option<Vec<f64>>, HfConfigError> {
        let Some(items) = self.opt_array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| self.as_f64(&format!("{key}[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub(crate) fn opt_usize_vec(&self, key: &str) -> Result<Option<Vec<usize>>, HfConfigError> {
        let Some(items) = self.opt_array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| self.as_usize(&format!("{key}[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub(crate) fn opt_str_vec(&self, key: &str) -> Result<Option<Vec<String>>, HfConfigError> {
        let Some(items) = self.opt_array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(self.wrong(&format!("{key}[{i}]"), "a string", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A token id field that may be one integer or a list of them (`eos_token_id`).
    pub(crate) fn opt_u32_or_list(&self, key: &str) -> Result<Vec<u32>, HfConfigError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let name = format!("{key}[{i}]");
                    let u = self.as_usize(&name, v)?;
                    u32::try_from(u).map_err(|_| self.invalid(&name, format!("{u} does not fit in u32")))
                })
                .collect(),
            Some(_) => Ok(self.opt_u32(key)?.into_iter().collect()),
        }
    }
}
