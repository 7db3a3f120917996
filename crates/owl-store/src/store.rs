use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::events::PullEvent;
use crate::manifest::{Manifest, ManifestFile, ModelFormat};
use crate::name::ModelName;
use crate::source::Source;
use crate::{Result, StoreError};

/// The store under one `OWL_HOME`. Cheap to make; directories are created when first needed.
#[derive(Debug, Clone)]
pub struct Store {
    home: PathBuf,
    /// Hub endpoint; `None`: `HF_ENDPOINT` or huggingface.co at pull time.
    hf_endpoint: Option<String>,
    /// Package indexes; `None`: pip's configuration at pull time.
    index: Option<crate::pypi::IndexConfig>,
}

/// A model ready to load.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub manifest: Manifest,
    /// The GGUF blob, or the directory of links for a safetensors model.
    pub path: PathBuf,
}

/// What `rm` did.
#[derive(Debug, Clone, Default)]
pub struct RemoveReport {
    /// Blobs deleted because no other name referenced them.
    pub deleted_blobs: Vec<String>,
    /// Blobs kept because another name still references them.
    pub kept_blobs: Vec<String>,
    pub freed_bytes: u64,
}

impl Store {
    pub fn open(home: impl Into<PathBuf>) -> Store {
        Store { home: home.into(), hf_endpoint: None, index: None }
    }

    /// Pulls `hf:` sources from this endpoint instead of `HF_ENDPOINT`.
    pub fn with_hf_endpoint(mut self, endpoint: impl Into<String>) -> Store {
        self.hf_endpoint = Some(endpoint.into());
        self
    }

    /// Resolves `pypi:` sources on these indexes instead of pip's configuration.
    pub fn with_index(mut self, index: crate::pypi::IndexConfig) -> Store {
        self.index = Some(index);
        self
    }

    pub(crate) fn hf_endpoint(&self) -> String {
        self.hf_endpoint.clone().unwrap_or_else(crate::hf::endpoint).trim_end_matches('/').to_string()
    }

    pub(crate) fn index_config(&self) -> crate::pypi::IndexConfig {
        self.index.clone().unwrap_or_else(crate::pypi::IndexConfig::from_env)
    }

    /// `OWL_HOME`, else `~/.owl`.
    pub fn default_home() -> Result<PathBuf> {
        if let Some(home) = std::env::var_os("OWL_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(home));
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => Ok(PathBuf::from(home).join(".owl")),
            None => Err(StoreError::NotFound("cannot locate the model store: neither OWL_HOME nor HOME is set".into())),
        }
    }

    /// The store at `OWL_HOME` (or `~/.owl`).
    pub fn from_env() -> Result<Store> {
        Ok(Store::open(Store::default_home()?))
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn blob_path(&self, sha256_hex: &str) -> PathBuf {
        self.home.join("blobs").join(format!("sha256-{sha256_hex}"))
    }

    /// The size of the blob with this digest, when the store has it.
    pub(crate) fn blob_size(&self, sha256_hex: &str) -> Option<u64> {
        std::fs::metadata(self.blob_path(sha256_hex)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    /// A file now in the store, as a manifest lists it; says so to `events`.
    pub(crate) fn stored(
        &self,
        label: &str,
        sha256_hex: &str,
        size: u64,
        cached: bool,
        events: &dyn Fn(&PullEvent),
    ) -> ManifestFile {
        let digest = format!("sha256:{sha256_hex}");
        events(&PullEvent::Stored { file: label.to_string(), digest: digest.clone(), size, cached });
        ManifestFile { path: label.to_string(), digest, size }
    }

    pub(crate) fn dir(&self, rel: &str) -> Result<PathBuf> {
        let dir = self.home.join(rel);
        std::fs::create_dir_all(&dir).map_err(StoreError::io(format!("cannot create {}", dir.display())))?;
        Ok(dir)
    }

    /// An exclusive lock on `partial/KEY.lock`, waiting (and saying so) while another
    /// process holds it: two pulls of one file never write the same `.part`.
    pub(crate) fn lock_download(&self, key: &str, label: &str, events: &dyn Fn(&PullEvent)) -> Result<File> {
        let (path, file) = self.lock_file(&format!("{key}.lock"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                events(&PullEvent::Waiting { file: label.to_string() });
                file.lock().map_err(StoreError::io(format!("cannot lock {}", path.display())))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Io { what: format!("cannot lock {}", path.display()), source: e })
            }
        }
        Ok(file)
    }

    /// The store-wide lock between installing (shared: blob renames + manifest write) and
    /// `rm`'s collection of unreferenced blobs (exclusive), so a blob just installed for a
    /// manifest not yet written is never collected.
    pub(crate) fn lock_gc(&self, exclusive: bool) -> Result<File> {
        let (path, file) = self.lock_file("gc.lock")?;
        let locked = if exclusive { file.lock() } else { file.lock_shared() };
        locked.map_err(StoreError::io(format!("cannot lock {}", path.display())))?;
        Ok(file)
    }

    /// `partial/NAME`, opened for locking (created empty; never removed, so every process
    /// locks the same inode).
    fn lock_file(&self, name: &str) -> Result<(PathBuf, File)> {
        let path = self.dir("partial")?.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io(format!("cannot open {}", path.display())))?;
        Ok((path, file))
    }

    /// Moves a verified, synced file into `blobs/` under its digest (atomic rename; the
    /// directory is synced so the rename survives a crash).
    pub(crate) fn install_blob(&self, file: &Path, sha256_hex: &str) -> Result<PathBuf> {
        let dest = self.blob_path(sha256_hex);
        let blobs = self.dir("blobs")?;
        set_readable(file)?;
        std::fs::rename(file, &dest).map_err(StoreError::io(format!(
            "cannot move {} to {}",
            file.display(),
            dest.display()
        )))?;
        sync_dir(&blobs);
        Ok(dest)
    }

    pub fn manifest(&self, name: &ModelName) -> Result<Option<Manifest>> {
        let path = self.home.join(name.manifest_path());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io { what: format!("cannot read {}", path.display()), source: e }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::File { path, why: format!("not a valid manifest: {e}") })
    }

