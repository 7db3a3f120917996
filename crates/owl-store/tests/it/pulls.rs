use std::time::Duration;

use owl_store::{ModelFormat, PullEvent, StoreError};
use owl_test::http_mock::{MockServer, Route};
use serde_json::json;

use crate::{files_under, gguf_bytes, sha256_hex, store_for, Events};

fn listing(files: &[(&str, &[u8], bool)]) -> Route {
    Route::json(&json!(files
        .iter()
        .map(|(path, body, lfs)| {
            let mut v = json!({"type": "file", "path": path, "size": body.len(), "oid": "0123456789abcdef0123456789abcdef01234567"});
            if *lfs {
                v["lfs"] = json!({"oid": sha256_hex(body), "size": body.len(), "pointerSize": 134});
            }
            v
        })
        .chain(std::iter::once(json!({"type": "directory", "path": "sub", "oid": "x", "size": 0})))
        .collect::<Vec<_>>()))
}

#[test]
fn hf_gguf_by_quant_resumes_after_a_dropped_connection() {
    let server = MockServer::start();
    let q4 = gguf_bytes(300_000, 1);
    let q8 = gguf_bytes(1000, 2);
    server.route(
        "/api/models/org/repo-GGUF/tree/main",
        listing(&[("m-Q4_K_M.gguf", &q4, true), ("m-Q8_0.gguf", &q8, true), ("README.md", b"hi", false)]),
    );
    let mut file = Route::file(q4.clone());
    file.drop_first = Some((1, 100_000));
    server.route("/org/repo-GGUF/resolve/main/m-Q4_K_M.gguf", file);
    server.route("/org/repo-GGUF/resolve/main/README.md", Route::file(b"hi".to_vec()));
    let (home, store) = store_for(&server);
    let events = Events::default();
    let m = store.pull("hf:org/repo-GGUF:Q4_K_M", None, &events.sink()).expect("pull");
    assert_eq!(m.name, "hf.co/org/repo-gguf:q4_k_m");
    assert_eq!(m.format, ModelFormat::Gguf);
    assert_eq!(m.files.len(), 2, "the GGUF, then the repository's model card");
    assert_eq!(m.files[1].path, "README.md");
    assert_eq!(m.files[0].digest, format!("sha256:{}", sha256_hex(&q4)));
    assert_eq!(m.files[0].size, q4.len() as u64);
    let path = store.model_path(&m).expect("path");
    assert_eq!(std::fs::read(&path).expect("blob"), q4);
    // The second request resumed where the first one broke off.
    let reqs = server.requests("/org/repo-GGUF/resolve/main/m-Q4_K_M.gguf");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].header("range"), None);
    assert_eq!(reqs[1].header("range"), Some("bytes=100000-"));
    assert!(events.all().contains(&PullEvent::Download {
        file: "m-Q4_K_M.gguf".into(),
        completed: 100_000,
        total: Some(300_000)
    }));
    assert!(matches!(events.all().last(), Some(PullEvent::Done { name, .. }) if name == "hf.co/org/repo-gguf:q4_k_m"));
    // Nothing left behind in partial/ but locks.
    assert!(files_under(&home.path().join("partial")).iter().all(|f| f.ends_with(".lock")));
    // A second pull finds the blob and downloads nothing.
    store.pull("hf:org/repo-GGUF:Q4_K_M", None, &|_| {}).expect("again");
    assert_eq!(server.requests("/org/repo-GGUF/resolve/main/m-Q4_K_M.gguf").len(), 2);
    // Found locally by name and by source.
    assert!(store.find_local("hf.co/org/repo-gguf:q4_k_m").expect("find").is_some());
    assert!(store.find_local("hf:org/repo-GGUF:Q4_K_M").expect("find").is_some());
}

