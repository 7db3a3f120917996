//! Building a tokenizer from a [`GgufVocab`].
//!
//! - `gpt2`: byte-level BPE from the file's tokens and merges, the pre-tokenizer split of
//!   `tokenizer.ggml.pre` ([`crate::pretokenize`]), Llama 3/Tekken's `ignore_merges`.
//! - `llama` (SentencePiece BPE: Llama 2, Mistral, Phi-3, Gemma): BPE with byte fallback;
//!   merges from the file when present, otherwise the merges the vocabulary implies
//!   ([`crate::merges`]), applied without building the list ([`crate::spm_model`]);
//!   a prefix space from `add_space_prefix` (default on) added to
//!   every text segment, as SentencePiece and llama.cpp do.
//!   Gemma (and `gemma4` files): no prefix space, tokens of two or more spaces respelled
//!   `▁▁…` (the file stores them with real spaces), merges ranked by file position.
//!
//! Token types: control (3) tokens and the bos/eos/unk/pad ids are special added tokens
//! (matched in text only when special parsing is on, hidden by `skip_special`); unknown (2)
//! is special too; user-defined (4) tokens are plain added tokens, always matched whole.
//! This is the shape transformers' GGUF conversion produces
//! (integrations/gguf/gguf_tokenizer_mapping.py) and llama.cpp's token attributes mean.

use std::sync::Arc;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, TokenizerBuilder,
};

use crate::bpe_model::{BpeModel, BpeOptions};
use crate::decode::{byte_to_unicode_table, byte_token_value, DecodeTable, PieceRule};
use crate::engine::{Engine, Pipeline, SharedModel};
use crate::error::TokenizerError;
use crate::gguf_vocab::{GgufVocab, TokenType};
use crate::piece_table::PieceTable;
use crate::pretokenize::{pre_tokenizer_spec, PreSplit};
use crate::special::eog_ids_from_pieces;
use crate::spm_model::SpmModel;

/// What a build produces, before the chat template is attached.
pub(crate) struct Built {
    pub engine: Engine,
    pub table: DecodeTable,
    pub pieces: Arc<PieceTable>,
    pub eog_ids: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub description: String,
}

const SPACE_PIECE: &str = "\u{2581}";

pub(crate) fn is_gemma(vocab: &GgufVocab) -> bool {
    vocab.model == "gemma4" || matches!(vocab.architecture.as_str(), "gemma" | "gemma2" | "gemma3" | "gemma3n")
}

pub(crate) fn build_from_gguf_vocab(vocab: &GgufVocab) -> Result<Built, TokenizerError> {
    check_vocabulary(vocab)?;
    match vocab.model.as_str() {
        "gpt2" => build_byte_level(vocab),
        "llama" | "gemma4" => build_sentencepiece(vocab),
        other => Err(TokenizerError::UnsupportedModel(other.to_string())),
    }
}

/// What every tokenizer family needs of a vocabulary: tokens, special ids inside it, and
/// byte tokens that really are `<0xHH>` (a byte-typed `<0x-1>` or `<0xZZ>` is how
/// CVE-2025-49847-class loaders were made to write outside their byte table).
fn check_vocabulary(vocab: &GgufVocab) -> Result<(), TokenizerError> {
    let n = vocab.tokens.len();
    if n == 0 {
        return Err(TokenizerError::BadKey { key: "tokenizer.ggml.tokens", problem: "the vocabulary is empty".into() });
    }
    let ids = [
        ("tokenizer.ggml.bos_token_id", vocab.bos_id),
        ("tokenizer.ggml.eos_token_id", vocab.eos_id),
        ("tokenizer.ggml.unknown_token_id", vocab.unk_id),
        ("tokenizer.ggml.padding_token_id", vocab.pad_id),
        ("tokenizer.ggml.eot_token_id", vocab.eot_id),
        ("tokenizer.ggml.eom_token_id", vocab.eom_id),
    ];
    for (key, id) in ids {
        if let Some(id) = id.filter(|&id| id as usize >= n) {
            return Err(TokenizerError::BadKey {
                key,
                problem: format!("token id {id} is outside the vocabulary of {n} tokens"),
            });
        }
    }
    if let Some((i, score)) = vocab.scores.iter().flatten().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(TokenizerError::BadKey {
            key: "tokenizer.ggml.scores",
            problem: format!("token {i} has score {score}; scores must be finite numbers"),
        });
    }
    for (i, text) in vocab.tokens.iter().enumerate() {
        if vocab.token_type(i) == TokenType::Byte && byte_token_value(text).is_none() {
            return Err(TokenizerError::BadKey {
                key: "tokenizer.ggml.token_type",
                problem: format!("token {i} is typed as a byte token, but its text {text:?} is not <0xHH>"),
            });
        }
    }
    Ok(())
}

