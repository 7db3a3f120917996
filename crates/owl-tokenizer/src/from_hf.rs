//! Loading a Hugging Face tokenizer directory: `tokenizer.json` runs as is in the
//! `tokenizers` engine; `tokenizer_config.json` supplies the special-token strings, the
//! BOS/EOS flags and the chat template (overridden by `chat_template.jinja` as in
//! transformers ≥ 4.43); `generation_config.json` adds end-of-generation ids.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;
use tokenizers::Model;

use crate::chat::{ChatTemplate, TemplateOrigin, CHATML_TEMPLATE};
use crate::decode::{DecodeTable, PieceRule};
use crate::engine::{Engine, Pipeline};
use crate::error::TokenizerError;
use crate::piece_table::PieceTable;
use crate::special::{finish, EOG_TEXTS};
use crate::tokenizer::TokenizerParts;

fn read(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.to_path_buf(), source })
}

fn read_json_opt(path: &Path) -> Result<Option<Json>, TokenizerError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizerError::BadFile { path: path.to_path_buf(), problem: e.to_string() })
}

/// A special-token entry of tokenizer_config.json: `"<s>"` or `{"content": "<s>", ...}`.
fn token_string(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

pub(crate) fn load_hf_dir(dir: &Path) -> Result<TokenizerParts, TokenizerError> {
    let tok_path = dir.join("tokenizer.json");
    let mut json: Json = serde_json::from_str(&read(&tok_path)?)
        .map_err(|e| TokenizerError::BadFile { path: tok_path.clone(), problem: e.to_string() })?;
    let decoder_json = json.get("decoder").cloned().unwrap_or(Json::Null);
    if let Some(obj) = json.as_object_mut() {
        // Inference never pads or truncates.
        obj.insert("padding".into(), Json::Null);
        obj.insert("truncation".into(), Json::Null);
    }
    let mut pipeline: Pipeline = serde_json::from_value(json)
        .map_err(|e| TokenizerError::BadFile { path: tok_path.clone(), problem: e.to_string() })?;

    let config_path = dir.join("tokenizer_config.json");
    let config = read_json_opt(&config_path)?.unwrap_or(Json::Null);
    let bos_text = token_string(config.get("bos_token"));
    let eos_text = token_string(config.get("eos_token"));
    let id_of = |text: &Option<String>, p: &Pipeline| {
        text.as_deref().and_then(|t| p.get_added_vocabulary().token_to_id(t, p.get_model()))
    };
    let bos_id = id_of(&bos_text, &pipeline);
    let eos_id = id_of(&eos_text, &pipeline);

    // Explicit add_bos_token/add_eos_token in the config replace the post-processor, as
    // transformers' `update_post_processor` does.
    let flag = |k: &str| config.get(k).and_then(Json::as_bool);
    let (prefix, suffix) = if flag("add_bos_token").is_some() || flag("add_eos_token").is_some() {
        pipeline.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        let prefix: Vec<u32> = if flag("add_bos_token") == Some(true) { bos_id.into_iter().collect() } else { vec![] };
        let suffix: Vec<u32> = if flag("add_eos_token") == Some(true) { eos_id.into_iter().collect() } else { vec![] };
        (prefix, suffix)
    } else {
        (Vec::new(), Vec::new())
    };

    // Every id the model or the added vocabulary knows, and its piece.
    const MAX_TOKEN_ID: u32 = 1 << 24;
    let added = pipeline.get_added_tokens_decoder();
    let model_vocab = pipeline.get_model().get_vocab();
    let max_id = model_vocab.values().chain(added.keys()).copied().max().unwrap_or(0);
    // The id table is sized by the largest id: a file naming id 4e9 must not make us
    // allocate 100 GB. No real vocabulary comes near 2^24 tokens.
    if max_id >= MAX_TOKEN_ID {
        return Err(TokenizerError::BadFile {
            path: dir.join("tokenizer.json"),
            problem: format!("token id {max_id} is beyond any real vocabulary (at most {MAX_TOKEN_ID} ids)"),
        });
    }
    let size = max_id as usize + 1;
    let mut pieces = vec![String::new(); size];
    for (piece, id) in &model_vocab {
        pieces[*id as usize] = piece.clone();
    }
    let mut special = vec![false; size];
    for (id, tok) in &added {
        pieces[*id as usize] = tok.content.clone();
        special[*id as usize] = tok.special;
    }

    let engine = Engine::new(pipeline, prefix, suffix);
    // What the defaults add, learned by encoding one character with and without them.
    let plain = engine.encode("a", false, true)?;
    let full = engine.encode("a", true, true)?;
    let at = full.windows(plain.len().max(1)).position(|w| w == plain.as_slice()).unwrap_or(0);
    let add_bos = bos_id.is_some_and(|b| full[..at].contains(&b));
    let add_eos = eos_id.is_some_and(|e| full[at + plain.len()..].contains(&e));

    let table = match decode_rule(&decoder_json) {
        Some((rule, strip)) => {
            let refs: Vec<Option<&str>> = pieces.iter().map(|p| (!p.is_empty()).then_some(p.as_str())).collect();
            Some(DecodeTable::build(&refs, special.clone(), &rule, strip)?)
        }
        None => None,
    };

    let mut eog: Vec<u32> = eos_id.into_iter().collect();
    if let Some(gen) = read_json_opt(&dir.join("generation_config.json"))? {
        match gen.get("eos_token_id") {
            Some(Json::Number(n)) => eog.extend(n.as_u64().map(|v| v as u32)),
            Some(Json::Array(a)) => eog.extend(a.iter().filter_map(Json::as_u64).map(|v| v as u32)),
            _ => {}
        }
    }
    eog.extend(pieces.iter().enumerate().filter(|(_, p)| EOG_TEXTS.contains(&p.as_str())).map(|(i, _)| i as u32));
    eog.retain(|&id| (id as usize) < size);
    let eog_ids = finish(eog, &pieces);

    let chat_template = load_template(dir, &config_path, &config, &bos_text, &eos_text)?;
    let description = format!(
        "tokenizer.json ({}){}",
        json_type(&decoder_json).unwrap_or("no decoder"),
        if engine.pipeline().get_normalizer().is_some() { ", with normalizer" } else { "" }
    );
    Ok(TokenizerParts {
        engine,
        table,
        pieces: Arc::new(PieceTable::new(&pieces)?),
        special,
        bos_id,
        eos_id,
        eog_ids,
        add_bos,
        add_eos,
        description,
        chat_template,
    })
}

fn json_type(v: &Json) -> Option<&str> {
    v.get("type").and_then(Json::as_str)
}

/// The chat template: `chat_template.jinja`, else tokenizer_config's `chat_template` (a
/// string, or a list of named templates of which `default` is taken), else ChatML.
fn load_template(
    dir: &Path,
    config_path: &Path,
    config: &Json,
    bos: &Option<String>,
    eos: &Option<String>,
) -> Result<Result<Option<ChatTemplate>, crate::TemplateError>, TokenizerError> {
    let jinja_path: PathBuf = dir.join("chat_template.jinja");
    let source = if jinja_path.is_file() {
        Some(read(&jinja_path)?)
    } else {
        match config.get("chat_template") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Array(list)) => {
                let named = |name: &str| {
                    list.iter()
                        .find(|t| t.get("name").and_then(Json::as_str) == Some(name))
                        .and_then(|t| t.get("template"))
                        .and_then(Json::as_str)
                };
                let chosen =
                    named("default").or_else(|| list.first().and_then(|t| t.get("template")).and_then(Json::as_str));
                match chosen {
                    Some(s) => Some(s.to_string()),
                    None => {
                        return Err(TokenizerError::BadFile {
                            path: config_path.to_path_buf(),
                            problem: "chat_template list has no template".into(),
                        })
                    }
                }
            }
            Some(other) => {
                return Err(TokenizerError::BadFile {
                    path: config_path.to_path_buf(),
                    problem: format!("chat_template must be a string or a list, not {other}"),
                })
            }
        }
    };
    let (bos, eos) = (bos.as_deref().unwrap_or(""), eos.as_deref().unwrap_or(""));
    Ok(match source {
        Some(src) => ChatTemplate::with_origin(&src, bos, eos, TemplateOrigin::Model).map(Some),
        None => ChatTemplate::with_origin(CHATML_TEMPLATE, bos, eos, TemplateOrigin::Fallback).map(Some),
    })
}

