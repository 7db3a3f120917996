//! The sampled text split as it streams: reasoning (`<think>…</think>`, Qwen3 and the
//! DeepSeek-R1 distills), content, and tool calls in the model's [`ToolFormat`].
//!
//! Text is passed on as soon as it cannot be the start of a marker; a marker's possible
//! beginning at the end of what has arrived is held until the next piece settles it. A call
//! is reported whole, when its block closes (or at the end, for formats whose calls run to
//! the end of the reply). Text that looked like a call but does not parse as one is passed
//! on as content: nothing the model wrote is lost.

use std::sync::Arc;

use serde_json::Value;

use super::format::{ToolFormat, HERMES_CLOSE, HERMES_OPEN, MISTRAL_ARGS, MISTRAL_CALLS, PYTHON_TAG};
use super::ToolCall;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// One piece of a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyPiece {
    Reasoning(String),
    Content(String),
    Call(ToolCall),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reasoning,
    Content,
    /// Inside a Hermes block, waiting for its end.
    Block,
    /// The rest of the reply is calls (Llama 3, Mistral): parsed at the end.
    Calls,
    /// The reply opened like a call without its block (`{"name"…`, or in a ```json fence,
    /// as Qwen2.5-Coder writes them): calls if all of it parses as calls of offered tools.
    LooseCalls,
}

/// The streaming splitter of one reply.
#[derive(Debug)]
pub struct ReplyParser {
    tools: Option<ToolFormat>,
    think: bool,
    state: State,
    buf: String,
    /// Whether any non-whitespace content has been passed on (leading whitespace is held,
    /// so that a reply that is only calls has no content).
    content_started: bool,
    /// Whether reasoning is still possible at the start (a reply may open with `<think>`).
    at_start: bool,
    calls: usize,
    /// The offered tools' names: a call outside its block must name one of them.
    names: Arc<[String]>,
}

impl ReplyParser {
    /// `tools`: the format calls are read in (`None`: no tools were offered, any text is
    /// content). `think`: the template knows `<think>` sections; `in_think`: the prompt
    /// already opened one (DeepSeek-R1's template ends its generation prompt with `<think>`).
    pub fn new(tools: Option<ToolFormat>, think: bool, in_think: bool) -> ReplyParser {
        ReplyParser {
            tools,
            think,
            state: if think && in_think { State::Reasoning } else { State::Content },
            buf: String::new(),
            content_started: false,
            at_start: true,
            calls: 0,
            names: Arc::from(Vec::new()),
        }
    }

    /// Also reads calls that the model wrote without the Hermes block, as bare JSON objects
    /// or in a ```json fence, when the whole reply is such calls of these tools (llama.cpp
    /// reads them too; small models drift into them).
    pub fn with_tool_names(mut self, names: Arc<[String]>) -> ReplyParser {
        self.names = names;
        self
    }

    /// Whether any call has been reported (the finish reason is then `tool_calls`).
    pub fn made_calls(&self) -> bool {
        self.calls > 0
    }

    /// The pieces that `text` settles.
    pub fn push(&mut self, text: &str, out: &mut Vec<ReplyPiece>) {
        self.buf.push_str(text);
        self.advance(out, false);
    }

    /// The end of the reply: whatever is held.
    pub fn finish(&mut self, out: &mut Vec<ReplyPiece>) {
        self.advance(out, true);
        let rest = std::mem::take(&mut self.buf);
        match self.state {
            State::Reasoning => {
                if !rest.is_empty() {
                    out.push(ReplyPiece::Reasoning(rest));
                }
            }
            State::Content => {
                // Held leading whitespace of a reply that has nothing else is dropped.
                if self.content_started && !rest.is_empty() {
                    out.push(ReplyPiece::Content(rest));
                }
            }
            State::Block => {
                // A block the model never closed (it ended right after the JSON).
                let body = rest.strip_prefix(HERMES_OPEN).unwrap_or(&rest);
                match parse_call(body, "arguments") {
                    Some(call) => self.call(call, out),
                    None => self.content(rest, out),
                }
            }
            State::Calls => match self.parse_calls(&rest) {
                Some(calls) => {
                    for c in calls {
                        self.call(c, out);
                    }
                }
                None => self.content(rest, out),
            },
            State::LooseCalls => match loose_calls(&rest, &self.names) {
                Some(calls) => {
                    for c in calls {
                        self.call(c, out);
                    }
                }
                None => self.content(rest, out),
            },
        }
        self.state = State::Content;
    }

