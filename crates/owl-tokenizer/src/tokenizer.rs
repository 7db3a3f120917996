//! [`Tokenizer`]: text to ids and back for one model, with its chat template.

use std::path::Path;
use std::sync::Arc;

use owl_formats::gguf::GgufFile;

use crate::chat::{builtin_template_for_architecture, ChatTemplate, TemplateOrigin, CHATML_TEMPLATE};
use crate::decode::DecodeTable;
use crate::engine::Engine;
use crate::error::{TemplateError, TokenizerError};
use crate::from_gguf::{build_from_gguf_vocab, Built};
use crate::gguf_vocab::GgufVocab;
use crate::piece_table::PieceTable;
use crate::stream::StreamDecoder;

/// A model's tokenizer: encoding, decoding (whole or streamed), special tokens, chat template.
pub struct Tokenizer {
    engine: Arc<Engine>,
    /// Per-token bytes; `None` for tokenizer.json decoders owl has no table for, which are
    /// then run by the engine itself.
    table: Option<Arc<DecodeTable>>,
    /// The vocabulary piece of each id (empty where an id has none).
    pieces: Arc<PieceTable>,
    special: Vec<bool>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    eog_ids: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    description: String,
    chat_template: Option<ChatTemplate>,
    chat_template_error: Option<TemplateError>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.description)
            .field("vocab_size", &self.pieces.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("eog_ids", &self.eog_ids)
            .finish()
    }
}

/// The parts both loaders produce.
pub(crate) struct TokenizerParts {
    pub engine: Engine,
    pub table: Option<DecodeTable>,
    pub pieces: Arc<PieceTable>,
    pub special: Vec<bool>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub eog_ids: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub description: String,
    pub chat_template: Result<Option<ChatTemplate>, TemplateError>,
}

