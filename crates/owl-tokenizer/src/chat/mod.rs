//! Chat templates: the model's Jinja template rendered with minijinja in an environment
//! that behaves like the one transformers' `apply_chat_template` uses
//! (transformers/utils/chat_template_utils.py: `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True, extensions=[loopcontrols])` with `raise_exception`, `strftime_now` and
//! a `json.dumps`-based `tojson`).
//!
//! What the environment provides: `messages`, `tools`, `documents` (none), `add_generation_prompt`, `bos_token`,
//! `eos_token` (plus any extra keyword the caller passes, e.g. `enable_thinking`),
//! `raise_exception(msg)`, `strftime_now(fmt)`, Python string/dict/list methods
//! (`minijinja_contrib::pycompat`), loop controls, and values printed the way Python's
//! `str()` prints them. `{% generation %}` blocks (transformers' assistant-mask extension)
//! are accepted and render their content.
//!
//! Sandbox (docs/SECURITY.md): there is no loader, so `include`/`import`/`extends` fail;
//! there is no Python object model behind the values, and a template that names a Python
//! internal (`__class__`, `__globals__`, ...: the server-side template injection payloads of
//! CVE-2024-34359 and CVE-2026-5760) is refused when it is compiled; rendering runs on an
//! instruction budget ("fuel", which minijinja also charges for the bytes a string operation
//! builds, so `'x' * 10**12` and doubling loops run out of it), a recursion limit, and a cap
//! on the output ([`RenderLimits`]).

mod builtin;
mod message;
mod pyjson;
mod pyrepr;
mod strftime;
pub use strftime::format_unix_utc;

use std::io::Write;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, Value};

use crate::error::TemplateError;

pub use builtin::{
    builtin_template, builtin_template_for_architecture, BUILTIN_TEMPLATES, CHATML_TEMPLATE, GEMMA_TEMPLATE,
};
pub use message::ChatMessage;

const TEMPLATE_NAME: &str = "chat_template";

/// Where a [`ChatTemplate`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// The model file's own template.
    Model,
    /// owl's built-in template for the model's family (Gemma files carry none).
    Builtin,
    /// ChatML, used when neither the model nor owl has a template for it.
    Fallback,
    /// Chosen by the user over the model's own (`--template`).
    User,
}

/// Bounds on one render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// The longest prompt a render may produce.
    pub max_output_bytes: usize,
    /// minijinja instruction budget; also caps allocations at roughly 64 bytes a unit.
    pub fuel: u64,
    /// Nesting depth of loops, conditionals and macro calls (minijinja counts a macro call
    /// as several levels); at most minijinja's own cap of 500.
    pub max_recursion: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        // A 1M-token context is ~4 MiB of text; 16 MiB leaves room for any real prompt.
        // 20M instructions render a 10k-message conversation with tools in well under a second.
        // 200 levels stay far inside a 2 MiB thread stack (a server worker's), and no real
        // template nests a tenth as deep.
        RenderLimits { max_output_bytes: 16 << 20, fuel: 20_000_000, max_recursion: 200 }
    }
}

