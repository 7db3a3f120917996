//! The `tokenizers` pipeline, held twice over one shared model.
//!
//! Whether special-token text (`<|im_end|>`) is recognised is a mutable setting of a
//! `tokenizers` tokenizer (`set_encode_special_tokens`), but [`crate::Tokenizer::encode`]
//! takes it per call on `&self`. So the pipeline exists twice — one copy matching special
//! tokens, one treating them as text — both pointing at the same BPE model through an
//! `Arc`, so the large vocabulary and merge tables exist once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokenizers::models::TrainerWrapper;
use tokenizers::{
    DecoderWrapper, Model, ModelWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Token,
    TokenizerImpl,
};

use crate::bpe_model::BpeModel;
use crate::error::TokenizerError;
use crate::piece_table::PieceTable;
use crate::spm_model::SpmModel;

/// The model behind an `Arc`, so pipelines can share it: a `tokenizers` model (HF
/// directories), owl's merge-list BPE ([`BpeModel`]) or its merge-free SentencePiece BPE
/// ([`SpmModel`]) (GGUF vocabularies).
#[derive(Clone)]
pub(crate) enum SharedModel {
    Hf(Arc<ModelWrapper>),
    Bpe(Arc<BpeModel>),
    Spm(Arc<SpmModel>),
}

macro_rules! dispatch {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            SharedModel::Hf($m) => $e,
            SharedModel::Bpe($m) => $e,
            SharedModel::Spm($m) => $e,
        }
    };
}

impl Model for SharedModel {
    type Trainer = TrainerWrapper;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        dispatch!(self, m => m.tokenize(sequence))
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        dispatch!(self, m => m.token_to_id(token))
    }
    fn id_to_token(&self, id: u32) -> Option<String> {
        dispatch!(self, m => m.id_to_token(id))
    }
    fn get_vocab(&self) -> HashMap<String, u32> {
        dispatch!(self, m => m.get_vocab())
    }
    fn get_vocab_size(&self) -> usize {
        dispatch!(self, m => m.get_vocab_size())
    }
    fn save(&self, folder: &Path, prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        dispatch!(self, m => m.save(folder, prefix))
    }
    fn get_trainer(&self) -> Self::Trainer {
        dispatch!(self, m => m.get_trainer())
    }
}

impl Serialize for SharedModel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        dispatch!(self, m => m.serialize(s))
    }
}

impl<'de> Deserialize<'de> for SharedModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ModelWrapper::deserialize(d).map(|m| SharedModel::Hf(Arc::new(m)))
    }
}

pub(crate) type Pipeline =
    TokenizerImpl<SharedModel, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

/// The two pipelines plus the special ids added around a sequence.
pub(crate) struct Engine {
    /// Special tokens in the text become their ids.
    with_special: Pipeline,
    /// Special-token text is encoded as ordinary text.
    text_only: Pipeline,
    /// BOS/EOS added by owl (GGUF vocabularies); HF directories use their post-processor.
    pub(crate) prefix: Vec<u32>,
    pub(crate) suffix: Vec<u32>,
}

impl Engine {
    pub(crate) fn new(pipeline: Pipeline, prefix: Vec<u32>, suffix: Vec<u32>) -> Engine {
        let mut with_special = pipeline;
        with_special.set_encode_special_tokens(false);
        let mut text_only = with_special.clone();
        text_only.set_encode_special_tokens(true);
        Engine { with_special, text_only, prefix, suffix }
    }

    pub(crate) fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let pipeline = if parse_special { &self.with_special } else { &self.text_only };
        let enc = pipeline.encode_fast(text, add_special).map_err(TokenizerError::engine)?;
        if !add_special || (self.prefix.is_empty() && self.suffix.is_empty()) {
            return Ok(enc.get_ids().to_vec());
        }
        let mut ids = Vec::with_capacity(self.prefix.len() + enc.len() + self.suffix.len());
        ids.extend_from_slice(&self.prefix);
        ids.extend_from_slice(enc.get_ids());
        ids.extend_from_slice(&self.suffix);
        Ok(ids)
    }

    /// The `tokenizers` decoder's own output (used for decoders owl has no table for).
    pub(crate) fn hf_decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.with_special.decode(ids, skip_special).map_err(TokenizerError::engine)
    }

    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.with_special
    }

    /// The pipeline as a `tokenizer.json` document; owl's own BOS/EOS become a
    /// `TemplateProcessing` post-processor so other tools add the same specials.
    pub(crate) fn to_json(&self, pieces: &PieceTable, pretty: bool) -> Result<String, TokenizerError> {
        let mut pipeline = self.with_special.clone();
        if !self.prefix.is_empty() || !self.suffix.is_empty() {
            let name = |id: u32| pieces.get_piece(id).unwrap_or_default().to_string();
            let mut single: Vec<String> = self.prefix.iter().map(|&i| name(i)).collect();
            single.push("$A".into());
            single.extend(self.suffix.iter().map(|&i| name(i)));
            let specials: Vec<(String, u32)> =
                self.prefix.iter().chain(self.suffix.iter()).map(|&i| (name(i), i)).collect();
            let template = tokenizers::processors::template::TemplateProcessing::builder()
                .try_single(single)
                .map_err(TokenizerError::engine)?
                .special_tokens(specials)
                .build()
                .map_err(TokenizerError::engine)?;
            pipeline.with_post_processor(Some(template));
        }
        pipeline.to_string(pretty).map_err(TokenizerError::engine)
    }
}
