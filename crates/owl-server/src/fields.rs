//! Reading request fields one by one, so that every bad value is a 400 naming its field
//! (`temperature: must be a number in [0, 2]`), not a generic parse error. Unknown fields
//! are ignored, as the hosted APIs' clients send fields that do not concern a local model.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// A JSON request body's top-level object.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a Value) -> Result<Self, ApiError> {
        body.as_object()
            .map(|map| Fields { map })
            .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))
    }

    /// The value of `name`, `null` counting as absent.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| ApiError::field(name, "must be true or false")),
        }
    }

    pub fn str(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| ApiError::field(name, "must be a string")),
        }
    }

    /// A number in `[lo, hi]`.
    pub fn number(&self, name: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
        number_in(name, self.get(name), lo, hi)
    }

    /// An integer in `[lo, hi]`.
    pub fn integer(&self, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
        integer_in(name, self.get(name), lo, hi)
    }

    /// A string or an array of at most `max` strings (OpenAI's `stop`).
    pub fn strings(&self, name: &str, max: usize) -> Result<Vec<String>, ApiError> {
        let out: Vec<String> = match self.get(name) {
            None => return Ok(Vec::new()),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ApiError::field(&format!("{name}[{i}]"), "must be a string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ApiError::field(name, "must be a string or an array of strings")),
        };
        if out.len() > max {
            return Err(ApiError::field(name, format!("at most {max} entries, got {}", out.len())));
        }
        if let Some(i) = out.iter().position(String::is_empty) {
            return Err(ApiError::field(&format!("{name}[{i}]"), "must not be empty"));
        }
        Ok(out)
    }

    pub fn object(&self, name: &str) -> Result<Option<Fields<'a>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Fields { map })),
            Some(_) => Err(ApiError::field(name, "must be an object")),
        }
    }

    /// The entries of an object field.
    pub fn entries(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.map.iter()
    }
}

pub fn number_in(name: &str, v: Option<&Value>, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match v {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::field(name, format!("must be a number in [{lo}, {hi}], got {v}"))),
        },
    }
}

pub fn integer_in(name: &str, v: Option<&Value>, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match v {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::field(name, format!("must be an integer in [{lo}, {hi}], got {v}"))),
        },
    }
}
