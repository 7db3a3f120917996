//! `hf:` sources: the Hugging Face Hub's HTTP scheme (`HF_ENDPOINT`, default
//! https://huggingface.co). Files come from `/{repo}/resolve/{revision}/{path}`; the file
//! list, with each LFS file's sha256 and size, from `/api/models/{repo}/tree/{revision}`
//! (https://huggingface.co/docs/hub/api). `HF_TOKEN` is sent as a Bearer token.

use crate::http::Http;
use crate::manifest::ModelFormat;
use crate::{Result, StoreError};

/// A file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteFile {
    pub path: String,
    pub url: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub format: ModelFormat,
    pub files: Vec<RemoteFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TreeEntry {
    path: String,
    size: Option<u64>,
    /// sha256 of an LFS file (the Hub's `lfs.oid`); small files in git have only a sha1.
    sha256: Option<String>,
}

pub(crate) fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the token file `huggingface-cli login`
/// writes (`$HF_HOME/token`, default `~/.cache/huggingface/token`).
fn token() -> Option<String> {
    let env = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    env("HF_TOKEN").or_else(|| env("HUGGING_FACE_HUB_TOKEN")).or_else(|| {
        let home = env("HF_HOME").or_else(|| env("HOME").map(|h| format!("{h}/.cache/huggingface")))?;
        std::fs::read_to_string(format!("{home}/token")).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
    })
}

pub(crate) fn auth_headers() -> Vec<(&'static str, String)> {
    token().map(|t| vec![("Authorization", format!("Bearer {t}"))]).unwrap_or_default()
}

/// Percent-encodes a repository path for a URL (RFC 3986 unreserved characters and `/` kept).
fn encode_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn list_tree(http: &Http, base: &str, repo: &str, revision: &str) -> Result<Vec<TreeEntry>> {
    let mut url = format!("{base}/api/models/{repo}/tree/{}?recursive=true", encode_path(revision));
    let headers = auth_headers();
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = http.page(&url, &headers)?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "hf:{repo}: no such repository or revision '{revision}' on {base} (a gated or private one needs HF_TOKEN)"
            ))
        })?;
        let v: serde_json::Value = serde_json::from_str(&page.body)
            .map_err(|e| StoreError::data(&url, format!("invalid listing JSON: {e}")))?;
        let items = v.as_array().ok_or_else(|| StoreError::data(&url, "the listing is not a JSON array"))?;
        for item in items {
            if item["type"].as_str() != Some("file") {
                continue;
            }
            let Some(path) = item["path"].as_str() else { continue };
            if !is_safe_relative_path(path) {
                return Err(StoreError::data(&url, format!("the listing names an unsafe path '{path}'")));
            }
            let sha256 = item["lfs"]["oid"]
                .as_str()
                .or_else(|| item["lfs"]["sha256"].as_str())
                .map(str::to_ascii_lowercase)
                .filter(|h| crate::hash::is_sha256_hex(h));
            let size = item["lfs"]["size"].as_u64().or_else(|| item["size"].as_u64());
            out.push(TreeEntry { path: path.to_string(), size, sha256 });
        }
        match page.next {
            // The token goes only to the endpoint's own origin.
            Some(next) => {
                let next = crate::pypi::join_url(&url, &next);
                if !crate::pypi::same_origin(&next, base) {
                    return Err(StoreError::data(&url, format!("the listing continues on another host ({next})")));
                }
                url = next;
            }
            None => return Ok(out),
        }
    }
    Err(StoreError::data(format!("hf:{repo}"), "the listing did not end after 1000 pages"))
}

