//! `owl tensor MODEL NAME [--format npy|json] [-o FILE]`: one tensor dequantized to float32.
//!
//! The tensor is decoded in chunks of whole blocks straight into the output, so a 151936 x
//! 896 embedding (544 MB as f32) never sits in memory whole, as f32 or as JSON text.
//!
//! Shapes are row-major (numpy / PyTorch order, outermost first). GGUF lists dimensions the
//! other way round (ggml's `ne[0]`, the contiguous one, first), so a GGUF shape is printed
//! reversed: the array comes out as gguf-py's `dequantize` and transformers see it.
//!
//! `.npy` output is the header ([`npy`]) then the little-endian float32 data in C order;
//! [`elements`] turns each stored type into f32.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

use owl_formats::gguf::GgufFile;
use owl_formats::safetensors::SafetensorsModel;

use crate::args::{TensorArgs, TensorFormat};
use crate::model_ref::{self, ModelSource};

mod elements;
mod npy;

use elements::Elements;
use npy::npy_header;

/// Elements decoded at a time: a multiple of every block size (1, 32, 256), 256 KiB as f32.
const CHUNK_ELEMS: usize = 64 * 1024;
/// Output buffer size.
const OUT_BUF_BYTES: usize = 1 << 20;
/// How many close names an unknown-name error suggests.
const MAX_SUGGESTIONS: usize = 3;

pub fn run(args: &TensorArgs) -> anyhow::Result<()> {
    let format = match (args.format, &args.output) {
        (Some(f), _) => f,
        (None, Some(path)) if has_extension(path, "json") => TensorFormat::Json,
        (None, _) => TensorFormat::Npy,
    };
    let output = match &args.output {
        Some(path) if path.as_os_str() != "-" => Some(path.as_path()),
        _ => None,
    };
    if let Some(path) = output {
        if path.is_dir() {
            bail!("{}: is a directory (-o wants a file name)", path.display());
        }
    } else if format == TensorFormat::Npy && io::stdout().is_terminal() {
        bail!(
            "refusing to write binary .npy data to a terminal; use -o FILE, redirect stdout, \
             or --format json"
        );
    }

    match model_ref::resolve(&args.model)? {
        ModelSource::Gguf(path) => {
            let gguf = GgufFile::open(&path).with_context(|| format!("{}", path.display()))?;
            let Some(info) = gguf.tensor(&args.name) else {
                return Err(unknown_name(&args.name, &args.model, gguf.tensors().iter().map(|t| t.name.as_str())));
            };
            let data = gguf
                .try_tensor_data(info)
                .ok_or_else(|| anyhow!("{}: data of tensor `{}` lies outside the file", path.display(), info.name))?;
            let shape = info
                .shape
                .iter()
                .rev()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("tensor `{}` is too large for this machine", info.name))?;
            let elements = Elements::gguf(&info.name, info.ggml_type, data)?;
            let tensor = Tensor { name: &info.name, type_name: info.ggml_type.name(), shape, elements };
            emit(&tensor, format, output)
        }
        ModelSource::Safetensors { weights, .. } => {
            let model = SafetensorsModel::open(&weights)?;
            let Some(view) = model.tensor(&args.name) else {
                return Err(unknown_name(&args.name, &args.model, model.tensors().map(|t| t.name)));
            };
            let tensor = Tensor {
                name: view.name,
                type_name: view.dtype.name(),
                shape: view.shape.to_vec(),
                elements: Elements::safetensors(view)?,
            };
            emit(&tensor, format, output)
        }
    }
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// One tensor to write: what it is called and how its elements decode.
struct Tensor<'a> {
    name: &'a str,
    /// The stored type as the file names it ("Q4_K", "BF16").
    type_name: &'static str,
    /// Row-major dimensions.
    shape: Vec<usize>,
    elements: Elements<'a>,
}

impl Tensor<'_> {
    fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Writes the tensor to stdout, or atomically to `path`.
