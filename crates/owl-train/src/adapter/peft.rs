//! PEFT's LoRA format: `adapter_config.json` and `adapter_model.safetensors` as
//! `PeftModel.save_pretrained` writes them (peft 0.21: `lora_A` is `[r, in]`, `lora_B`
//! `[out, r]`, names `base_model.model.<module>.lora_{A,B}.weight`; the scale is
//! `lora_alpha / r`, or `lora_alpha / √r` with `use_rslora`; `rank_pattern` and
//! `alpha_pattern` override r and alpha per module).

use std::collections::BTreeMap;
use std::path::Path;

use owl_formats::safetensors::{Dtype, SafetensorsModel};
use owl_kernels::quant::dequantize_row;
use owl_kernels::BlockFormat;
use serde_json::Value;

use super::{AdapterFile, Naming, RawPair};
use crate::error::AdapterError;

pub const CONFIG: &str = "adapter_config.json";
pub const WEIGHTS: &str = "adapter_model.safetensors";

/// Reads the PEFT adapter in `dir`.
pub fn read(dir: &Path, name: String) -> Result<AdapterFile, AdapterError> {
    let config_path = dir.join(CONFIG);
    let format = |reason: String| AdapterError::Format { path: config_path.clone(), reason };
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| AdapterError::Io { path: config_path.clone(), reason: format!("cannot read: {e}") })?;
    let config: Value = serde_json::from_str(&text).map_err(|e| format(format!("not JSON: {e}")))?;
    let unsupported = |what: &str, hint: Option<&str>| AdapterError::Unsupported {
        path: config_path.clone(),
        what: what.to_string(),
        hint: hint.map(str::to_string),
    };
    let peft_type = config.get("peft_type").and_then(Value::as_str).unwrap_or("");
    if peft_type != "LORA" {
        return Err(unsupported(&format!("peft_type {peft_type:?}"), Some("only LORA adapters")));
    }
    let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
    let present = |key: &str| match config.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    if flag("use_dora") {
        return Err(unsupported("DoRA (use_dora)", None));
    }
    if flag("fan_in_fan_out") {
        return Err(unsupported("fan_in_fan_out (GPT-2 Conv1D layers)", None));
    }
    if flag("lora_bias") || config.get("bias").and_then(Value::as_str).is_some_and(|b| b != "none") {
        return Err(unsupported("trained biases (bias / lora_bias)", None));
    }
    for key in ["modules_to_save", "target_parameters", "layer_replication", "alora_invocation_tokens"] {
        if present(key) {
            return Err(unsupported(key, Some("the adapter carries more than low-rank pairs")));
        }
    }
    let alpha = config
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| format("lora_alpha is missing or not a number".into()))?;
    let rslora = flag("use_rslora");
    let alpha_pattern = patterns(&config, "alpha_pattern", &config_path)?;
    let base_model = config.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string);

    let weights_path = dir.join(WEIGHTS);
    if !weights_path.is_file() && dir.join("adapter_model.bin").is_file() {
        return Err(AdapterError::Unsupported {
            path: dir.join("adapter_model.bin"),
            what: "PyTorch pickles".into(),
            hint: Some("save the adapter with safe_serialization=True (the default)".into()),
        });
    }
    let st = SafetensorsModel::open(&weights_path)
        .map_err(|e| AdapterError::Format { path: weights_path.clone(), reason: e.to_string() })?;
    let wformat = |reason: String| AdapterError::Format { path: weights_path.clone(), reason };
    // module → (A, B), each (shape, values).
    type Half = Option<(Vec<usize>, Vec<f32>)>;
    let mut modules: BTreeMap<String, (Half, Half)> = BTreeMap::new();
    for view in st.tensors() {
        let name = view.name;
        let body = name.strip_prefix("base_model.model.").unwrap_or(name);
        let (module, is_a) = if let Some(m) = body.strip_suffix(".lora_A.weight") {
            (m, true)
        } else if let Some(m) = body.strip_suffix(".lora_B.weight") {
            (m, false)
        } else if body.contains("lora_embedding_") {
            return Err(AdapterError::Unsupported {
                path: weights_path.clone(),
                what: format!("an adapter on the token embedding ({name})"),
                hint: None,
            });
        } else if body.contains("lora_magnitude_vector") {
            return Err(AdapterError::Unsupported { path: weights_path.clone(), what: "DoRA".into(), hint: None });
        } else {
            return Err(wformat(format!("{name} is not a lora_A or lora_B weight")));
        };
        // Adapters of a multimodal model's language part (as llama.cpp's converter maps them).
        let module = module.strip_prefix("model.language_model.").map_or(module.to_string(), |m| format!("model.{m}"));
        let values = to_f32(view.dtype, view.data)
            .ok_or_else(|| wformat(format!("{name}: dtype {} is not supported", view.dtype.name())))?;
        let entry = modules.entry(module).or_default();
        let slot = if is_a { &mut entry.0 } else { &mut entry.1 };
        *slot = Some((view.shape.to_vec(), values));
    }
    let mut pairs = Vec::with_capacity(modules.len());
    for (module, (a, b)) in modules {
        let (Some((sa, a)), Some((sb, b))) = (a, b) else {
            return Err(wformat(format!("{module} has only one of lora_A and lora_B")));
        };
        let (&[rank, cols], &[rows, rank_b]) = (sa.as_slice(), sb.as_slice()) else {
            return Err(wformat(format!("{module}: lora_A {sa:?} and lora_B {sb:?} are not matrices")));
        };
        if rank != rank_b {
            return Err(wformat(format!("{module}: lora_A {sa:?} and lora_B {sb:?} disagree on the rank")));
        }
        let module_alpha = pattern_value(&alpha_pattern, &module).unwrap_or(alpha);
        let r = rank as f64;
        let scale = if rslora { module_alpha / r.sqrt() } else { module_alpha / r };
        pairs.push(RawPair { target: format!("{module}.weight"), rows, cols, rank, a, b, scale: scale as f32 });
    }
    if pairs.is_empty() {
        return Err(wformat("holds no LoRA pairs".into()));
    }
    Ok(AdapterFile {
        path: dir.to_path_buf(),
        name,
        naming: Naming::Hf,
        pairs,
        base_architecture: None,
        base_model,
        alpha: alpha as f32,
    })
}

