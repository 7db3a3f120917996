//! SPDX 3.0.1 JSON-LD with the AI profile.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::*;

/// The SPDX 3.0.1 JSON-LD document (AI profile) of a model.
pub fn spdx(card: &ModelCard, tool_version: &str, now: SystemTime) -> Value {
    let created = rfc3339_utc(now);
    let base = format!("urn:uuid:{}", document_uuid("spdx", card, &created));
    let id = |local: &str| format!("{base}#{local}");
    let ci = "_:creationinfo";
    let (model, agent, tool) = (id("model"), id("owl"), id("owl-tool"));
    let mut graph = vec![
        json!({
            "type": "CreationInfo",
            "@id": ci,
            "specVersion": "3.0.1",
            "created": created,
            "createdBy": [agent],
            "createdUsing": [tool],
        }),
        json!({ "type": "SoftwareAgent", "spdxId": agent, "creationInfo": ci, "name": "owl" }),
        json!({ "type": "Tool", "spdxId": tool, "creationInfo": ci, "name": format!("owl {tool_version}") }),
    ];
    let publisher = card.publisher.as_ref().map(|p| {
        graph.push(json!({ "type": "Organization", "spdxId": id("publisher"), "creationInfo": ci, "name": p }));
        id("publisher")
    });
    let downloads = downloads(card);
    // One place to download the whole model from: the first source that is a single file or
    // repository (a PyPI source split over several packages is not).
    let location = downloads.iter().position(|d| d.part.is_none());
    graph.push(object([
        ("type", Some(json!("ai_AIPackage"))),
        ("spdxId", Some(json!(model))),
        ("creationInfo", Some(json!(ci))),
        ("name", Some(json!(card.name))),
        ("description", card.title.as_ref().map(|t| json!(t))),
        ("suppliedBy", publisher.map(Value::from)),
        ("verifiedUsing", main_sha256(card).map(|h| json!([spdx_hash(&h)]))),
        ("externalRef", non_empty(spdx_references(card, &downloads, location))),
        ("software_primaryPurpose", Some(json!("model"))),
        ("software_downloadLocation", location.map(|i| json!(downloads[i].url))),
        ("software_homePage", card.lineage.upstream.as_deref().and_then(iri).map(Value::from)),
        ("software_packageVersion", version(card).map(Value::from)),
        ("ai_domain", Some(json!(["natural language processing"]))),
        ("ai_informationAboutTraining", training_information(card).map(Value::from)),
        ("ai_limitation", non_empty_text(&card.license.restrictions).map(Value::from)),
        ("ai_typeOfModel", Some(json!(type_of_model(card)))),
    ]));
    if let Some(license) = spdx_license(card, &id("license"), ci) {
        graph.push(license);
        graph.push(relationship(id("declared-license"), ci, &model, "hasDeclaredLicense", vec![id("license")]));
    }
    if let Some(base_model) = &card.lineage.base_model {
        graph.push(object([
            ("type", Some(json!("ai_AIPackage"))),
            ("spdxId", Some(json!(id("base-model")))),
            ("creationInfo", Some(json!(ci))),
            ("name", Some(json!(base_model))),
            ("software_primaryPurpose", Some(json!("model"))),
            ("software_downloadLocation", base_model_url(card, base_model).map(Value::from)),
        ]));
        graph.push(relationship(id("lineage"), ci, &model, "descendantOf", vec![id("base-model")]));
    }
    let files = card.store.as_ref().map_or(&[][..], |s| &s.files[..]);
    for (i, f) in files.iter().enumerate() {
        graph.push(object([
            ("type", Some(json!("software_File"))),
            ("spdxId", Some(json!(id(&format!("file-{i}"))))),
            ("creationInfo", Some(json!(ci))),
            ("name", Some(json!(f.path))),
            ("verifiedUsing", file_sha256(&f.digest).map(|h| json!([spdx_hash(&h)]))),
        ]));
    }
    if !files.is_empty() {
        let to = (0..files.len()).map(|i| id(&format!("file-{i}"))).collect();
        graph.push(relationship(id("files"), ci, &model, "contains", to));
    }
    let facts: Map<String, Value> = owl_facts(card).into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    graph.push(json!({
        "type": "Annotation",
        "spdxId": id("owl-facts"),
        "creationInfo": ci,
        "annotationType": "other",
        "subject": model,
        "contentType": "application/json",
        "statement": Value::Object(facts).to_string(),
    }));
    let elements: Vec<Value> = graph.iter().filter_map(|e| e.get("spdxId").cloned()).collect();
    graph.push(json!({
        "type": "SpdxDocument",
        "spdxId": base,
        "creationInfo": ci,
        "name": format!("AI BOM of {}", card.name),
        "profileConformance": ["core", "software", "ai", "simpleLicensing"],
        "rootElement": [model],
        "element": elements,
    }));
    json!({ "@context": SPDX_CONTEXT, "@graph": graph })
}

