//! The openness card: what a release includes, the Model Openness Framework class it reaches,
//! and whether it meets the OSI Open Source AI Definition.
//!
//! - MOF: White et al., "The Model Openness Framework", arXiv:2403.13784 (LF AI & Data).
//!   Class III (open model) needs the model's architecture code and parameters under open
//!   licenses plus its model card, technical report and data card; class II (open tooling)
//!   adds training and evaluation code; class I (open science) adds the training data.
//!   We judge the components the catalog records: inference code stands for the architecture,
//!   data documentation for the data card.
//! - OSAID 1.0 (https://opensource.org/ai/open-source-ai-definition): parameters and the
//!   complete code for training and running under OSI-approved terms, and sufficiently
//!   detailed data information. A release that has weights without those is "open weights".
//!
//! For a file the catalog does not know, the card says only what the file's own metadata
//! says, and "unknown" everywhere else: never a guess.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::{CatalogEntry, Component, COMPONENT_NAMES};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MofClass {
    #[serde(rename = "I")]
    I,
    #[serde(rename = "II")]
    II,
    #[serde(rename = "III")]
    III,
    #[serde(rename = "none")]
    None,
    #[serde(rename = "unknown")]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Osaid {
    #[serde(rename = "open source")]
    OpenSource,
    #[serde(rename = "open weights")]
    OpenWeights,
    #[serde(rename = "unknown")]
    Unknown,
}

impl MofClass {
    /// As the card writes it: `I`, `II`, `III`, `none`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            MofClass::I => "I",
            MofClass::II => "II",
            MofClass::III => "III",
            MofClass::None => "none",
            MofClass::Unknown => "unknown",
        }
    }
}

