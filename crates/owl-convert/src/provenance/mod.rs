//! The `general.*` provenance keys llama.cpp's converter writes (gguf-py `Metadata.load` and
//! `set_gguf_meta_model`, with `ModelBase.prepare_metadata`'s fallbacks): the model card's
//! YAML front matter, `generation_config.json`'s sampling defaults, `config.json`'s
//! `_name_or_path` and the directory's name, read by the same rules and written in the same
//! order, with `general.size_label` from the parameter count of the tensors written.
//!
//! gguf-py's `--metadata` override file and `--model-name` have no counterpart (owl has no
//! such options), nor have LoRA adapters (negative parameter counts).

use std::path::Path;

use owl_formats::gguf::{MetadataArray, MetadataValue};
use serde_json::Value;

use crate::metadata::Metadata;
use crate::plan::PlannedTensor;

mod card_yaml;
mod model_id;

pub use card_yaml::{front_matter, Yaml};
pub use model_id::{id_to_title, model_id_components, IdComponents};

/// `GGUFWriter.get_total_parameter_count` over the tensors written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParameterCount {
    pub total: u64,
    /// Elements outside stacked expert tensors (shared experts included).
    pub shared: u64,
    /// Elements of one expert of each stacked expert tensor.
    pub expert: u64,
    /// Mean experts per stacked expert tensor; 0 for a dense model.
    pub expert_count: u64,
}

/// Counts as gguf-py does: a tensor named `*_exps.*` with three or more dimensions is a
/// stack of experts (the outermost dimension, or the second innermost for a bias).
pub fn parameter_count(planned: &[PlannedTensor]) -> ParameterCount {
    let mut c = ParameterCount::default();
    let (mut expert_sum, mut expert_tensors) = (0u64, 0u64);
    for t in planned {
        let size = t.n_elements() as u64;
        let rank = t.shape.len();
        if t.name.contains("_exps.") && rank >= 3 {
            let n = t.shape[rank - if t.name.contains(".bias") { 2 } else { 3 }].max(1) as u64;
            c.expert += size / n;
            expert_sum += n;
            expert_tensors += 1;
        } else {
            c.shared += size;
        }
        c.total += size;
    }
    c.expert_count = expert_sum.checked_div(expert_tensors).unwrap_or(0);
    c
}

/// gguf-py `size_label`: `135M`, `1.1B`, or `8x7.2B` for a mixture of experts.
pub fn size_label(c: &ParameterCount) -> String {
    if c.expert_count > 0 {
        format!("{}x{}", c.expert_count, rounded_notation(c.shared + c.expert, 2))
    } else {
        rounded_notation(c.total, 2)
    }
}

/// gguf-py `model_weight_count_rounded_notation`: at least `min_digits` significant digits.
fn rounded_notation(n: u64, min_digits: usize) -> String {
    let x = n as f64;
    let (scaled, suffix) = if x > 1e12 {
        (x * 1e-12, "T")
    } else if x > 1e9 {
        (x * 1e-9, "B")
    } else if x > 1e6 {
        (x * 1e-6, "M")
    } else {
        (x * 1e-3, "K")
    };
    // Python's round() rounds half to even; str() of the integer, leading zeros dropped.
    let integer = format!("{}", scaled.round_ties_even() as u64);
    let fix = min_digits.saturating_sub(integer.trim_start_matches('0').len());
    format!("{scaled:.fix$}{suffix}")
}

/// One `general.base_model.{i}.*` or `general.dataset.{i}.*` entry.
#[derive(Debug, Clone, Default, PartialEq)]
struct Source {
    name: Option<String>,
    author: Option<String>,
    version: Option<String>,
    organization: Option<String>,
    description: Option<String>,
    url: Option<String>,
    doi: Option<String>,
    uuid: Option<String>,
    repo_url: Option<String>,
}