fn emit(tensor: &Tensor, format: TensorFormat, path: Option<&Path>) -> anyhow::Result<()> {
    match path {
        None => {
            let mut out = BufWriter::with_capacity(OUT_BUF_BYTES, io::stdout().lock());
            write_tensor(tensor, format, &mut out)?;
            out.flush().context("writing to stdout")?;
            Ok(())
        }
        Some(path) => write_atomically(path, |file| {
            let mut out = BufWriter::with_capacity(OUT_BUF_BYTES, file);
            write_tensor(tensor, format, &mut out)?;
            out.flush()?;
            Ok(())
        }),
    }
}

/// Runs `write` on a new temporary file beside `path`, syncs it and renames it over `path`.
/// On any error the temporary file is removed and `path` is left as it was.
pub(crate) fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| anyhow!("{}: not a file name", path.display()))?;
    let prefix = format!(".{}.", file_name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile creates private (0600) files; the result should be an ordinary file (0666
    // less the umask), as if written directly.
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::Permissions::from_mode(0o666)
    };
    #[cfg(unix)]
    builder.permissions(mode);
    let mut temp =
        builder.tempfile_in(&dir).with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    write(temp.as_file_mut()).with_context(|| format!("writing {}", temp.path().display()))?;
    temp.as_file().sync_all().with_context(|| format!("writing {}", temp.path().display()))?;
    temp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename the temporary file to {}", path.display()))?;
    Ok(())
}

fn write_tensor<W: Write>(tensor: &Tensor, format: TensorFormat, out: &mut W) -> anyhow::Result<()> {
    match format {
        TensorFormat::Npy => {
            out.write_all(&npy_header(&tensor.shape))?;
            let mut bytes = vec![0u8; CHUNK_ELEMS.min(tensor.n_elements()) * 4];
            for_each_chunk(tensor, |values| {
                let bytes = &mut bytes[..values.len() * 4];
                for (b, v) in bytes.chunks_exact_mut(4).zip(values) {
                    b.copy_from_slice(&v.to_le_bytes());
                }
                out.write_all(bytes)?;
                Ok(())
            })
        }
        TensorFormat::Json => {
            out.write_all(b"{\"name\":")?;
            serde_json::to_writer(&mut *out, tensor.name)?;
            out.write_all(b",\"type\":")?;
            serde_json::to_writer(&mut *out, tensor.type_name)?;
            out.write_all(b",\"shape\":")?;
            serde_json::to_writer(&mut *out, &tensor.shape)?;
            out.write_all(b",\"data\":[")?;
            let mut first = true;
            for_each_chunk(tensor, |values| {
                for &v in values {
                    if !first {
                        out.write_all(b",")?;
                    }
                    first = false;
                    // Shortest text that reads back as the same f32; JSON has no NaN or
                    // infinity, so serde_json writes those as null.
                    serde_json::to_writer(&mut *out, &v)?;
                }
                Ok(())
            })?;
            out.write_all(b"]}\n")?;
            Ok(())
        }
    }
}

/// Decodes the tensor chunk by chunk into one reused buffer and hands each chunk to `f`.
fn for_each_chunk(tensor: &Tensor, mut f: impl FnMut(&[f32]) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let n = tensor.n_elements();
    let mut buf = vec![0f32; CHUNK_ELEMS.min(n)];
    let mut start = 0;
    while start < n {
        let len = CHUNK_ELEMS.min(n - start);
        let values = &mut buf[..len];
        tensor.elements.decode(start, values).with_context(|| format!("tensor `{}`", tensor.name))?;
        f(values)?;
        start += len;
    }
    Ok(())
}

/// The error for a name the model does not have, with up to three close names. `model` is
/// the MODEL argument as the user gave it.
fn unknown_name<'n>(name: &str, model: &OsStr, names: impl Iterator<Item = &'n str>) -> anyhow::Error {
    let names: Vec<&str> = names.collect();
    let model = model.to_string_lossy();
    let hint = format!("'owl inspect {model} --tensors' lists all {}", names.len());
    let close = close_names(name, &names);
    if close.is_empty() {
        return anyhow!("no tensor named `{name}` in {model} ({hint})");
    }
    let quoted: Vec<String> = close.iter().map(|n| format!("`{n}`")).collect();
    anyhow!("no tensor named `{name}` in {model}; did you mean {}? ({hint})", quoted.join(", "))
}

