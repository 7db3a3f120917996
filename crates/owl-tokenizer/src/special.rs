//! Which tokens end generation.
//!
//! llama.cpp's rule (`llama_vocab::impl::load`, src/llama-vocab.cpp): the eos/eot/eom ids the
//! file declares, the FIM pad/repo/separator ids (declared or found by their text — so
//! SmolLM2's `<reponame>` counts, as in llama.cpp), and every token whose text is one of the
//! well-known end markers (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, `<|endoftext|>`, …),
//! because many files declare only one of the several tokens a chat model may end with.

use crate::gguf_vocab::GgufVocab;

/// Token texts that end a turn in the families llama.cpp knows.
pub const EOG_TEXTS: [&str; 12] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Texts by which llama.cpp finds the FIM pad / repository / file-separator tokens when the
/// file does not declare them (these end generation too).
const FIM_PAD_TEXTS: [&str; 4] = ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"];
const FIM_REP_TEXTS: [&str; 5] = ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: [&str; 1] = ["<|file_sep|>"];

/// The declared id, else the first token whose text is one of `texts`.
fn declared_or_found(declared: Option<u32>, tokens: &[String], texts: &[&str]) -> Option<u32> {
    declared.or_else(|| texts.iter().find_map(|t| tokens.iter().position(|tok| tok == t)).map(|i| i as u32))
}

/// End-of-generation ids for a vocabulary given by its token texts and declared ids.
pub(crate) fn eog_ids_from_pieces(tokens: &[String], vocab: &GgufVocab) -> Vec<u32> {
    let mut ids: Vec<u32> = [
        declared_or_found(vocab.fim_pad_id, tokens, &FIM_PAD_TEXTS),
        declared_or_found(vocab.fim_rep_id, tokens, &FIM_REP_TEXTS),
        declared_or_found(vocab.fim_sep_id, tokens, &FIM_SEP_TEXTS),
    ]
    .into_iter()
    .flatten()
    .collect();
    ids.extend(tokens.iter().enumerate().filter(|(_, t)| EOG_TEXTS.contains(&t.as_str())).map(|(i, _)| i as u32));
    ids.extend([vocab.eos_id, vocab.eot_id, vocab.eom_id].into_iter().flatten());
    finish(ids, tokens)
}

/// Sorted, deduplicated; with llama.cpp's gpt-oss exception: when `<|return|>` and
/// `<|call|>` both end generation, `<|end|>` does not (it separates messages there).
pub(crate) fn finish(mut ids: Vec<u32>, tokens: &[String]) -> Vec<u32> {
    ids.sort_unstable();
    ids.dedup();
    let text = |id: u32| tokens.get(id as usize).map(String::as_str).unwrap_or("");
    let has = |t: &str| ids.iter().any(|&i| text(i) == t);
    if has("<|return|>") && has("<|call|>") {
        ids.retain(|&i| text(i) != "<|end|>");
    }
    ids
}
