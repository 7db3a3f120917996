//! `owl show MODEL [--json]`: the model's facts, license terms and openness card.

use std::path::Path;

use anyhow::bail;
use owl_store::{Catalog, ModelCard, Store};

use crate::args::ShowArgs;
use crate::printer;

/// The card of a MODEL argument: a path, or a store/catalog name (nothing is downloaded).
pub fn card_for(model: &std::ffi::OsStr) -> anyhow::Result<ModelCard> {
    let path = Path::new(model);
    if path.exists() {
        return Ok(ModelCard::for_path(path)?);
    }
    let text = model.to_str().unwrap_or_default();
    let store = Store::from_env()?;
    match store.card(text)? {
        Some(card) => Ok(card),
        None => {
            let hint = Catalog::builtin().suggest(text).map(|n| format!("; did you mean '{n}'?")).unwrap_or_default();
            bail!(
                "{}: no such file, and not a name in the store or the catalog{hint} (`owl list`, `owl catalog`)",
                path.display()
            )
        }
    }
}

pub fn run(args: &ShowArgs) -> anyhow::Result<()> {
    let card = card_for(&args.model)?;
    if args.json {
        return Ok(printer::json(&card)?);
    }
    Ok(printer::lines(text(&card))?)
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "unknown".into())
}

fn text(card: &ModelCard) -> Vec<String> {
    let mut rows: Vec<(String, String)> = vec![("name".into(), card.name.clone())];
    if let Some(t) = &card.title {
        rows.push(("title".into(), t.clone()));
    }
    rows.push(("family".into(), opt(&card.family)));
    rows.push(("publisher".into(), opt(&card.publisher)));
    rows.push(("parameters".into(), card.parameters.map_or("unknown".into(), printer::human_count)));
    rows.push(("context length".into(), card.context_length.map_or("unknown".into(), |c| c.to_string())));
    rows.push(("quantization".into(), opt(&card.quantization)));
    let l = &card.license;
    let mut license = opt(&l.id);
    if let Some(n) = l.name.as_ref().filter(|n| Some(*n) != l.id.as_ref()) {
        license.push_str(&format!(" ({n})"));
    }
    if let Some(u) = &l.url {
        license.push_str(&format!("  {u}"));
    }
    rows.push(("license".into(), license));
    rows.push(("base model".into(), card.lineage.base_model.clone().unwrap_or_else(|| "none stated".into())));
    if let Some(u) = &card.lineage.upstream {
        rows.push(("upstream".into(), u.clone()));
    }
    match &card.store {
        Some(s) => {
            rows.push(("in store".into(), format!("{} ({}, {})", s.name, printer::human_bytes(s.size), s.digest)));
            rows.push(("source".into(), s.source.clone()));
            rows.push(("pulled".into(), s.pulled.clone()));
            rows.push(("path".into(), s.path.clone()));
        }
        None => {
            rows.push(("in store".into(), "no".into()));
            if let Some(src) = card.sources.first() {
                rows.push(("source".into(), format!("{src}  (`owl pull {}`)", card.name)));
            }
        }
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out: Vec<String> = rows.iter().map(|(k, v)| format!("{k:<width$}  {v}")).collect();

    let o = &card.openness;
    let verdict = o.osaid.as_str();
    let class = o.mof_class.as_str();
    out.push(String::new());
    out.push(format!("openness: {verdict} (OSI Open Source AI Definition), MOF class {class}"));
    out.push(format!("  {}", o.basis));
    let name_width = o.components.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &o.components {
        let released = match c.released {
            Some(true) => "released",
            Some(false) => "not released",
            None => "unknown",
        };
        let mut line = format!("  {:<name_width$}  {released:<12}", c.name);
        if let Some(lic) = &c.license {
            line.push_str(&format!("  {lic}"));
        }
        if let Some(u) = &c.url {
            line.push_str(&format!("  {u}"));
        }
        if let Some(n) = &c.note {
            line.push_str(&format!("  ({n})"));
        }
        out.push(line);
    }
    if !l.obligations.is_empty() {
        out.push(String::new());
        out.push("obligations:".into());
        out.extend(l.obligations.iter().map(|x| format!("  - {x}")));
    }
    if !l.restrictions.is_empty() {
        out.push(String::new());
        out.push("use restrictions:".into());
        out.extend(l.restrictions.iter().map(|x| format!("  - {x}")));
    }
    if !card.in_catalog {
        out.push(String::new());
        out.push("not in owl's catalog: the facts above are the file's own metadata; 'unknown' is not 'no'".into());
    }
    out
}
