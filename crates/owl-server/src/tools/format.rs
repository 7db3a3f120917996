//! How each model family writes a tool call, as its chat template teaches it.
//!
//! | format | a call | families |
//! |---|---|---|
//! | [`ToolFormat::Hermes`] | `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, one block per call | Qwen2.5, Qwen3, Hermes 2 Pro / 3 (NousResearch's format) |
//! | [`ToolFormat::Llama3`] | `{"name": …, "parameters": {…}}`, optionally after `<\|python_tag\|>`; calls separated by `;` | Llama 3.1, 3.2, 3.3 (Meta's JSON tool calling) |
//! | [`ToolFormat::Mistral`] | `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]` | Mistral 7B v0.3, Mixtral, Nemo (v3 tokenizer) |
//! | [`ToolFormat::MistralArgs`] | `[TOOL_CALLS]name[ARGS]{…}` per call | Mistral Small 3.2, Magistral, Devstral (v11+) |
//! | [`ToolFormat::Generic`] | the Hermes block | any model whose template does not render `tools`: owl describes the tools and the format in a system message |
//!
//! The format is read from the template's source: the markers it writes are unambiguous.

use owl_engine::GrammarSpec;
use owl_tokenizer::{ChatMessage, Tokenizer};
use serde_json::{json, Value};

use super::{Tool, ToolChoice, ToolRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3,
    Mistral,
    MistralArgs,
    Generic,
}

/// The markers of the Hermes block (and of the generic format).
pub const HERMES_OPEN: &str = "<tool_call>";
pub const HERMES_CLOSE: &str = "</tool_call>";
/// Llama 3.1's marker before a call (built-in tools, and some fine-tunes for JSON calls).
pub const PYTHON_TAG: &str = "<|python_tag|>";
/// Mistral's control token before the calls.
pub const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
/// Mistral v11's token between a call's name and its arguments.
pub const MISTRAL_ARGS: &str = "[ARGS]";

impl ToolFormat {
    /// The format a chat template uses (`Generic` when it does not mention tools).
    pub fn detect(template: &str) -> ToolFormat {
        if template.contains(HERMES_OPEN) {
            ToolFormat::Hermes
        } else if template.contains(MISTRAL_CALLS) {
            if template.contains(MISTRAL_ARGS) {
                ToolFormat::MistralArgs
            } else {
                ToolFormat::Mistral
            }
        } else if template.contains(PYTHON_TAG) || (template.contains("ipython") && template.contains("parameters")) {
            ToolFormat::Llama3
        } else {
            ToolFormat::Generic
        }
    }

    /// Whether the template renders `tools` and tool turns itself.
    pub fn native(self) -> bool {
        self != ToolFormat::Generic
    }

    /// The name logs and docs use.
    pub fn name(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::Llama3 => "llama3",
            ToolFormat::Mistral => "mistral",
            ToolFormat::MistralArgs => "mistral-args",
            ToolFormat::Generic => "generic",
        }
    }
}