/// Writes `adapter` (transformers naming) as a PEFT adapter in `dir`: F32 safetensors and
/// an `adapter_config.json` that `PeftModel.from_pretrained` reads, each file written to a
/// temporary name and renamed into place. Pairs whose rank or scale differ from the most
/// common ones get `rank_pattern` / `alpha_pattern` entries.
pub fn write(adapter: &AdapterFile, dir: &Path) -> Result<(), AdapterError> {
    let fail = |reason: String| AdapterError::Io { path: dir.to_path_buf(), reason };
    if adapter.naming != Naming::Hf {
        return Err(fail("the adapter's names are not transformers names".into()));
    }
    let mut counts: BTreeMap<(usize, u32), usize> = BTreeMap::new();
    for p in &adapter.pairs {
        *counts.entry((p.rank, (p.scale * p.rank as f32).to_bits())).or_default() += 1;
    }
    let Some((&(rank, alpha_bits), _)) = counts.iter().max_by_key(|(_, &n)| n) else {
        return Err(fail("an adapter without pairs".into()));
    };
    let alpha = f32::from_bits(alpha_bits);
    let mut rank_pattern = serde_json::Map::new();
    let mut alpha_pattern = serde_json::Map::new();
    let mut targets = std::collections::BTreeSet::new();
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for p in &adapter.pairs {
        let module = p.target.strip_suffix(".weight").ok_or_else(|| fail(format!("{} is not a weight", p.target)))?;
        targets.insert(module.rsplit('.').next().unwrap_or(module).to_string());
        let pair_alpha = p.scale * p.rank as f32;
        if p.rank != rank {
            rank_pattern.insert(module.to_string(), p.rank.into());
        }
        if pair_alpha.to_bits() != alpha_bits {
            alpha_pattern.insert(module.to_string(), f64::from(pair_alpha).into());
        }
        for (half, values, shape) in [("A", &p.a, vec![p.rank, p.cols]), ("B", &p.b, vec![p.rows, p.rank])] {
            tensors.push((format!("base_model.model.{module}.lora_{half}.weight"), shape, values.as_slice()));
        }
    }
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": adapter.base_model,
        "r": rank,
        "lora_alpha": f64::from(alpha),
        "lora_dropout": 0.0,
        "target_modules": targets.into_iter().collect::<Vec<_>>(),
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_rslora": false,
        "use_dora": false,
        "revision": null,
    });
    let config = serde_json::to_vec_pretty(&config).map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create the directory: {e}")))?;
    write_safetensors(&dir.join(WEIGHTS), &tensors)?;
    write_atomic(&dir.join(CONFIG), &config)
}