/// The per-token rule for the decoders owl tabulates; `None` means "let the engine decode".
pub(crate) fn decode_rule(decoder: &Json) -> Option<(PieceRule, bool)> {
    let metaspace = |d: &Json| -> Option<(PieceRule, bool)> {
        let repl = d.get("replacement").and_then(Json::as_str).unwrap_or("\u{2581}").to_string();
        let strip = match d.get("prepend_scheme").and_then(Json::as_str) {
            Some(s) => s != "never",
            None => d.get("add_prefix_space").and_then(Json::as_bool).unwrap_or(true),
        };
        Some((PieceRule::SentencePiece { replace: Some((repl, " ".into())), byte_fallback: false }, strip))
    };
    match json_type(decoder)? {
        "ByteLevel" => Some((PieceRule::ByteLevel, false)),
        "Metaspace" => metaspace(decoder),
        "Sequence" => {
            let steps = decoder.get("decoders")?.as_array()?;
            let mut replace = None;
            let mut byte_fallback = false;
            let mut strip = false;
            let mut byte_level = false;
            let mut meta = None;
            for step in steps {
                match json_type(step)? {
                    "Replace" => {
                        let from = step.get("pattern")?.get("String")?.as_str()?;
                        let to = step.get("content")?.as_str()?;
                        if replace.replace((from.to_string(), to.to_string())).is_some() {
                            return None;
                        }
                    }
                    "ByteFallback" => byte_fallback = true,
                    "Fuse" => {}
                    "Strip" => {
                        let content = step.get("content").and_then(Json::as_str).unwrap_or(" ");
                        let start = step.get("start").and_then(Json::as_u64).unwrap_or(0);
                        let stop = step.get("stop").and_then(Json::as_u64).unwrap_or(0);
                        if content != " " || start > 1 || stop != 0 {
                            return None;
                        }
                        strip = start == 1;
                    }
                    "ByteLevel" => byte_level = true,
                    "Metaspace" => meta = metaspace(step),
                    _ => return None,
                }
            }
            match (byte_level, meta) {
                (true, None) if replace.is_none() && !byte_fallback && !strip => Some((PieceRule::ByteLevel, false)),
                (false, Some((PieceRule::SentencePiece { replace: r, .. }, s))) if replace.is_none() => {
                    Some((PieceRule::SentencePiece { replace: r, byte_fallback }, s || strip))
                }
                (false, None) => Some((PieceRule::SentencePiece { replace, byte_fallback }, strip)),
                _ => None,
            }
        }
        _ => None,
    }
}