/// The conversation as the template gets it. A native template renders tools and tool
/// turns itself; for any other, owl puts the tools and the call format into the system
/// message, writes earlier calls as Hermes blocks and results as `<tool_response>` user
/// turns, and merges turns of the same role (templates such as Gemma's insist that user and
/// assistant alternate).
pub fn prepare_messages(format: ToolFormat, messages: Vec<ChatMessage>, tools: &ToolRequest) -> Vec<ChatMessage> {
    if format.native() {
        // owl-tokenizer hands the calls' arguments to the template as objects.
        return messages;
    }
    let has_tool_turns = messages.iter().any(|m| m.role == "tool" || m.tool_calls.is_some());
    if !tools.active() && !has_tool_turns {
        return messages;
    }
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    if tools.active() {
        let prompt = generic_system_prompt(&tools.tools);
        match messages.first() {
            Some(m) if m.role == "system" || m.role == "developer" => {
                out.push(ChatMessage::system(format!("{}\n\n{prompt}", m.content)));
            }
            _ => out.push(ChatMessage::system(prompt)),
        }
    }
    let skip =
        usize::from(tools.active() && messages.first().is_some_and(|m| m.role == "system" || m.role == "developer"));
    for m in messages.into_iter().skip(skip) {
        let (role, content) = match m.role.as_str() {
            "tool" => ("user".to_string(), format!("<tool_response>\n{}\n</tool_response>", m.content)),
            _ => {
                let mut content = m.content.clone();
                for call in m.tool_calls.iter().flat_map(|c| c.as_array().cloned().unwrap_or_default()) {
                    let function = &call["function"];
                    let arguments = match &function["arguments"] {
                        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
                        other => other.clone(),
                    };
                    let block = json!({"name": function["name"], "arguments": arguments});
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&format!("{HERMES_OPEN}\n{block}\n{HERMES_CLOSE}"));
                }
                (m.role.clone(), content)
            }
        };
        match out.last_mut() {
            Some(last) if last.role == role && role != "system" => {
                last.content.push_str("\n\n");
                last.content.push_str(&content);
            }
            _ => out.push(ChatMessage::new(role, content)),
        }
    }
    out
}

/// The system prompt that offers tools to a model whose template does not (the Hermes
/// format, which small instruction-tuned models follow best from a description).
fn generic_system_prompt(tools: &[Tool]) -> String {
    let mut s = String::from(
        "You may call one or more functions to help with the user's request. The functions are \
         described in JSON Schema inside <tools></tools>:\n<tools>\n",
    );
    for t in tools {
        s.push_str(&t.openai().to_string());
        s.push('\n');
    }
    s.push_str(
        "</tools>\n\nTo call a function, answer with one block per call and nothing else:\n\
         <tool_call>\n{\"name\": <function-name>, \"arguments\": <arguments-json-object>}\n</tool_call>\n\
         A function's result comes back inside <tool_response></tool_response>. If no function \
         is needed, answer normally.",
    );
    s
}

/// The grammar that makes the reply one or more calls of the callable tools, each with
/// arguments that validate against its schema, in the model's own format: for
/// `tool_choice` `required` or a named function (none for `auto` and `none`).
pub fn forced_call_grammar(format: ToolFormat, request: &ToolRequest, tokenizer: &Tokenizer) -> Option<GrammarSpec> {
    if !matches!(request.choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return None;
    }
    let tools = request.callable();
    let arguments_key = if format == ToolFormat::Llama3 { "parameters" } else { "arguments" };
    let call_schema = |t: &Tool| {
        json!({
            "type": "object",
            "properties": {"name": {"const": t.name}, arguments_key: t.parameters},
            "required": ["name", arguments_key],
            "additionalProperties": false,
        })
    };
    let one_of = |schemas: Vec<Value>| {
        let schema = if schemas.len() == 1 {
            schemas.into_iter().next().unwrap_or(Value::Null)
        } else {
            json!({"anyOf": schemas})
        };
        json_for_lark(schema)
    };
    let lark = match format {
        ToolFormat::Hermes | ToolFormat::Generic => {
            let open = marker(tokenizer, HERMES_OPEN);
            let close = marker(tokenizer, HERMES_CLOSE);
            let call = one_of(tools.iter().map(|t| call_schema(t)).collect());
            // The model ends a call block with a newline when another follows and with the
            // end of its turn otherwise; a newline it writes anyway must still let it stop.
            let repeat = if request.parallel { "(\"\\n\" call)* \"\\n\"?" } else { "\"\\n\"?" };
            format!("start: call {repeat}\ncall: {open} \"\\n\" {call} \"\\n\" {close}\n")
        }
        ToolFormat::Llama3 => {
            let call = one_of(tools.iter().map(|t| call_schema(t)).collect());
            let repeat = if request.parallel { "(\"; \" call)*" } else { "" };
            format!("start: call {repeat}\ncall: {call}\n")
        }
        ToolFormat::Mistral => {
            let item = if tools.len() == 1 {
                call_schema(tools[0])
            } else {
                json!({"anyOf": tools.iter().map(|t| call_schema(t)).collect::<Vec<_>>()})
            };
            let max = if request.parallel { Value::Null } else { json!(1) };
            let mut array = json!({"type": "array", "items": item, "minItems": 1});
            if !max.is_null() {
                array["maxItems"] = max;
            }
            format!("start: {} {}\n", marker(tokenizer, MISTRAL_CALLS), json_for_lark(array))
        }
        ToolFormat::MistralArgs => {
            let calls = marker(tokenizer, MISTRAL_CALLS);
            let args = marker(tokenizer, MISTRAL_ARGS);
            let alternatives: Vec<String> = tools
                .iter()
                .map(|t| format!("{} {args} {}", Value::String(t.name.clone()), json_for_lark(t.parameters.clone())))
                .collect();
            let start = if request.parallel { "call+" } else { "call" };
            format!("start: {start}\ncall: {calls} body\nbody: {}\n", alternatives.join(" | "))
        }
    };
    Some(GrammarSpec::Lark(lark))
}