impl Source {
    /// A card entry: a Hugging Face id, a URL, or a mapping of the fields.
    fn from_card(entry: &Yaml, total_params: u64) -> Source {
        let mut s = Source::default();
        match entry {
            Yaml::Str(id) if id.starts_with("http://") || id.starts_with("https://") || id.starts_with("ssh://") => {
                s.repo_url = Some(id.clone());
                if let Some(hf_id) = hf_id_of_url(id) {
                    s.fill(&model_id_components(hf_id, total_params));
                }
            }
            Yaml::Str(id) => {
                let c = model_id_components(id, total_params);
                s.fill(&c);
                if let (Some(org), Some(name)) = (&c.organization, &c.name) {
                    s.repo_url = Some(format!("https://huggingface.co/{org}/{name}"));
                }
            }
            Yaml::Map(_) => {
                let f = |k: &str| entry.get(k).and_then(Yaml::as_str).map(str::to_string);
                s = Source {
                    name: f("name"),
                    author: f("author"),
                    version: f("version"),
                    organization: f("organization"),
                    description: f("description"),
                    url: f("url"),
                    doi: f("doi"),
                    uuid: f("uuid"),
                    repo_url: f("repo_url"),
                };
            }
            // gguf-py logs "not in a known format" and keeps an empty entry.
            _ => {}
        }
        s
    }

    fn fill(&mut self, c: &IdComponents) {
        self.name = c.name.as_deref().map(id_to_title);
        self.organization = c.organization.as_deref().map(id_to_title);
        self.version = c.version.clone();
    }

    fn write(&self, m: &mut Metadata, prefix: &str) {
        let fields = [
            ("name", &self.name),
            ("author", &self.author),
            ("version", &self.version),
            ("organization", &self.organization),
            ("description", &self.description),
            ("url", &self.url),
            ("doi", &self.doi),
            ("uuid", &self.uuid),
            ("repo_url", &self.repo_url),
        ];
        for (k, v) in fields {
            put_str(m, &format!("{prefix}.{k}"), v);
        }
    }
}

/// `https?://huggingface.co/ORG/NAME` (the whole URL) → `ORG/NAME`.
fn hf_id_of_url(url: &str) -> Option<&str> {
    if !url.contains("huggingface.co") {
        return None;
    }
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    // `huggingface.co/`, the regex's unescaped '.' matching any one character.
    let mut chars = rest.char_indices();
    let host_ok = rest.starts_with("huggingface") && chars.nth(11).is_some();
    let id = chars.next().map(|(i, _)| &rest[i..]).and_then(|r| r.strip_prefix("co/"));
    let id = id.filter(|_| host_ok)?;
    let (org, name) = id.split_once('/')?;
    (!org.is_empty() && !name.is_empty() && !name.contains('/')).then_some(id)
}

/// gguf-py's `add_string`: empty strings are not written.
fn put_str(m: &mut Metadata, key: &str, v: &Option<String>) {
    if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
        m.string(key, v);
    }
}

fn put_strings(m: &mut Metadata, key: &str, v: &Option<Vec<String>>) {
    if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
        m.set(key, MetadataValue::Array(MetadataArray::String(v.clone())));
    }
}

/// What `Metadata.load` gathers (the fields owl can fill).
#[derive(Debug, Default)]
struct Provenance {
    name: Option<String>,
    author: Option<String>,
    version: Option<String>,
    organization: Option<String>,
    finetune: Option<String>,
    basename: Option<String>,
    description: Option<String>,
    size_label: Option<String>,
    license: Option<String>,
    license_name: Option<String>,
    license_link: Option<String>,
    source_url: Option<String>,
    source_doi: Option<String>,
    source_uuid: Option<String>,
    source_repo_url: Option<String>,
    base_models: Option<Vec<Source>>,
    datasets: Option<Vec<Source>>,
    tags: Option<Vec<String>>,
    languages: Option<Vec<String>>,
}

impl Provenance {
    /// Fills what is unset from an id's components (the `_name_or_path` and directory
    /// fallbacks).
    fn fill_from_id(&mut self, c: IdComponents) {
        fn or(slot: &mut Option<String>, v: Option<String>) {
            if slot.is_none() {
                *slot = v;
            }
        }
        or(&mut self.name, c.name.as_deref().map(id_to_title));
        or(&mut self.organization, c.organization.as_deref().map(id_to_title));
        or(&mut self.basename, c.basename);
        or(&mut self.finetune, c.finetune);
        or(&mut self.version, c.version);
        or(&mut self.size_label, c.size_label);
    }
}

