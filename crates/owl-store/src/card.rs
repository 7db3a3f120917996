//! What `owl show` reports about a model: the catalog's facts (license terms, openness) when
//! the catalog knows it, the file's own facts (metadata, parameter count, quantization) when
//! it is on disk, and the store's record (digest, size, source, time) when it was pulled.

use std::path::Path;

use serde::Serialize;

use crate::catalog::{Catalog, CatalogEntry};
use crate::manifest::{Manifest, ModelFormat};
use crate::openness::{MetadataFacts, Openness};
use crate::store::{ResolvedModel, Store};
use crate::{Result, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    /// Store name, catalog name, or the path shown.
    pub name: String,
    pub title: Option<String>,
    pub family: Option<String>,
    pub publisher: Option<String>,
    pub parameters: Option<u64>,
    pub context_length: Option<u64>,
    pub quantization: Option<String>,
    pub license: CardLicense,
    pub openness: Openness,
    pub lineage: Lineage,
    /// Whether the catalog knows the model (else every fact is the file's own).
    pub in_catalog: bool,
    /// The store's record, when it has been pulled or imported.
    pub store: Option<StoreRecord>,
    /// What the file says about itself, when it is on disk.
    pub metadata: Option<MetadataFacts>,
    /// Sources the catalog lists (the first is what `owl pull NAME` uses).
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CardLicense {
    pub id: Option<String>,
    pub name: Option<String>,
    pub url: Option<String>,
    pub osi_approved: Option<bool>,
    pub obligations: Vec<String>,
    pub restrictions: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    pub base_model: Option<String>,
    /// Where the file came from (store source, or the metadata's source URL).
    pub source: Option<String>,
    /// The publisher's release page.
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreRecord {
    pub name: String,
    pub path: String,
    pub digest: String,
    pub size: u64,
    pub pulled: String,
    pub source: String,
    pub format: ModelFormat,
    pub files: Vec<crate::manifest::ManifestFile>,
}

/// Facts read from the model file itself.
#[derive(Debug, Clone, Default)]
struct FileFacts {
    family: Option<String>,
    parameters: Option<u64>,
    context_length: Option<u64>,
    quantization: Option<String>,
    metadata: MetadataFacts,
}

fn gguf_facts(path: &Path) -> Result<FileFacts> {
    let g = owl_formats::gguf::GgufFile::open(path)
        .map_err(|e| StoreError::File { path: path.to_path_buf(), why: e.to_string() })?;
    let arch = g.architecture().map(str::to_string);
    let context_length = arch.as_ref().and_then(|a| g.get_u64(&format!("{a}.context_length")));
    let quantization = g
        .get_u64("general.file_type")
        .and_then(owl_formats::gguf::file_type_name)
        .map(|n| n.trim_start_matches("MOSTLY_").trim_start_matches("ALL_").to_string());
    Ok(FileFacts {
        family: arch,
        parameters: Some(g.tensors().iter().map(|t| t.n_elements).sum()),
        context_length,
        quantization,
        metadata: MetadataFacts::from_gguf(&g),
    })
}

fn safetensors_facts(dir: &Path) -> Result<FileFacts> {
    let config: serde_json::Value = match std::fs::read_to_string(dir.join("config.json")) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::File { path: dir.join("config.json"), why: format!("invalid JSON: {e}") })?,
        Err(_) => serde_json::Value::Null,
    };
    let parameters = owl_formats::safetensors::SafetensorsModel::open(dir).ok().map(|m| m.n_elements());
    let metadata =
        std::fs::read_to_string(dir.join("README.md")).map(|r| MetadataFacts::from_readme(&r)).unwrap_or_default();
    Ok(FileFacts {
        family: config["model_type"].as_str().map(str::to_string),
        parameters,
        context_length: config["max_position_embeddings"].as_u64(),
        quantization: config["torch_dtype"].as_str().or(config["dtype"].as_str()).map(str::to_ascii_uppercase),
        metadata,
    })
}

fn file_facts(path: &Path) -> Result<FileFacts> {
    if path.is_dir() {
        safetensors_facts(path)
    } else {
        gguf_facts(path)
    }
}

