//! `owl tokenize MODEL TEXT [--json] [--no-bos] [--no-special]`: the token ids a model's
//! tokenizer gives for TEXT (one line of space-separated ids; `--json` adds the pieces).

use std::ffi::OsStr;

use anyhow::{anyhow, Context};
use serde::Serialize;

use owl_formats::gguf::GgufFile;
use owl_tokenizer::Tokenizer;

use crate::args::TokenizeArgs;
use crate::model_ref::{self, ModelSource};
use crate::printer;

/// The `--json` object: `{"ids": [u32], "pieces": [string]}`, pieces as the vocabulary
/// spells them (`Ġcapital`, `▁France`, `<|im_end|>`).
#[derive(Debug, Serialize)]
struct TokenizeOutput<'a> {
    ids: &'a [u32],
    pieces: Vec<&'a str>,
}

/// The tokenizer of a MODEL argument: a GGUF's `tokenizer.*` metadata, or an HF directory's
/// tokenizer.json (+ tokenizer_config.json).
pub(crate) fn load_tokenizer(model: &OsStr) -> anyhow::Result<Tokenizer> {
    match model_ref::resolve(model)? {
        ModelSource::Gguf(path) => {
            let gguf = GgufFile::open(&path).with_context(|| format!("{}", path.display()))?;
            Tokenizer::from_gguf(&gguf).with_context(|| format!("{}: tokenizer", path.display()))
        }
        ModelSource::Safetensors { dir, .. } => {
            Tokenizer::from_hf_dir(&dir).with_context(|| format!("{}: tokenizer", dir.display()))
        }
    }
}

pub fn run(args: &TokenizeArgs) -> anyhow::Result<()> {
    let text = args.text.to_str().ok_or_else(|| anyhow!("TEXT is not valid UTF-8"))?;
    let tokenizer = load_tokenizer(&args.model)?;
    let ids = tokenizer.encode(text, !args.no_bos, !args.no_special)?;
    if args.json {
        let pieces = ids.iter().map(|&id| tokenizer.piece(id).unwrap_or("")).collect();
        printer::json(&TokenizeOutput { ids: &ids, pieces })?;
    } else {
        let line = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
        printer::lines([line])?;
    }
    Ok(())
}