/// A compiled chat template with the special-token strings it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    origin: TemplateOrigin,
    limits: RenderLimits,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("source_len", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source` (Jinja) for rendering with these BOS/EOS strings.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, TemplateError> {
        ChatTemplate::with_origin(source, bos_token, eos_token, TemplateOrigin::Model)
    }

    /// As [`ChatTemplate::new`], recording where the template came from.
    pub fn with_origin(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        origin: TemplateOrigin,
    ) -> Result<ChatTemplate, TemplateError> {
        let limits = RenderLimits::default();
        let env = build_environment(source, limits)?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            origin,
            limits,
        })
    }

    /// The same template with other render limits.
    pub fn with_limits(mut self, limits: RenderLimits) -> Result<ChatTemplate, TemplateError> {
        self.env = build_environment(&self.source, limits)?;
        self.limits = limits;
        Ok(self)
    }

    /// The Jinja source as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn origin(&self) -> TemplateOrigin {
        self.origin
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    pub fn limits(&self) -> RenderLimits {
        self.limits
    }

    /// Renders a conversation. `tools` is the OpenAI `tools` array (JSON schemas), passed to
    /// the template as `tools` (`none` when absent, as transformers does).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_kwargs(messages, tools, add_generation_prompt, &serde_json::Map::new())
    }

    /// [`ChatTemplate::render`] with extra template variables (transformers'
    /// `apply_chat_template(**kwargs)`, e.g. `{"enable_thinking": false}`). The standard
    /// variables win over extras of the same name.
    pub fn render_with_kwargs(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let mut ctx = extra.clone();
        let msgs: Vec<serde_json::Value> = messages.iter().map(message_to_template_value).collect();
        ctx.insert("messages".into(), serde_json::Value::Array(msgs));
        ctx.insert("tools".into(), tools.cloned().unwrap_or(serde_json::Value::Null));
        ctx.insert("documents".into(), serde_json::Value::Null);
        ctx.insert("add_generation_prompt".into(), serde_json::Value::Bool(add_generation_prompt));
        ctx.insert("bos_token".into(), serde_json::Value::String(self.bos_token.clone()));
        ctx.insert("eos_token".into(), serde_json::Value::String(self.eos_token.clone()));
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| TemplateError::Syntax(describe(&e)))?;
        let mut sink = BoundedSink { buf: Vec::new(), limit: self.limits.max_output_bytes, overflowed: false };
        match template.render_captured_to(Value::from(minijinja::value::Serde(&ctx)), &mut sink) {
            Ok(_) => {}
            Err(_) if sink.overflowed => {
                return Err(TemplateError::OutputTooLarge { limit: self.limits.max_output_bytes })
            }
            Err(e) => return Err(TemplateError::Render(describe(&e))),
        }
        String::from_utf8(sink.buf).map_err(|e| TemplateError::Render(format!("output is not UTF-8: {e}")))
    }
}

/// A message as transformers (5.x `_normalize_chat_messages`) hands it to a template: only
/// the keys that are set — a tool-calling assistant turn without text has no `content` key,
/// as OpenAI's `content: null` is dropped there — and tool-call `arguments` sent as JSON
/// text parsed into objects (HF templates expect a dict and `tojson` it themselves).
fn message_to_template_value(m: &ChatMessage) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("role".into(), m.role.clone().into());
    if !(m.content.is_empty() && m.tool_calls.is_some()) {
        obj.insert("content".into(), m.content.clone().into());
    }
    if let Some(calls) = &m.tool_calls {
        obj.insert("tool_calls".into(), parse_tool_call_arguments(calls));
    }
    if let Some(id) = &m.tool_call_id {
        obj.insert("tool_call_id".into(), id.clone().into());
    }
    if let Some(name) = &m.name {
        obj.insert("name".into(), name.clone().into());
    }
    serde_json::Value::Object(obj)
}

fn parse_tool_call_arguments(calls: &serde_json::Value) -> serde_json::Value {
    let mut calls = calls.clone();
    if let Some(list) = calls.as_array_mut() {
        for call in list {
            let target = match call.get_mut("function") {
                Some(f) => f,
                None => call,
            };
            if let Some(args) = target.get_mut("arguments") {
                if let Some(text) = args.as_str() {
                    if let Ok(parsed @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) =
                        serde_json::from_str::<serde_json::Value>(text)
                    {
                        *args = parsed;
                    }
                }
            }
        }
    }
    calls
}

fn build_environment(source: &str, limits: RenderLimits) -> Result<Environment<'static>, TemplateError> {
    refuse_python_internals(source)?;
    let mut env = Environment::new();
    env.set_recursion_limit(limits.max_recursion);
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| TemplateError::Syntax(describe(&e)))?;
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_fuel(Some(limits.fuel));
    env.set_formatter(|out, _state, value| {
        out.write_str(&pyrepr::python_str(value)).map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
    });
    let max_bytes = limits.max_output_bytes;
    env.add_filter(
        "tojson",
        move |value: Value, ensure_ascii: Option<Value>, indent: Option<Value>, kwargs: minijinja::value::Kwargs| {
            pyjson::tojson_filter(value, ensure_ascii, indent, kwargs, max_bytes)
        },
    );
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |format: String| -> Result<Value, Error> {
        strftime::strftime(&strftime::CivilTime::now_utc(), &format)
            .map(Value::from)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e))
    });
    env.add_template_owned(TEMPLATE_NAME, accept_generation_blocks(source))
        .map_err(|e| TemplateError::Syntax(describe(&e)))?;
    Ok(env)
}

/// Refuses a template that names a Python dunder attribute (`x.__class__`, `x['__globals__']`,
/// `attr('__init__')`): the path of every Jinja SSTI payload to the interpreter. minijinja
/// has no such attributes, so such a template could only fail later with an obscure error;
/// real chat templates never use them. Names are matched in the whole source text, string
/// literals and plain text included: a dunder anywhere is refused, which no published
/// template trips over.
fn refuse_python_internals(source: &str) -> Result<(), TemplateError> {
    let bytes = source.as_bytes();
    let mut i = 0;
    while let Some(at) = source[i..].find("__") {
        let start = i + at;
        let word_start = start == 0 || !is_ident(bytes[start - 1]);
        let mut end = start + 2;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        let word = &source[start..end];
        if word_start && word.len() > 4 && word.ends_with("__") && word[2..word.len() - 2].bytes().any(|b| b != b'_') {
            let line = source[..start].matches('\n').count() + 1;
            return Err(TemplateError::Unsafe(format!(
                "it names the Python internal `{word}` (line {line}), the way template-injection attacks reach the interpreter; chat templates never need it"
            )));
        }
        i = end.max(start + 2);
    }
    Ok(())
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// An error with its chain and the template line it points at, on one line.
fn describe(e: &Error) -> String {
    let mut msg = match e.detail() {
        Some(detail) if e.kind() == ErrorKind::InvalidOperation => detail.to_string(),
        _ => e.to_string(),
    };
    if let Some(line) = e.line() {
        if !msg.contains("line") {
            msg.push_str(&format!(" (line {line})"));
        }
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Rewrites transformers' `{% generation %}`/`{% endgeneration %}` tags (which only mark
/// assistant text for training masks) into `{% if true %}`/`{% endif %}`, keeping their
/// whitespace-control markers so the output is unchanged.
fn accept_generation_blocks(source: &str) -> String {
    if !source.contains("generation") {
        return source.to_string();
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        // The closing `%}` starts after the opening `{%` (in `{%}` they overlap).
        let Some(end) = tag[2..].find("%}").map(|e| e + 2) else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (lead, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, trail) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => out.push_str(&format!("{{%{lead} {r} {trail}%}}")),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Collects the rendered text, refusing to grow past `limit`.
struct BoundedSink {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for BoundedSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