impl Tokenizer {
    /// The tokenizer a GGUF file describes (`tokenizer.*` metadata).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_gguf_vocab(&GgufVocab::from_gguf(gguf)?)
    }

    /// Builds from vocabulary data already read (see [`GgufVocab::from_gguf`]).
    pub fn from_gguf_vocab(vocab: &GgufVocab) -> Result<Tokenizer, TokenizerError> {
        let Built { engine, table, pieces, eog_ids, add_bos, add_eos, description } = build_from_gguf_vocab(vocab)?;
        let special: Vec<bool> = (0..pieces.len() as u32).map(|i| table.is_special(i)).collect();
        let token_text = |id: Option<u32>| id.and_then(|i| vocab.tokens.get(i as usize)).cloned().unwrap_or_default();
        let (bos, eos) = (token_text(vocab.bos_id), token_text(vocab.eos_id));
        let chat_template = match &vocab.chat_template {
            Some(src) => ChatTemplate::with_origin(src, &bos, &eos, TemplateOrigin::Model).map(Some),
            None => match builtin_template_for_architecture(&vocab.architecture) {
                Some(src) => ChatTemplate::with_origin(src, &bos, &eos, TemplateOrigin::Builtin).map(Some),
                None => ChatTemplate::with_origin(CHATML_TEMPLATE, &bos, &eos, TemplateOrigin::Fallback).map(Some),
            },
        };
        Ok(Tokenizer::from_parts(TokenizerParts {
            engine,
            table: Some(table),
            pieces,
            special,
            bos_id: vocab.bos_id,
            eos_id: vocab.eos_id,
            eog_ids,
            add_bos,
            add_eos,
            description,
            chat_template,
        }))
    }

    /// A Hugging Face tokenizer directory: `tokenizer.json`, plus `tokenizer_config.json`
    /// (special tokens, BOS/EOS flags, chat template), `chat_template.jinja` and
    /// `generation_config.json` (extra end-of-generation ids) when present.
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        crate::from_hf::load_hf_dir(dir).map(Tokenizer::from_parts)
    }

    pub(crate) fn from_parts(p: TokenizerParts) -> Tokenizer {
        let (chat_template, chat_template_error) = match p.chat_template {
            Ok(t) => (t, None),
            Err(e) => (None, Some(e)),
        };
        Tokenizer {
            engine: Arc::new(p.engine),
            table: p.table.map(Arc::new),
            pieces: p.pieces,
            special: p.special,
            bos_id: p.bos_id,
            eos_id: p.eos_id,
            eog_ids: p.eog_ids,
            add_bos: p.add_bos,
            add_eos: p.add_eos,
            description: p.description,
            chat_template,
            chat_template_error,
        }
    }

    /// Text to ids. `add_bos`: add the special tokens the model adds by default (BOS for
    /// Llama/Gemma, nothing for Qwen/SmolLM). `parse_special`: special-token text such as
    /// `<|im_end|>` becomes its id; off, it is tokenized as ordinary text.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        self.engine.encode(text, add_bos, parse_special)
    }

    /// The ids of text that `template` rendered: special-token text parsed, and the model's
    /// BOS added unless the template already wrote it (as llama.cpp's server does).
    pub fn encode_rendered(&self, template: &ChatTemplate, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let bos = template.bos_token();
        let template_wrote_bos = !bos.is_empty() && text.starts_with(bos);
        self.encode(text, !template_wrote_bos, true)
    }

    /// Ids to text. `skip_special` leaves out special tokens (BOS, `<|im_end|>`, ...).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        match &self.table {
            Some(t) => t.decode(ids, skip_special),
            None => {
                if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.pieces.len()) {
                    return Err(TokenizerError::IdOutOfRange { id, vocab_size: self.pieces.len() });
                }
                self.engine.hf_decode(ids, skip_special)
            }
        }
    }

    /// A decoder for generated tokens that yields whole UTF-8 text as it becomes available.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder {
        match &self.table {
            Some(t) => StreamDecoder::with_table(t.clone(), skip_special),
            None => StreamDecoder::with_engine(self.engine.clone(), self.pieces.len(), skip_special),
        }
    }

    /// The raw vocabulary piece of `id` (`Ġcapital`, `▁France`, `<|im_end|>`).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get_piece(id).filter(|p| !p.is_empty())
    }

    /// The bytes `id` decodes to on its own (special tokens as their text): what OpenAI's
    /// logprobs call a token's `bytes`. `None` for an id outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        if id as usize >= self.pieces.len() {
            return None;
        }
        match &self.table {
            Some(t) => t.token_bytes(id, false).ok().flatten().map(<[u8]>::to_vec),
            None => self.engine.hf_decode(&[id], false).ok().map(String::into_bytes),
        }
    }

    /// Number of ids (every id below it is valid).
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// All ids that end generation (eos, eot, `<|im_end|>`, `<end_of_turn>`, ...), sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog_ids
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog_ids.binary_search(&id).is_ok()
    }

    /// Whether `id` is a special token (hidden when decoding with `skip_special`).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Whether [`Tokenizer::encode`] with `add_bos` prepends BOS / appends EOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// One line on what kind of tokenizer this is (for `owl inspect`).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The chat template: the model's own, else owl's built-in one for the family, else
    /// ChatML (see [`ChatTemplate::origin`]). `None` only when the model's template does
    /// not compile ([`Tokenizer::chat_template_error`] says why).
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    pub fn chat_template_error(&self) -> Option<&TemplateError> {
        self.chat_template_error.as_ref()
    }

    /// Compiles another template (`--template`) for this tokenizer: rendered with its BOS
    /// and EOS strings, with [`TemplateOrigin::User`].
    pub fn template_from_source(&self, source: &str) -> Result<ChatTemplate, TemplateError> {
        let text = |id: Option<u32>| id.and_then(|i| self.piece(i)).unwrap_or_default().to_string();
        ChatTemplate::with_origin(source, &text(self.bos_id), &text(self.eos_id), TemplateOrigin::User)
    }

    /// This tokenizer as a Hugging Face `tokenizer.json` document (for writing HF model
    /// directories); the BOS/EOS the model adds become a `TemplateProcessing` post-processor.
    pub fn to_tokenizer_json(&self, pretty: bool) -> Result<String, TokenizerError> {
        self.engine.to_json(&self.pieces, pretty)
    }

    /// The id of a piece, when the vocabulary has it.
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        use tokenizers::Model;
        self.engine
            .pipeline()
            .get_added_vocabulary()
            .token_to_id(piece, self.engine.pipeline().get_model())
            .or_else(|| self.engine.pipeline().get_model().token_to_id(piece))
    }
}