/// Ids that are special: control and unknown types plus the declared bos/eos/unk/pad.
fn special_flags(vocab: &GgufVocab) -> Vec<bool> {
    let mut special: Vec<bool> = (0..vocab.tokens.len())
        .map(|i| matches!(vocab.token_type(i), TokenType::Control | TokenType::Unknown))
        .collect();
    for id in [vocab.bos_id, vocab.eos_id, vocab.unk_id, vocab.pad_id].into_iter().flatten() {
        special[id as usize] = true;
    }
    special
}

/// The added tokens: special ones and user-defined ones whose text is a vocabulary key.
fn added_tokens(vocab: &GgufVocab, special: &[bool], keys: &PieceTable) -> (Vec<AddedToken>, Vec<AddedToken>) {
    let mut specials = Vec::new();
    let mut users = Vec::new();
    for (i, text) in vocab.tokens.iter().enumerate() {
        let user_defined = vocab.token_type(i) == TokenType::UserDefined;
        if !(special[i] || user_defined) || text.is_empty() || keys.get(text) != Some(i as u32) {
            continue;
        }
        if special[i] {
            specials.push(AddedToken::from(text.clone(), true).normalized(false));
        } else {
            users.push(AddedToken::from(text.clone(), false).normalized(false));
        }
    }
    (specials, users)
}

fn finish_pipeline(
    model: SharedModel,
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    decoder: DecoderWrapper,
    specials: Vec<AddedToken>,
    users: Vec<AddedToken>,
) -> Result<Pipeline, TokenizerError> {
    let mut pipeline: Pipeline = TokenizerBuilder::new()
        .with_model(model)
        .with_normalizer(normalizer)
        .with_pre_tokenizer(pre_tokenizer)
        .with_post_processor(None)
        .with_decoder(Some(decoder))
        .build()
        .map_err(TokenizerError::engine)?;
    pipeline.add_special_tokens(specials).map_err(TokenizerError::engine)?;
    pipeline.add_tokens(users).map_err(TokenizerError::engine)?;
    Ok(pipeline)
}

fn prefix_suffix(vocab: &GgufVocab, add_bos: bool, add_eos: bool) -> (Vec<u32>, Vec<u32>) {
    let prefix = if add_bos { vocab.bos_id.into_iter().collect() } else { Vec::new() };
    let suffix = if add_eos { vocab.eos_id.into_iter().collect() } else { Vec::new() };
    (prefix, suffix)
}

fn build_byte_level(vocab: &GgufVocab) -> Result<Built, TokenizerError> {
    let spec = pre_tokenizer_spec(vocab.pre.as_deref())
        .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer(vocab.pre.clone().unwrap_or_default()))?;
    let merges = vocab.merges.as_deref().ok_or(TokenizerError::MissingKey { key: "tokenizer.ggml.merges" })?;
    let byte_chars = byte_to_unicode_table();
    let mut in_alphabet = [false; 324];
    for c in byte_chars {
        in_alphabet[c as usize] = true;
    }
    let special = special_flags(vocab);
    // Vocabulary keys: byte-level pieces as stored; a normal token written in plain UTF-8
    // (outside the byte alphabet) is respelled so merges can reach it; added tokens keep
    // their text, which is what is matched in the input.
    let keys: Vec<std::borrow::Cow<'_, str>> = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let added = special[i] || vocab.token_type(i) == TokenType::UserDefined;
            if added || t.chars().all(|c| in_alphabet.get(c as usize).copied().unwrap_or(false)) {
                std::borrow::Cow::Borrowed(t.as_str())
            } else {
                std::borrow::Cow::Owned(t.bytes().map(|b| byte_chars[b as usize]).collect())
            }
        })
        .collect();
    let key_ids = Arc::new(PieceTable::new(&keys)?);
    // The tokenizer's own piece list is the file's text; it is the keys' table unless a
    // token was respelled (none is, on the byte-level vocabularies seen so far).
    let respelled = keys.iter().any(|k| matches!(k, std::borrow::Cow::Owned(_)));
    drop(keys);
    let options = BpeOptions { ignore_merges: spec.ignore_merges, ..BpeOptions::default() };
    let model = BpeModel::new(key_ids.clone(), merges, options)?;

    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    let mut gpt2_regex = false;
    for split in spec.splits {
        match split {
            PreSplit::Regex(re) => steps.push(
                Split::new(SplitPattern::Regex((*re).to_string()), SplitDelimiterBehavior::Isolated, false)
                    .map_err(TokenizerError::engine)?
                    .into(),
            ),
            PreSplit::Digits => steps.push(Digits::new(true).into()),
            PreSplit::Gpt2 => gpt2_regex = true,
        }
    }
    steps.push(ByteLevel::new(false, true, gpt2_regex).into());
    let pre = if steps.len() == 1 { steps.pop() } else { Some(PreSequence::new(steps).into()) };

    let (specials, users) = added_tokens(vocab, &special, &key_ids);
    let model = SharedModel::Bpe(Arc::new(model));
    let pipeline = finish_pipeline(model, None, pre, ByteLevel::new(false, true, true).into(), specials, users)?;
    let add_bos = vocab.add_bos.unwrap_or(spec.add_bos_default);
    let add_eos = vocab.add_eos.unwrap_or(false);
    let (prefix, suffix) = prefix_suffix(vocab, add_bos, add_eos);
    let pieces: Vec<Option<&str>> = vocab.tokens.iter().map(|t| Some(t.as_str())).collect();
    let table = DecodeTable::build_with_raw(&pieces, special, &PieceRule::ByteLevel, false, &vocab.raw_tokens)?;
    drop(pieces);
    Ok(Built {
        eog_ids: eog_ids_from_pieces(&vocab.tokens, vocab),
        engine: Engine::new(pipeline, prefix, suffix),
        table,
        pieces: if respelled { Arc::new(PieceTable::new(&vocab.tokens)?) } else { key_ids },
        add_bos,
        add_eos,
        description: format!(
            "byte-level BPE (gpt2), pre-tokenizer {}{}",
            vocab.pre.as_deref().unwrap_or("default"),
            if spec.ignore_merges { ", whole-word lookup" } else { "" }
        ),
    })
}