    fn advance(&mut self, out: &mut Vec<ReplyPiece>, end: bool) {
        loop {
            match self.state {
                State::Reasoning => match self.buf.find(THINK_CLOSE) {
                    Some(i) => {
                        let reasoning: String = self.buf[..i].to_string();
                        self.buf.drain(..i + THINK_CLOSE.len());
                        if !reasoning.is_empty() {
                            out.push(ReplyPiece::Reasoning(reasoning));
                        }
                        self.state = State::Content;
                        self.at_start = false;
                    }
                    None => {
                        let keep = if end { 0 } else { held_suffix(&self.buf, &[THINK_CLOSE]) };
                        let settled = self.buf.len() - keep;
                        if settled > 0 {
                            let reasoning: String = self.buf.drain(..settled).collect();
                            out.push(ReplyPiece::Reasoning(reasoning));
                        }
                        return;
                    }
                },
                State::Content => {
                    if !self.content_started {
                        // Whitespace before anything else is held.
                        let lead = self.buf.len() - self.buf.trim_start().len();
                        let rest = &self.buf[lead..];
                        if rest.is_empty() {
                            return;
                        }
                        if self.at_start && self.think {
                            if rest.starts_with(THINK_OPEN) {
                                self.buf.drain(..lead + THINK_OPEN.len());
                                self.state = State::Reasoning;
                                self.at_start = false;
                                continue;
                            }
                            if THINK_OPEN.starts_with(rest) && !end {
                                return;
                            }
                        }
                        if matches!(self.tools, Some(ToolFormat::Hermes | ToolFormat::Generic))
                            && !self.names.is_empty()
                        {
                            match loose_call_start(rest) {
                                Some(true) => {
                                    self.buf.drain(..lead);
                                    self.state = State::LooseCalls;
                                    return;
                                }
                                None if !end => return,
                                _ => {}
                            }
                        }
                        // Llama 3 writes a call as the whole reply: `{` first.
                        let llama_call = self.tools == Some(ToolFormat::Llama3) && rest.starts_with('{');
                        self.buf.drain(..lead);
                        if llama_call {
                            self.state = State::Calls;
                            return;
                        }
                    }
                    let markers = self.markers();
                    match markers.iter().filter_map(|m| self.buf.find(m).map(|i| (i, *m))).min() {
                        Some((i, marker)) => {
                            let before: String = self.buf[..i].to_string();
                            self.buf.drain(..i);
                            if !before.trim().is_empty() || self.content_started {
                                self.content(before, out);
                            }
                            self.at_start = false;
                            if marker == HERMES_OPEN {
                                self.state = State::Block;
                            } else {
                                self.state = State::Calls;
                                return;
                            }
                        }
                        None => {
                            let keep = if end { 0 } else { held_suffix(&self.buf, markers) };
                            let settled = self.buf.len() - keep;
                            if settled == 0 {
                                return;
                            }
                            let text = &self.buf[..settled];
                            if !self.content_started && text.trim().is_empty() {
                                return;
                            }
                            let text: String = self.buf.drain(..settled).collect();
                            self.at_start = false;
                            self.content(text, out);
                            return;
                        }
                    }
                }
                State::Block => match self.buf.find(HERMES_CLOSE) {
                    Some(i) => {
                        let block: String = self.buf.drain(..i + HERMES_CLOSE.len()).collect();
                        let body = &block[HERMES_OPEN.len().min(block.len())..i];
                        match parse_call(body, "arguments") {
                            Some(call) => self.call(call, out),
                            None => self.content(block, out),
                        }
                        // Whitespace between calls and after the last is not content.
                        let lead = self.buf.len() - self.buf.trim_start().len();
                        if !self.content_started {
                            self.buf.drain(..lead);
                        }
                        self.state = State::Content;
                    }
                    None => return,
                },
                State::Calls | State::LooseCalls => return,
            }
        }
    }

