//! `owl inspect MODEL [--json] [--tensors]`: what a model file holds, from its metadata and
//! tensor table alone (nothing is dequantized or run).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use owl_formats::gguf::GgufFile;
use owl_formats::hf_config::HfConfig;
use owl_formats::safetensors::SafetensorsModel;

use crate::args::InspectArgs;
use crate::model_ref::{self, ModelSource};
use crate::printer;

/// The `--json` object. Keys are stable and always present (null when a fact is unknown):
///
/// ```text
/// { "format": "gguf" | "safetensors",
///   "path": string,                     the file or directory inspected
///   "files": [string],                  files read: the GGUF, or shards + config/tokenizer files
///   "file_size": integer,               bytes of the weight file(s)
///   "architecture": string|null,        GGUF general.architecture; HF config model_type
///   "architectures": [string],          HF config `architectures` (empty for GGUF)
///   "name": string|null,                GGUF general.name; HF: the directory name
///   "parameters": integer,              sum of the tensors' element counts (exact)
///   "tensor_count": integer,
///   "types": [{"type": "Q4_1", "tensors": integer, "bytes": integer}],   largest first
///   "file_type": string|null,           GGUF general.file_type as llama.cpp names it (MOSTLY_Q4_1)
///   "dtype": string|null,               HF config dtype / torch_dtype
///   "context_length": integer|null,     GGUF {arch}.context_length; HF max_position_embeddings
///   "block_count": integer|null,        layers
///   "head_count": integer|null,
///   "head_count_kv": integer|null,
///   "kv_cache_bytes_per_token": integer|null,   an F16 KV cache's bytes for one position of
///                                       context, every layer counted (sliding-window layers
///                                       stop growing at their window); MLA (DeepSeek): the
///                                       latent and rope key only, as owl caches them
///   "embedding_length": integer|null,   hidden size
///   "feed_forward_length": integer|null,
///   "vocab_size": integer|null,         {arch}.vocab_size or the token list's length; HF vocab_size
///   "rope_freq_base": number|null,      RoPE theta (global layers)
///   "license": string|null,             GGUF general.license; HF README.md front matter
///   "tokenizer": {"model": string|null, "pre": string|null, "source": "gguf"|"tokenizer.json"} | null,
///   "chat_template": boolean,
///   "gguf_version": integer|null,
///   "tensors": [{"name": string, "type": string, "shape": [integer]}]   only with --tensors;
///                                       GGUF shapes in ggml order (ne[0] first), safetensors row-major
/// }
/// ```
#[derive(Debug, Default, Serialize)]
pub struct InspectReport {
    pub format: &'static str,
    pub path: String,
    pub files: Vec<String>,
    pub file_size: u64,
    pub architecture: Option<String>,
    pub architectures: Vec<String>,
    pub name: Option<String>,
    pub parameters: u64,
    pub tensor_count: usize,
    pub types: Vec<TypeUsage>,
    pub file_type: Option<String>,
    pub dtype: Option<String>,
    pub context_length: Option<u64>,
    pub block_count: Option<u64>,
    pub head_count: Option<u64>,
    pub head_count_kv: Option<u64>,
    pub kv_cache_bytes_per_token: Option<u64>,
    pub embedding_length: Option<u64>,
    pub feed_forward_length: Option<u64>,
    pub vocab_size: Option<u64>,
    pub rope_freq_base: Option<f64>,
    pub license: Option<String>,
    pub tokenizer: Option<TokenizerInfo>,
    pub chat_template: bool,
    pub gguf_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Vec<TensorRow>>,
}

/// Tensors and bytes of one storage type.
#[derive(Debug, Serialize)]
pub struct TypeUsage {
    #[serde(rename = "type")]
    pub type_name: String,
    pub tensors: usize,
    pub bytes: u64,
}

/// The tokenizer a model carries.
#[derive(Debug, Serialize)]
pub struct TokenizerInfo {
    pub model: Option<String>,
    pub pre: Option<String>,
    pub source: &'static str,
}

/// One tensor for `--tensors`.
#[derive(Debug, Serialize)]
pub struct TensorRow {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub shape: Vec<u64>,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let report = match model_ref::resolve(&args.model)? {
        ModelSource::Gguf(path) => inspect_gguf(&path, args.tensors)?,
        ModelSource::Safetensors { dir, weights } => inspect_safetensors(&dir, &weights, args.tensors)?,
    };
    if args.json {
        printer::json(&report)?;
    } else {
        print_human(&report)?;
    }
    Ok(())
}