/// A relative path that stays inside the directory it is joined to: no absolute path, no
/// `..`, `.` or empty segment, no backslash (a listing is the server's word, not ours).
pub(crate) fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains('\0')
        && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Whether a GGUF file name carries `quant` as its own token (`…-Q4_K_M.gguf`,
/// `….Q4_K_M.gguf`), so `Q4_K` does not pick `Q4_K_M` and `Q4_NL` does not pick `IQ4_NL`.
fn has_quant(path: &str, quant: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_uppercase();
    let stem = name.strip_suffix(".GGUF").unwrap_or(&name);
    let q = quant.to_ascii_uppercase();
    let mut from = 0;
    while let Some(i) = stem[from..].find(&q) {
        let at = from + i;
        let before = stem[..at].chars().next_back();
        let after = stem[at + q.len()..].chars().next();
        let before_ok = before.is_none_or(|c| matches!(c, '-' | '.' | '_'));
        let after_ok = after.is_none_or(|c| matches!(c, '-' | '.'));
        if before_ok && after_ok {
            return true;
        }
        from = at + 1;
    }
    false
}

fn is_shard(path: &str) -> bool {
    // llama.cpp's gguf-split naming: NAME-00001-of-00003.gguf.
    let stem = path.trim_end_matches(".gguf");
    stem.len() > 15
        && stem.contains("-of-")
        && stem.rsplit('-').next().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
}

/// Quant names of the GGUF files, for error messages.
fn quants(ggufs: &[&TreeEntry]) -> String {
    let mut names: Vec<String> = ggufs
        .iter()
        .map(|e| {
            let n = e.path.rsplit('/').next().unwrap_or(&e.path).trim_end_matches(".gguf");
            n.rsplit(['-', '.']).next().unwrap_or(n).to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    names.join(", ")
}

/// Weights in formats owl does not load, and folders of other runtimes' exports.
fn wanted_in_safetensors_repo(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let skip_dirs = ["original/", "onnx/", "openvino/", "coreml/", "tflite/", "mlx/"];
    let skip_ext = [
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".h5",
        ".msgpack",
        ".onnx",
        ".onnx_data",
        ".ot",
        ".tflite",
        ".gguf",
        ".npz",
        ".mlmodel",
    ];
    !lower.starts_with('.')
        && !skip_dirs.iter().any(|d| lower.starts_with(d))
        && !skip_ext.iter().any(|e| lower.ends_with(e))
        && !lower.contains("/.")
}

/// What to fetch for an `hf:` source.
pub(crate) fn plan(
    http: &Http,
    base: &str,
    repo: &str,
    revision: &str,
    file: Option<&str>,
    quant: Option<&str>,
) -> Result<Plan> {
    let tree = list_tree(http, base, repo, revision)?;
    let remote = |e: &TreeEntry| RemoteFile {
        path: e.path.clone(),
        url: format!("{base}/{repo}/resolve/{}/{}", encode_path(revision), encode_path(&e.path)),
        sha256: e.sha256.clone(),
        size: e.size,
    };
    let src = format!("hf:{repo}");
    // The repository's model card goes along with a GGUF file (second, after the model):
    // its front matter (license, base_model, datasets) is what `owl show` reports for a
    // file the catalog does not know.
    let readme = tree.iter().find(|e| e.path.eq_ignore_ascii_case("README.md")).map(remote);
    let with_readme = |gguf: RemoteFile| -> Vec<RemoteFile> { std::iter::once(gguf).chain(readme.clone()).collect() };
    if let Some(file) = file {
        let entry = tree
            .iter()
            .find(|e| e.path == file)
            .ok_or_else(|| StoreError::NotFound(format!("{src}: no file '{file}' at revision '{revision}'")))?;
        if !file.to_ascii_lowercase().ends_with(".gguf") {
            return Err(StoreError::data(
                &src,
                format!("'{file}' is not a .gguf file; name the repository alone to pull a safetensors model as a directory"),
            ));
        }
        return Ok(Plan { format: ModelFormat::Gguf, files: with_readme(remote(entry)) });
    }
    let ggufs: Vec<&TreeEntry> = tree
        .iter()
        .filter(|e| e.path.to_ascii_lowercase().ends_with(".gguf") && !e.path.to_ascii_lowercase().contains("mmproj"))
        .collect();
    if let Some(q) = quant {
        let matching: Vec<&TreeEntry> = ggufs.iter().copied().filter(|e| has_quant(&e.path, q)).collect();
        return match matching.as_slice() {
            [] if ggufs.is_empty() => Err(StoreError::NotFound(format!("{src}: the repository holds no GGUF file"))),
            [] => Err(StoreError::NotFound(format!("{src}: no GGUF file for {q} (available: {})", quants(&ggufs)))),
            [one] => Ok(Plan { format: ModelFormat::Gguf, files: with_readme(remote(one)) }),
            many if many.iter().all(|e| is_shard(&e.path)) => Err(StoreError::data(
                &src,
                format!("{q} is split into {} files (gguf-split); owl loads single-file GGUF only", many.len()),
            )),
            many => Err(StoreError::data(
                &src,
                format!(
                    "{} GGUF files match {q}: {}; name one as hf:{repo}/FILE",
                    many.len(),
                    many.iter().map(|e| e.path.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        };
    }
    match ggufs.as_slice() {
        [one] => return Ok(Plan { format: ModelFormat::Gguf, files: with_readme(remote(one)) }),
        [] => {}
        _ => {
            return Err(StoreError::data(
                &src,
                format!(
                    "the repository holds several GGUF files; pick one with hf:{repo}:QUANT (available: {})",
                    quants(&ggufs)
                ),
            ))
        }
    }
    // Mistral's repositories hold the weights twice: HF shards and `consolidated.*`.
    let has_hf_weights = tree.iter().any(|e| {
        let name = e.path.rsplit('/').next().unwrap_or(&e.path);
        name.starts_with("model") && name.ends_with(".safetensors")
    });
    let files: Vec<RemoteFile> = tree
        .iter()
        .filter(|e| wanted_in_safetensors_repo(&e.path))
        .filter(|e| !(has_hf_weights && e.path.starts_with("consolidated") && e.path.ends_with(".safetensors")))
        .map(remote)
        .collect();
    if !files.iter().any(|f| f.path.ends_with(".safetensors")) {
        return Err(StoreError::NotFound(format!("{src}: the repository holds neither GGUF nor safetensors weights")));
    }
    Ok(Plan { format: ModelFormat::Safetensors, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_tokens() {
        assert!(has_quant("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"));
        assert!(has_quant("sub/Model.Q4_K_M.gguf", "q4_k_m"));
        assert!(!has_quant("m-Q4_K_M.gguf", "Q4_K"));
        assert!(!has_quant("m-IQ4_NL.gguf", "Q4_NL"));
        assert!(has_quant("m-IQ4_NL.gguf", "IQ4_NL"));
        assert!(has_quant("m-Q8_0-00001-of-00002.gguf", "Q8_0"));
        assert!(is_shard("m-Q8_0-00001-of-00002.gguf") && !is_shard("m-Q8_0.gguf"));
        assert!(wanted_in_safetensors_repo("model-00001-of-00002.safetensors"));
        assert!(wanted_in_safetensors_repo("tokenizer.json") && wanted_in_safetensors_repo("README.md"));
        assert!(
            !wanted_in_safetensors_repo("pytorch_model.bin")
                && !wanted_in_safetensors_repo("original/consolidated.00.pth")
        );
        assert!(!wanted_in_safetensors_repo(".gitattributes"));
        assert_eq!(encode_path("a b/c+d.gguf"), "a%20b/c%2Bd.gguf");
        assert!(is_safe_relative_path("sub/model.safetensors") && is_safe_relative_path("a..b/c"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\..\\b"] {
            assert!(!is_safe_relative_path(bad), "{bad}");
        }
    }
}
