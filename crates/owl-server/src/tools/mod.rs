//! Tool calling: the tools a request offers, how the model is asked to call them, and the
//! calls read back out of what it wrote.
//!
//! - this file: the request side, [`Tool`] and [`ToolChoice`] in OpenAI's, Ollama's and
//!   Anthropic's shapes, and the [`ToolCall`]s every dialect answers with;
//! - [`format`]: each model family's way of writing a call ([`ToolFormat`]), read from its
//!   chat template; the grammar that forces a call when `tool_choice` asks for one; the
//!   system prompt that teaches the format to a model whose template knows no tools;
//! - [`reply`]: the streaming split of the sampled text into reasoning (`<think>`),
//!   content and calls. It reads the generated text only, never the prompt.

pub mod format;
pub mod reply;

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::fields::Fields;

pub use format::ToolFormat;
pub use reply::{ReplyParser, ReplyPiece};

/// Most tools one request may offer.
pub const MAX_TOOLS: usize = 128;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// A JSON Schema for the arguments object.
    pub parameters: Value,
}

impl Tool {
    /// OpenAI's shape, which chat templates expect in `tools`.
    pub fn openai(&self) -> Value {
        json!({"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters,
        }})
    }
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (the default when tools are offered).
    Auto,
    /// No call: the tools are not shown to the model.
    None,
    /// At least one call, of any tool (Anthropic's `any`).
    Required,
    /// A call of this tool.
    Function(String),
}

/// What a request asks about tools.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// Several calls in one reply (OpenAI's `parallel_tool_calls`, default true).
    pub parallel: bool,
}

impl ToolRequest {
    /// No tools (a dialect or request without them).
    pub fn none() -> ToolRequest {
        ToolRequest { tools: Vec::new(), choice: ToolChoice::Auto, parallel: true }
    }

    /// Whether the model is shown the tools and its reply read for calls.
    pub fn active(&self) -> bool {
        !self.tools.is_empty() && self.choice != ToolChoice::None
    }

    /// The tools the model may call under the choice.
    pub fn callable(&self) -> Vec<&Tool> {
        match &self.choice {
            ToolChoice::Function(name) => self.tools.iter().filter(|t| &t.name == name).collect(),
            ToolChoice::None => Vec::new(),
            _ => self.tools.iter().collect(),
        }
    }

    /// The `tools` array a chat template is given.
    pub fn template_tools(&self) -> Value {
        Value::Array(self.tools.iter().map(Tool::openai).collect())
    }
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// `call_…`, unique within the process.
    pub id: String,
    pub name: String,
    /// The arguments object.
    pub arguments: Value,
}

impl ToolCall {
    pub fn new(name: String, arguments: Value) -> ToolCall {
        ToolCall { id: call_id(), name, arguments }
    }

    /// OpenAI's `tool_calls` entry: the arguments as a JSON string.
    pub fn openai(&self) -> Value {
        json!({"id": self.id, "type": "function", "function": {
            "name": self.name, "arguments": self.arguments.to_string(),
        }})
    }
}

/// A fresh call id (`call_` and 24 hex digits, as OpenAI's are about as long).
fn call_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("call_{:016x}{:08x}", t.rotate_left(17) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15), n as u32)
}

/// A function name as OpenAI accepts it: letters, digits, `_`, `-` and `.`, at most 64.
fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(field, format!("'{name}' is not a function name (letters, digits, _ - ., at most 64)")))
    }
}

/// A parameters schema: an object schema (absent: no parameters).
fn parameters(field: &str, schema: Option<&Value>) -> Result<Value, ApiError> {
    match schema {
        None | Some(Value::Null) => Ok(json!({"type": "object", "properties": {}})),
        Some(s @ Value::Object(_)) => Ok(s.clone()),
        Some(_) => Err(ApiError::field(field, "must be a JSON schema object")),
    }
}

fn tool_list<'a>(f: &Fields<'a>, name: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
    match f.get(name) {
        None => Ok(None),
        Some(Value::Array(list)) if list.len() > MAX_TOOLS => {
            Err(ApiError::field(name, format!("at most {MAX_TOOLS} tools, got {}", list.len())))
        }
        Some(Value::Array(list)) => Ok(Some(list)),
        Some(_) => Err(ApiError::field(name, "must be an array of tools")),
    }
}

fn no_duplicates(tools: &[Tool]) -> Result<(), ApiError> {
    for (i, t) in tools.iter().enumerate() {
        if tools[..i].iter().any(|u| u.name == t.name) {
            return Err(ApiError::field(&format!("tools[{i}]"), format!("a second tool named '{}'", t.name)));
        }
    }
    Ok(())
}