    /// Writes a manifest atomically (temp file, fsync, rename).
    pub(crate) fn write_manifest(&self, name: &ModelName, manifest: &Manifest) -> Result<()> {
        let path = self.home.join(name.manifest_path());
        let dir = path.parent().unwrap_or(&self.home).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(StoreError::io(format!("cannot create {}", dir.display())))?;
        let text = serde_json::to_string_pretty(manifest).map_err(|e| StoreError::data("manifest", e.to_string()))?;
        write_atomic(&path, text.as_bytes())
    }

    /// Every manifest, sorted by name. Unreadable manifests are errors, not silently hidden.
    pub fn list(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        let root = self.home.join("manifests");
        if root.is_dir() {
            walk_manifests(&root, &mut out)?;
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The path to load: the blob of a GGUF, or for a safetensors directory `links/KEY/`
    /// holding a link per file (made on first use), KEY naming exactly this set of files.
    pub fn model_path(&self, manifest: &Manifest) -> Result<PathBuf> {
        for f in &manifest.files {
            let blob = self.blob_path(f.sha256());
            if !blob.is_file() {
                return Err(StoreError::NotFound(format!(
                    "{}: blob {} of {} is missing from the store; pull it again",
                    manifest.name, f.digest, f.path
                )));
            }
        }
        match manifest.format {
            ModelFormat::Gguf => {
                let f =
                    manifest.files.first().ok_or_else(|| StoreError::data(&manifest.name, "manifest has no file"))?;
                Ok(self.blob_path(f.sha256()))
            }
            ModelFormat::Safetensors => {
                if let Some(bad) = manifest.files.iter().find(|f| !crate::hf::is_safe_relative_path(&f.path)) {
                    return Err(StoreError::data(
                        &manifest.name,
                        format!("the manifest names an unsafe path '{}'", bad.path),
                    ));
                }
                let key = links_key(manifest);
                let dir = self.home.join("links").join(&key);
                if dir.is_dir() {
                    return Ok(dir);
                }
                // Built aside and renamed into place: two first uses at once each build
                // their own, one rename wins, and nobody sees a half-made directory.
                let links = self.dir("links")?;
                let tmp = tempfile::Builder::new()
                    .prefix(".building-")
                    .tempdir_in(&links)
                    .map_err(StoreError::io(format!("cannot create a directory in {}", links.display())))?;
                for f in &manifest.files {
                    let link = tmp.path().join(&f.path);
                    if let Some(parent) = link.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(StoreError::io(format!("cannot create {}", parent.display())))?;
                    }
                    link_file(&self.blob_path(f.sha256()), &link)?;
                }
                let built = tmp.keep();
                if std::fs::rename(&built, &dir).is_err() {
                    let _ = std::fs::remove_dir_all(&built);
                    if !dir.is_dir() {
                        return Err(StoreError::NotFound(format!("cannot make {}", dir.display())));
                    }
                }
                Ok(dir)
            }
        }
    }

    /// A store name or a source already pulled, without touching the network.
    pub fn find_local(&self, text: &str) -> Result<Option<ResolvedModel>> {
        let manifest = if Source::looks_like_source(text) {
            let source = Source::parse(text)?.to_string();
            self.list()?.into_iter().find(|m| m.source == source)
        } else {
            self.named_manifest(text)?.map(|(_, m)| m)
        };
        match manifest {
            Some(manifest) => Ok(Some(ResolvedModel { path: self.model_path(&manifest)?, manifest })),
            None => Ok(None),
        }
    }

    /// The manifest a name means: the store name as written first (a user's own
    /// `smollm2:latest` is theirs), else the catalog name it is an alias of.
    fn named_manifest(&self, text: &str) -> Result<Option<(ModelName, Manifest)>> {
        if let Ok(name) = ModelName::parse(text) {
            if let Some(m) = self.manifest(&name)? {
                return Ok(Some((name, m)));
            }
        }
        if let Some(entry) = Catalog::builtin().find(text) {
            let name = ModelName::parse(&entry.name)?;
            if let Some(m) = self.manifest(&name)? {
                return Ok(Some((name, m)));
            }
        }
        Ok(None)
    }

    /// A model by store name, catalog name or source: from the store, else pulled first
    /// (a catalog name or a source). `Ok(None)` when `text` is none of these.
    pub fn resolve(&self, text: &str, events: &dyn Fn(&PullEvent)) -> Result<Option<ResolvedModel>> {
        if let Some(found) = self.find_local(text)? {
            return Ok(Some(found));
        }
        if Source::looks_like_source(text) || Catalog::builtin().find(text).is_some() {
            let manifest = self.pull(text, None, events)?;
            return Ok(Some(ResolvedModel { path: self.model_path(&manifest)?, manifest }));
        }
        Ok(None)
    }

    /// Removes a name; then every blob no name references goes (this name's, and any left
    /// behind by a re-pull or a failed pull), while blobs another name uses stay.
    pub fn remove(&self, text: &str) -> Result<RemoveReport> {
        let _gc = self.lock_gc(true)?;
        let Some((name, manifest)) = self.named_manifest(text)? else {
            let name = ModelName::parse(text)?;
            return Err(StoreError::NotFound(format!("{name} is not in the store ({})", self.home.display())));
        };
        let path = self.home.join(name.manifest_path());
        std::fs::remove_file(&path).map_err(StoreError::io(format!("cannot remove {}", path.display())))?;
        remove_empty_parents(path.parent(), &self.home.join("manifests"));
        let remaining = self.list()?;
        let referenced: std::collections::HashSet<&str> =
            remaining.iter().flat_map(|m| m.files.iter().map(|f| f.sha256())).collect();
        let mut report = RemoveReport {
            kept_blobs: manifest
                .files
                .iter()
                .filter(|f| referenced.contains(f.sha256()))
                .map(|f| f.digest.clone())
                .collect(),
            ..RemoveReport::default()
        };
        let blobs = self.home.join("blobs");
        if let Ok(entries) = std::fs::read_dir(&blobs) {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(hex) = file_name.to_str().and_then(|n| n.strip_prefix("sha256-")) else { continue };
                if referenced.contains(hex) {
                    continue;
                }
                let size = entry.metadata().map_or(0, |m| m.len());
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        report.freed_bytes += size;
                        report.deleted_blobs.push(format!("sha256:{hex}"));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(StoreError::Io {
                            what: format!("cannot remove {}", entry.path().display()),
                            source: e,
                        })
                    }
                }
            }
        }
        // Link directories of file sets no manifest has any more.
        let live: std::collections::HashSet<String> = remaining.iter().map(links_key).collect();
        if let Ok(entries) = std::fs::read_dir(self.home.join("links")) {
            for entry in entries.flatten() {
                if !entry.file_name().to_str().is_some_and(|n| live.contains(n)) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        report.deleted_blobs.sort();
        Ok(report)
    }

    /// Copies a local GGUF (or safetensors directory) into the store under `name`.
    pub fn import(&self, path: &Path, name: &str, events: &dyn Fn(&PullEvent)) -> Result<Manifest> {
        let name = ModelName::parse(name)?;
        // Held from the first blob to the manifest, as a pull does: `rm` cannot collect a
        // blob this import found already there and is about to name.
        let _gc = self.lock_gc(false)?;
        let (format, files): (ModelFormat, Vec<(String, PathBuf)>) = if path.is_dir() {
            let mut files = Vec::new();
            collect_dir(path, path, &mut files)?;
            if !files.iter().any(|(rel, _)| rel.ends_with(".safetensors")) {
                return Err(StoreError::File {
                    path: path.to_path_buf(),
                    why: "no .safetensors file in the directory".into(),
                });
            }
            (ModelFormat::Safetensors, files)
        } else {
            let header = read_prefix(path, 4)?;
            if header != b"GGUF" {
                return Err(StoreError::File {
                    path: path.to_path_buf(),
                    why: "not a GGUF file (no GGUF magic); import a safetensors model as its directory".into(),
                });
            }
            let file_name = path.file_name().map_or("model.gguf".into(), |n| n.to_string_lossy().into_owned());
            (ModelFormat::Gguf, vec![(file_name, path.to_path_buf())])
        };
        let mut entries = Vec::new();
        let partial = self.dir("partial")?;
        for (rel, src) in &files {
            let key = crate::hash::sha256_str(&format!("import:{}", src.display()));
            let _lock = self.lock_download(&key, rel, events)?;
            let tmp = partial.join(format!("{key}.part"));
            copy_synced(src, &tmp)?;
            events(&PullEvent::Verifying { file: rel.clone() });
            let digest = crate::hash::sha256_file(&tmp)?;
            let size = std::fs::metadata(&tmp).map_err(StoreError::io(format!("cannot stat {}", tmp.display())))?.len();
            let cached = self.blob_path(&digest).is_file();
            if cached {
                let _ = std::fs::remove_file(&tmp);
            } else {
                self.install_blob(&tmp, &digest)?;
            }
            events(&PullEvent::Stored { file: rel.clone(), digest: format!("sha256:{digest}"), size, cached });
            entries.push(ManifestFile { path: rel.clone(), digest: format!("sha256:{digest}"), size });
        }
        let license = match format {
            ModelFormat::Gguf => owl_formats::gguf::GgufFile::open(path)
                .ok()
                .and_then(|g| g.get_str("general.license").map(str::to_string)),
            ModelFormat::Safetensors => None,
        };
        let manifest = Manifest {
            schema: Manifest::SCHEMA,
            name: name.to_string(),
            source: format!("file:{}", std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display()),
            format,
            files: entries,
            license,
            catalog: None,
            pulled: crate::time::rfc3339_utc(std::time::SystemTime::now()),
        };
        self.write_manifest(&name, &manifest)?;
        Ok(manifest)
    }
}

