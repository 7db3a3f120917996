//! Training data: JSON Lines in the three shapes fine-tuning tools read, turned into token
//! sequences with the predictions that count.
//!
//! - `{"messages": [{"role": .., "content": ..}, ...]}`: a chat, through the model's chat
//!   template; only the assistant turns are learned (each turn's tokens, its end-of-turn
//!   marker included, as the template writes it).
//! - `{"prompt": .., "completion": ..}`: the completion is learned, then end-of-sequence.
//! - `{"text": ..}`: every token is learned.
//!
//! A bad line (not JSON, no such field, an empty chat, a sequence longer than the context)
//! is reported with its line number; the caller decides whether one stops the run.

use std::path::Path;

use serde_json::Value;

use crate::train::Example;

/// One message of a chat record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// One record, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Chat(Vec<Message>),
    PromptCompletion { prompt: String, completion: String },
    Text(String),
}

/// A line that cannot be trained on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// What the data needs from the model's tokenizer and chat template.
pub trait Encoder {
    /// Token ids of `text`; `add_special`: with the tokens the model adds to a text (BOS).
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, String>;
    /// The chat template over `messages` as text; `generation_prompt`: ending with the
    /// opening of the assistant's next turn. `Err` when the model has no template.
    fn render(&self, messages: &[Message], generation_prompt: bool) -> Result<String, String>;
    /// Token ids of a rendered chat (special-token text recognised; BOS only where the
    /// template did not write it).
    fn encode_chat(&self, text: &str) -> Result<Vec<u32>, String>;
    /// The end-of-sequence token appended to a completion.
    fn eos(&self) -> Option<u32>;
}

/// Parses one line.
pub fn parse_record(line: &str) -> Result<Record, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let text = |key: &str| -> Result<Option<String>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("\"{key}\" is not a string")),
        }
    };
    if let Some(messages) = obj.get("messages") {
        let list = messages.as_array().ok_or("\"messages\" is not an array")?;
        let mut out = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).ok_or(format!("message {i} has no \"role\" string"))?;
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(format!("message {i} has no \"content\" string")),
            };
            out.push(Message { role: role.to_string(), content });
        }
        if !out.iter().any(|m| m.role == "assistant") {
            return Err("the chat has no assistant message to learn".into());
        }
        return Ok(Record::Chat(out));
    }
    match (text("prompt")?, text("completion")?) {
        (Some(prompt), Some(completion)) => return Ok(Record::PromptCompletion { prompt, completion }),
        (Some(_), None) => return Err("\"prompt\" without \"completion\"".into()),
        (None, Some(_)) => return Err("\"completion\" without \"prompt\"".into()),
        (None, None) => {}
    }
    match text("text")? {
        Some(t) if !t.is_empty() => Ok(Record::Text(t)),
        Some(_) => Err("\"text\" is empty".into()),
        None => Err("none of \"messages\", \"prompt\"/\"completion\" or \"text\"".into()),
    }
}

/// A record as tokens and the predictions that count.
pub fn encode_record(record: &Record, enc: &dyn Encoder) -> Result<Example, String> {
    match record {
        Record::Text(t) => {
            let tokens = enc.encode(t, true)?;
            if tokens.len() < 2 {
                return Err("fewer than two tokens".into());
            }
            Ok(Example::all(tokens))
        }
        Record::PromptCompletion { prompt, completion } => {
            let mut tokens = enc.encode(prompt, true)?;
            let start = tokens.len();
            tokens.extend(enc.encode(completion, false)?);
            tokens.extend(enc.eos());
            if tokens.len() <= start || start == 0 {
                return Err("an empty prompt or completion".into());
            }
            // Position t predicts token t + 1: the completion's tokens are predicted from
            // start - 1 on.
            let weights = (0..tokens.len() - 1).map(|t| if t + 1 >= start { 1.0 } else { 0.0 }).collect();
            Ok(Example { tokens, weights })
        }
        Record::Chat(messages) => {
            let mut tokens: Vec<u32> = Vec::new();
            let mut learned: Vec<(usize, usize)> = Vec::new();
            for i in messages.iter().enumerate().filter(|(_, m)| m.role == "assistant").map(|(i, _)| i) {
                let before = enc.encode_chat(&enc.render(&messages[..i], true)?)?;
                let after = enc.encode_chat(&enc.render(&messages[..=i], false)?)?;
                if !after.starts_with(&before) || !after.starts_with(&tokens) || after.len() <= before.len() {
                    return Err(format!(
                        "the chat template does not extend turn {i} token by token (its rendering of the \
                         conversation so far changes when the turn is added)"
                    ));
                }
                learned.push((before.len(), after.len()));
                tokens = after;
            }
            let mut weights = vec![0.0; tokens.len().saturating_sub(1)];
            for (start, end) in learned {
                for w in &mut weights[start.saturating_sub(1)..end - 1] {
                    *w = 1.0;
                }
            }
            Ok(Example { tokens, weights })
        }
    }
}