/// OpenAI's `tools` (`[{"type": "function", "function": {name, description, parameters}}]`,
/// also Ollama's), `tool_choice` and `parallel_tool_calls`.
pub fn openai_tools(f: &Fields<'_>) -> Result<ToolRequest, ApiError> {
    let mut tools = Vec::new();
    for (i, t) in tool_list(f, "tools")?.into_iter().flatten().enumerate() {
        let at = format!("tools[{i}]");
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
        if kind != "function" {
            return Err(ApiError::field(&format!("{at}.type"), format!("'{kind}' is not function")));
        }
        let Some(function) = t.get("function").and_then(Value::as_object) else {
            return Err(ApiError::field(&format!("{at}.function"), "is required (an object)"));
        };
        let Some(name) = function.get("name").and_then(Value::as_str) else {
            return Err(ApiError::field(&format!("{at}.function.name"), "is required (a string)"));
        };
        check_name(&format!("{at}.function.name"), name)?;
        tools.push(Tool {
            name: name.to_string(),
            description: function.get("description").and_then(Value::as_str).unwrap_or_default().to_string(),
            parameters: parameters(&format!("{at}.function.parameters"), function.get("parameters"))?,
        });
    }
    no_duplicates(&tools)?;
    let choice = match f.get("tool_choice") {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::field(
                    "tool_choice",
                    format!("'{other}' is not auto, none, required or a function"),
                ))
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::field("tool_choice.function.name", "is required"))?;
            ToolChoice::Function(name.to_string())
        }
        Some(_) => return Err(ApiError::field("tool_choice", "must be a string or {\"type\": \"function\", ...}")),
    };
    let parallel = f.bool("parallel_tool_calls")?.unwrap_or(true);
    check_choice(&tools, &choice, "tool_choice")?;
    Ok(ToolRequest { tools, choice, parallel })
}

/// Anthropic's `tools` (`[{name, description, input_schema}]`) and `tool_choice`
/// (`{"type": "auto" | "any" | "tool" | "none", "name", "disable_parallel_tool_use"}`).
pub fn anthropic_tools(f: &Fields<'_>) -> Result<ToolRequest, ApiError> {
    let mut tools = Vec::new();
    for (i, t) in tool_list(f, "tools")?.into_iter().flatten().enumerate() {
        let at = format!("tools[{i}]");
        let Some(name) = t.get("name").and_then(Value::as_str) else {
            return Err(ApiError::field(&format!("{at}.name"), "is required (a string)"));
        };
        check_name(&format!("{at}.name"), name)?;
        if let Some(kind) = t.get("type").and_then(Value::as_str) {
            if kind != "custom" {
                return Err(ApiError::field(
                    &format!("{at}.type"),
                    format!("'{kind}' is a server-side tool, which a local model cannot run"),
                ));
            }
        }
        tools.push(Tool {
            name: name.to_string(),
            description: t.get("description").and_then(Value::as_str).unwrap_or_default().to_string(),
            parameters: parameters(&format!("{at}.input_schema"), t.get("input_schema"))?,
        });
    }
    no_duplicates(&tools)?;
    let (choice, parallel) = match f.object("tool_choice")? {
        None => (ToolChoice::Auto, true),
        Some(o) => {
            let parallel = !o.bool("disable_parallel_tool_use")?.unwrap_or(false);
            let choice = match o.str("type")? {
                Some("auto") | None => ToolChoice::Auto,
                Some("any") => ToolChoice::Required,
                Some("none") => ToolChoice::None,
                Some("tool") => ToolChoice::Function(
                    o.str("name")?.ok_or_else(|| ApiError::field("tool_choice.name", "is required"))?.to_string(),
                ),
                Some(other) => {
                    return Err(ApiError::field(
                        "tool_choice.type",
                        format!("'{other}' is not auto, any, tool or none"),
                    ))
                }
            };
            (choice, parallel)
        }
    };
    check_choice(&tools, &choice, "tool_choice")?;
    Ok(ToolRequest { tools, choice, parallel })
}

fn check_choice(tools: &[Tool], choice: &ToolChoice, field: &str) -> Result<(), ApiError> {
    match choice {
        ToolChoice::Required if tools.is_empty() => {
            Err(ApiError::field(field, "a call is required but no tools are given"))
        }
        ToolChoice::Function(name) if !tools.iter().any(|t| &t.name == name) => {
            Err(ApiError::field(field, format!("no tool named '{name}' in tools")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_tools_are_read_and_checked() {
        let body = json!({
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        });
        let r = openai_tools(&Fields::new(&body).unwrap()).unwrap();
        assert_eq!(r.choice, ToolChoice::Function("get_weather".into()));
        assert!(r.parallel && r.active());
        assert_eq!(r.callable().len(), 1);

        for (body, param) in [
            (json!({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}), "tools[0].function.name"),
            (json!({"tools": [{"type": "function"}]}), "tools[0].function"),
            (json!({"tools": [], "tool_choice": "required"}), "tool_choice"),
            (
                json!({"tools": [{"function": {"name": "a"}}], "tool_choice": {"function": {"name": "b"}}}),
                "tool_choice",
            ),
            (json!({"tools": [{"function": {"name": "a"}}, {"function": {"name": "a"}}]}), "tools[1]"),
            (json!({"tools": [{"function": {"name": "a", "parameters": 3}}]}), "tools[0].function.parameters"),
            (json!({"tool_choice": "sometimes"}), "tool_choice"),
        ] {
            let e = openai_tools(&Fields::new(&body).unwrap()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn anthropic_tools_are_read_and_checked() {
        let body = json!({
            "tools": [{"name": "get_weather", "description": "Weather now", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        });
        let r = anthropic_tools(&Fields::new(&body).unwrap()).unwrap();
        assert_eq!(r.choice, ToolChoice::Required);
        assert!(!r.parallel);
        assert_eq!(r.tools[0].description, "Weather now");
        let body = json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        assert_eq!(anthropic_tools(&Fields::new(&body).unwrap()).unwrap_err().param.as_deref(), Some("tools[0].type"));
    }

    #[test]
    fn call_ids_differ() {
        let a = ToolCall::new("f".into(), json!({}));
        let b = ToolCall::new("f".into(), json!({}));
        assert_ne!(a.id, b.id);
        assert!(a.id.starts_with("call_") && a.id.len() == 29, "{}", a.id);
        assert_eq!(a.openai()["function"]["arguments"], "{}");
    }
}