/// gguf-py `apply_metadata_heuristic`'s model card part.
fn from_card(p: &mut Provenance, card: &Yaml, total_params: u64) {
    let has = |k: &str| card.get(k).is_some();
    let text = |k: &str| card.get(k).and_then(Yaml::as_str).map(str::to_string);
    let set = |slot: &mut Option<String>, k: &str| {
        if slot.is_none() && has(k) {
            *slot = text(k);
        }
    };
    // llama.cpp's own convention, then the same with `model_` prefixes.
    for prefix in ["", "model_"] {
        let k = |s: &str| format!("{prefix}{s}");
        set(&mut p.name, &k("name"));
        set(&mut p.author, &k("author"));
        set(&mut p.version, &k("version"));
        set(&mut p.organization, &k("organization"));
        set(&mut p.description, &k("description"));
        set(&mut p.finetune, &k("finetune"));
        set(&mut p.basename, &k("basename"));
        set(&mut p.size_label, &k("size_label"));
        set(&mut p.source_url, &k("url"));
        set(&mut p.source_doi, &k("doi"));
        set(&mut p.source_uuid, &k("uuid"));
        set(&mut p.source_repo_url, &k("repo_url"));
    }
    set(&mut p.author, "model_creator");
    set(&mut p.basename, "model_type");

    let sources = |keys: [&str; 3]| -> Option<Vec<Source>> {
        let value = keys.iter().find_map(|k| card.get(k))?;
        let entries: Vec<&Yaml> = match value {
            Yaml::List(items) => items.iter().collect(),
            Yaml::Str(_) => vec![value],
            _ => Vec::new(),
        };
        Some(entries.into_iter().map(|e| Source::from_card(e, total_params)).collect())
    };
    if let Some(s) = sources(["base_model", "base_models", "base_model_sources"]) {
        p.base_models = Some(s);
    }
    if let Some(s) = sources(["datasets", "dataset", "dataset_sources"]) {
        p.datasets = Some(s);
    }

    if p.license.is_none() {
        p.license = match card.get("license") {
            Some(Yaml::Str(s)) => Some(s.clone()),
            Some(Yaml::List(items)) => Some(items.iter().filter_map(Yaml::as_str).collect::<Vec<_>>().join(",")),
            _ => None,
        };
    }
    set(&mut p.license_name, "license_name");
    set(&mut p.license_link, "license_link");

    let append = |slot: &mut Option<Vec<String>>, k: &str| {
        let items: Vec<String> = match card.get(k) {
            None | Some(Yaml::Null) => return,
            Some(Yaml::Str(s)) => vec![s.clone()],
            Some(Yaml::List(items)) => items.iter().filter_map(Yaml::as_str).map(str::to_string).collect(),
            Some(Yaml::Map(_)) => Vec::new(),
        };
        slot.get_or_insert_with(Vec::new).extend(items);
    };
    append(&mut p.tags, "tags");
    append(&mut p.tags, "pipeline_tag");
    append(&mut p.languages, "languages");
    append(&mut p.languages, "language");
}

/// `general.sampling.*` from `generation_config.json` (read as gguf-py reads it).
fn sampling(m: &mut Metadata, dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) else { return };
    let Ok(gen) = serde_json::from_str::<Value>(&text) else { return };
    let get = |keys: &[&str]| keys.iter().find_map(|k| gen.get(*k)).filter(|v| !v.is_null());
    let int = |m: &mut Metadata, key: &str, keys: &[&str]| {
        if let Some(v) = get(keys).and_then(Value::as_i64) {
            m.set(key, MetadataValue::I32(v as i32));
        }
    };
    let float = |m: &mut Metadata, key: &str, keys: &[&str]| {
        if let Some(v) = get(keys).and_then(Value::as_f64) {
            m.f32(key, v);
        }
    };
    if let Some(s) = get(&["sequence"]).and_then(Value::as_str).filter(|s| !s.is_empty()) {
        m.string("general.sampling.sequence", s);
    }
    int(m, "general.sampling.top_k", &["top_k"]);
    float(m, "general.sampling.top_p", &["top_p"]);
    float(m, "general.sampling.min_p", &["min_p"]);
    float(m, "general.sampling.xtc_probability", &["xtc_probability"]);
    float(m, "general.sampling.xtc_threshold", &["xtc_threshold"]);
    float(m, "general.sampling.temp", &["temperature"]);
    int(m, "general.sampling.penalty_last_n", &["penalty_last_n"]);
    float(m, "general.sampling.penalty_repeat", &["penalty_repeat", "repetition_penalty"]);
    int(m, "general.sampling.mirostat", &["mirostat"]);
    float(m, "general.sampling.mirostat_tau", &["mirostat_tau"]);
    float(m, "general.sampling.mirostat_eta", &["mirostat_eta"]);
}

