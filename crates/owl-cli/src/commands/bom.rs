//! `owl bom MODEL [--format cyclonedx|spdx] [-o FILE]`: an AI bill of materials.

use std::io::Write;

use anyhow::Context;

use crate::args::{BomArgs, BomFormat};
use crate::commands::show::card_for;
use crate::printer;

pub fn run(args: &BomArgs) -> anyhow::Result<()> {
    let card = card_for(&args.model)?;
    let now = std::time::SystemTime::now();
    let version = env!("CARGO_PKG_VERSION");
    let doc = match args.format {
        BomFormat::Cyclonedx => owl_store::cyclonedx(&card, version, now),
        BomFormat::Spdx => owl_store::spdx(&card, version, now),
    };
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    match &args.output {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        Some(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            let mut tmp =
                tempfile::NamedTempFile::new_in(&dir).with_context(|| format!("cannot write in {}", dir.display()))?;
            tmp.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
            tmp.persist(path).map_err(|e| e.error).with_context(|| format!("cannot write {}", path.display()))?;
            printer::note(&format!("wrote {}", path.display()));
        }
    }
    Ok(())
}
