//! A conversation to prompt ids, the same for every dialect: the tools shown to the model
//! in its own format, the chat template rendered off the async workers, and how the reply
//! will be read back (reasoning, content, calls).

use std::sync::Arc;

use owl_engine::GrammarSpec;
use owl_tokenizer::ChatMessage;

use crate::error::ApiError;
use crate::tools::{format, ReplyParser, ReplyPiece, ToolFormat, ToolRequest};
use crate::SharedState;

/// How a reply is split into reasoning, content and calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySplit {
    /// The call format, when tools were offered.
    pub tools: Option<ToolFormat>,
    /// The offered tools' names.
    pub names: Arc<[String]>,
    /// `<think>` sections are reasoning.
    pub think: bool,
    /// The prompt ends inside an open `<think>`.
    pub in_think: bool,
}

impl ReplySplit {
    pub fn parser(&self) -> ReplyParser {
        ReplyParser::new(self.tools, self.think, self.in_think).with_tool_names(self.names.clone())
    }

    /// The pieces of a whole (not streamed) reply.
    pub fn pieces(&self, text: &str) -> Vec<ReplyPiece> {
        let mut parser = self.parser();
        let mut pieces = Vec::new();
        parser.push(text, &mut pieces);
        parser.finish(&mut pieces);
        pieces
    }
}

/// A rendered conversation.
pub struct ChatPrompt {
    pub ids: Vec<u32>,
    /// `None`: the reply is all content, passed on as it is.
    pub split: Option<ReplySplit>,
    /// The grammar that makes the reply a call (`tool_choice` required or named).
    pub forced_call: Option<GrammarSpec>,
}

/// Renders `messages` with `tools` through the model's template. `no_template`: what a
/// base model's client should use instead (each dialect has its own answer).
pub async fn render(
    state: &SharedState,
    messages: Vec<ChatMessage>,
    tools: &ToolRequest,
    no_template: &str,
) -> Result<ChatPrompt, ApiError> {
    let renderer = state.model.renderer.clone().ok_or_else(|| {
        ApiError::bad_request(format!("'{}' has no chat template (a base model): {no_template}", state.model.name))
    })?;
    let tool_format = state.tool_format;
    let messages = format::prepare_messages(tool_format, messages, tools);
    let template_tools = (tools.active() && tool_format.native()).then(|| tools.template_tools());
    let ids = tokio::task::spawn_blocking(move || renderer.render(&messages, template_tools.as_ref()))
        .await
        .map_err(|e| ApiError::internal(format!("chat template: {e}")))?
        .map_err(|e| ApiError::field("messages", e))?;
    let in_think = state.think && prompt_opens_think(state, &ids);
    let split = (tools.active() || state.think).then_some(ReplySplit {
        tools: tools.active().then_some(tool_format),
        names: tools.callable().iter().map(|t| t.name.clone()).collect(),
        think: state.think,
        in_think,
    });
    let forced_call =
        if tools.active() { format::forced_call_grammar(tool_format, tools, &state.model.tokenizer) } else { None };
    Ok(ChatPrompt { ids, split, forced_call })
}

/// Whether the generation prompt ends inside `<think>` (DeepSeek-R1's template opens the
/// section for the model; Qwen3's closes an empty one when thinking is off).
fn prompt_opens_think(state: &SharedState, ids: &[u32]) -> bool {
    let tail = &ids[ids.len().saturating_sub(8)..];
    let text = state.model.tokenizer.decode(tail, false).unwrap_or_default();
    text.trim_end().ends_with("<think>")
}