/// Groups (type, bytes) pairs: count and bytes per type, largest first, then by name.
fn type_usage<'a>(items: impl Iterator<Item = (&'a str, u64)>) -> Vec<TypeUsage> {
    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for (t, bytes) in items {
        let e = by_type.entry(t).or_default();
        e.0 += 1;
        e.1 += bytes;
    }
    let mut out: Vec<TypeUsage> = by_type
        .into_iter()
        .map(|(t, (tensors, bytes))| TypeUsage { type_name: t.to_string(), tensors, bytes })
        .collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.type_name.cmp(&b.type_name)));
    out
}

fn inspect_gguf(path: &Path, list_tensors: bool) -> anyhow::Result<InspectReport> {
    let gguf = GgufFile::open(path).with_context(|| format!("{}", path.display()))?;
    let arch = gguf.architecture().map(str::to_string);
    let key = |suffix: &str| arch.as_ref().map(|a| format!("{a}.{suffix}"));
    let u = |suffix: &str| key(suffix).and_then(|k| gguf.get_u64(&k));
    let tensors = gguf.tensors();
    let vocab_size = u("vocab_size").or_else(|| gguf.get_array("tokenizer.ggml.tokens").map(|a| a.len() as u64));
    let tokenizer_model = gguf.get_str("tokenizer.ggml.model").map(str::to_string);
    let tokenizer = tokenizer_model.map(|model| TokenizerInfo {
        model: Some(model),
        pre: gguf.get_str("tokenizer.ggml.pre").map(str::to_string),
        source: "gguf",
    });
    Ok(InspectReport {
        format: "gguf",
        path: path.display().to_string(),
        files: vec![path.display().to_string()],
        file_size: gguf.file_size(),
        architecture: arch.clone(),
        architectures: Vec::new(),
        name: gguf.get_str("general.name").map(str::to_string),
        parameters: tensors.iter().map(|t| t.n_elements).sum(),
        tensor_count: tensors.len(),
        types: type_usage(tensors.iter().map(|t| (t.ggml_type.name(), t.n_bytes))),
        file_type: gguf
            .get_u64("general.file_type")
            .map(|id| owl_formats::gguf::file_type_name(id).map_or_else(|| format!("unknown ({id})"), str::to_string)),
        dtype: None,
        context_length: u("context_length"),
        block_count: u("block_count"),
        head_count: u("attention.head_count"),
        head_count_kv: u("attention.head_count_kv"),
        kv_cache_bytes_per_token: gguf_kv_bytes_per_token(&u),
        embedding_length: u("embedding_length"),
        feed_forward_length: u("feed_forward_length"),
        vocab_size,
        // Via the f32's shortest decimal, so 10000.1 prints as 10000.1, not 10000.099609375.
        rope_freq_base: key("rope.freq_base")
            .and_then(|k| gguf.get_f32(&k))
            .and_then(|f| f.to_string().parse::<f64>().ok()),
        license: gguf.get_str("general.license").map(str::to_string),
        tokenizer,
        chat_template: gguf.get_str("tokenizer.chat_template").is_some_and(|t| !t.is_empty()),
        gguf_version: Some(gguf.version()),
        tensors: list_tensors.then(|| {
            tensors
                .iter()
                .map(|t| TensorRow {
                    name: t.name.clone(),
                    type_name: t.ggml_type.name().to_string(),
                    shape: t.shape.clone(),
                })
                .collect()
        }),
    })
}

/// Bytes of one cached value (the default F16 cache).
const F16_BYTES: usize = 2;