#[test]
fn hf_choice_errors_name_what_is_there() {
    let server = MockServer::start();
    let a = gguf_bytes(100, 1);
    server.route(
        "/api/models/o/r/tree/main",
        listing(&[("r-Q4_K_M.gguf", &a, true), ("r-Q8_0.gguf", &a, true), ("mmproj-f16.gguf", &a, true)]),
    );
    server.route(
        "/api/models/o/split/tree/main",
        listing(&[("s-Q8_0-00001-of-00002.gguf", &a, true), ("s-Q8_0-00002-of-00002.gguf", &a, true)]),
    );
    let (_home, store) = store_for(&server);
    let err = store.pull("hf:o/r", None, &|_| {}).expect_err("ambiguous").to_string();
    assert!(err.contains("several GGUF files") && err.contains("Q4_K_M, Q8_0"), "{err}");
    let err = store.pull("hf:o/r:Q5_K_M", None, &|_| {}).expect_err("missing quant").to_string();
    assert!(err.contains("no GGUF file for Q5_K_M") && err.contains("Q4_K_M, Q8_0"), "{err}");
    let err = store.pull("hf:o/split:Q8_0", None, &|_| {}).expect_err("split").to_string();
    assert!(err.contains("split into 2 files"), "{err}");
    let err = store.pull("hf:o/none", None, &|_| {}).expect_err("no repo").to_string();
    assert!(err.contains("no such repository"), "{err}");
}