fn build_sentencepiece(vocab: &GgufVocab) -> Result<Built, TokenizerError> {
    let gemma = is_gemma(vocab);
    // Gemma stores its whitespace tokens ("  ", " \n") with real spaces; its tokenizer looks
    // them up as "▁▁" (one ▁ per character), so they are renamed before anything else.
    let pieces = Arc::new(PieceTable::new(vocab.tokens.iter().map(|t| -> std::borrow::Cow<'_, str> {
        if gemma && t.contains(' ') && t.trim().is_empty() {
            SPACE_PIECE.repeat(t.chars().count()).into()
        } else {
            t.as_str().into()
        }
    }))?);

    let model = match &vocab.merges {
        Some(m) => {
            // `tokenizers` names the unknown token by its text and looks that up, so a
            // repeated piece stands for its last id; the same here.
            let unk = vocab.unk_id.and_then(|u| pieces.get(pieces.piece(u)));
            let options = BpeOptions { byte_fallback: true, unk, fuse_unk: true, ..BpeOptions::default() };
            SharedModel::Bpe(Arc::new(BpeModel::new(pieces.clone(), m, options)?))
        }
        None => {
            // Merges implied by the vocabulary, ranked by score (Gemma: by file position).
            let rank: Vec<f32> = if gemma {
                (0..pieces.len()).map(|i| -(i as f32)).collect()
            } else {
                vocab.scores.clone().unwrap_or_else(|| vec![0.0; pieces.len()])
            };
            SharedModel::Spm(Arc::new(SpmModel::new(pieces.clone(), rank, vocab.unk_id)))
        }
    };

    let add_space_prefix = !gemma && vocab.add_space_prefix.unwrap_or(true);
    let replace = Replace::new(" ", SPACE_PIECE).map_err(TokenizerError::engine)?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new(SPACE_PIECE.to_string()).into(), replace.into()]).into()
    } else {
        replace.into()
    };
    let pre: Option<PreTokenizerWrapper> = if gemma {
        // GemmaTokenizer's own pre-tokenizer; after the normalizer there are no spaces
        // left, so it never splits, but keeping it keeps offsets identical.
        Some(
            Split::new(SplitPattern::String(" ".into()), SplitDelimiterBehavior::MergedWithPrevious, false)
                .map_err(TokenizerError::engine)?
                .into(),
        )
    } else {
        None
    };
    let mut decoders: Vec<DecoderWrapper> = vec![
        DecoderWrapper::Replace(Replace::new(SPACE_PIECE, " ").map_err(TokenizerError::engine)?),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }

    let special = special_flags(vocab);
    // transformers checks the file's spelling against the (respelled) vocabulary, so
    // Gemma's whitespace tokens are reached through merges, not matched as added tokens.
    let (specials, users) = added_tokens(vocab, &special, &pieces);
    let pipeline =
        finish_pipeline(model, Some(normalizer), pre, DecoderSequence::new(decoders).into(), specials, users)?;
    let add_bos = vocab.add_bos.unwrap_or(true);
    let add_eos = vocab.add_eos.unwrap_or(false);
    let (prefix, suffix) = prefix_suffix(vocab, add_bos, add_eos);
    let piece_refs: Vec<Option<&str>> = pieces.iter().map(Some).collect();
    let rule = PieceRule::SentencePiece { replace: Some((SPACE_PIECE.into(), " ".into())), byte_fallback: true };
    let table = DecodeTable::build_with_raw(&piece_refs, special, &rule, add_space_prefix, &vocab.raw_tokens)?;
    drop(piece_refs);
    Ok(Built {
        eog_ids: eog_ids_from_pieces(&vocab.tokens, vocab),
        engine: Engine::new(pipeline, prefix, suffix),
        table,
        pieces,
        add_bos,
        add_eos,
        description: format!(
            "SentencePiece BPE (llama){}{}",
            if vocab.merges.is_some() { "" } else { ", merges derived from the vocabulary" },
            if gemma {
                ", Gemma spacing"
            } else if add_space_prefix {
                ", prefix space"
            } else {
                ""
            }
        ),
    })
}