/// Names worth suggesting for `name`: within a small edit distance, containing it (or
/// contained in it), or ending in the same last two dot-separated parts (`attn_q.weight`);
/// the closest first, at most [`MAX_SUGGESTIONS`].
fn close_names<'n>(name: &str, names: &[&'n str]) -> Vec<&'n str> {
    let suffix: Vec<&str> = name.rsplitn(3, '.').take(2).collect();
    let tail = (suffix.len() == 2).then(|| format!("{}.{}", suffix[1], suffix[0]));
    let budget = (name.len() / 4).max(2);
    let mut scored: Vec<(usize, usize, &str)> = names
        .iter()
        .enumerate()
        .filter_map(|(i, &candidate)| {
            let d = edit_distance(name, candidate);
            let related = d <= budget
                || candidate.contains(name)
                || name.contains(candidate)
                || tail.as_deref().is_some_and(|t| candidate.ends_with(t) && candidate.len() > t.len());
            related.then_some((d, i, candidate))
        })
        .collect();
    scored.sort_unstable();
    scored.into_iter().take(MAX_SUGGESTIONS).map(|(_, _, n)| n).collect()
}

/// Levenshtein distance over bytes (tensor names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use owl_kernels::BlockFormat;

    use super::*;

    #[test]
    fn chunks_cover_the_tensor() {
        // Q8_0 blocks: f16 scale, then 32 i8 quants; scale 1.0 = 0x3c00, quants = index % 100.
        let blocks = 2 * CHUNK_ELEMS / 32 + 3;
        let mut data = Vec::with_capacity(blocks * 34);
        for b in 0..blocks {
            data.extend_from_slice(&0x3c00u16.to_le_bytes());
            data.extend((0..32).map(|i| ((b * 32 + i) % 100) as u8));
        }
        let tensor = Tensor {
            name: "t",
            type_name: "Q8_0",
            shape: vec![blocks, 32],
            elements: Elements::Blocks { format: BlockFormat::Q8_0, data: &data },
        };
        let mut seen = Vec::new();
        for_each_chunk(&tensor, |v| {
            seen.extend_from_slice(v);
            Ok(())
        })
        .expect("decodes");
        assert_eq!(seen.len(), blocks * 32);
        assert!(seen.iter().enumerate().all(|(i, &v)| v == (i % 100) as f32));
        let mut npy = Vec::new();
        write_tensor(&tensor, TensorFormat::Npy, &mut npy).expect("writes");
        assert_eq!(npy.len(), 128 + 4 * blocks * 32);
        assert_eq!(&npy[128 + 4 * 99..128 + 4 * 101], [0, 0, 0xc6, 0x42, 0, 0, 0, 0]);
    }

    #[test]
    fn suggestions() {
        let names = [
            "token_embd.weight",
            "blk.0.attn_q.weight",
            "blk.0.attn_k.weight",
            "blk.1.attn_q.weight",
            "blk.10.attn_q.weight",
            "output_norm.weight",
        ];
        assert_eq!(
            close_names("blk.0.attn_q.weigh", &names),
            ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.attn_q.weight"]
        );
        assert_eq!(close_names("token_embd", &names), ["token_embd.weight"]);
        assert_eq!(
            close_names("blk.31.attn_q.weight", &names),
            ["blk.1.attn_q.weight", "blk.0.attn_q.weight", "blk.10.attn_q.weight"]
        );
        assert!(close_names("model.embed_tokens.weight", &names).is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn failed_writes_leave_nothing_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("out.npy");
        std::fs::write(&target, b"old").expect("write");
        let err = write_atomically(&target, |f| {
            f.write_all(b"partial")?;
            bail!("disk on fire")
        })
        .expect_err("fails");
        assert!(format!("{err:#}").contains("disk on fire"), "{err:#}");
        let left: Vec<_> =
            std::fs::read_dir(tmp.path()).expect("read_dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("out.npy")]);
        assert_eq!(std::fs::read(&target).expect("read"), b"old");

        write_atomically(&target, |f| Ok(f.write_all(b"new")?)).expect("writes");
        assert_eq!(std::fs::read(&target).expect("read"), b"new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).expect("meta").permissions().mode();
            assert_eq!(mode & 0o044, 0o044, "readable like any written file: {mode:o}");
        }
    }
}
