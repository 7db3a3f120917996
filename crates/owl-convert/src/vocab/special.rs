//! gguf-py's `SpecialVocab` (gguf/vocab.py): merges, special token ids, the add-BOS/EOS/SEP
//! flags, the chat template and normalizer flags, read from `tokenizer.json`,
//! `tokenizer_config.json`, `chat_template.jinja` / `chat_template.json` and `config.json`,
//! and written in the order `SpecialVocab.add_to_gguf` writes them.

use std::path::Path;

use owl_formats::gguf::{MetadataArray, MetadataValue};
use serde_json::{Map, Value};

use super::{read_json, tokenizer_error};
use crate::error::ConvertError;
use crate::metadata::Metadata;

/// `SpecialVocab`'s default `special_token_types`.
pub const DEFAULT_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// A chat template as `tokenizer_config.json` or the template files give it.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatTemplate {
    One(String),
    /// `[{"name": ..., "template": ...}, ...]`; "default" is the unnamed one.
    Named(Vec<(String, String)>),
}

#[derive(Debug, Default)]
pub struct SpecialVocab {
    pub merges: Vec<String>,
    /// (type, id) in the order the Python dict gets them.
    pub ids: Vec<(String, u32)>,
    /// (type, add) in the order the Python dict gets them.
    pub add: Vec<(String, bool)>,
    pub chat_template: Option<ChatTemplate>,
    pub lowercase: Option<bool>,
    pub strip_accents: Option<bool>,
    types: Vec<String>,
    n_vocab: Option<usize>,
    load_merges: bool,
}

/// Python truthiness of a JSON value that may be missing.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
    }
}

fn special_token_id(entry: Option<&Value>) -> Option<Value> {
    entry?.get("SpecialToken")?.get("id").cloned()
}

fn set_flag(flags: &mut Vec<(String, bool)>, typ: &str, value: bool) {
    match flags.iter_mut().find(|(t, _)| t == typ) {
        Some(slot) => slot.1 = value,
        None => flags.push((typ.to_string(), value)),
    }
}

fn default_flag(flags: &mut Vec<(String, bool)>, typ: &str, value: bool) {
    if !flags.iter().any(|(t, _)| t == typ) {
        flags.push((typ.to_string(), value));
    }
}

impl SpecialVocab {
    /// `SpecialVocab(dir, load_merges, special_token_types, n_vocab)`.
    pub fn load(
        dir: &Path,
        load_merges: bool,
        types: &[&str],
        n_vocab: Option<usize>,
    ) -> Result<SpecialVocab, ConvertError> {
        let mut sv = SpecialVocab {
            types: types.iter().map(|t| t.to_string()).collect(),
            n_vocab,
            load_merges,
            ..SpecialVocab::default()
        };
        sv.load_tokenizer_json(dir)?;
        sv.load_config_json(dir)?;
        if sv.load_merges && sv.merges.is_empty() {
            sv.load_merges_txt(dir)?;
        }
        Ok(sv)
    }

    /// `_set_special_token`: integer ids only, the first value of a type wins.
    pub fn set_special_token(&mut self, typ: &str, id: Option<&Value>, path: &Path) -> Result<(), ConvertError> {
        let Some(id) = id.and_then(|v| if v.is_i64() || v.is_u64() { v.as_i64() } else { None }) else {
            return Ok(());
        };
        if id < 0 {
            return Err(tokenizer_error(path, format!("invalid value for special token type {typ}: {id}")));
        }
        let id = id as u64;
        if self.n_vocab.is_none_or(|n| id < n as u64) && !self.ids.iter().any(|(t, _)| t == typ) {
            self.ids.push((typ.to_string(), id as u32));
        }
        Ok(())
    }

