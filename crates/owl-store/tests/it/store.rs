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

/// A name the user gave wins over the catalog alias it shadows, and `rm` sweeps blobs no
/// name references any more (left by a re-pull under the same name).
#[test]
fn own_names_shadow_catalog_aliases_and_rm_sweeps_orphans() {
    let home = tempfile::tempdir().expect("home");
    let store = Store::open(home.path());
    let src = tempfile::tempdir().expect("src");
    let (one, two) = (src.path().join("one.gguf"), src.path().join("two.gguf"));
    std::fs::write(&one, gguf_bytes(3_000, 1)).expect("write");
    std::fs::write(&two, gguf_bytes(3_000, 2)).expect("write");
    let mine = store.import(&one, "smollm2", &|_| {}).expect("import");
    assert_eq!(mine.name, "smollm2:latest");
    let found = store.find_local("smollm2").expect("find").expect("the user's model");
    assert_eq!(found.manifest.source, mine.source);
    // Re-importing under the same name leaves the first file without a name.
    let again = store.import(&two, "smollm2", &|_| {}).expect("again");
    assert_ne!(again.files[0].digest, mine.files[0].digest);
    assert_eq!(files_under(&home.path().join("blobs")).len(), 2);
    let other = store.import(&two, "other", &|_| {}).expect("other");
    let r = store.remove("smollm2").expect("rm the user's own");
    assert_eq!(r.deleted_blobs, [mine.files[0].digest.clone()], "the orphan goes; the shared one stays");
    assert_eq!(r.kept_blobs, [other.files[0].digest.clone()]);
    assert!(store.find_local("smollm2").expect("find").is_none(), "the catalog's smollm2 was never pulled here");
}
