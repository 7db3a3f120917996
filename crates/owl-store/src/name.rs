//! Store names: `NAME[:TAG]`, lowercase, where NAME is one or more `/`-separated segments
//! (`smollm2`, `hf.co/qwen/qwen2.5-0.5b-instruct-gguf`) and TAG defaults to `latest`.

use std::fmt;
use std::path::PathBuf;

use crate::{Result, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName {
    pub name: String,
    pub tag: String,
}

const MAX_LEN: usize = 200;

impl ModelName {
    /// Parses and normalises (lowercase) a store name; rejects anything that could escape
    /// the store's directories or is not a name at all.
    pub fn parse(text: &str) -> Result<ModelName> {
        let bad = |why: &str| StoreError::Name { name: text.to_string(), why: why.to_string() };
        let lower = text.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err(bad("empty"));
        }
        if lower.len() > MAX_LEN {
            return Err(bad("longer than 200 characters"));
        }
        let last_segment_start = lower.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match lower[last_segment_start..].find(':') {
            Some(i) => (&lower[..last_segment_start + i], &lower[last_segment_start + i + 1..]),
            None => (lower.as_str(), "latest"),
        };
        for segment in name.split('/') {
            check_segment(segment).map_err(|why| bad(&why))?;
        }
        check_segment(tag).map_err(|why| bad(&format!("tag: {why}")))?;
        Ok(ModelName { name: name.to_string(), tag: tag.to_string() })
    }

    /// `manifests/NAME.../TAG.json`, relative to the store.
    pub(crate) fn manifest_path(&self) -> PathBuf {
        let mut p = PathBuf::from("manifests");
        p.extend(self.name.split('/'));
        p.push(format!("{}.json", self.tag));
        p
    }
}

fn check_segment(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("empty part".into());
    }
    if s == "." || s == ".." || s.starts_with('.') {
        return Err(format!("'{s}' may not start with '.'"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("'{c}' is not allowed (letters, digits, '.', '_', '-' and '/' are)"));
    }
    Ok(())
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_paths() {
        let n = ModelName::parse("Qwen2.5-Coder:0.5B").expect("name");
        assert_eq!(n.to_string(), "qwen2.5-coder:0.5b");
        assert_eq!(n.manifest_path(), PathBuf::from("manifests/qwen2.5-coder/0.5b.json"));
        assert_eq!(ModelName::parse("smollm2").expect("name").to_string(), "smollm2:latest");
        let hf = ModelName::parse("hf.co/Org/Repo-GGUF:Q4_K_M").expect("name");
        assert_eq!((hf.name.as_str(), hf.tag.as_str()), ("hf.co/org/repo-gguf", "q4_k_m"));
        assert_eq!(hf.manifest_path(), PathBuf::from("manifests/hf.co/org/repo-gguf/q4_k_m.json"));
        for bad in ["", "../x", "a/../b", "a//b", "x:", "x:../y", "a b", ".hidden", "x:y:z", "a/b:c/d"] {
            assert!(ModelName::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