    fn parse_normalizer(&mut self, n: &Value) {
        match n.get("type").and_then(Value::as_str) {
            Some("Lowercase") => self.lowercase = Some(true),
            Some("StripAccents") => self.strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase") {
                    self.lowercase = v.as_bool();
                }
                if let Some(v) = n.get("strip_accents") {
                    self.strip_accents = v.as_bool();
                }
            }
            Some("Sequence") => {
                for inner in n.get("normalizers").and_then(Value::as_array).into_iter().flatten() {
                    self.parse_normalizer(inner);
                }
            }
            _ => {}
        }
    }

    fn load_tokenizer_json(&mut self, dir: &Path) -> Result<(), ConvertError> {
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = read_json(&tokenizer_path)?;
        let mut added_tokens: Vec<Value> = Vec::new();
        if let Some(tok) = &tokenizer {
            if self.load_merges {
                if let Some(merges) = tok.get("model").and_then(|m| m.get("merges")).and_then(Value::as_array) {
                    self.merges = merges_as_strings(merges).map_err(|r| tokenizer_error(&tokenizer_path, r))?;
                }
            }
            if let Some(n) = tok.get("normalizer").filter(|n| truthy(Some(n))) {
                self.parse_normalizer(n);
            }
            added_tokens = tok.get("added_tokens").and_then(Value::as_array).cloned().unwrap_or_default();
        }
        let config_path = dir.join("tokenizer_config.json");
        let mut tc: Option<Map<String, Value>> = read_json(&config_path)?.and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        });
        let tc_truthy = |tc: &Option<Map<String, Value>>| tc.as_ref().is_some_and(|m| !m.is_empty());
        if tokenizer.as_ref().is_some_and(|t| truthy(Some(t))) {
            let tok = tokenizer.as_ref().expect("checked above");
            let get = |tc: &Option<Map<String, Value>>, k: &str| tc.as_ref().and_then(|m| m.get(k)).cloned();
            let mut bos = get(&tc, "bos_token");
            let mut cls = get(&tc, "cls_token");
            let mut eos = get(&tc, "eos_token");
            let mut sep = get(&tc, "sep_token");
            if !truthy(bos.as_ref()) && truthy(cls.as_ref()) && tc_truthy(&tc) {
                bos = cls.clone();
                tc.as_mut().expect("truthy").insert("bos_token".into(), bos.clone().unwrap_or(Value::Null));
            }
            if !truthy(eos.as_ref()) && truthy(sep.as_ref()) && tc_truthy(&tc) {
                eos = sep.clone();
                tc.as_mut().expect("truthy").insert("eos_token".into(), eos.clone().unwrap_or(Value::Null));
            }
            if let Some(pp) = tok.get("post_processor").filter(|p| truthy(Some(p))) {
                let processors: Vec<Value> = match pp.get("processors").and_then(Value::as_array) {
                    Some(list) => list.clone(),
                    None => vec![pp.clone()],
                };
                for processor in &processors {
                    match processor.get("type").and_then(Value::as_str) {
                        Some("ByteLevel") => {
                            default_flag(&mut self.add, "bos", false);
                            default_flag(&mut self.add, "eos", false);
                        }
                        Some("RobertaProcessing") => {
                            set_flag(&mut self.add, "bos", true);
                            set_flag(&mut self.add, "eos", true);
                            set_flag(&mut self.add, "sep", true);
                            if !truthy(cls.as_ref()) && tc_truthy(&tc) {
                                cls = processor
                                    .get("cls")
                                    .map(|c| c.get(0).cloned().unwrap_or(Value::Null))
                                    .or(bos.clone());
                                tc.as_mut()
                                    .expect("truthy")
                                    .insert("cls_token".into(), cls.clone().unwrap_or(Value::Null));
                            }
                            if !truthy(sep.as_ref()) && tc_truthy(&tc) {
                                sep = processor
                                    .get("sep")
                                    .map(|c| c.get(0).cloned().unwrap_or(Value::Null))
                                    .or(eos.clone());
                                tc.as_mut()
                                    .expect("truthy")
                                    .insert("sep_token".into(), sep.clone().unwrap_or(Value::Null));
                            }
                        }
                        Some("TemplateProcessing") => {
                            let empty = Vec::new();
                            let single = processor.get("single").and_then(Value::as_array).unwrap_or(&empty);
                            let pair = processor.get("pair").and_then(Value::as_array).unwrap_or(&empty);
                            let mut first: Option<Value> = None;
                            let mut last: Option<Value> = None;
                            if single.len() > 1 {
                                first = special_token_id(single.first());
                                if truthy(first.as_ref()) {
                                    if !tc_truthy(&tc) {
                                        bos = first.clone();
                                    } else if first != bos && first != cls {
                                        let m = tc.as_mut().expect("truthy");
                                        if !truthy(bos.as_ref()) {
                                            bos = first.clone();
                                            m.insert("bos_token".into(), first.clone().unwrap_or(Value::Null));
                                        }
                                        if !truthy(cls.as_ref()) {
                                            cls = first.clone();
                                            m.insert("cls_token".into(), first.clone().unwrap_or(Value::Null));
                                        }
                                    }
                                    set_flag(&mut self.add, "bos", first == bos || first == cls);
                                }
                                last = special_token_id(single.last());
                                if truthy(last.as_ref()) {
                                    if !tc_truthy(&tc) {
                                        eos = last.clone();
                                    } else if last != eos {
                                        let m = tc.as_mut().expect("truthy");
                                        let old = eos.clone().unwrap_or(Value::Null);
                                        if !self.types.iter().any(|t| t == "eot") {
                                            self.types.push("eot".into());
                                            m.insert("eot_token".into(), old);
                                        } else if !self.types.iter().any(|t| t == "eom") {
                                            self.types.push("eom".into());
                                            m.insert("eom_token".into(), old);
                                        }
                                        eos = last.clone();
                                        m.insert("eos_token".into(), last.clone().unwrap_or(Value::Null));
                                    }
                                    set_flag(&mut self.add, "eos", last == eos);
                                }
                            }
                            if !pair.is_empty() {
                                let start =
                                    usize::from(truthy(first.as_ref()) && special_token_id(pair.first()) == first);
                                let stop = pair.len()
                                    - usize::from(truthy(last.as_ref()) && special_token_id(pair.last()) == last);
                                let pair = if start < stop { &pair[start..stop] } else { &pair[0..0] };
                                if !pair.is_empty() {
                                    let seq = |e: Option<&Value>| -> Option<String> {
                                        e.and_then(|e| e.get("Sequence"))
                                            .and_then(|s| s.get("id"))
                                            .and_then(Value::as_str)
                                            .map(str::to_string)
                                    };
                                    let (a, b) = (seq(pair.first()), seq(pair.last()));
                                    if a.as_deref() == Some("A") && b.as_deref() == Some("B") && pair.len() > 2 {
                                        let middle = &pair[1..pair.len() - 1];
                                        let is_sep_or_eos = |v: &Option<Value>| *v == sep || *v == eos;
                                        let mut add_sep = false;
                                        let entry = special_token_id(middle.first());
                                        if truthy(entry.as_ref()) && is_sep_or_eos(&entry) && !truthy(last.as_ref()) {
                                            add_sep = true;
                                        }
                                        if middle.len() == 2 {
                                            let entry = special_token_id(middle.get(1));
                                            if truthy(entry.as_ref()) && is_sep_or_eos(&entry) {
                                                add_sep = true;
                                            }
                                        }
                                        set_flag(&mut self.add, "sep", add_sep);
                                        if add_sep && !truthy(sep.as_ref()) && tc_truthy(&tc) {
                                            tc.as_mut()
                                                .expect("truthy")
                                                .insert("sep_token".into(), eos.clone().unwrap_or(Value::Null));
                                        }
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let Some(tc) = tc.filter(|m| !m.is_empty()) else { return Ok(()) };
        self.chat_template = chat_template(dir, &tc)?;
        let types = self.types.clone();
        for typ in &types {
            if let Some(flag) = tc.get(&format!("add_{typ}_token")).and_then(Value::as_bool) {
                default_flag(&mut self.add, typ, flag);
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = added_tokens
                .iter()
                .find(|t| t.get("content").and_then(Value::as_str) == Some(content.as_str()))
                .and_then(|t| t.get("id"));
            self.set_special_token(typ, id, &config_path)?;
        }
        Ok(())
    }

    fn load_config_json(&mut self, dir: &Path) -> Result<(), ConvertError> {
        let path = dir.join("config.json");
        let Some(config) = read_json(&path)? else { return Ok(()) };
        for typ in self.types.clone() {
            let key = format!("{typ}_token_id");
            let id = config
                .get(&key)
                .filter(|v| !v.is_null())
                .or_else(|| config.get("text_config").and_then(|t| t.get(&key)));
            self.set_special_token(&typ, id, &path)?;
        }
        Ok(())
    }

    fn load_merges_txt(&mut self, dir: &Path) -> Result<(), ConvertError> {
        let path = dir.join("merges.txt");
        if !path.is_file() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ConvertError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        let mut lines = text.lines().peekable();
        if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
            lines.next();
        }
        self.merges = lines
            .filter_map(|line| {
                let parts: Vec<&str> = line.split_whitespace().collect();
                (parts.len() == 2).then(|| format!("{} {}", parts[0], parts[1]))
            })
            .collect();
        Ok(())
    }

    /// `SpecialVocab.add_to_gguf`.
    pub fn write(&self, m: &mut Metadata) {
        if !self.merges.is_empty() {
            m.set("tokenizer.ggml.merges", MetadataValue::Array(MetadataArray::String(self.merges.clone())));
        }
        for (typ, id) in &self.ids {
            let key = match typ.as_str() {
                "bos" => "bos_token_id",
                "eos" => "eos_token_id",
                "unk" => "unknown_token_id",
                "sep" => "seperator_token_id",
                "pad" => "padding_token_id",
                "mask" => "mask_token_id",
                "eot" => "eot_token_id",
                "eom" => "eom_token_id",
                // gguf-py's writer has no handler for cls / prefix / suffix / middle / fsep.
                _ => continue,
            };
            m.u32(format!("tokenizer.ggml.{key}"), *id as usize);
        }
        for (typ, add) in &self.add {
            if matches!(typ.as_str(), "bos" | "eos" | "sep") {
                m.bool(format!("tokenizer.ggml.add_{typ}_token"), *add);
            }
        }
        match &self.chat_template {
            None => {}
            Some(ChatTemplate::One(t)) => m.string("tokenizer.chat_template", t.clone()),
            Some(ChatTemplate::Named(list)) => {
                let mut default = None;
                let mut names: Vec<String> = Vec::new();
                for (name, template) in list {
                    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                    if name.is_empty() {
                        continue;
                    }
                    if name == "default" {
                        default = Some(template.clone());
                    } else {
                        m.string(format!("tokenizer.chat_template.{name}"), template.clone());
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
                if !names.is_empty() {
                    m.set("tokenizer.chat_templates", MetadataValue::Array(MetadataArray::String(names)));
                }
                if let Some(t) = default {
                    m.string("tokenizer.chat_template", t);
                }
            }
        }
        if let Some(v) = self.lowercase {
            m.bool("tokenizer.ggml.normalizer.lowercase", v);
        }
        if let Some(v) = self.strip_accents {
            m.bool("tokenizer.ggml.normalizer.strip_accents", v);
        }
    }
}

/// `tokenizer.json` merges as "a b" strings: strings as they are, pairs joined by a space
/// with spaces inside a part written as U+0120 (as gguf-py does).
pub fn merges_as_strings(merges: &[Value]) -> Result<Vec<String>, String> {
    match merges.first() {
        None => Ok(Vec::new()),
        Some(Value::String(_)) => Ok(merges.iter().filter_map(|m| m.as_str().map(str::to_string)).collect()),
        Some(Value::Array(p)) if p.len() == 2 && p[0].is_string() => merges
            .iter()
            .map(|pair| {
                let parts = pair.as_array().filter(|p| p.len() == 2).ok_or("malformed merge pair")?;
                let enc = |v: &Value| v.as_str().map(|s| s.replace(' ', "\u{120}")).ok_or("malformed merge pair");
                Ok(format!("{} {}", enc(&parts[0])?, enc(&parts[1])?))
            })
            .collect(),
        Some(_) => Err("unknown tokenizer merges format".into()),
    }
}

fn read_text(path: &Path) -> Result<String, ConvertError> {
    std::fs::read_to_string(path).map_err(|source| ConvertError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// `tokenizer_config.json`'s `chat_template`, else `chat_template.jinja` (with
/// `additional_chat_templates/*.jinja` as named ones), else `chat_template.json`.
fn chat_template(dir: &Path, tc: &Map<String, Value>) -> Result<Option<ChatTemplate>, ConvertError> {
    let value = match tc.get("chat_template") {
        Some(v) => v.clone(),
        None => {
            let jinja = dir.join("chat_template.jinja");
            let json = dir.join("chat_template.json");
            if jinja.is_file() {
                let main = read_text(&jinja)?;
                let mut extra: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("additional_chat_templates"))
                    .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                    .unwrap_or_default();
                extra.retain(|p| p.extension().is_some_and(|e| e == "jinja") && p.is_file());
                extra.sort();
                if extra.is_empty() {
                    Value::String(main)
                } else {
                    let mut list = vec![serde_json::json!({"name": "default", "template": main})];
                    for p in extra {
                        let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                        list.push(serde_json::json!({"name": name, "template": read_text(&p)?}));
                    }
                    Value::Array(list)
                }
            } else if json.is_file() {
                read_json(&json)?.and_then(|v| v.get("chat_template").cloned()).unwrap_or(Value::Null)
            } else {
                Value::Null
            }
        }
    };
    Ok(match value {
        Value::String(s) => Some(ChatTemplate::One(s)),
        Value::Array(list) => Some(ChatTemplate::Named(
            list.iter()
                .filter_map(|c| {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                    c.get("template").and_then(Value::as_str).map(|t| (name, t.to_string()))
                })
                .collect(),
        )),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_merges_encode_spaces() {
        let merges: Vec<Value> = serde_json::from_str(r#"[["a", "b"], ["c d", "e"]]"#).expect("test");
        assert_eq!(merges_as_strings(&merges).expect("test"), vec!["a b".to_string(), "c\u{120}d e".to_string()]);
        let merges: Vec<Value> = serde_json::from_str(r#"["a b", "ab c"]"#).expect("test");
        assert_eq!(merges_as_strings(&merges).expect("test"), vec!["a b".to_string(), "ab c".to_string()]);
        let merges: Vec<Value> = serde_json::from_str(r#"[1]"#).expect("test");
        assert!(merges_as_strings(&merges).is_err());
    }

    #[test]
    fn template_processing_sets_bos_and_sep_flags() {
        let dir = tempfile::tempdir().expect("test");
        let tok = serde_json::json!({
            "added_tokens": [{"id": 2, "content": "<bos>", "special": true}, {"id": 1, "content": "<eos>", "special": true}],
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "<bos>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}]},
            "model": {"type": "BPE", "vocab": {}, "merges": []}
        });
        std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).expect("test");
        let tc = serde_json::json!({"bos_token": "<bos>", "eos_token": {"content": "<eos>"}, "add_bos_token": false,
            "add_eos_token": false, "chat_template": "{{ x }}"});
        std::fs::write(dir.path().join("tokenizer_config.json"), tc.to_string()).expect("test");
        std::fs::write(dir.path().join("config.json"), r#"{"pad_token_id": 0, "bos_token_id": 7}"#).expect("test");
        let sv = SpecialVocab::load(dir.path(), false, &DEFAULT_TYPES, Some(10)).expect("test");
        // The post-processor's flags win over tokenizer_config's; Gemma files get add_sep false.
        assert_eq!(sv.add, vec![("bos".into(), true), ("sep".into(), false), ("eos".into(), false)]);
        assert_eq!(sv.ids, vec![("bos".into(), 2), ("eos".into(), 1), ("pad".into(), 0)]);
        assert_eq!(sv.chat_template, Some(ChatTemplate::One("{{ x }}".into())));
    }
}
