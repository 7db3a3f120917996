//! `owl convert`, `owl quantize` and `owl merge`: one progress bar over the bytes written (tensor name
//! and type as its message), or JSON events with `--json`; a summary at the end.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use owl_convert::imatrix::Imatrix;
use owl_convert::{ConvertOptions, FileType, Progress, QuantizeOptions};
use serde_json::json;

use crate::args::{ConvertArgs, MergeArgs, QuantizeArgs};
use crate::model_ref::{self, ModelSource};
use crate::printer;

/// Bytes written so far: tensors before the current one.
struct Reporter {
    json: bool,
    bar: Option<ProgressBar>,
    sizes: Mutex<Vec<u64>>,
    done: AtomicU64,
}

impl Reporter {
    fn new(json: bool) -> Reporter {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {wide_msg}")
            {
                bar.set_style(style);
            }
            bar
        });
        Reporter { json, bar, sizes: Mutex::new(Vec::new()), done: AtomicU64::new(0) }
    }

    fn handle(&self, event: Progress<'_>) {
        match event {
            Progress::Start { tensors, bytes } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(bytes);
                }
                self.emit(json!({"event": "start", "tensors": tensors, "bytes": bytes}));
            }
            Progress::Tensor { index, name, ggml_type, bytes } => {
                let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
                let before: u64 = sizes.iter().sum();
                sizes.push(bytes);
                self.done.store(before, Ordering::Relaxed);
                if let Some(bar) = &self.bar {
                    bar.set_position(before);
                    bar.set_message(format!("{name} {ggml_type}"));
                }
                self.emit(json!({"event": "tensor", "index": index, "name": name, "type": ggml_type, "bytes": bytes}));
            }
        }
    }

    fn emit(&self, value: serde_json::Value) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{value}");
            let _ = out.flush();
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn types_line(types: &std::collections::BTreeMap<String, usize>) -> String {
    types.iter().map(|(t, n)| format!("{n} {t}")).collect::<Vec<_>>().join(", ")
}

pub fn convert(args: &ConvertArgs) -> anyhow::Result<()> {
    let file_type: FileType = args.file_type.parse().map_err(anyhow::Error::msg).context("--type")?;
    let options =
        ConvertOptions { file_type, no_tokenizer: args.no_tokenizer, tokenizer_pre: args.tokenizer_pre.clone() };
    let dir = match model_ref::resolve(args.dir.as_os_str())? {
        ModelSource::Safetensors { dir, .. } => dir,
        ModelSource::Gguf(path) => {
            anyhow::bail!("{} is a GGUF file; `owl quantize` changes the type of a GGUF file", path.display())
        }
    };
    let reporter = Reporter::new(args.json);
    let result = owl_convert::convert(&dir, &args.out, &options, &|e| reporter.handle(e));
    reporter.finish();
    let summary = result.with_context(|| format!("converting {}", args.dir.display()))?;
    if args.json {
        reporter.emit(json!({
            "event": "done", "path": summary.path, "architecture": summary.architecture,
            "tensors": summary.tensors, "bytes": summary.bytes, "types": summary.types,
        }));
    } else {
        printer::note(&format!(
            "wrote {} ({}, {} {}; {} tensors: {})",
            summary.path.display(),
            printer::human_bytes(summary.bytes),
            summary.architecture,
            file_type,
            summary.tensors,
            types_line(&summary.types)
        ));
    }
    Ok(())
}

pub fn quantize(args: &QuantizeArgs) -> anyhow::Result<()> {
    let file_type: FileType = args.file_type.parse().map_err(anyhow::Error::msg).context("TYPE")?;
    let imatrix = match &args.imatrix {
        Some(path) => Some((path.display().to_string(), Imatrix::read(path)?)),
        None => None,
    };
    let options = QuantizeOptions {
        file_type: Some(file_type),
        allow_requantize: args.allow_requantize,
        pure: args.pure,
        imatrix,
        edit: None,
    };
    let input = match model_ref::resolve(args.input.as_os_str())? {
        ModelSource::Gguf(path) => path,
        ModelSource::Safetensors { dir, .. } => {
            anyhow::bail!("{} holds safetensors; `owl convert --type {file_type}` converts it", dir.display())
        }
    };
    let reporter = Reporter::new(args.json);
    let result = owl_convert::quantize(&input, &args.out, &options, &|e| reporter.handle(e));
    reporter.finish();
    let summary = result.with_context(|| format!("quantizing {}", args.input.display()))?;
    if args.json {
        reporter.emit(json!({
            "event": "done", "path": summary.path, "tensors": summary.tensors, "bytes_in": summary.bytes_in,
            "bytes": summary.bytes_out, "types": summary.types, "copied": summary.copied,
        }));
    } else {
        printer::note(&format!(
            "wrote {} ({} → {}, {file_type}; {} tensors: {})",
            summary.path.display(),
            printer::human_bytes(summary.bytes_in),
            printer::human_bytes(summary.bytes_out),
            summary.tensors,
            types_line(&summary.types)
        ));
    }
    Ok(())
}

pub fn merge(args: &MergeArgs) -> anyhow::Result<()> {
    let file_type = match &args.file_type {
        Some(t) => Some(t.parse::<FileType>().map_err(anyhow::Error::msg).context("--type")?),
        None => None,
    };
    let base = match model_ref::resolve(&args.model)? {
        ModelSource::Gguf(path) => path,
        ModelSource::Safetensors { dir, .. } => dir,
    };
    let lineage = if args.lora_any_base { owl_train::Lineage::ShapesOnly } else { owl_train::Lineage::Strict };
    let options = owl_train::MergeOptions { file_type, lineage };
    let reporter = Reporter::new(args.json);
    let result = owl_train::merge(&base, &args.lora, &args.out, &options, &|e| reporter.handle(e));
    reporter.finish();
    let summary = result.with_context(|| format!("merging into {}", args.model.to_string_lossy()))?;
    if args.json {
        reporter.emit(json!({
            "event": "done", "path": summary.path, "tensors": summary.tensors, "bytes": summary.bytes_out,
            "types": summary.types, "copied": summary.copied, "rewritten": summary.tensors - summary.copied,
        }));
    } else {
        printer::note(&format!(
            "wrote {} ({}; {} of {} tensors rewritten; {})",
            summary.path.display(),
            printer::human_bytes(summary.bytes_out),
            summary.tensors - summary.copied,
            summary.tensors,
            types_line(&summary.types)
        ));
    }
    Ok(())
}