/// Float32 tensors (name, shape, values) as one safetensors file, PyTorch's metadata, written
/// atomically.
pub(crate) fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, &[f32])]) -> Result<(), AdapterError> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut data: Vec<u8> = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut head = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| AdapterError::Io { path: path.to_path_buf(), reason: e.to_string() })?;
    // The data section starts 8-aligned (safetensors pads the header with spaces).
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut file = (head.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&head);
    file.extend_from_slice(&data);
    write_atomic(path, &file)
}

/// `bytes` into `path` through a temporary file beside it.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AdapterError> {
    let fail = |e: std::io::Error| AdapterError::Io { path: path.to_path_buf(), reason: format!("cannot write: {e}") };
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(fail)
}

/// `alpha_pattern` (module name or suffix → value). PEFT matches the keys as regular
/// expressions anchored at a module-name boundary; plain names (the usual case) mean the
/// same here, anything with other regex syntax is refused rather than guessed.
fn patterns(config: &Value, key: &str, path: &Path) -> Result<Vec<(String, f64)>, AdapterError> {
    let Some(Value::Object(map)) = config.get(key) else { return Ok(Vec::new()) };
    map.iter()
        .map(|(k, v)| {
            if k.chars().any(|c| "*+?()[]{}|^$\\".contains(c)) {
                return Err(AdapterError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!("the regular expression {k:?} in {key}"),
                    hint: Some("name the modules".into()),
                });
            }
            let value = v.as_f64().ok_or_else(|| AdapterError::Format {
                path: path.to_path_buf(),
                reason: format!("{key}[{k:?}] is not a number"),
            })?;
            Ok((k.clone(), value))
        })
        .collect()
}

/// The value of the first pattern that names `module` or a suffix of it at a dot.
fn pattern_value(patterns: &[(String, f64)], module: &str) -> Option<f64> {
    patterns.iter().find(|(k, _)| module == k || module.ends_with(&format!(".{k}"))).map(|(_, v)| *v)
}

/// Little-endian F32/F16/BF16 bytes as f32 (owl-kernels' converters).
pub(crate) fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let format = match dtype {
        Dtype::F32 => BlockFormat::F32,
        Dtype::F16 => BlockFormat::F16,
        Dtype::BF16 => BlockFormat::BF16,
        _ => return None,
    };
    let mut out = vec![0f32; data.len() * 8 / dtype.bits()];
    dequantize_row(format, data, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_module_names_and_suffixes() {
        let p = vec![("q_proj".to_string(), 4.0), ("model.layers.1.mlp.up_proj".to_string(), 2.0)];
        assert_eq!(pattern_value(&p, "model.layers.0.self_attn.q_proj"), Some(4.0));
        assert_eq!(pattern_value(&p, "model.layers.0.self_attn.qq_proj"), None);
        assert_eq!(pattern_value(&p, "model.layers.1.mlp.up_proj"), Some(2.0));
        assert_eq!(pattern_value(&p, "model.layers.11.mlp.up_proj"), None);
    }
}