/// The keys `ModelBase.prepare_metadata` writes after `general.architecture` and before the
/// hyper-parameters: `general.type`, the sampling defaults, and the model's name, size,
/// licence and lineage, in gguf-py's order. `config` is `config.json`; `count` the
/// parameters of the tensors to be written.
pub fn metadata(dir: &Path, config: &Value, count: &ParameterCount) -> Metadata {
    let total = count.total;
    let card = std::fs::read_to_string(dir.join("README.md")).map(|t| front_matter(&t)).unwrap_or(Yaml::Null);
    let mut p = Provenance::default();
    from_card(&mut p, &card, total);
    if let Some(id) = config.get("_name_or_path").and_then(Value::as_str) {
        // Only a model id, not a path on someone's disk.
        if id.matches('/').count() <= 1 {
            p.fill_from_id(model_id_components(id, total));
        }
    }
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if let Some(n) = &dir_name {
        p.fill_from_id(model_id_components(n, total));
    }
    if p.name.is_none() {
        p.name = dir_name;
    }
    if p.size_label.is_none() && total > 0 {
        p.size_label = Some(size_label(count));
    }

    let mut m = Metadata::default();
    m.string("general.type", "model");
    sampling(&mut m, dir);
    for (key, v) in [
        ("general.name", &p.name),
        ("general.author", &p.author),
        ("general.version", &p.version),
        ("general.organization", &p.organization),
        ("general.finetune", &p.finetune),
        ("general.basename", &p.basename),
        ("general.description", &p.description),
        ("general.size_label", &p.size_label),
        ("general.license", &p.license),
        ("general.license.name", &p.license_name),
        ("general.license.link", &p.license_link),
        ("general.source.url", &p.source_url),
        ("general.source.doi", &p.source_doi),
        ("general.source.uuid", &p.source_uuid),
        ("general.source.repo_url", &p.source_repo_url),
    ] {
        put_str(&mut m, key, v);
    }
    for (what, list) in [("base_model", &p.base_models), ("dataset", &p.datasets)] {
        if let Some(list) = list {
            m.u32(format!("general.{what}.count"), list.len());
            for (i, s) in list.iter().enumerate() {
                s.write(&mut m, &format!("general.{what}.{i}"));
            }
        }
    }
    put_strings(&mut m, "general.tags", &p.tags);
    put_strings(&mut m, "general.languages", &p.languages);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(total: u64) -> ParameterCount {
        ParameterCount { total, shared: total, expert: 0, expert_count: 0 }
    }

    #[test]
    fn size_labels_follow_gguf_py() {
        assert_eq!(size_label(&count(134_515_008)), "135M");
        assert_eq!(size_label(&count(1_100_048_384)), "1.1B");
        assert_eq!(size_label(&count(999)), "1.0K");
        assert_eq!(size_label(&count(1_000_001)), "1.0M");
        assert_eq!(size_label(&count(99_500)), "100K");
        assert_eq!(size_label(&count(9_950_000)), "10M");
        // Mixtral 8x7B: shared parameters plus one expert's, times the expert count.
        let mixtral =
            ParameterCount { total: 46_702_792_704, shared: 1_602_781_184, expert: 5_637_144_576, expert_count: 8 };
        assert_eq!(size_label(&mixtral), "8x7.2B");
        let round =
            ParameterCount { total: 57_000_000_000, shared: 1_000_000_000, expert: 6_000_000_000, expert_count: 8 };
        assert_eq!(size_label(&round), "8x7.0B");
    }

    #[test]
    fn expert_stacks_are_counted_per_expert() {
        let t = |name: &str, shape: &[usize]| PlannedTensor {
            name: name.into(),
            shape: shape.to_vec(),
            producer: crate::plan::Producer::Values(Vec::new()),
        };
        let planned = [
            t("token_embd.weight", &[10, 4]),
            t("blk.0.ffn_gate_exps.weight", &[8, 6, 4]),
            t("blk.0.ffn_down_exps.weight", &[8, 4, 6]),
            t("blk.0.ffn_gate_shexp.weight", &[6, 4]),
            t("blk.0.exp_probs_b.bias", &[8]),
        ];
        let c = parameter_count(&planned);
        assert_eq!(
            c,
            ParameterCount { total: 40 + 192 * 2 + 24 + 8, shared: 40 + 24 + 8, expert: 48, expert_count: 8 }
        );
        assert_eq!(size_label(&c), "8x0.12K");
    }

    /// Expected values printed by llama.cpp's gguf-py (`Metadata.get_model_id_components`).
    #[test]
    fn model_id_components_match_gguf_py() {
        type Row<'a> = (
            &'a str,
            u64,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
        );
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("SmolLM2-135M-Instruct", 134515008, "SmolLM2-135M-Instruct", None, Some("SmolLM2"), Some("Instruct"), None, Some("135M")),
            ("HuggingFaceTB/SmolLM2-135M-Instruct", 134515008, "SmolLM2-135M-Instruct", Some("HuggingFaceTB"), Some("SmolLM2"), Some("Instruct"), None, Some("135M")),
            ("mistralai/Mixtral-8x7B-Instruct-v0.1", 46702792704, "Mixtral-8x7B-Instruct-v0.1", Some("mistralai"), Some("Mixtral"), Some("Instruct"), Some("v0.1"), Some("8x7B")),
            ("TinyLlama-1.1B-Chat-v1.0", 100000, "TinyLlama-1.1B-Chat-v1.0", None, Some("TinyLlama"), Some("1.1b-Chat"), Some("v1.0"), None),
            ("TinyLlama-1.1B-Chat-v1.0", 1100048384, "TinyLlama-1.1B-Chat-v1.0", None, Some("TinyLlama"), Some("Chat"), Some("v1.0"), Some("1.1B")),
            ("meta-llama/Llama-2-7b-hf", 6738415616, "Llama-2-7b-hf", Some("meta-llama"), Some("Llama-2"), Some("hf"), None, Some("7B")),
            ("bigscience/bloom-7b1", 7069016064, "bloom-7b1", Some("bigscience"), Some("bloom"), None, None, Some("7.1B")),
            ("Qwen/Qwen3-30B-A3B", 30532122624, "Qwen3-30B-A3B", Some("Qwen"), Some("Qwen3"), None, None, Some("30B-A3B")),
            ("Qwen/Qwen3-30B-A3B-Instruct-2507", 30532122624, "Qwen3-30B-A3B-Instruct-2507", Some("Qwen"), Some("Qwen3"), Some("Instruct"), Some("2507"), Some("30B-A3B")),
            ("microsoft/Phi-3-mini-128k-instruct", 3821079552, "Phi-3-mini-128k-instruct", Some("microsoft"), Some("Phi-3"), Some("128k-instruct"), None, Some("mini")),
            ("google/gemma-2-2b-it", 2614341888, "gemma-2-2b-it", Some("google"), Some("gemma-2"), Some("it"), None, Some("2B")),
            ("deepseek-ai/DeepSeek-V3", 0, "DeepSeek-V3", Some("deepseek-ai"), Some("DeepSeek"), None, Some("V3"), None),
            ("./foo-7B", 0, "foo-7B", None, Some("foo"), None, None, Some("7B")),
            ("Meta-Llama-3.1-8B-Instruct-Q4_K_M", 8030261248, "Meta-Llama-3.1-8B-Instruct-Q4_K_M", None, Some("Meta-Llama-3.1"), Some("Instruct"), None, Some("8B")),
            ("gpt2-xl", 0, "gpt2-xl", None, Some("gpt2"), None, None, Some("xl")),
            ("t5-small-v1_1", 0, "t5-small-v1_1", None, Some("t5"), Some("v1_1"), None, Some("small")),
            ("mistral", 0, "mistral", None, None, None, None, None),
            ("Mistral-Nemo-Base-2407", 12000000000, "Mistral-Nemo-Base-2407", None, Some("Mistral-Nemo-Base"), None, Some("2407"), None),
            ("falcon-180B-chat", 0, "falcon-180B-chat", None, Some("falcon"), Some("chat"), None, Some("180B")),
            ("org/Model-IQ2_XXS", 0, "Model-IQ2_XXS", Some("org"), None, None, None, None),
            ("Model-bf16-iter3", 0, "Model-bf16-iter3", None, Some("Model"), None, Some("iter3"), None),
            ("llama-1_5B", 1500000000, "llama-1_5B", None, Some("llama"), None, None, Some("1.5B")),
            ("x-A22B-8x3b2", 0, "x-A22B-8x3b2", None, Some("x"), None, None, Some("A22B-8x3.2B")),
        ];
        let s = |v: Option<&str>| v.map(str::to_string);
        for &(id, total, name, org, basename, finetune, version, size) in rows {
            let want = IdComponents {
                name: Some(name.to_string()),
                organization: s(org),
                basename: s(basename),
                finetune: s(finetune),
                version: s(version),
                size_label: s(size),
            };
            assert_eq!(model_id_components(id, total), want, "{id} ({total})");
        }
        let sentence = model_id_components("Some Model Name", 0);
        assert_eq!(sentence, IdComponents { name: Some("Some Model Name".into()), ..Default::default() });
    }

    #[test]
    fn titles_follow_gguf_py() {
        assert_eq!(id_to_title("smolLM2 135m instruct"), "smolLM2 135m Instruct");
        assert_eq!(id_to_title("meta-llama"), "Meta Llama");
        assert_eq!(id_to_title("v1.0 llama3 8b"), "v1.0 Llama3 8b");
        assert_eq!(id_to_title("hugging-face-tb"), "Hugging Face Tb");
        assert_eq!(id_to_title("they're x2y"), "They'Re X2Y");
    }

    fn strs(items: &[&str]) -> Yaml {
        Yaml::List(items.iter().map(|s| Yaml::Str(s.to_string())).collect())
    }

    #[test]
    fn front_matter_reads_model_card_yaml() {
        let card = "---\n\
            # a comment\n\
            license: apache-2.0 # trailing comment\n\
            base_model: HuggingFaceTB/SmolLM2-135M\n\
            language:\n\
            - en\n\
            - \"no\"\n\
            tags:\n  \
              - safetensors\n  \
              - 'it''s'\n\
            datasets: [org/a, \"org/b, c\",  'org/d']\n\
            pipeline_tag: text-generation\n\
            library_name:\n\
            widget:\n  \
              - text: hello\n    \
                example_title: greeting\n  \
              - text: bye\n\
            model-index:\n\
            - name: x\n  \
              results:\n  \
              - task:\n      \
                  type: text-generation\n\
            description: |\n  \
              line one\n  \
              line two\n\
            folded: >-\n  \
              one\n  \
              two\n\
            \n  \
              three\n\
            inline_map: {a: 1, b: [x, y]}\n\
            \tindented_tab: x\n\
            ---\n\
            # Model\n\
            license: not-this\n";
        let y = front_matter(card);
        assert_eq!(y.get("license"), Some(&Yaml::Str("apache-2.0".into())));
        assert_eq!(y.get("base_model"), Some(&Yaml::Str("HuggingFaceTB/SmolLM2-135M".into())));
        assert_eq!(y.get("language"), Some(&strs(&["en", "no"])));
        assert_eq!(y.get("tags"), Some(&strs(&["safetensors", "it's"])));
        assert_eq!(y.get("datasets"), Some(&strs(&["org/a", "org/b, c", "org/d"])));
        assert_eq!(y.get("pipeline_tag"), Some(&Yaml::Str("text-generation".into())));
        assert_eq!(y.get("library_name"), Some(&Yaml::Null));
        let widget = y.get("widget").expect("widget");
        let Yaml::List(items) = widget else { panic!("{widget:?}") };
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].get("example_title"), Some(&Yaml::Str("greeting".into())));
        assert_eq!(items[1].get("text"), Some(&Yaml::Str("bye".into())));
        let Some(Yaml::List(index)) = y.get("model-index") else { panic!("model-index") };
        assert_eq!(index[0].get("name"), Some(&Yaml::Str("x".into())));
        assert_eq!(y.get("description"), Some(&Yaml::Str("line one\nline two\n".into())));
        assert_eq!(y.get("folded"), Some(&Yaml::Str("one two\nthree".into())));
        let map = y.get("inline_map").expect("inline_map");
        assert_eq!(map.get("b"), Some(&strs(&["x", "y"])));
        assert!(y.get("indented_tab").is_none(), "{y:?}");

        assert_eq!(front_matter("# no front matter\n---\nlicense: mit\n---\n"), Yaml::Map(Vec::new()));
        assert_eq!(front_matter(""), Yaml::Map(Vec::new()));
        let crlf = front_matter("---\r\nlicense: mit\r\ntags: [a]\r\n---\r\n");
        assert_eq!(crlf.get("license"), Some(&Yaml::Str("mit".into())));
        assert_eq!(crlf.get("tags"), Some(&strs(&["a"])));
    }

    fn dir_with(name: &str, readme: Option<&str>) -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        if let Some(r) = readme {
            std::fs::write(dir.join("README.md"), r).expect("write README.md");
        }
        (tmp, dir)
    }

    fn keys(m: &Metadata) -> Vec<&str> {
        m.entries.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn get<'a>(m: &'a Metadata, key: &str) -> Option<&'a MetadataValue> {
        m.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn text<'a>(m: &'a Metadata, key: &str) -> Option<&'a str> {
        match get(m, key) {
            Some(MetadataValue::String(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn directory_name_gives_the_name_components() {
        let (_tmp, dir) = dir_with("SmolLM2-135M-Instruct", None);
        let m = metadata(&dir, &serde_json::json!({}), &count(134_515_008));
        assert_eq!(
            keys(&m),
            ["general.type", "general.name", "general.finetune", "general.basename", "general.size_label"]
        );
        assert_eq!(text(&m, "general.type"), Some("model"));
        assert_eq!(text(&m, "general.name"), Some("SmolLM2 135M Instruct"));
        assert_eq!(text(&m, "general.basename"), Some("SmolLM2"));
        assert_eq!(text(&m, "general.finetune"), Some("Instruct"));
        assert_eq!(text(&m, "general.size_label"), Some("135M"));

        // config.json's _name_or_path comes before the directory; a path does not count.
        let cfg = serde_json::json!({"_name_or_path": "HuggingFaceTB/SmolLM2-360M"});
        let m = metadata(&dir, &cfg, &count(361_821_120));
        assert_eq!(text(&m, "general.name"), Some("SmolLM2 360M"));
        assert_eq!(text(&m, "general.organization"), Some("HuggingFaceTB"));
        assert_eq!(text(&m, "general.size_label"), Some("360M"));
        assert_eq!(text(&m, "general.finetune"), Some("Instruct"));
        let cfg = serde_json::json!({"_name_or_path": "/home/me/models/x"});
        let m = metadata(&dir, &cfg, &count(134_515_008));
        assert_eq!(text(&m, "general.name"), Some("SmolLM2 135M Instruct"));

        // A name without components: the title, and the size from the parameter count.
        let (_tmp, dir) = dir_with("mistral", None);
        let m = metadata(&dir, &serde_json::json!({}), &count(7_241_732_096));
        assert_eq!(keys(&m), ["general.type", "general.name", "general.size_label"]);
        assert_eq!(text(&m, "general.name"), Some("Mistral"));
        assert_eq!(text(&m, "general.size_label"), Some("7.2B"));
    }

    #[test]
    fn base_models_and_datasets_as_string_or_list() {
        let card = "---\nbase_model: meta-llama/Llama-3.1-8B\nlicense: [mit, apache-2.0]\n---\n";
        let (_tmp, dir) = dir_with("x", Some(card));
        let m = metadata(&dir, &serde_json::json!({}), &count(0));
        assert_eq!(
            keys(&m),
            [
                "general.type",
                "general.name",
                "general.license",
                "general.base_model.count",
                "general.base_model.0.name",
                "general.base_model.0.organization",
                "general.base_model.0.repo_url",
            ]
        );
        assert_eq!(text(&m, "general.name"), Some("X"));
        assert_eq!(text(&m, "general.license"), Some("mit,apache-2.0"));
        assert_eq!(get(&m, "general.base_model.count"), Some(&MetadataValue::U32(1)));
        assert_eq!(text(&m, "general.base_model.0.name"), Some("Llama 3.1 8B"));
        assert_eq!(text(&m, "general.base_model.0.organization"), Some("Meta Llama"));
        assert_eq!(text(&m, "general.base_model.0.repo_url"), Some("https://huggingface.co/meta-llama/Llama-3.1-8B"));

        let card = "---\n\
            base_model:\n\
            - org/First-7B\n\
            - https://huggingface.co/other/Second-v2\n\
            - name: Third\n  \
              author: Someone\n\
            datasets: HuggingFaceTB/smoltalk\n\
            tags: [a]\n\
            pipeline_tag: text-generation\n\
            language: en\n\
            ---\n";
        let (_tmp, dir) = dir_with("x", Some(card));
        let m = metadata(&dir, &serde_json::json!({}), &count(0));
        let k = keys(&m);
        let tail: Vec<&str> = k[2..].to_vec();
        assert_eq!(
            tail,
            [
                "general.base_model.count",
                "general.base_model.0.name",
                "general.base_model.0.organization",
                "general.base_model.0.repo_url",
                "general.base_model.1.name",
                "general.base_model.1.version",
                "general.base_model.1.organization",
                "general.base_model.1.repo_url",
                "general.base_model.2.name",
                "general.base_model.2.author",
                "general.dataset.count",
                "general.dataset.0.name",
                "general.dataset.0.organization",
                "general.dataset.0.repo_url",
                "general.tags",
                "general.languages",
            ]
        );
        assert_eq!(get(&m, "general.base_model.count"), Some(&MetadataValue::U32(3)));
        assert_eq!(text(&m, "general.base_model.0.name"), Some("First 7B"));
        assert_eq!(text(&m, "general.base_model.0.repo_url"), Some("https://huggingface.co/org/First-7B"));
        assert_eq!(text(&m, "general.base_model.1.name"), Some("Second v2"));
        assert_eq!(text(&m, "general.base_model.1.version"), Some("v2"));
        assert_eq!(text(&m, "general.base_model.1.repo_url"), Some("https://huggingface.co/other/Second-v2"));
        assert_eq!(text(&m, "general.base_model.2.author"), Some("Someone"));
        assert_eq!(text(&m, "general.dataset.0.name"), Some("Smoltalk"));
        assert_eq!(text(&m, "general.dataset.0.organization"), Some("HuggingFaceTB"));
        let tags = MetadataValue::Array(MetadataArray::String(vec!["a".into(), "text-generation".into()]));
        assert_eq!(get(&m, "general.tags"), Some(&tags));
        let langs = MetadataValue::Array(MetadataArray::String(vec!["en".into()]));
        assert_eq!(get(&m, "general.languages"), Some(&langs));

        // A base_model key without a value still writes a count of 0.
        let (_tmp, dir) = dir_with("x", Some("---\nbase_model:\ntags: []\n---\n"));
        let m = metadata(&dir, &serde_json::json!({}), &count(0));
        assert_eq!(keys(&m), ["general.type", "general.name", "general.base_model.count"]);
        assert_eq!(get(&m, "general.base_model.count"), Some(&MetadataValue::U32(0)));
    }

    #[test]
    fn generation_config_gives_sampling_defaults() {
        let (_tmp, dir) = dir_with("x", None);
        let gen = r#"{"temperature": 0.6, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1, "do_sample": true}"#;
        std::fs::write(dir.join("generation_config.json"), gen).expect("write");
        let m = metadata(&dir, &serde_json::json!({}), &count(0));
        assert_eq!(
            keys(&m),
            [
                "general.type",
                "general.sampling.top_k",
                "general.sampling.top_p",
                "general.sampling.temp",
                "general.sampling.penalty_repeat",
                "general.name",
            ]
        );
        assert_eq!(get(&m, "general.sampling.top_k"), Some(&MetadataValue::I32(20)));
        assert_eq!(get(&m, "general.sampling.temp"), Some(&MetadataValue::F32(0.6)));
        assert_eq!(get(&m, "general.sampling.penalty_repeat"), Some(&MetadataValue::F32(1.0)));
    }
}
