//! owl-store against local HTTP servers that imitate a hub and a package index.

mod pulls;
mod pypi;
mod store;

use std::path::Path;
use std::sync::Mutex;

use owl_store::{PullEvent, Store};
use owl_test::http_mock::MockServer;

/// A GGUF-looking payload of `n` bytes (the store checks the magic only).
pub fn gguf_bytes(n: usize, seed: u8) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend((0..n.saturating_sub(4)).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(tmp.path(), bytes).expect("write");
    owl_store::sha256_file(tmp.path()).expect("hash")
}

/// A store in a fresh temporary OWL_HOME, pulling `hf:` sources from `server`.
pub fn store_for(server: &MockServer) -> (tempfile::TempDir, Store) {
    let home = tempfile::tempdir().expect("tempdir");
    let store = Store::open(home.path()).with_hf_endpoint(server.url());
    (home, store)
}

/// Collects events for assertions.
#[derive(Default)]
pub struct Events(pub Mutex<Vec<PullEvent>>);

impl Events {
    pub fn sink(&self) -> impl Fn(&PullEvent) + '_ {
        move |e: &PullEvent| self.0.lock().expect("events").push(e.clone())
    }

    pub fn all(&self) -> Vec<PullEvent> {
        self.0.lock().expect("events").clone()
    }
}

/// Files under a directory, recursively (relative paths), for "nothing was installed" checks.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
