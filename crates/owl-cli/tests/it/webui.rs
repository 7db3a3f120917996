//! The chat page at `/`, in a real browser: headless Chromium (Debian's package) driven by
//! Selenium (tests/clients/webui_checks.py, set up by scripts/webui_test/setup.sh), against
//! a real `owl serve smollm2` with an API key. Also `--no-webui`, and several models on one
//! server.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::serve::{Server, KEY};

fn webui_python() -> PathBuf {
    owl_test::setup_python("webui_test/setup.sh", "Chromium and Selenium")
}

/// Where the screenshots go: target/tmp/webui (kept after the run, for a look).
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("webui");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

#[test]
fn chat_page_in_a_real_browser() {
    let python = webui_python();
    let server = Server::start(&["--parallel", "2"]);
    let dir = artifacts();
    let _ = std::fs::remove_file(dir.join("webui.png"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/webui_checks.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&server.url)
        .arg(KEY)
        .arg(&dir)
        // Selenium uses the system chromedriver it is given and never downloads one.
        .env("SE_OFFLINE", "true")
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("webui: ok"),
        "{stdout}\n{}\nserver: {:?}",
        String::from_utf8_lossy(&out.stderr),
        server.log_lines()
    );
    let png = std::fs::read(dir.join("webui.png")).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    server.stop();
}

pub(crate) fn get(url: &str, key: Option<&str>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.get(url);
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let mut resp = req.call().expect("GET");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) fn post(url: &str, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent
        .post(url)
        .header("Authorization", format!("Bearer {KEY}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("POST");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn several_models_on_one_server_and_no_webui() {
    let server = Server::start_models(&["smollm2", "gemma3"], &["--no-webui", "-c", "512", "--parallel", "1"]);
    let (status, _) = get(&format!("{}/", server.url), None);
    assert_eq!(status, 404, "--no-webui: no page");
    let (status, models) = get(&format!("{}/v1/models", server.url), Some(KEY));
    assert_eq!(status, 200);
    let ids: Vec<&str> = models["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["smollm2", "gemma3"]);
    // A model by its MODEL argument, its store name, or its file's stem; none: the first.
    for (name, served) in [("gemma3", "gemma3"), ("gemma3:270m", "gemma3"), ("SmolLM2-135M-Instruct.Q4_1", "smollm2")] {
        let body = json!({"model": name, "prompt": "The sky is", "max_tokens": 3, "temperature": 0});
        let (status, answer) = post(&format!("{}/v1/completions", server.url), &body);
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["model"], served, "{name}");
    }
    let (status, answer) = post(&format!("{}/v1/completions", server.url), &json!({"prompt": "Hi", "max_tokens": 1}));
    assert_eq!((status, answer["model"].as_str()), (200, Some("smollm2")));
    let (status, answer) = post(&format!("{}/v1/completions", server.url), &json!({"model": "llama", "prompt": "Hi"}));
    assert_eq!(status, 404);
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("'smollm2', 'gemma3'"), "{message}");
    // The card of each model, for the chat page's panel.
    let (_, card) = get(&format!("{}/v1/models/gemma3", server.url), Some(KEY));
    assert_eq!(card["owl"]["license"]["id"], "Gemma Terms of Use", "{card}");
    assert_eq!(card["owl"]["openness"]["osaid"], "open weights");
    let (_, health) = get(&format!("{}/health", server.url), None);
    assert_eq!(health["models"], json!(["smollm2", "gemma3"]));
    server.stop();
}
