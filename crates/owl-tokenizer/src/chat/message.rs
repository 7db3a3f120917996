//! [`ChatMessage`]: one turn of a conversation, in the shape OpenAI's API and HF templates use.

use serde::{Deserialize, Deserializer, Serialize};

/// One message. Deserializes from OpenAI chat messages: `content` may be a string, `null`
/// (an assistant turn that only calls tools), or an array of parts of which the text parts
/// are kept (joined by newlines, as vLLM does for text-only templates).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default, deserialize_with = "content_from_openai")]
    pub content: String,
    /// OpenAI `tool_calls`: `[{"id":..,"type":"function","function":{"name":..,"arguments":..}}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// For `role: "tool"`: the id of the call this result answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message with a role and text content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into(), ..ChatMessage::default() }
    }

    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }

    /// The result of a tool call, answering `tool_call_id`.
    pub fn tool(content: impl Into<String>, tool_call_id: Option<String>, name: Option<String>) -> ChatMessage {
        ChatMessage { role: "tool".into(), content: content.into(), tool_call_id, name, tool_calls: None }
    }
}

fn content_from_openai<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    match v {
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(|t| t.as_str()).unwrap_or("text");
                match (kind, part.get("text").and_then(|t| t.as_str())) {
                    ("text", Some(text)) => texts.push(text),
                    ("text", None) => {
                        return Err(D::Error::custom(format!("content part {i}: text part without `text`")))
                    }
                    (other, _) => {
                        return Err(D::Error::custom(format!(
                            "content part {i}: `{other}` parts are not supported, only text"
                        )))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        other => Err(D::Error::custom(format!("content must be a string, null or an array of parts, not {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shapes() {
        let m: ChatMessage = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        assert_eq!(m, ChatMessage::user("hi"));
        let m: ChatMessage = serde_json::from_str(
            r#"{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}"#,
        )
        .unwrap();
        assert_eq!(m.content, "");
        assert!(m.tool_calls.is_some());
        let m: ChatMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(m.content, "a\nb");
        let m: ChatMessage = serde_json::from_str(r#"{"role":"tool","content":"42","tool_call_id":"c1"}"#).unwrap();
        assert_eq!(m.tool_call_id.as_deref(), Some("c1"));
        let err = serde_json::from_str::<ChatMessage>(
            r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("image_url"), "{err}");
        let m: ChatMessage = serde_json::from_str(r#"{"role":"assistant"}"#).unwrap();
        assert_eq!(m.content, "");
    }
}
