//! Chat prompts rendered by owl equal transformers' `apply_chat_template` for the same
//! messages (tests/data/chat_expected.json): the demo models' own templates (SmolLM2,
//! Qwen2.5 with tools), the built-in Gemma template and the ChatML fallback.

use owl_tokenizer::{ChatMessage, TemplateOrigin, Tokenizer};

use crate::support::{data, diff, ids, tokenizer, vocab};

/// OpenAI-style messages: tool-call arguments as JSON text, as API clients send them.
fn openai_messages(messages: &serde_json::Value) -> Vec<ChatMessage> {
    let mut messages = messages.clone();
    for m in messages.as_array_mut().unwrap() {
        if let Some(calls) = m.get_mut("tool_calls").and_then(|c| c.as_array_mut()) {
            for call in calls {
                let args = &mut call["function"]["arguments"];
                *args = serde_json::Value::String(serde_json::to_string(args).unwrap());
            }
        }
    }
    serde_json::from_value(messages).expect("messages deserialize as OpenAI messages")
}

fn fallback_tokenizer() -> Tokenizer {
    let mut v = vocab("smollm2").clone();
    v.chat_template = None;
    Tokenizer::from_gguf_vocab(&v).unwrap()
}

#[test]
fn rendered_prompts_match_apply_chat_template() {
    let expected = data("chat_expected.json");
    let scenarios = expected["scenarios"].as_object().unwrap();
    let fallback = fallback_tokenizer();
    let mut checked = 0;
    for (key, entry) in expected["templates"].as_object().unwrap() {
        let (tok, origin) = match key.as_str() {
            "smollm2" => (tokenizer("smollm2"), TemplateOrigin::Model),
            "qwen2.5-coder" => (tokenizer("qwen2.5-coder"), TemplateOrigin::Model),
            "gemma3" => (tokenizer("gemma3"), TemplateOrigin::Builtin),
            "chatml_fallback" => (&fallback, TemplateOrigin::Fallback),
            other => panic!("unexpected template {other}"),
        };
        let template = tok.chat_template().unwrap_or_else(|| panic!("{key}: no template"));
        assert_eq!(template.origin(), origin, "{key}");
        assert_eq!(template.bos_token(), entry["bos_token"].as_str().unwrap(), "{key} bos");
        assert_eq!(template.eos_token(), entry["eos_token"].as_str().unwrap(), "{key} eos");
        for (name, result) in entry["results"].as_object().unwrap() {
            let sc = &scenarios[name];
            let messages = openai_messages(&sc["messages"]);
            let tools = sc.get("tools");
            let add_gen = sc["add_generation_prompt"].as_bool().unwrap();
            let rendered = template.render(&messages, tools, add_gen);
            match result.get("rendered").and_then(|r| r.as_str()) {
                Some(want) => {
                    let got = rendered.unwrap_or_else(|e| panic!("{key}/{name}: {e}"));
                    assert_eq!(got, want, "{key}/{name}");
                    let got_ids = tok.encode(&got, false, true).unwrap();
                    let want_ids = ids(&result["ids"]);
                    assert_eq!(got_ids, want_ids, "{key}/{name} ids: {}", diff(&got_ids, &want_ids, tok));
                }
                None => {
                    // the template refuses these messages in transformers too
                    assert!(rendered.is_err(), "{key}/{name}: expected an error like {}", result["error"]);
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
}

#[test]
fn tool_calls_round_trip_through_the_qwen_template() {
    let tok = tokenizer("qwen2.5-coder");
    let template = tok.chat_template().unwrap();
    let tools = serde_json::json!([{"type": "function", "function": {"name": "add", "description": "Add two numbers",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}]);
    let messages: Vec<ChatMessage> = serde_json::from_value(serde_json::json!([
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "5"}
    ]))
    .unwrap();
    let prompt = template.render(&messages, Some(&tools), true).unwrap();
    assert!(prompt.contains("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"add\""), "{prompt}");
    assert!(prompt.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 3}}\n</tool_call><|im_end|>"), "{prompt}");
    assert!(
        prompt.contains("<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
        "{prompt}"
    );
    // and the prompt tokenizes with <tool_call> as one token
    let ids = tok.encode(&prompt, false, true).unwrap();
    assert!(ids.contains(&tok.token_to_id("<tool_call>").unwrap()));
}
