//! `owl pull`, `owl list`, `owl rm`, `owl import`.

use anyhow::Context;
use owl_store::{Catalog, Manifest, ModelFormat, Store};
use serde::Serialize;

use crate::args::{ImportArgs, ListArgs, PullArgs, RmArgs};
use crate::commands::pull_progress::PullProgress;
use crate::printer;

pub fn pull(args: &PullArgs) -> anyhow::Result<()> {
    let store = Store::from_env()?;
    let progress = PullProgress::new(args.json);
    let manifest = store.pull(&args.spec, args.name.as_deref(), &|e| progress.handle(e))?;
    if !args.json {
        let path = store.model_path(&manifest)?;
        printer::lines([format!("{}  {}  {}", manifest.name, short_digest(manifest.digest()), path.display())])?;
    }
    Ok(())
}

/// One row of `owl list --json`.
#[derive(Debug, Serialize)]
struct ListRow {
    name: String,
    digest: String,
    size: u64,
    family: Option<String>,
    /// When it was pulled (RFC 3339).
    modified: String,
    source: String,
    format: ModelFormat,
    license: Option<String>,
    path: String,
}

pub fn list(args: &ListArgs) -> anyhow::Result<()> {
    let store = Store::from_env()?;
    let manifests = store.list()?;
    let rows: Vec<ListRow> = manifests.iter().map(|m| row(&store, m)).collect();
    if args.json {
        return Ok(printer::json(&rows)?);
    }
    if rows.is_empty() {
        printer::note(&format!("the store at {} is empty; `owl pull NAME` adds a model", store.home().display()));
        return Ok(());
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let mut lines = vec![format!("{:<width$}  {:<12}  {:>9}  {:<10}  MODIFIED", "NAME", "ID", "SIZE", "FAMILY")];
    for r in &rows {
        lines.push(format!(
            "{:<width$}  {:<12}  {:>9}  {:<10}  {}",
            r.name,
            short_digest(&r.digest),
            printer::human_bytes(r.size),
            r.family.as_deref().unwrap_or("-"),
            r.modified
        ));
    }
    Ok(printer::lines(lines)?)
}

fn row(store: &Store, m: &Manifest) -> ListRow {
    let path = store.blob_path(m.files.first().map_or("", |f| f.sha256()));
    let family =
        m.catalog.as_deref().and_then(|c| Catalog::builtin().find(c)).map(|e| e.family.clone()).or_else(|| {
            match m.format {
                ModelFormat::Gguf => {
                    owl_formats::gguf::GgufFile::open(&path).ok().and_then(|g| g.architecture().map(str::to_string))
                }
                ModelFormat::Safetensors => None,
            }
        });
    ListRow {
        name: m.name.clone(),
        digest: m.digest().to_string(),
        size: m.size(),
        family,
        modified: m.pulled.clone(),
        source: m.source.clone(),
        format: m.format,
        license: m.license.clone(),
        path: store.model_path(m).map_or_else(|_| path.display().to_string(), |p| p.display().to_string()),
    }
}

/// The first 12 hex digits, as Ollama's ID column.
fn short_digest(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).chars().take(12).collect()
}

pub fn rm(args: &RmArgs) -> anyhow::Result<()> {
    let store = Store::from_env()?;
    for name in &args.models {
        let report = store.remove(name)?;
        let mut line = format!("deleted {name}");
        if report.freed_bytes > 0 {
            line.push_str(&format!(" (freed {})", printer::human_bytes(report.freed_bytes)));
        }
        if !report.kept_blobs.is_empty() {
            line.push_str(&format!("; {} file(s) kept: another name uses them", report.kept_blobs.len()));
        }
        printer::lines([line])?;
    }
    Ok(())
}

pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let store = Store::from_env()?;
    let progress = PullProgress::new(false);
    let manifest = store
        .import(&args.file, &args.name, &|e| progress.handle(e))
        .with_context(|| format!("cannot import {}", args.file.display()))?;
    printer::lines([format!(
        "imported {} as {} ({}, {})",
        args.file.display(),
        manifest.name,
        short_digest(manifest.digest()),
        printer::human_bytes(manifest.size())
    )])?;
    Ok(())
}