    fn markers(&self) -> &'static [&'static str] {
        match self.tools {
            None => &[],
            Some(ToolFormat::Hermes | ToolFormat::Generic) => &[HERMES_OPEN],
            Some(ToolFormat::Llama3) => &[PYTHON_TAG],
            Some(ToolFormat::Mistral | ToolFormat::MistralArgs) => &[MISTRAL_CALLS],
        }
    }

    fn content(&mut self, text: String, out: &mut Vec<ReplyPiece>) {
        if text.is_empty() {
            return;
        }
        self.content_started = true;
        out.push(ReplyPiece::Content(text));
    }

    fn call(&mut self, call: ToolCall, out: &mut Vec<ReplyPiece>) {
        self.calls += 1;
        out.push(ReplyPiece::Call(call));
    }

    /// The calls that end a Llama 3 or Mistral reply, or `None` if the text is not calls.
    fn parse_calls(&self, text: &str) -> Option<Vec<ToolCall>> {
        match self.tools? {
            ToolFormat::Llama3 => {
                let body = text.trim_start().strip_prefix(PYTHON_TAG).unwrap_or(text).trim();
                // One call, or several separated by `;` (each a JSON object).
                let mut calls = Vec::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
                    let value = stream.next()?.ok()?;
                    let used = stream.byte_offset();
                    calls.push(call_from_value(value, "parameters")?);
                    rest = rest[used..].trim_start();
                    rest = rest.strip_prefix(';').unwrap_or(rest).trim_start();
                }
                (!calls.is_empty()).then_some(calls)
            }
            ToolFormat::Mistral | ToolFormat::MistralArgs => {
                let mut calls = Vec::new();
                for part in text.split(MISTRAL_CALLS).map(str::trim).filter(|p| !p.is_empty()) {
                    if let Some((name, args)) = part.split_once(MISTRAL_ARGS) {
                        let arguments: Value = serde_json::from_str(args.trim()).ok()?;
                        calls.push(ToolCall::new(name.trim().to_string(), object(arguments)?));
                    } else {
                        match serde_json::from_str::<Value>(part).ok()? {
                            Value::Array(items) => {
                                for item in items {
                                    calls.push(call_from_value(item, "arguments")?);
                                }
                            }
                            single => calls.push(call_from_value(single, "arguments")?),
                        }
                    }
                }
                (!calls.is_empty()).then_some(calls)
            }
            ToolFormat::Hermes | ToolFormat::Generic => None,
        }
    }
}

/// Whether `text` (the start of a reply) opens a call written without its block:
/// optionally a ``` or ```json fence line, then `{` and `"name"`. `None`: too short to tell.
fn loose_call_start(text: &str) -> Option<bool> {
    let mut t = text;
    if let Some(fenced) = t.strip_prefix("```") {
        let Some(newline) = fenced.find('\n') else {
            let tag = fenced.trim().to_ascii_lowercase();
            return if "json".starts_with(&tag) { None } else { Some(false) };
        };
        let tag = fenced[..newline].trim();
        if !(tag.is_empty() || tag.eq_ignore_ascii_case("json")) {
            return Some(false);
        }
        t = &fenced[newline + 1..];
    } else if "```".starts_with(t) {
        return None;
    }
    let t = t.trim_start();
    if t.is_empty() {
        return None;
    }
    let Some(after) = t.strip_prefix('{') else { return Some(false) };
    let after = after.trim_start();
    if after.starts_with("\"name\"") {
        Some(true)
    } else if "\"name\"".starts_with(after) {
        None
    } else {
        Some(false)
    }
}

/// A whole reply of calls written without their blocks: JSON objects, each optionally in
/// its own ``` fence, each naming one of `names`. `None` if anything else is in it.
fn loose_calls(text: &str, names: &[String]) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let fenced = rest.starts_with("```");
        if fenced {
            rest = &rest[rest.find('\n')? + 1..];
        }
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let value = stream.next()?.ok()?;
        let used = stream.byte_offset();
        let call = call_from_value(value, "arguments")?;
        if !names.contains(&call.name) {
            return None;
        }
        calls.push(call);
        rest = rest[used..].trim_start();
        if fenced {
            rest = rest.strip_prefix("```")?.trim_start();
        }
    }
    (!calls.is_empty()).then_some(calls)
}

/// How much of the end of `text` could be the start of one of `markers`.
fn held_suffix(text: &str, markers: &[&str]) -> usize {
    let mut keep = 0;
    for m in markers {
        for n in (1..m.len()).rev() {
            if n <= text.len() && text.is_char_boundary(text.len() - n) && text.ends_with(&m[..n]) {
                keep = keep.max(n);
                break;
            }
        }
    }
    keep
}