impl ModelCard {
    fn from_entry(entry: &CatalogEntry, file: Option<FileFacts>, store: Option<StoreRecord>) -> ModelCard {
        let source =
            store.as_ref().map(|s| s.source.clone()).or_else(|| entry.sources.first().map(|s| s.source.clone()));
        ModelCard {
            name: entry.name.clone(),
            title: Some(entry.title.clone()),
            family: Some(entry.family.clone()),
            publisher: Some(entry.publisher.clone()),
            // The file's exact count when it is here; the publisher's figure otherwise.
            parameters: file.as_ref().and_then(|f| f.parameters).or(Some(entry.parameters)),
            context_length: Some(entry.context_length),
            quantization: file.as_ref().and_then(|f| f.quantization.clone()).or(Some(entry.quantization.clone())),
            license: CardLicense {
                id: Some(entry.license.id.clone()),
                name: Some(entry.license.name.clone()),
                url: Some(entry.license.url.clone()),
                osi_approved: Some(entry.license.osi_approved),
                obligations: entry.obligations.clone(),
                restrictions: entry.restrictions.clone(),
            },
            openness: Openness::from_catalog(entry),
            lineage: Lineage { base_model: entry.base_model.clone(), source, upstream: Some(entry.upstream.clone()) },
            in_catalog: true,
            store,
            metadata: file.map(|f| f.metadata),
            sources: entry.sources.iter().map(|s| s.source.clone()).collect(),
        }
    }

    fn from_file(name: String, facts: FileFacts, store: Option<StoreRecord>) -> ModelCard {
        let m = &facts.metadata;
        let source = store.as_ref().map(|s| s.source.clone()).or_else(|| m.source_url.clone());
        ModelCard {
            name,
            title: m.name.clone(),
            family: facts.family.clone(),
            publisher: m.organization.clone(),
            parameters: facts.parameters,
            context_length: facts.context_length,
            quantization: facts.quantization.clone(),
            license: CardLicense {
                id: m.license.clone(),
                name: None,
                url: m.license_url.clone(),
                osi_approved: None,
                obligations: Vec::new(),
                restrictions: Vec::new(),
            },
            openness: Openness::from_metadata(m),
            lineage: Lineage { base_model: m.base_models.first().cloned(), source, upstream: None },
            in_catalog: false,
            store,
            metadata: Some(facts.metadata),
            sources: Vec::new(),
        }
    }

    /// A model file or directory on disk (not through the store).
    pub fn for_path(path: &Path) -> Result<ModelCard> {
        let facts = file_facts(path)?;
        Ok(ModelCard::from_file(path.display().to_string(), facts, None))
    }
}

fn record(resolved: &ResolvedModel) -> StoreRecord {
    let m: &Manifest = &resolved.manifest;
    StoreRecord {
        name: m.name.clone(),
        path: resolved.path.display().to_string(),
        digest: m.digest().to_string(),
        size: m.size(),
        pulled: m.pulled.clone(),
        source: m.source.clone(),
        format: m.format,
        files: m.files.clone(),
    }
}

impl Store {
    /// The card of a store name, a catalog name (pulled or not) or a source already pulled;
    /// nothing is downloaded. `Ok(None)` when `text` is none of these.
    pub fn card(&self, text: &str) -> Result<Option<ModelCard>> {
        let catalog = Catalog::builtin();
        let local = self.find_local(text)?;
        let entry = match &local {
            Some(r) => r.manifest.catalog.as_deref().and_then(|c| catalog.find(c)),
            None => catalog.find(text),
        };
        let facts = match &local {
            Some(r) => {
                let mut facts = file_facts(&r.path)?;
                // A GGUF pulled from a hub came with the repository's model card: what the
                // file itself leaves unsaid, the card's front matter may say.
                if r.manifest.format == ModelFormat::Gguf {
                    if let Some(readme) = self.readme_facts(&r.manifest.files) {
                        facts.metadata.fill_from(readme);
                    }
                }
                Some(facts)
            }
            None => None,
        };
        let store = local.as_ref().map(record);
        Ok(match (entry, facts) {
            (Some(entry), facts) => Some(ModelCard::from_entry(entry, facts, store)),
            (None, Some(facts)) => {
                let name = store.as_ref().map_or_else(|| text.to_string(), |s| s.name.clone());
                Some(ModelCard::from_file(name, facts, store))
            }
            (None, None) => None,
        })
    }
}
