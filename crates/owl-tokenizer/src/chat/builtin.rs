//! Templates owl supplies when a model file carries none.
//!
//! The rule, in order:
//! 1. the model's own template (GGUF `tokenizer.chat_template`, or `chat_template.jinja` /
//!    `tokenizer_config.json` in an HF directory);
//! 2. a built-in template for a family whose files are known to ship without one: Gemma
//!    (`general.architecture` `gemma`, `gemma2`, `gemma3`, `gemma3n`): Google's Gemma 3
//!    template (the Gemma 1/2 turn format plus system-prompt folding);
//! 3. otherwise ChatML (`<|im_start|>role\n...<|im_end|>\n`), the same default llama.cpp uses.
//!
//! [`TemplateOrigin`](super::TemplateOrigin) tells callers which one they got.

/// Gemma 3's chat template (`gemma.jinja`) as Google publishes it in `tokenizer_config.json` of the
/// gemma-3-*-it repositories: `<start_of_turn>user\n...<end_of_turn>\n`, assistant turns
/// as `model`, a system message folded into the first user turn.
pub const GEMMA_TEMPLATE: &str = include_str!("gemma.jinja");

/// ChatML (`chatml.jinja`), for models with no template of their own and no built-in one.
pub const CHATML_TEMPLATE: &str = include_str!("chatml.jinja");

/// The built-in template for a GGUF `general.architecture`, if owl has one.
pub fn builtin_template_for_architecture(architecture: &str) -> Option<&'static str> {
    match architecture {
        "gemma" | "gemma2" | "gemma3" | "gemma3n" => Some(GEMMA_TEMPLATE),
        _ => None,
    }
}

/// Templates `--template NAME` can name.
pub const BUILTIN_TEMPLATES: [(&str, &str); 2] = [("chatml", CHATML_TEMPLATE), ("gemma", GEMMA_TEMPLATE)];

/// The built-in template called `name` (case-insensitive), if there is one.
pub fn builtin_template(name: &str) -> Option<&'static str> {
    BUILTIN_TEMPLATES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, t)| t)
}
