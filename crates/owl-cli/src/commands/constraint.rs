//! `--json-schema FILE | --regex R | --grammar FILE` (owl generate): the grammar the output
//! must follow, read and compiled for the model's vocabulary.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use owl_engine::{Constraint, GrammarCompiler, GrammarSpec};
use owl_tokenizer::Tokenizer;

use crate::args::ConstraintArgs;

/// The grammar the flags ask for, if any.
pub fn spec(args: &ConstraintArgs) -> anyhow::Result<Option<GrammarSpec>> {
    if let Some(path) = &args.json_schema {
        let text = read(path, "--json-schema")?;
        let schema: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("--json-schema {}: not valid JSON", path.display()))?;
        return Ok(Some(GrammarSpec::JsonSchema { schema, strict: true }));
    }
    if let Some(rx) = &args.regex {
        return Ok(Some(GrammarSpec::Regex(rx.clone())));
    }
    if let Some(path) = &args.grammar {
        let text = read(path, "--grammar")?;
        if owl_engine::grammar::gbnf::looks_like_gbnf(&text) {
            let lark = owl_engine::grammar::gbnf::to_lark(&text)
                .with_context(|| format!("--grammar {}: a GBNF grammar owl cannot translate", path.display()))?;
            return Ok(Some(GrammarSpec::Lark(lark)));
        }
        return Ok(Some(GrammarSpec::Lark(text)));
    }
    Ok(None)
}

/// `spec` compiled for `tokenizer` over `vocab_size` logits.
pub fn compile(spec: &GrammarSpec, tokenizer: &Arc<Tokenizer>, vocab_size: usize) -> anyhow::Result<Constraint> {
    let compiler = GrammarCompiler::new(tokenizer.clone(), vocab_size)?;
    Ok(compiler.compile(spec)?)
}

/// A file's text; `-` is stdin.
fn read(path: &Path, flag: &str) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).with_context(|| format!("{flag} -: reading stdin"))?;
        return Ok(text);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))?;
    if text.trim().is_empty() {
        bail!("{flag} {}: the file is empty", path.display());
    }
    Ok(text)
}