fn spdx_hash(sha256: &str) -> Value {
    json!({ "type": "Hash", "algorithm": "sha256", "hashValue": sha256 })
}

fn relationship(id: String, ci: &str, from: &str, kind: &str, to: Vec<String>) -> Value {
    json!({
        "type": "Relationship",
        "spdxId": id,
        "creationInfo": ci,
        "from": from,
        "relationshipType": kind,
        "to": to,
    })
}

/// SPDX's reference type for an openness component's link.
fn spdx_reference_type(component: &str, url: &str) -> &'static str {
    match component {
        "weights" => "altDownloadLocation",
        "inference code" | "training code" | "evaluation code" if is_vcs(url) => "vcs",
        "inference code" | "training code" | "evaluation code" => "sourceArtifact",
        "data documentation" | "technical report" | "model card" => "documentation",
        _ => "other",
    }
}

/// The download pages other than the download location (the parts of a split source as
/// binary artifacts, other sources as alternatives), then the released components' links.
fn spdx_references(card: &ModelCard, downloads: &[Download], location: Option<usize>) -> Vec<Value> {
    let external = |kind: &str, url: &str, comment: String| {
        json!({
            "type": "ExternalRef",
            "externalRefType": kind,
            "locator": [url],
            "comment": comment,
        })
    };
    let mut refs = Vec::new();
    for d in downloads.iter().enumerate().filter(|&(i, _)| Some(i) != location).map(|(_, d)| d) {
        let kind = if d.part.is_some() { "binaryArtifact" } else { "altDownloadLocation" };
        refs.push(external(kind, &d.url, d.comment()));
    }
    for (c, url) in released(card) {
        refs.push(external(spdx_reference_type(&c.name, url), url, released_comment(c)));
    }
    refs
}

/// `LicenseRef-` and the license's name, letters, digits, `.` and `-` only.
fn license_ref(name: &str) -> String {
    let mut id = String::from("LicenseRef-");
    for word in name.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.')).filter(|w| !w.is_empty()) {
        if !id.ends_with('-') {
            id.push('-');
        }
        id.push_str(word);
    }
    id
}

/// The declared license: its SPDX id as the expression, or a `LicenseRef-` mapped to the
/// license's URL; the obligations and restrictions the catalog records as its comment.
fn spdx_license(card: &ModelCard, spdx_id: &str, ci: &str) -> Option<Value> {
    let l = &card.license;
    let listed = l.id.as_deref().and_then(spdx_license_id);
    let name = license_name(card);
    let (expression, custom) = match listed {
        Some(id) => (id.to_string(), None),
        None => {
            let r = license_ref(l.id.as_deref().or(name)?);
            let map =
                l.url.as_deref().and_then(iri).map(|u| json!([{ "type": "DictionaryEntry", "key": r, "value": u }]));
            (r, map)
        }
    };
    let mut notes: Vec<String> = l.obligations.iter().map(|o| format!("Obligation: {o}")).collect();
    notes.extend(l.restrictions.iter().map(|r| format!("Restriction: {r}")));
    Some(object([
        ("type", Some(json!("simplelicensing_LicenseExpression"))),
        ("spdxId", Some(json!(spdx_id))),
        ("creationInfo", Some(json!(ci))),
        ("name", if listed.is_some() { None } else { name.map(Value::from) }),
        ("comment", non_empty_text(&notes).map(Value::from)),
        ("simplelicensing_licenseExpression", Some(json!(expression))),
        ("simplelicensing_customIdToUri", custom),
    ]))
}

/// What the card says about training: the data, its documentation and the code, each with
/// whether it is released, under what, where, and the catalog's note.
fn training_information(card: &ModelCard) -> Option<String> {
    let lines: Vec<String> = ["training data", "data documentation", "training code"]
        .iter()
        .filter_map(|name| component(card, name))
        .filter_map(|c| {
            let status = match (c.released, &c.license) {
                (Some(true), Some(l)) => format!("released ({l})"),
                (Some(true), None) => "released".to_string(),
                (Some(false), _) => "not released".to_string(),
                (None, _) => return c.note.as_ref().map(|n| format!("{}: {n}", c.name)),
            };
            let mut line = format!("{}: {status}", c.name);
            if let Some(url) = &c.url {
                line.push_str(&format!(", see {url}"));
            }
            line.push('.');
            if let Some(note) = &c.note {
                line.push(' ');
                line.push_str(note);
            }
            Some(line)
        })
        .collect();
    non_empty_text(&lines)
}