#[test]
fn wrong_bytes_leave_nothing_installed() {
    let server = MockServer::start();
    let promised = gguf_bytes(50_000, 3);
    let served = gguf_bytes(50_000, 4);
    server.route("/api/models/o/bad/tree/main", listing(&[("bad-Q4_0.gguf", &promised, true)]));
    server.route("/o/bad/resolve/main/bad-Q4_0.gguf", Route::file(served.clone()));
    let (home, store) = store_for(&server);
    let err = store.pull("hf:o/bad:Q4_0", None, &|_| {}).expect_err("digest mismatch");
    assert!(matches!(err, StoreError::Digest { .. }), "{err}");
    assert!(err.to_string().contains("nothing was installed"), "{err}");
    let left: Vec<String> = files_under(home.path()).into_iter().filter(|f| !f.ends_with(".lock")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(store.list().expect("list").is_empty());

    // The same through a URL with a pinned digest, and a file that is not GGUF at all.
    server.route("/files/x.gguf", Route::file(served.clone()));
    let pinned = format!("{}/files/x.gguf#sha256={}", server.url(), sha256_hex(&promised));
    assert!(matches!(store.pull(&pinned, None, &|_| {}), Err(StoreError::Digest { .. })));
    server.route("/files/page.gguf", Route::html("<html>login</html>"));
    let err = store.pull(&format!("{}/files/page.gguf", server.url()), None, &|_| {}).expect_err("not gguf");
    assert!(err.to_string().contains("not a GGUF file"), "{err}");
    let left: Vec<String> = files_under(home.path()).into_iter().filter(|f| !f.ends_with(".lock")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn concurrent_pulls_of_one_model_download_it_once() {
    let server = MockServer::start();
    let body = gguf_bytes(400_000, 5);
    server.route("/api/models/o/c/tree/main", listing(&[("c-Q8_0.gguf", &body, true)]));
    let mut file = Route::file(body.clone());
    file.throttle = Some((32 * 1024, Duration::from_millis(20)));
    server.route("/o/c/resolve/main/c-Q8_0.gguf", file);
    let (_home, store) = store_for(&server);
    let waited = Events::default();
    let (a, b) = std::thread::scope(|s| {
        let first = s.spawn(|| store.pull("hf:o/c:Q8_0", None, &|_| {}));
        // The second pull starts once the first is downloading (and holds the file's lock).
        while server.requests("/o/c/resolve/main/c-Q8_0.gguf").is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let second = s.spawn(|| store.pull("hf:o/c:Q8_0", Some("other:name"), &waited.sink()));
        (first.join().expect("join"), second.join().expect("join"))
    });
    let (a, b) = (a.expect("first pull"), b.expect("second pull"));
    assert_eq!(a.files[0].digest, b.files[0].digest);
    assert_eq!(server.requests("/o/c/resolve/main/c-Q8_0.gguf").len(), 1, "one download for both");
    assert!(waited.all().iter().any(|e| matches!(e, PullEvent::Waiting { .. })), "{:?}", waited.all());
    assert!(waited.all().iter().any(|e| matches!(e, PullEvent::Stored { cached: true, .. })));
    assert_eq!(std::fs::read(store.model_path(&b).expect("path")).expect("read"), body);
    assert_eq!(store.list().expect("list").len(), 2);
}

#[test]
fn safetensors_repository_becomes_a_directory() {
    let server = MockServer::start();
    let config = br#"{"architectures":["LlamaForCausalLM"]}"#.to_vec();
    let weights = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ".to_vec();
    let readme = b"---\nlicense: apache-2.0\nbase_model: x/y\n---\n# card\n".to_vec();
    server.route(
        "/api/models/o/st/tree/main",
        listing(&[
            ("config.json", &config, false),
            ("model.safetensors", &weights, true),
            ("pytorch_model.bin", b"skip", true),
            ("README.md", &readme, false),
            ("sub/tokenizer.json", b"{}", false),
        ]),
    );
    for (p, b) in [
        ("config.json", &config),
        ("model.safetensors", &weights),
        ("README.md", &readme),
        ("sub/tokenizer.json", &b"{}".to_vec()),
    ] {
        server.route(&format!("/o/st/resolve/main/{p}"), Route::file(b.clone()));
    }
    let (_home, store) = store_for(&server);
    let m = store.pull("hf:o/st", Some("mine:st"), &|_| {}).expect("pull");
    assert_eq!(m.format, ModelFormat::Safetensors);
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["config.json", "model.safetensors", "README.md", "sub/tokenizer.json"]);
    assert_eq!(m.license.as_deref(), Some("apache-2.0"), "from the README front matter");
    let dir = store.model_path(&m).expect("dir");
    assert_eq!(std::fs::read(dir.join("config.json")).expect("config"), config);
    assert_eq!(std::fs::read(dir.join("sub/tokenizer.json")).expect("tok"), b"{}");
    assert!(server.requests("/o/st/resolve/main/pytorch_model.bin").is_empty());
}

#[test]
fn gated_repositories_ask_for_a_token() {
    let server = MockServer::start();
    let mut gated = Route::json(&json!([]));
    gated.require_auth = Some("Bearer secret".into());
    server.route("/api/models/o/gated/tree/main", gated);
    let (_home, store) = store_for(&server);
    let err = store.pull("hf:o/gated:Q4_K_M", None, &|_| {}).expect_err("401").to_string();
    assert!(err.contains("HTTP 401") && err.contains("HF_TOKEN"), "{err}");
}

/// The awkward answers to a resumed download: 416 for a part that is already whole, a
/// server that ignores Range, and a file that changed between two attempts.
#[test]
fn resume_edge_cases() {
    let server = MockServer::start();
    let body = gguf_bytes(80_000, 11);
    let home = tempfile::tempdir().expect("home");
    let store = owl_store::Store::open(home.path());
    let digest = sha256_hex(&body);

    // A complete part left by a pull killed before it renamed it: the Range request gets
    // 416, the part's digest is right, it is installed without a byte downloaded.
    let partial = home.path().join("partial");
    std::fs::create_dir_all(&partial).expect("mkdir");
    std::fs::write(partial.join(format!("{digest}.part")), &body).expect("part");
    server.route("/a.gguf", Route::file(body.clone()));
    let m = store.pull(&format!("{}/a.gguf#sha256={digest}", server.url()), Some("a"), &|_| {}).expect("whole part");
    assert_eq!(m.files[0].digest, format!("sha256:{digest}"));
    assert!(server.requests("/a.gguf").iter().all(|r| r.header("range").is_some()), "only a range probe");

    // A wrong part of the full length: 416, the digest says no, it starts over once.
    store.remove("a").expect("rm");
    let mut wrong = body.clone();
    wrong[100] ^= 0xff;
    std::fs::write(partial.join(format!("{digest}.part")), &wrong).expect("part");
    let m = store.pull(&format!("{}/a.gguf#sha256={digest}", server.url()), Some("a"), &|_| {}).expect("restart");
    assert_eq!(m.files[0].digest, format!("sha256:{digest}"));

    // A server that ignores Range: the partial copy is dropped and the whole file taken.
    store.remove("a").expect("rm");
    let mut no_ranges = Route::file(body.clone());
    no_ranges.ranges = false;
    no_ranges.drop_first = Some((1, 30_000));
    server.route("/b.gguf", no_ranges);
    let m = store.pull(&format!("{}/b.gguf#sha256={digest}", server.url()), Some("b"), &|_| {}).expect("no ranges");
    assert_eq!(m.files[0].digest, format!("sha256:{digest}"));

    // No digest to check: a resume must prove the file unchanged (If-Range with its ETag).
    // The file changes after the first attempt breaks off: the second answer is the whole
    // new file, never the old prefix spliced to the new rest.
    let old = gguf_bytes(60_000, 21);
    let new = gguf_bytes(60_000, 22);
    let mut first = Route::file(old.clone());
    first.etag = Some("\"v1\"".into());
    first.drop_first = Some((1, 20_000));
    server.route("/c.gguf", first);
    let url = format!("{}/c.gguf", server.url());
    let err = {
        // Break off after the first attempt by letting every later one fail too.
        let mut gone = Route::file(Vec::new());
        gone.status = 404;
        let store2 = store.clone();
        let handle = std::thread::spawn(move || store2.pull(&url, Some("c"), &|_| {}));
        std::thread::sleep(Duration::from_millis(150));
        server.route("/c.gguf", gone);
        handle.join().expect("join")
    };
    assert!(err.is_err(), "the file went away");
    let mut changed = Route::file(new.clone());
    changed.etag = Some("\"v2\"".into());
    server.route("/c.gguf", changed);
    let m = store.pull(&format!("{}/c.gguf", server.url()), Some("c"), &|_| {}).expect("changed file");
    assert_eq!(std::fs::read(store.model_path(&m).expect("path")).expect("read"), new, "the new file, whole");
    let last = server.requests("/c.gguf").pop().expect("requests");
    assert_eq!(last.header("if-range"), Some("\"v1\""), "the resume named the version it had");
}

#[test]
fn a_catalog_listing_that_continues_elsewhere_is_refused() {
    let server = MockServer::start();
    let mut page = listing(&[]);
    page.headers.push(("Link".into(), "<https://elsewhere.example/api/next>; rel=\"next\"".into()));
    server.route("/api/models/o/pg/tree/main", page);
    let (_home, store) = store_for(&server);
    let err = store.pull("hf:o/pg:Q4_0", None, &|_| {}).expect_err("other host").to_string();
    assert!(err.contains("another host"), "{err}");
}

/// Credentials in a URL source are sent as Basic auth and kept out of the manifest.
#[test]
fn url_credentials_are_used_but_never_stored() {
    let server = MockServer::start();
    let body = gguf_bytes(2_000, 31);
    let mut file = Route::file(body.clone());
    file.require_auth = Some("Basic dTpw".into()); // base64("u:p")
    server.route("/priv/m.gguf", file);
    let home = tempfile::tempdir().expect("home");
    let store = owl_store::Store::open(home.path());
    let url = server.url().replace("http://", "http://u:p@") + "/priv/m.gguf";
    let m = store.pull(&url, None, &|_| {}).expect("pull with credentials");
    assert_eq!(m.source, format!("{}/priv/m.gguf", server.url()));
    let text = std::fs::read_to_string(home.path().join("manifests/m/latest.json")).expect("manifest");
    assert!(!text.contains("u:p@"), "{text}");
}