/// The name of a manifest's link directory: a digest of its files' paths and digests.
fn links_key(manifest: &Manifest) -> String {
    let listing: String = manifest.files.iter().map(|f| format!("{}\0{}\n", f.path, f.digest)).collect();
    crate::hash::sha256_str(&listing)
}

fn walk_manifests(dir: &Path, out: &mut Vec<Manifest>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(StoreError::io(format!("cannot list {}", dir.display())))?;
    for entry in entries {
        let path = entry.map_err(StoreError::io(format!("cannot list {}", dir.display())))?.path();
        if path.is_dir() {
            walk_manifests(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            let text =
                std::fs::read_to_string(&path).map_err(StoreError::io(format!("cannot read {}", path.display())))?;
            let m: Manifest = serde_json::from_str(&text)
                .map_err(|e| StoreError::File { path: path.clone(), why: format!("not a valid manifest: {e}") })?;
            out.push(m);
        }
    }
    Ok(())
}

fn collect_dir(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(StoreError::io(format!("cannot list {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_dir(root, &path, out)?;
        } else if path.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            out.push((rel, path));
        }
    }
    Ok(())
}

fn read_prefix(path: &Path, n: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = File::open(path).map_err(StoreError::io(format!("cannot open {}", path.display())))?;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match f.read(&mut buf[got..]).map_err(StoreError::io(format!("cannot read {}", path.display())))? {
            0 => break,
            k => got += k,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

fn copy_synced(src: &Path, dest: &Path) -> Result<()> {
    let mut from = File::open(src).map_err(StoreError::io(format!("cannot open {}", src.display())))?;
    let mut to = File::create(dest).map_err(StoreError::io(format!("cannot create {}", dest.display())))?;
    std::io::copy(&mut from, &mut to)
        .map_err(StoreError::io(format!("cannot copy {} into the store", src.display())))?;
    to.sync_all().map_err(StoreError::io(format!("cannot sync {}", dest.display())))?;
    Ok(())
}

/// Temp file in the same directory, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(StoreError::io(format!("cannot write in {}", dir.display())))?;
    tmp.write_all(bytes).map_err(StoreError::io(format!("cannot write {}", path.display())))?;
    tmp.as_file().sync_all().map_err(StoreError::io(format!("cannot sync {}", path.display())))?;
    set_readable(tmp.path())?;
    tmp.persist(path)
        .map_err(|e| StoreError::Io { what: format!("cannot write {}", path.display()), source: e.error })?;
    sync_dir(dir);
    Ok(())
}

fn set_readable(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(StoreError::io(format!("cannot set permissions of {}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Best effort: a directory fsync makes a rename durable on Linux; elsewhere it may not apply.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn link_file(target: &Path, link: &Path) -> Result<()> {
    #[cfg(unix)]
    let made = std::os::unix::fs::symlink(target, link);
    #[cfg(not(unix))]
    let made = std::fs::hard_link(target, link);
    made.map_err(StoreError::io(format!("cannot link {} to {}", link.display(), target.display())))
}

fn remove_empty_parents(mut dir: Option<&Path>, stop: &Path) {
    while let Some(d) = dir {
        if d == stop || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}