impl Osaid {
    /// As the card writes it: `open source`, `open weights`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Osaid::OpenSource => "open source",
            Osaid::OpenWeights => "open weights",
            Osaid::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpennessComponent {
    pub name: String,
    /// `None`: nothing says.
    pub released: Option<bool>,
    pub license: Option<String>,
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Openness {
    pub mof_class: MofClass,
    pub osaid: Osaid,
    /// One line on why: the first requirement of the next class that is missing.
    pub basis: String,
    pub components: Vec<OpennessComponent>,
}

/// Licenses that count as open for code and weights (OSI-approved) or for data
/// (open data licenses), by SPDX id.
const OPEN_LICENSES: [&str; 16] = [
    "apache-2.0",
    "mit",
    "bsd-2-clause",
    "bsd-3-clause",
    "isc",
    "mpl-2.0",
    "lgpl-2.1",
    "lgpl-3.0",
    "gpl-2.0",
    "gpl-3.0",
    "agpl-3.0",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc0-1.0",
    "odc-by-1.0",
    "cdla-permissive-2.0",
];

/// Whether a license string names an open license: every license it lists (an `AND`,
/// a comma, or a "/" between them) must be one.
pub fn is_open_license(license: &str) -> bool {
    let parts: Vec<String> = license
        .split([',', '/', ';'])
        .flat_map(|p| p.split(" AND "))
        .flat_map(|p| p.split(" and "))
        .map(|p| p.trim().trim_matches(['(', ')']).trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    !parts.is_empty() && parts.iter().all(|p| OPEN_LICENSES.contains(&p.as_str()))
}

fn open(c: &Component) -> bool {
    c.released && c.license.as_deref().is_some_and(is_open_license)
}

fn missing(reqs: &[(bool, &'static str)]) -> Option<&'static str> {
    reqs.iter().find(|(ok, _)| !ok).map(|(_, what)| *what)
}

impl Openness {
    pub fn from_catalog(entry: &CatalogEntry) -> Openness {
        let c = &entry.components;
        let weights_open = open(&c.weights) && entry.license.osi_approved;
        let class_iii = [
            (weights_open, "weights under an open license"),
            (open(&c.inference_code), "inference (architecture) code under an open license"),
            (c.model_card.released, "a model card"),
            (c.technical_report.released, "a technical report"),
            (c.data_documentation.released, "a data card (detailed data documentation)"),
        ];
        let class_ii = [
            (open(&c.training_code), "training code under an open license"),
            (open(&c.evaluation_code), "evaluation code under an open license"),
        ];
        let class_i = [(open(&c.training_data), "training data under an open license")];
        let (mof_class, basis) = match (missing(&class_iii), missing(&class_ii), missing(&class_i)) {
            (Some(m), _, _) => (MofClass::None, format!("MOF class III needs {m}")),
            (None, Some(m), _) => (MofClass::III, format!("MOF class II needs {m}")),
            (None, None, Some(m)) => (MofClass::II, format!("MOF class I needs {m}")),
            (None, None, None) => (MofClass::I, "every MOF class I component is released under an open license".into()),
        };
        let osaid =
            if weights_open && open(&c.inference_code) && open(&c.training_code) && c.data_documentation.released {
                Osaid::OpenSource
            } else if c.weights.released {
                Osaid::OpenWeights
            } else {
                Osaid::Unknown
            };
        let components = c
            .iter()
            .into_iter()
            .map(|(name, comp)| OpennessComponent {
                name: name.to_string(),
                released: Some(comp.released),
                license: comp.license.clone(),
                url: Some(comp.url.clone()),
                note: comp.note.clone(),
            })
            .collect();
        Openness { mof_class, osaid, basis, components }
    }

    /// For a model the catalog does not know: what its metadata states, "unknown" elsewhere.
    pub fn from_metadata(facts: &MetadataFacts) -> Openness {
        let components = COMPONENT_NAMES
            .iter()
            .map(|&name| {
                let mut c =
                    OpennessComponent { name: name.to_string(), released: None, license: None, url: None, note: None };
                match name {
                    "weights" => {
                        c.license = facts.license.clone();
                        c.url = facts.source_url.clone();
                        c.note = Some("from the file's metadata; not in owl's catalog".into());
                    }
                    "training data" if !facts.datasets.is_empty() => {
                        c.note = Some(format!("metadata names: {}", facts.datasets.join(", ")));
                    }
                    _ => {}
                }
                c
            })
            .collect();
        Openness {
            mof_class: MofClass::Unknown,
            osaid: Osaid::Unknown,
            basis: "not in owl's catalog: only the file's own metadata is known".into(),
            components,
        }
    }
}

/// What a model file says about itself: GGUF `general.*` keys, or a Hugging Face README's
/// YAML front matter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetadataFacts {
    pub name: Option<String>,
    pub organization: Option<String>,
    pub license: Option<String>,
    pub license_url: Option<String>,
    pub source_url: Option<String>,
    pub base_models: Vec<String>,
    pub datasets: Vec<String>,
}

impl MetadataFacts {
    /// From GGUF metadata (llama.cpp's `general.*` naming, gguf-py `Keys.General`).
    pub fn from_gguf(gguf: &owl_formats::gguf::GgufFile) -> MetadataFacts {
        let s = |k: &str| gguf.get_str(k).map(str::to_string).filter(|v| !v.trim().is_empty());
        let list = |prefix: &str, field: &str| -> Vec<String> {
            let n = gguf.get_u64(&format!("{prefix}.count")).unwrap_or(0).min(64);
            (0..n)
                .filter_map(|i| {
                    let name = s(&format!("{prefix}.{i}.{field}"));
                    let org = s(&format!("{prefix}.{i}.organization"));
                    let url = s(&format!("{prefix}.{i}.repo_url"));
                    match (org, name, url) {
                        (Some(o), Some(n), _) => Some(format!("{o}/{n}")),
                        (None, Some(n), _) => Some(n),
                        (_, None, Some(u)) => Some(u),
                        _ => None,
                    }
                })
                .collect()
        };
        let license = s("general.license").or_else(|| s("general.license.name"));
        MetadataFacts {
            name: s("general.name"),
            organization: s("general.organization"),
            license,
            license_url: s("general.license.link"),
            source_url: s("general.source.url")
                .or_else(|| s("general.source.huggingface.repository").map(|r| format!("https://huggingface.co/{r}")))
                .or_else(|| s("general.url")),
            base_models: list("general.base_model", "name"),
            datasets: list("general.dataset", "name"),
        }
    }

    /// Fills what these facts lack from `other` (the file's own metadata wins).
    pub fn fill_from(&mut self, other: MetadataFacts) {
        self.name = self.name.take().or(other.name);
        self.organization = self.organization.take().or(other.organization);
        self.license = self.license.take().or(other.license);
        self.license_url = self.license_url.take().or(other.license_url);
        self.source_url = self.source_url.take().or(other.source_url);
        if self.base_models.is_empty() {
            self.base_models = other.base_models;
        }
        if self.datasets.is_empty() {
            self.datasets = other.datasets;
        }
    }

    /// From a Hugging Face model README's front matter.
    pub fn from_readme(readme: &str) -> MetadataFacts {
        let fm = front_matter(readme);
        let list = |k: &str| fm.get(k).map(|v| split_list(v)).unwrap_or_default();
        MetadataFacts {
            name: fm.get("model_name").cloned(),
            organization: None,
            license: fm.get("license").cloned().filter(|l| l != "other").or_else(|| fm.get("license_name").cloned()),
            license_url: fm.get("license_link").cloned(),
            source_url: None,
            base_models: list("base_model"),
            datasets: list("datasets"),
        }
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split('\n')
        .map(|s| s.trim().trim_start_matches('-').trim().trim_matches(['"', '\'']).to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The top-level keys of a README's YAML front matter (`---` … `---`), as text: scalars as
/// written, block lists (`- a`) one item a line. Enough for the model-card keys
/// (`license`, `base_model`, `datasets`); nested maps are skipped.
pub fn front_matter(readme: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = readme.lines();
    if lines.next().map(str::trim) != Some("---") {
        return out;
    }
    let mut current: Option<String> = None;
    for line in lines {
        if line.trim() == "---" {
            break;
        }
        if let Some(item) = line.trim_start().strip_prefix("- ") {
            if line.starts_with([' ', '-']) {
                if let Some(k) = &current {
                    let entry: &mut String = out.entry(k.clone()).or_default();
                    if !entry.is_empty() {
                        entry.push('\n');
                    }
                    entry.push_str(item.trim().trim_matches(['"', '\'']));
                }
                continue;
            }
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let key = k.trim().to_string();
            let value = v.trim();
            current = Some(key.clone());
            if !value.is_empty() {
                let value = if value.starts_with('[') && value.ends_with(']') {
                    value[1..value.len() - 1]
                        .split(',')
                        .map(|s| s.trim().trim_matches(['"', '\'']))
                        .collect::<Vec<_>>()
                        .join("\n")
                } else {
                    value.trim_matches(['"', '\'']).to_string()
                };
                out.insert(key, value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn names_match_the_json() {
        for c in [MofClass::I, MofClass::II, MofClass::III, MofClass::None, MofClass::Unknown] {
            assert_eq!(serde_json::to_value(c).expect("json"), c.as_str());
        }
        for v in [Osaid::OpenSource, Osaid::OpenWeights, Osaid::Unknown] {
            assert_eq!(serde_json::to_value(v).expect("json"), v.as_str());
        }
    }

    #[test]
    fn licenses() {
        assert!(is_open_license("Apache-2.0") && is_open_license("ODC-By-1.0, Apache-2.0"));
        assert!(!is_open_license("Llama 3.1 Community License") && !is_open_license("Gemma Terms of Use"));
        assert!(!is_open_license("") && !is_open_license("Apache-2.0 AND Llama 3.2 Community License"));
    }

    #[test]
    fn classes_follow_the_components() {
        let c = Catalog::builtin();
        // OLMo 2 released everything under open licenses: the fully open contrast.
        let olmo = Openness::from_catalog(c.find("olmo2:7b").expect("olmo2"));
        assert_eq!((olmo.mof_class, olmo.osaid), (MofClass::I, Osaid::OpenSource), "{}", olmo.basis);
        // Llama and Gemma weights are under licenses with use restrictions.
        for name in ["llama3.1:8b", "gemma3:270m"] {
            let o = Openness::from_catalog(c.find(name).expect("entry"));
            assert_eq!((o.mof_class, o.osaid), (MofClass::None, Osaid::OpenWeights), "{name}: {}", o.basis);
            assert!(o.basis.contains("weights under an open license"), "{name}: {}", o.basis);
        }
        for e in &c.models {
            let o = Openness::from_catalog(e);
            assert_eq!(o.components.len(), 8);
            assert!(o.components.iter().all(|c| c.url.is_some() && c.released.is_some()), "{}", e.name);
        }
    }

    #[test]
    fn readme_front_matter() {
        let readme = "---\nlicense: apache-2.0\nbase_model:\n- Qwen/Qwen2.5-0.5B\ndatasets: [a/b, \"c/d\"]\nwidget:\n  - text: hi\n---\n# Model\nlicense: not this\n";
        let f = MetadataFacts::from_readme(readme);
        assert_eq!(f.license.as_deref(), Some("apache-2.0"));
        assert_eq!(f.base_models, ["Qwen/Qwen2.5-0.5B"]);
        assert_eq!(f.datasets, ["a/b", "c/d"]);
        assert!(front_matter("# no front matter\nlicense: x").is_empty());
        let o = Openness::from_metadata(&f);
        assert_eq!((o.mof_class, o.osaid), (MofClass::Unknown, Osaid::Unknown));
        assert_eq!(o.components[0].license.as_deref(), Some("apache-2.0"));
        assert!(o.components[1..].iter().all(|c| c.released.is_none()));
    }
}
