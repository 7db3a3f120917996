//! CycloneDX 1.6 (ECMA-424) JSON.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::*;

/// The CycloneDX 1.6 BOM of a model.
pub fn cyclonedx(card: &ModelCard, tool_version: &str, now: SystemTime) -> Value {
    let timestamp = rfc3339_utc(now);
    let mut components = Vec::new();
    let mut datasets = Vec::new();
    if let Some(data) = training_data_component(card) {
        datasets.push(json!({ "ref": data["bom-ref"].clone() }));
        components.push(data);
    }
    let files: Vec<Value> = card.store.iter().flat_map(|s| &s.files).map(|f| cdx_file(card, f)).collect();
    let model = object([
        ("type", Some(json!("machine-learning-model"))),
        ("bom-ref", Some(json!(model_ref(card)))),
        ("supplier", card.publisher.as_ref().map(|p| json!({ "name": p }))),
        ("publisher", card.publisher.as_ref().map(|p| json!(p))),
        ("name", Some(json!(card.name))),
        ("version", version(card).map(Value::from)),
        ("description", card.title.as_ref().map(|t| json!(t))),
        ("hashes", main_sha256(card).map(|h| json!([{ "alg": "SHA-256", "content": h }]))),
        ("licenses", cdx_licenses(card)),
        ("externalReferences", non_empty(cdx_references(card))),
        ("pedigree", card.lineage.base_model.as_ref().map(|b| json!({ "ancestors": [cdx_base_model(card, b)] }))),
        ("components", non_empty(files)),
        ("modelCard", Some(cdx_model_card(card, datasets))),
        ("properties", non_empty(cdx_properties(&owl_facts(card)))),
    ]);
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", document_uuid("cyclonedx", card, &timestamp)),
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": { "components": [{ "type": "application", "name": "owl", "version": tool_version }] },
            "component": model,
        },
        "components": components,
    })
}

fn cdx_properties(facts: &[(String, String)]) -> Vec<Value> {
    facts.iter().map(|(name, value)| json!({ "name": name, "value": value })).collect()
}

/// An SPDX id when the license is on the list, else its name and URL; the obligations and
/// restrictions the catalog records go with it as properties.
fn cdx_license(id: Option<&str>, name: Option<&str>, url: Option<&str>, properties: Vec<Value>) -> Option<Value> {
    let (key, value) = match id.and_then(spdx_license_id) {
        Some(spdx) => ("id", spdx.to_string()),
        None => ("name", name.or(id)?.to_string()),
    };
    let license = object([
        (key, Some(json!(value))),
        ("acknowledgement", Some(json!("declared"))),
        ("url", url.map(Value::from)),
        ("properties", non_empty(properties)),
    ]);
    Some(json!([{ "license": license }]))
}

fn cdx_licenses(card: &ModelCard) -> Option<Value> {
    let l = &card.license;
    let mut facts = Vec::new();
    facts.extend(l.osi_approved.map(|a| ("owl:license:osi_approved".to_string(), a.to_string())));
    facts.extend(l.obligations.iter().map(|o| ("owl:license:obligation".to_string(), o.clone())));
    facts.extend(l.restrictions.iter().map(|r| ("owl:license:restriction".to_string(), r.clone())));
    cdx_license(l.id.as_deref(), license_name(card), l.url.as_deref().and_then(iri), cdx_properties(&facts))
}

/// CycloneDX's reference type for an openness component's link.
fn cdx_reference_type(component: &str, url: &str) -> &'static str {
    match component {
        "weights" => "distribution",
        "inference code" | "training code" | "evaluation code" if is_vcs(url) => "vcs",
        "inference code" | "training code" | "evaluation code" => "source-distribution",
        "data documentation" | "technical report" => "documentation",
        "model card" => "model-card",
        _ => "other",
    }
}

fn cdx_references(card: &ModelCard) -> Vec<Value> {
    let mut refs: Vec<(&str, String, String)> = Vec::new();
    for d in downloads(card) {
        refs.push(("distribution", d.url.clone(), d.comment()));
    }
    if let Some(upstream) = card.lineage.upstream.as_deref().and_then(iri) {
        refs.push(("website", upstream.to_string(), "the publisher's release page".into()));
    }
    for (c, url) in released(card) {
        refs.push((cdx_reference_type(&c.name, url), url.to_string(), released_comment(c)));
    }
    let mut out: Vec<Value> = Vec::new();
    let mut seen: Vec<(&str, String)> = Vec::new();
    for (kind, url, comment) in refs {
        if !seen.iter().any(|(k, u)| *k == kind && *u == url) {
            out.push(json!({ "type": kind, "url": url, "comment": comment }));
            seen.push((kind, url));
        }
    }
    out
}

fn cdx_base_model(card: &ModelCard, base: &str) -> Value {
    object([
        ("type", Some(json!("machine-learning-model"))),
        ("bom-ref", Some(json!(format!("base-model:{base}")))),
        ("name", Some(json!(base))),
        ("externalReferences", base_model_url(card, base).map(|u| json!([{ "type": "website", "url": u }]))),
    ])
}

fn cdx_file(card: &ModelCard, file: &crate::manifest::ManifestFile) -> Value {
    object([
        ("type", Some(json!("file"))),
        ("bom-ref", Some(json!(format!("file:{}/{}", card.name, file.path)))),
        ("name", Some(json!(file.path))),
        ("hashes", file_sha256(&file.digest).map(|h| json!([{ "alg": "SHA-256", "content": h }]))),
        ("properties", Some(json!([{ "name": "owl:file:size", "value": file.size.to_string() }]))),
    ])
}

/// The training data as a `data` component, when it is released with a link.
fn training_data_component(card: &ModelCard) -> Option<Value> {
    let c = component(card, "training data").filter(|c| c.released == Some(true))?;
    let url = iri(c.url.as_deref()?)?;
    let name = format!("{} training data", card.title.as_deref().unwrap_or(&card.name));
    Some(object([
        ("type", Some(json!("data"))),
        ("bom-ref", Some(json!(format!("dataset:{}:training-data", card.name)))),
        ("name", Some(json!(name))),
        ("description", c.note.as_ref().map(|n| json!(n))),
        ("licenses", c.license.as_deref().and_then(|l| cdx_license(Some(l), Some(l), None, Vec::new()))),
        ("externalReferences", Some(json!([{ "type": "distribution", "url": url }]))),
        ("data", Some(json!([{ "type": "dataset", "name": name, "contents": { "url": url } }]))),
    ]))
}

fn cdx_model_card(card: &ModelCard, datasets: Vec<Value>) -> Value {
    let parameters = object([
        ("task", Some(json!(TASK))),
        ("architectureFamily", card.family.as_ref().map(|f| json!(f))),
        ("modelArchitecture", architecture(card).map(Value::from)),
        ("datasets", non_empty(datasets)),
        ("inputs", Some(json!([{ "format": "text" }]))),
        ("outputs", Some(json!([{ "format": "text" }]))),
    ]);
    json!({ "bom-ref": format!("model-card:{}", card.name), "modelParameters": parameters })
}

// ---- SPDX ----