/// [`InspectReport::kv_cache_bytes_per_token`] from GGUF metadata (`u` reads
/// `{arch}.<key>`): MLA (`attention.kv_lora_rank`) caches the latent and the rope key per
/// layer, other attention `head_count_kv` heads of `key_length + value_length` (default
/// `embedding_length / head_count` each).
fn gguf_kv_bytes_per_token(u: &dyn Fn(&str) -> Option<u64>) -> Option<u64> {
    let layers = u("block_count")?;
    let per_layer = match u("attention.kv_lora_rank") {
        Some(rank) => rank + u("rope.dimension_count")?,
        None => {
            let head = u("embedding_length")? / u("attention.head_count")?.max(1);
            let (k, v) = (u("attention.key_length").unwrap_or(head), u("attention.value_length").unwrap_or(head));
            u("attention.head_count_kv")? * (k + v)
        }
    };
    Some(layers * per_layer * F16_BYTES as u64)
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

/// The `license:` of a model card's YAML front matter.
fn readme_license(readme: &Path) -> Option<String> {
    let text = std::fs::read_to_string(readme).ok()?;
    let rest = text.strip_prefix("---")?;
    for line in rest.lines().skip(1) {
        if line.trim_end() == "---" {
            break;
        }
        if let Some(value) = line.strip_prefix("license:") {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if !value.is_empty() {
                return Some(value.to_string());
            }
        }
    }
    None
}

/// Model type and pre-tokenizer kind of a `tokenizer.json`.
fn tokenizer_json_info(path: &Path) -> anyhow::Result<TokenizerInfo> {
    let json = read_json(path)?;
    let model = json.pointer("/model/type").and_then(Value::as_str).map(str::to_string);
    let pre = json.get("pre_tokenizer").and_then(|p| match p.get("type").and_then(Value::as_str) {
        Some("Sequence") => {
            let inner: Vec<&str> = p
                .get("pretokenizers")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(|x| x.get("type").and_then(Value::as_str)).collect())
                .unwrap_or_default();
            Some(inner.join("+"))
        }
        other => other.map(str::to_string),
    });
    Ok(TokenizerInfo { model, pre, source: "tokenizer.json" })
}

/// Whether the directory carries a chat template (tokenizer_config.json or its own file).
fn has_chat_template(dir: &Path, tokenizer_config: Option<&Value>) -> bool {
    let in_config =
        tokenizer_config.and_then(|c| c.get("chat_template")).is_some_and(|t| !t.is_null() && t.as_str() != Some(""));
    in_config || dir.join("chat_template.jinja").is_file() || dir.join("chat_template.json").is_file()
}

/// Facts from a config.json that `HfConfig` could not normalise (an unsupported family):
/// the plain numeric fields, read as written.
fn raw_config_facts(report: &mut InspectReport, json: &Value) {
    let obj = match json.get("text_config") {
        Some(t) if json.get("hidden_size").is_none() => t,
        _ => json,
    };
    let num = |k: &str| obj.get(k).and_then(Value::as_u64);
    report.architecture = obj.get("model_type").and_then(Value::as_str).map(str::to_string);
    report.context_length = num("max_position_embeddings");
    report.block_count = num("num_hidden_layers");
    report.head_count = num("num_attention_heads");
    report.head_count_kv = num("num_key_value_heads").or(report.head_count);
    report.embedding_length = num("hidden_size");
    report.feed_forward_length = num("intermediate_size");
    report.vocab_size = num("vocab_size");
    report.rope_freq_base =
        obj.get("rope_theta").or_else(|| obj.pointer("/rope_parameters/rope_theta")).and_then(Value::as_f64);
}

fn inspect_safetensors(dir: &Path, weights: &Path, list_tensors: bool) -> anyhow::Result<InspectReport> {
    let model = SafetensorsModel::open(weights)?;
    let mut report = InspectReport {
        format: "safetensors",
        path: weights.display().to_string(),
        files: model.shard_paths().map(|p| p.display().to_string()).collect(),
        file_size: model.file_size(),
        name: weights.canonicalize().ok().and_then(|p| {
            let p = if p.is_dir() { p } else { p.parent()?.to_path_buf() };
            p.file_name().map(|n| n.to_string_lossy().into_owned())
        }),
        parameters: model.n_elements(),
        tensor_count: model.len(),
        types: type_usage(model.tensors().map(|t| (t.dtype.name(), t.data.len() as u64))),
        ..InspectReport::default()
    };

    let config_path = dir.join("config.json");
    if config_path.is_file() {
        report.files.push(config_path.display().to_string());
        match HfConfig::from_file(&config_path) {
            Ok(config) => {
                report.architecture = Some(config.model_type.clone());
                report.architectures = config.architectures.clone();
                report.dtype = config.dtype.clone();
                report.context_length = Some(config.max_position_embeddings as u64);
                report.block_count = Some(config.num_hidden_layers as u64);
                report.head_count = Some(config.num_attention_heads as u64);
                report.head_count_kv = Some(config.num_key_value_heads as u64);
                let per_layer = match &config.mla {
                    Some(mla) => mla.kv_lora_rank + mla.qk_rope_head_dim,
                    None => 2 * config.num_key_value_heads * config.head_dim,
                };
                report.kv_cache_bytes_per_token = Some((config.num_hidden_layers * per_layer * F16_BYTES) as u64);
                report.embedding_length = Some(config.hidden_size as u64);
                report.feed_forward_length = Some(config.intermediate_size as u64);
                report.vocab_size = Some(config.vocab_size as u64);
                report.rope_freq_base = Some(config.rope.theta);
            }
            Err(err) => {
                let err = anyhow::Error::new(err);
                printer::warning(&printer::error_line(&err));
                let json = read_json(&config_path)?;
                raw_config_facts(&mut report, &json);
                report.architectures = json
                    .get("architectures")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default();
            }
        }
    }
    let tokenizer_json = dir.join("tokenizer.json");
    if tokenizer_json.is_file() {
        report.files.push(tokenizer_json.display().to_string());
        report.tokenizer = Some(tokenizer_json_info(&tokenizer_json)?);
    }
    let tokenizer_config_path = dir.join("tokenizer_config.json");
    let tokenizer_config = if tokenizer_config_path.is_file() {
        report.files.push(tokenizer_config_path.display().to_string());
        Some(read_json(&tokenizer_config_path)?)
    } else {
        None
    };
    report.chat_template = has_chat_template(dir, tokenizer_config.as_ref());
    report.license = readme_license(&dir.join("README.md"));
    if list_tensors {
        report.tensors = Some(
            model
                .tensors()
                .map(|t| TensorRow {
                    name: t.name.to_string(),
                    type_name: t.dtype.name().to_string(),
                    shape: t.shape.iter().map(|&d| d as u64).collect(),
                })
                .collect(),
        );
    }
    Ok(report)
}