/// A marker in a Lark rule: the token itself (`<[id]>`) when the vocabulary has it as one
/// token, so the model writes it as it was trained to; otherwise its text.
fn marker(tokenizer: &Tokenizer, text: &str) -> String {
    match tokenizer.encode(text, false, true) {
        Ok(ids) if ids.len() == 1 => format!("<[{}]>", ids[0]),
        _ => Value::String(text.to_string()).to_string(),
    }
}

/// `%json {...}` with owl's JSON options: compact whitespace, and keywords the grammar
/// cannot enforce left unenforced (clients' tool schemas use many).
fn json_for_lark(schema: Value) -> String {
    let schema = owl_engine::grammar::json_schema_options(schema, false);
    format!("%json {schema}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_read_from_the_template() {
        assert_eq!(
            ToolFormat::detect("{%- if tools %}<tool_call>\\n{{ x }}</tool_call>{% endif %}"),
            ToolFormat::Hermes
        );
        assert_eq!(ToolFormat::detect("{{ '[TOOL_CALLS]' }}{{ tool_calls | tojson }}"), ToolFormat::Mistral);
        assert_eq!(ToolFormat::detect("[TOOL_CALLS]{{ name }}[ARGS]{{ args }}"), ToolFormat::MistralArgs);
        assert_eq!(ToolFormat::detect("<|python_tag|>{{ call }}<|eom_id|>"), ToolFormat::Llama3);
        assert_eq!(
            ToolFormat::detect("{% if message.role == 'ipython' %}{{ parameters }}{% endif %}"),
            ToolFormat::Llama3
        );
        assert_eq!(ToolFormat::detect("<|im_start|>{{ m.role }}"), ToolFormat::Generic);
    }

    fn weather() -> ToolRequest {
        ToolRequest {
            tools: vec![Tool {
                name: "get_weather".into(),
                description: "The weather in a city".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            }],
            choice: ToolChoice::Auto,
            parallel: true,
        }
    }

    #[test]
    fn a_template_without_tools_gets_them_in_the_system_message() {
        let messages = vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Weather in Oslo?"),
            ChatMessage {
                role: "assistant".into(),
                tool_calls: Some(json!([{"id": "c1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}])),
                ..Default::default()
            },
            ChatMessage::tool("{\"temp\": 3}", Some("c1".into()), None),
            ChatMessage::user("And in Rome?"),
        ];
        let out = prepare_messages(ToolFormat::Generic, messages.clone(), &weather());
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out[0].content.starts_with("Be brief.\n\nYou may call") && out[0].content.contains("\"get_weather\""));
        assert_eq!(
            out[2].content,
            "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call>"
        );
        assert_eq!(out[3].role, "user");
        assert_eq!(out[3].content, "<tool_response>\n{\"temp\": 3}\n</tool_response>\n\nAnd in Rome?");
        // A native template gets the conversation as it is.
        assert_eq!(prepare_messages(ToolFormat::Hermes, messages, &weather()).len(), 5);
    }
}
