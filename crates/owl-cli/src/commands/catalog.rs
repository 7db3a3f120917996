//! `owl catalog [--json]`: the models owl knows by name.

use owl_store::{Catalog, CatalogEntry, Openness};
use serde::Serialize;

use crate::args::CatalogArgs;
use crate::printer;

#[derive(Serialize)]
struct EntryWithOpenness<'a> {
    #[serde(flatten)]
    entry: &'a CatalogEntry,
    openness: Openness,
}

pub fn run(args: &CatalogArgs) -> anyhow::Result<()> {
    let catalog = Catalog::builtin();
    if args.json {
        let entries: Vec<EntryWithOpenness<'_>> = catalog
            .models
            .iter()
            .map(|entry| EntryWithOpenness { entry, openness: Openness::from_catalog(entry) })
            .collect();
        return Ok(printer::json(&entries)?);
    }
    let rows: Vec<[String; 6]> = catalog
        .models
        .iter()
        .map(|e| {
            let o = Openness::from_catalog(e);
            let verdict = o.osaid.as_str();
            let class = o.mof_class.as_str();
            let name =
                if e.aliases.is_empty() { e.name.clone() } else { format!("{} ({})", e.name, e.aliases.join(", ")) };
            [
                name,
                printer::human_count(e.parameters),
                e.context_length.to_string(),
                e.license.id.clone(),
                format!("{verdict}, MOF {class}"),
                e.sources[0].source.clone(),
            ]
        })
        .collect();
    let header =
        ["NAME".to_string(), "PARAMS".into(), "CONTEXT".into(), "LICENSE".into(), "OPENNESS".into(), "SOURCE".into()];
    let mut widths = [0usize; 6];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |r: &[String; 6]| {
        let mut s = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s
    };
    Ok(printer::lines(std::iter::once(line(&header)).chain(rows.iter().map(line)))?)
}