fn print_human(r: &InspectReport) -> std::io::Result<()> {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
    match r.gguf_version {
        Some(v) => row("format", format!("GGUF v{v}")),
        None => {
            let shards = r.files.iter().filter(|f| f.ends_with(".safetensors")).count();
            row("format", format!("safetensors ({shards} file{})", if shards == 1 { "" } else { "s" }));
        }
    }
    row("path", r.path.clone());
    row("file size", format!("{} ({} bytes)", printer::human_bytes(r.file_size), r.file_size));
    let arch = match (&r.architecture, r.architectures.first()) {
        (Some(a), Some(class)) => format!("{a} ({class})"),
        (Some(a), None) => a.clone(),
        (None, Some(class)) => class.clone(),
        (None, None) => "-".into(),
    };
    row("architecture", arch);
    row("name", r.name.clone().unwrap_or_else(|| "-".into()));
    row("parameters", format!("{} ({})", printer::human_count(r.parameters), r.parameters));
    row("tensors", r.tensor_count.to_string());
    for (i, t) in r.types.iter().enumerate() {
        row(
            if i == 0 { "types" } else { "" },
            format!(
                "{:<8} {:>5} tensor{}  {}",
                t.type_name,
                t.tensors,
                if t.tensors == 1 { " " } else { "s" },
                printer::human_bytes(t.bytes)
            ),
        );
    }
    if let Some(ft) = &r.file_type {
        row("file type", ft.clone());
    }
    if let Some(dt) = &r.dtype {
        row("dtype", dt.clone());
    }
    row("context length", opt(r.context_length));
    row("layers", opt(r.block_count));
    row("heads", opt(r.head_count));
    row("kv heads", opt(r.head_count_kv));
    row(
        "kv cache / token",
        r.kv_cache_bytes_per_token.map_or_else(
            || "-".into(),
            |b| format!("{} (f16; {} at 4096 tokens)", printer::human_bytes(b), printer::human_bytes(b * 4096)),
        ),
    );
    row("embedding length", opt(r.embedding_length));
    row("feed-forward length", opt(r.feed_forward_length));
    row("vocab size", opt(r.vocab_size));
    row("rope base", r.rope_freq_base.map_or_else(|| "-".into(), |b| b.to_string()));
    row("license", r.license.clone().unwrap_or_else(|| "-".into()));
    let tok = match &r.tokenizer {
        Some(t) => {
            let model = t.model.clone().unwrap_or_else(|| "?".into());
            match &t.pre {
                Some(pre) => format!("{model} (pre: {pre}; from {})", t.source),
                None => format!("{model} (from {})", t.source),
            }
        }
        None => "none".into(),
    };
    row("tokenizer", tok);
    row("chat template", if r.chat_template { "yes" } else { "no" }.into());
    printer::table(&rows)?;

    if let Some(tensors) = &r.tensors {
        let name_w = tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        let type_w = tensors.iter().map(|t| t.type_name.len()).max().unwrap_or(0);
        printer::lines(std::iter::once(String::new()).chain(tensors.iter().map(|t| {
            let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
            format!("{:<name_w$}  {:<type_w$}  [{}]", t.name, t.type_name, shape.join(", "))
        })))?;
    }
    Ok(())
}
