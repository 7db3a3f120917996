//! Loading a MODEL argument for the commands that run it: the weights (owl-models), the
//! tokenizer (owl-tokenizer) and what the reports quote (name, size, parameters), plus the
//! default thread count.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use owl_engine::ModelRunner;
use owl_formats::gguf::GgufFile;
use owl_formats::safetensors::SafetensorsModel;
use owl_models::{memory, ActivationPrecision, KvDtype, LoadOptions, LoraSet, MemoryReport, Model, ModelError};
use owl_tokenizer::{Tokenizer, TokenizerError};
use owl_train::Lineage;

use crate::args::LoraArgs;
use crate::model_ref::{self, ModelSource};
use crate::printer;

/// A model ready to run, with its tokenizer.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// What to call the model in output: the MODEL argument as given.
    pub name: String,
    /// The model file's own name (a store model's, not its blob's digest name).
    pub file_name: String,
    /// The file (GGUF) or directory (safetensors) MODEL resolved to.
    pub path: PathBuf,
    /// Bytes of the weight file(s).
    pub file_size: u64,
    /// Parameters (elements of all stored tensors).
    pub parameters: u64,
}

/// The adapters of `--lora`, read and checked against `model` (`None` without any), with
/// a note on stderr of what was applied.
pub fn lora_set(model: &Model, args: &LoraArgs) -> anyhow::Result<Option<Arc<LoraSet>>> {
    if args.lora.is_empty() {
        return Ok(None);
    }
    let lineage = if args.lora_any_base { Lineage::ShapesOnly } else { Lineage::Strict };
    let set = owl_train::load_lora_set(&args.lora, model, lineage)?;
    for (adapter, scale) in set.entries() {
        let ranks: BTreeSet<usize> = adapter.matrices().map(|(_, m)| m.rank()).collect();
        let ranks = ranks.iter().map(usize::to_string).collect::<Vec<_>>().join("/");
        printer::note(&format!("LoRA {}: {} matrices, rank {ranks}, scale {scale}", adapter.name(), adapter.len()));
    }
    Ok(Some(Arc::new(set)))
}

/// Loads MODEL with `threads` compute threads and forward calls of up to
/// `max_batch_tokens` tokens; `f32_activations` selects
/// [`ActivationPrecision::F32`] for every matmul.
pub fn load(
    arg: &OsStr,
    threads: usize,
    max_batch_tokens: usize,
    f32_activations: bool,
) -> anyhow::Result<LoadedModel> {
    let mut loaded = load_model(arg, threads, max_batch_tokens)?;
    if f32_activations {
        loaded.model.set_activation_precision(ActivationPrecision::F32);
    }
    Ok(loaded)
}

fn load_model(arg: &OsStr, threads: usize, max_batch_tokens: usize) -> anyhow::Result<LoadedModel> {
    let loaded = read_model(arg, threads, max_batch_tokens);
    release_freed_heap();
    loaded
}

/// Hands the heap pages freed since start-up back to the system. Reading a vocabulary frees
/// tens of thousands of small strings (the file's metadata, then the vocabulary's own
/// copy, once the tokenizer holds it compactly); glibc keeps such pages in the process, so
/// they would count in its resident memory for the whole run: 13 MB of Gemma 3's
/// (262,144 tokens) peak, 6 MB of SmolLM2's (docs/PERFORMANCE.md).
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the system; it touches no
    // memory in use and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn read_model(arg: &OsStr, threads: usize, max_batch_tokens: usize) -> anyhow::Result<LoadedModel> {
    let options = LoadOptions { threads, max_batch_tokens };
    let name = arg.to_string_lossy().into_owned();
    let (source, file_name) = model_ref::resolve_with_label(arg)?;
    match source {
        ModelSource::Gguf(path) => {
            let gguf = GgufFile::open(&path).with_context(|| format!("{}", path.display()))?;
            let file_size = gguf.file_size();
            let parameters = gguf.tensors().iter().map(|t| t.n_elements).sum();
            // The file's parsed metadata (every token and merge as a string) goes as soon as
            // the tokenizer is built, not after the weights.
            let (tokenizer, model) = beside_each_other(
                move || Tokenizer::from_gguf(&gguf),
                || Model::load_gguf(&path, &options).with_context(|| format!("{}: loading the model", path.display())),
            );
            let tokenizer = tokenizer.with_context(|| format!("{}: tokenizer", path.display()))?;
            let model = model?;
            Ok(LoadedModel { model, tokenizer, name, file_name, path, file_size, parameters })
        }
        ModelSource::Safetensors { dir, weights } => {
            if !weights.is_dir() {
                bail!(
                    "{}: a single .safetensors file cannot be run; give its directory (config.json + tokenizer.json + weights)",
                    weights.display()
                );
            }
            let st = SafetensorsModel::open(&dir).with_context(|| format!("{}", dir.display()))?;
            let (file_size, parameters) = (st.file_size(), st.n_elements());
            drop(st);
            let (tokenizer, model) = beside_each_other(
                || Tokenizer::from_hf_dir(&dir),
                || Model::load_hf_dir(&dir, &options).with_context(|| format!("{}: loading the model", dir.display())),
            );
            let tokenizer = tokenizer.with_context(|| format!("{}: tokenizer", dir.display()))?;
            let model = model?;
            Ok(LoadedModel { model, tokenizer, name, file_name, path: dir, file_size, parameters })
        }
    }
}

