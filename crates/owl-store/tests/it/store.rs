use owl_store::{Store, StoreError};

use crate::{files_under, gguf_bytes};

#[test]
fn rm_keeps_a_blob_until_its_last_name_goes() {
    let home = tempfile::tempdir().expect("home");
    let store = Store::open(home.path());
    let src = tempfile::tempdir().expect("src");
    let file = src.path().join("model.gguf");
    std::fs::write(&file, gguf_bytes(10_000, 9)).expect("write");
    let a = store.import(&file, "a:1", &|_| {}).expect("import a");
    let b = store.import(&file, "B:1", &|_| {}).expect("import b");
    assert_eq!(a.files[0].digest, b.files[0].digest);
    assert_eq!(b.name, "b:1");
    assert!(a.source.starts_with("file:"));
    let blob = store.blob_path(a.files[0].sha256());
    assert!(blob.is_file());
    assert_eq!(files_under(&home.path().join("blobs")).len(), 1, "one blob for both names");

    let r = store.remove("a:1").expect("rm a");
    assert_eq!((r.deleted_blobs.len(), r.kept_blobs.len()), (0, 1));
    assert!(blob.is_file(), "b:1 still uses it");
    let names: Vec<String> = store.list().expect("list").into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["b:1"]);

    let r = store.remove("b:1").expect("rm b");
    assert_eq!(r.deleted_blobs, [a.files[0].digest.clone()]);
    assert_eq!(r.freed_bytes, 10_000);
    assert!(!blob.exists());
    assert!(store.list().expect("list").is_empty());
    assert!(matches!(store.remove("b:1"), Err(StoreError::NotFound(_))));
}

#[test]
fn import_refuses_what_is_not_a_model() {
    let home = tempfile::tempdir().expect("home");
    let store = Store::open(home.path());
    let src = tempfile::tempdir().expect("src");
    let file = src.path().join("notes.txt");
    std::fs::write(&file, "hello").expect("write");
    let err = store.import(&file, "x", &|_| {}).expect_err("not gguf").to_string();
    assert!(err.contains("not a GGUF file"), "{err}");
    let err = store.import(src.path(), "x", &|_| {}).expect_err("no safetensors").to_string();
    assert!(err.contains("no .safetensors file"), "{err}");
    let err = store.import(&file, "../escape", &|_| {}).expect_err("bad name").to_string();
    assert!(err.contains("invalid model name"), "{err}");
    assert!(store.list().expect("list").is_empty());
}

#[test]
fn a_corrupt_manifest_is_an_error_that_names_it() {
    let home = tempfile::tempdir().expect("home");
    let store = Store::open(home.path());
    let dir = home.path().join("manifests/broken");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("latest.json"), "{not json").expect("write");
    let err = store.list().expect_err("corrupt").to_string();
    assert!(err.contains("broken/latest.json") && err.contains("not a valid manifest"), "{err}");
}