/// `{"name": ..., "arguments": {...}}` (or `parameters`); the arguments may also be a JSON
/// string holding the object, as some fine-tunes write them.
fn parse_call(text: &str, key: &str) -> Option<ToolCall> {
    call_from_value(serde_json::from_str(text.trim()).ok()?, key)
}

fn call_from_value(value: Value, key: &str) -> Option<ToolCall> {
    let Value::Object(mut map) = value else { return None };
    let name = map.get("name")?.as_str()?.to_string();
    let arguments = map
        .remove(key)
        .or_else(|| map.remove(if key == "arguments" { "parameters" } else { "arguments" }))
        .unwrap_or(Value::Object(Default::default()));
    Some(ToolCall::new(name, object(arguments)?))
}

fn object(arguments: Value) -> Option<Value> {
    match arguments {
        Value::Object(_) => Some(arguments),
        Value::String(s) => match serde_json::from_str::<Value>(&s).ok()? {
            v @ Value::Object(_) => Some(v),
            _ => None,
        },
        Value::Null => Some(Value::Object(Default::default())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Feeds `text` in pieces of every size from 1 to 7 bytes (on char boundaries): the
    /// pieces, merged by kind, must be the same whatever the split.
    fn split(tools: Option<ToolFormat>, think: bool, in_think: bool, text: &str) -> Vec<ReplyPiece> {
        split_named(tools, &[], think, in_think, text)
    }

    fn split_named(
        tools: Option<ToolFormat>,
        names: &[&str],
        think: bool,
        in_think: bool,
        text: &str,
    ) -> Vec<ReplyPiece> {
        let names: Arc<[String]> = names.iter().map(|n| n.to_string()).collect();
        let mut reference: Option<Vec<ReplyPiece>> = None;
        for step in 1..=7 {
            let mut p = ReplyParser::new(tools, think, in_think).with_tool_names(names.clone());
            let mut out = Vec::new();
            let mut i = 0;
            while i < text.len() {
                let mut j = (i + step).min(text.len());
                while !text.is_char_boundary(j) {
                    j += 1;
                }
                p.push(&text[i..j], &mut out);
                i = j;
            }
            p.finish(&mut out);
            let merged = merge(out);
            match &reference {
                None => reference = Some(merged),
                Some(r) => assert_eq!(&merged, r, "split every {step} bytes"),
            }
        }
        reference.unwrap_or_default()
    }

    /// Adjacent pieces of the same kind joined; call ids blanked.
    fn merge(pieces: Vec<ReplyPiece>) -> Vec<ReplyPiece> {
        let mut out: Vec<ReplyPiece> = Vec::new();
        for p in pieces {
            match (out.last_mut(), p) {
                (Some(ReplyPiece::Content(a)), ReplyPiece::Content(b)) => a.push_str(&b),
                (Some(ReplyPiece::Reasoning(a)), ReplyPiece::Reasoning(b)) => a.push_str(&b),
                (_, ReplyPiece::Call(mut c)) => {
                    c.id = String::new();
                    out.push(ReplyPiece::Call(c));
                }
                (_, p) => out.push(p),
            }
        }
        out
    }

    fn call(name: &str, arguments: Value) -> ReplyPiece {
        ReplyPiece::Call(ToolCall { id: String::new(), name: name.into(), arguments })
    }

    fn content(s: &str) -> ReplyPiece {
        ReplyPiece::Content(s.into())
    }

    #[test]
    fn hermes_blocks_become_calls() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n\
                    <tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
        assert_eq!(
            split(Some(ToolFormat::Hermes), false, false, text),
            vec![call("get_weather", json!({"city": "Oslo"})), call("get_time", json!({}))]
        );
        // Content before a call stays; a block the model did not close still counts.
        let text = "Let me check.\n<tool_call>\n{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}";
        assert_eq!(
            split(Some(ToolFormat::Hermes), false, false, text),
            vec![content("Let me check.\n"), call("f", json!({"a": 1}))]
        );
        // Not JSON: the text is content, markers and all.
        let text = "<tool_call>not json</tool_call> ok";
        assert_eq!(split(Some(ToolFormat::Generic), false, false, text), vec![content(text)]);
        // Without tools, the same text is all content.
        assert_eq!(split(None, false, false, "a <tool_call> b"), vec![content("a <tool_call> b")]);
        // Text that only starts like a marker is passed on.
        assert_eq!(split(Some(ToolFormat::Hermes), false, false, "x < y <tool"), vec![content("x < y <tool")]);
    }

    #[test]
    fn llama3_and_mistral_calls_end_the_reply() {
        let text =
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}; {\"name\": \"g\", \"parameters\": {}}";
        assert_eq!(
            split(Some(ToolFormat::Llama3), false, false, text),
            vec![call("get_weather", json!({"city": "Oslo"})), call("g", json!({}))]
        );
        let text = "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": 1}}";
        assert_eq!(split(Some(ToolFormat::Llama3), false, false, text), vec![call("f", json!({"x": 1}))]);
        // Braces that are not a call are content.
        assert_eq!(split(Some(ToolFormat::Llama3), false, false, "{not a call}"), vec![content("{not a call}")]);
        let text = "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"x\": 1}}, {\"name\": \"g\", \"arguments\": {}}]";
        assert_eq!(
            split(Some(ToolFormat::Mistral), false, false, text),
            vec![call("f", json!({"x": 1})), call("g", json!({}))]
        );
        let text = "Sure. [TOOL_CALLS]f[ARGS]{\"x\": 1}[TOOL_CALLS]g[ARGS]{}";
        assert_eq!(
            split(Some(ToolFormat::MistralArgs), false, false, text),
            vec![content("Sure. "), call("f", json!({"x": 1})), call("g", json!({}))]
        );
    }

    #[test]
    fn think_sections_are_reasoning() {
        let text = "<think>\nThe user wants Oslo.\n</think>\n\nIt is cold.";
        assert_eq!(
            split(None, true, false, text),
            vec![ReplyPiece::Reasoning("\nThe user wants Oslo.\n".into()), content("It is cold.")]
        );
        // The prompt opened the section (DeepSeek-R1): no <think> in the reply.
        let text = "Hmm.</think>\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>";
        assert_eq!(
            split(Some(ToolFormat::Hermes), true, true, text),
            vec![ReplyPiece::Reasoning("Hmm.".into()), call("f", json!({}))]
        );
        // A call inside the reasoning is not a call.
        let text = "<think>I could write <tool_call> here</think>Done";
        assert_eq!(
            split(Some(ToolFormat::Hermes), true, false, text),
            vec![ReplyPiece::Reasoning("I could write <tool_call> here".into()), content("Done")]
        );
        // Without the template's support, <think> is text.
        assert_eq!(split(None, false, false, "<think>x</think>y"), vec![content("<think>x</think>y")]);
    }

    #[test]
    fn calls_without_their_block_are_read_when_the_whole_reply_is_calls() {
        let hermes = Some(ToolFormat::Hermes);
        let names = ["get_weather", "get_time"];
        // Qwen2.5-Coder's habit: a ```json fence.
        let text = "```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\"city\": \"Tokyo\"}\n}\n```";
        assert_eq!(
            split_named(hermes, &names, false, false, text),
            vec![call("get_weather", json!({"city": "Tokyo"}))]
        );
        // Bare objects, one per line.
        let text = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n{\"name\": \"get_time\", \"arguments\": {}}\n";
        assert_eq!(
            split_named(hermes, &names, false, false, text),
            vec![call("get_weather", json!({"city": "Oslo"})), call("get_time", json!({}))]
        );
        // Anything else in the reply, an unknown name, or other JSON: all content.
        for text in [
            "{\"name\": \"get_weather\", \"arguments\": {}}\n{\"temperature\": 14}",
            "{\"name\": \"Bob\", \"age\": 3}",
            "{\"city\": \"Oslo\"}",
            "```python\nprint(1)\n```",
            "```json\n{\"name\": \"get_time\", \"arguments\": {}}\n``` and more",
        ] {
            assert_eq!(split_named(hermes, &names, false, false, text), vec![content(text)], "{text}");
        }
        // Without the offered names (tools not active), never.
        let text = "{\"name\": \"get_time\", \"arguments\": {}}";
        assert_eq!(split(hermes, false, false, text), vec![content(text)]);
    }
}