/// The tokenizer built on a thread of its own while the weights load: both are CPU work
/// of a few hundred milliseconds on a large vocabulary or a model whose projections are
/// copied into the decode layout, and neither needs the other. A panic in either is
/// re-raised here.
fn beside_each_other<M>(
    tokenizer: impl FnOnce() -> Result<Tokenizer, TokenizerError> + Send,
    model: impl FnOnce() -> M,
) -> (anyhow::Result<Tokenizer>, M) {
    std::thread::scope(|s| {
        // The main thread's stack size: building the tokenizer compiles the file's chat
        // template, whose parser recurses.
        let thread = std::thread::Builder::new()
            .name("owl-tokenizer-load".into())
            .stack_size(8 << 20)
            .spawn_scoped(s, tokenizer);
        let model = model();
        let tokenizer = match thread {
            Ok(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)).map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e).context("starting a thread to build the tokenizer")),
        };
        (tokenizer, model)
    })
}

/// The largest context whose KV cache fits in the memory available now, rounded down to a
/// multiple of 256 where it is that large; `None` when nothing says how much is available.
pub fn context_that_fits(model: &Model, dtype: KvDtype) -> Option<usize> {
    Some(context_fitting(&model.memory_report(dtype), memory::available_bytes()?))
}

/// The largest context whose KV cache fits in `available` bytes (rounded as above).
fn context_fitting(report: &MemoryReport, available: u64) -> usize {
    let per_token = (report.kv_bytes_per_token as u64).max(1);
    let room = available.saturating_sub(report.kv_window_bytes_per_seq as u64);
    let n = usize::try_from(room / per_token).unwrap_or(usize::MAX);
    if n >= 512 {
        n / 256 * 256
    } else {
        n
    }
}

/// `model` with a KV cache of `sequences` slots of `n_ctx` positions in `dtype`. The cache checks itself against the memory
/// available before it allocates (owl_models::memory); a cache too large is that error —
/// the bytes needed and available — with the `-c` that fits, never an aborted allocation.
pub fn runner(model: Model, sequences: usize, n_ctx: usize, dtype: KvDtype) -> anyhow::Result<ModelRunner> {
    let report = model.memory_report(dtype);
    match ModelRunner::with_slots(model, sequences, n_ctx, dtype) {
        Ok(runner) => Ok(runner),
        Err(e @ ModelError::OutOfMemory { available, .. }) => {
            bail!("{e}; -c {} fits", context_fitting(&report, available) / sequences.max(1))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("a KV cache of {n_ctx} tokens"))),
    }
}

/// `-t N` as given, else the number of physical cores. More threads than the CPUs this
/// process may run on only contend for them: a warning, then clamped (clap already refused 0).
/// A text file (a perplexity or calibration text), which must be UTF-8.
pub fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!("{}: not UTF-8 text (invalid byte at offset {})", path.display(), e.utf8_error().valid_up_to())
    })
}

pub fn threads_or_default(threads: Option<usize>) -> usize {
    match threads {
        Some(n) => clamp_threads(n),
        None => physical_cores(),
    }
}

/// `n` capped by the CPUs available, with a warning when it had to be.
pub fn clamp_threads(n: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    if n > cpus {
        printer::warning(&format!("--threads {n} is more than the {cpus} CPUs available; using {cpus}"));
        cpus
    } else {
        n.max(1)
    }
}

/// Physical cores this process may use: distinct (package, core) pairs among the CPUs in
/// /sys, capped by what the scheduler allows; hyper-threads share a core's compute units,
/// so more threads than cores only adds contention (llama.cpp's default does the same).
pub fn physical_cores() -> usize {
    let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
    count_physical_cores(Path::new("/sys/devices/system/cpu")).map_or(allowed, |cores| cores.clamp(1, allowed))
}

/// Distinct (physical_package_id, core_id) pairs under `cpu_dir/cpuN/topology`; `None`
/// when the directory is not there (not Linux) or lists nothing.
fn count_physical_cores(cpu_dir: &Path) -> Option<usize> {
    let mut cores = BTreeSet::new();
    for entry in std::fs::read_dir(cpu_dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(index) = name.to_str().and_then(|n| n.strip_prefix("cpu")) else {
            continue;
        };
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let topology = entry.path().join("topology");
        let read =
            |file: &str| std::fs::read_to_string(topology.join(file)).ok().and_then(|s| s.trim().parse::<i64>().ok());
        if let (Some(package), Some(core)) = (read("physical_package_id"), read("core_id")) {
            cores.insert((package, core));
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_cores_of_a_fake_topology() {
        let tmp = tempfile::tempdir().unwrap();
        // cpu0/cpu1 are hyper-threads of one core; cpu2 a second core; cpufreq is no cpu.
        for (cpu, package, core) in [("cpu0", 0, 0), ("cpu1", 0, 0), ("cpu2", 0, 1)] {
            let t = tmp.path().join(cpu).join("topology");
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("physical_package_id"), format!("{package}\n")).unwrap();
            std::fs::write(t.join("core_id"), format!("{core}\n")).unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("cpufreq")).unwrap();
        assert_eq!(count_physical_cores(tmp.path()), Some(2));
        assert_eq!(count_physical_cores(&tmp.path().join("none")), None);
        assert!(physical_cores() >= 1);
        assert_eq!(threads_or_default(Some(1)), 1);
        let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
        assert_eq!(threads_or_default(Some(cpus + 1000)), cpus);
    }
}