/// The good examples of a file with their line numbers, and every bad line.
pub type Dataset = (Vec<(usize, Example)>, Vec<BadLine>);

/// The training examples of a JSONL file: the good ones with their line numbers, and every
/// bad line. Sequences longer than `max_tokens` are bad lines too (never cut silently).
pub fn read_jsonl(path: &Path, enc: &dyn Encoder, max_tokens: usize) -> Result<Dataset, std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let result = parse_record(line).and_then(|r| encode_record(&r, enc)).and_then(|e| {
            if e.tokens.len() > max_tokens {
                Err(format!("{} tokens, more than the context of {max_tokens}", e.tokens.len()))
            } else {
                Ok(e)
            }
        });
        match result {
            Ok(e) => good.push((line_no, e)),
            Err(reason) => bad.push(BadLine { line: line_no, reason }),
        }
    }
    Ok((good, bad))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Characters as tokens; a template of `<role>content</>` blocks.
    struct Chars;

    impl Encoder for Chars {
        fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, String> {
            Ok(add_special.then_some(1).into_iter().chain(text.chars().map(|c| c as u32)).collect())
        }
        fn render(&self, messages: &[Message], generation_prompt: bool) -> Result<String, String> {
            let mut s: String = messages.iter().map(|m| format!("<{}>{}</>", m.role, m.content)).collect();
            if generation_prompt {
                s.push_str("<assistant>");
            }
            Ok(s)
        }
        fn encode_chat(&self, text: &str) -> Result<Vec<u32>, String> {
            self.encode(text, false)
        }
        fn eos(&self) -> Option<u32> {
            Some(2)
        }
    }

    fn learned(e: &Example) -> String {
        e.weights
            .iter()
            .enumerate()
            .filter(|(_, &w)| w > 0.0)
            .map(|(t, _)| char::from_u32(e.tokens[t + 1]).unwrap_or('§'))
            .collect()
    }

    #[test]
    fn chats_learn_the_assistant_turns_only() {
        let r = parse_record(
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"},{"role":"user","content":"?"},{"role":"assistant","content":"ok"}]}"#,
        )
        .unwrap();
        let e = encode_record(&r, &Chars).unwrap();
        assert_eq!(learned(&e), "yo</>ok</>");
        let pc = encode_record(&parse_record(r#"{"prompt":"ab","completion":"cd"}"#).unwrap(), &Chars).unwrap();
        assert_eq!(pc.tokens, [1, 97, 98, 99, 100, 2]);
        assert_eq!(pc.weights, [0.0, 0.0, 1.0, 1.0, 1.0]);
        let t = encode_record(&parse_record(r#"{"text":"xyz"}"#).unwrap(), &Chars).unwrap();
        assert_eq!(t.weights, [1.0; 3]);
    }

    #[test]
    fn bad_lines_say_why() {
        for (line, want) in [
            ("{", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "no assistant message"),
            (r#"{"messages":[{"role":"user"}]}"#, "no \"content\""),
            (r#"{"prompt":"x"}"#, "without \"completion\""),
            (r#"{"text":3}"#, "not a string"),
            (r#"{"other":1}"#, "none of"),
        ] {
            let err = parse_record(line).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn files_report_line_numbers_and_long_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, "{\"text\":\"abc\"}\n\nnot json\n{\"text\":\"a much longer line\"}\n").unwrap();
        let (good, bad) = read_jsonl(&path, &Chars, 10).unwrap();
        assert_eq!(good.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1]);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), [3, 4]);
        assert!(bad[1].reason.contains("more than the context of 10"), "{}", bad[1]);
    }
}
