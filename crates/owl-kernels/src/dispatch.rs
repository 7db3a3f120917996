//! Run-time kernel selection: CPU features are detected once and each weight format gets
//! its row kernels from a table — ggml's `type_traits_cpu`, chosen at run time instead of
//! at compile time, so one binary runs everywhere and uses what the CPU has.
//!
//! A [`KernelTable`] maps a weight [`BlockFormat`] to its [`FormatKernels`]: the activation
//! format its dot product consumes, the quantizer that turns f32 activations into that
//! format, and the dot product itself; where the instruction set has them, a multi-row
//! one-token kernel (decode: several weight rows share each activation block, same bits as
//! the dot product) and multi-token kernels (prefill). Float weights (F32, F16, BF16) take f32 activations
//! as they are (no rounding of the activations; F16 is widened with F16C on AVX2).
//!
//! Selection: [`active`] is the best instruction set the CPU supports, unless the
//! environment variable `OWL_KERNELS` (`scalar`, `avx2`, `neon`, `auto`; read once) forces one.
//! Forcing a set the CPU lacks, or an unknown name, is a [`DispatchError`] from [`active`]
//! (and from every matmul), never undefined behaviour. [`table`] hands out the table of a
//! given set so that tests can compare every path against the scalar reference in one
//! process.
//!
//! Within the AVX2 set, some kernels take AVX-512 where the CPU has it, with the AVX2
//! kernels' bits: the prefill lane-panel tiles, the output head, the element-wise float ops,
//! and the one-token kernels over the 8-row interleaved groups (`quant::x8_avx512`).
//! `OWL_AVX512=0` keeps all of them at AVX2.
//!
//! Soundness: the AVX2 entries are safe `fn`s that call `#[target_feature]` kernels; they
//! are reachable only through a table that [`table`] gives out after checking the CPU. The
//! NEON kernels (AArch64 only) are safe functions: NEON is part of every AArch64 CPU.

use std::fmt;
use std::sync::OnceLock;

use bytemuck::{cast_slice, cast_slice_mut};

use crate::quant::{self, BlockFormat};
use crate::KernelError;

/// An instruction-set level the kernels are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust: the reference every SIMD path is tested against.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C (Haswell, Zen and later).
    Avx2,
    /// AArch64 Advanced SIMD (NEON), which every AArch64 CPU has; baseline instructions only
    /// (no `dotprod`).
    Neon,
}

impl Isa {
    /// Every set: the portable one first, then the SIMD sets (one per architecture).
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Neon];

    /// The name `OWL_KERNELS` accepts.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU can run the set.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_available(),
            Isa::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    /// CPU features the set needs, as `OWL_KERNELS` error messages name them.
    const fn required_features(self) -> &'static str {
        match self {
            Isa::Scalar => "nothing",
            Isa::Avx2 => "avx2, fma and f16c",
            Isa::Neon => "neon (an AArch64 CPU)",
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_available() -> bool {
    false
}

/// Why a kernel set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    #[error("OWL_KERNELS={value:?}: unknown kernel set (expected scalar, avx2, neon or auto)")]
    UnknownIsa { value: String },
    #[error("{isa} kernels requested but this CPU lacks {needs}")]
    Unavailable { isa: Isa, needs: &'static str },
}

/// The best set this CPU supports.
pub fn detected_isa() -> Isa {
    if Isa::Avx2.is_available() {
        Isa::Avx2
    } else if Isa::Neon.is_available() {
        Isa::Neon
    } else {
        Isa::Scalar
    }
}

/// The set matmul uses: `OWL_KERNELS` if set (and usable), else [`detected_isa`].
pub fn active_isa() -> Result<Isa, DispatchError> {
    static ACTIVE: OnceLock<Result<Isa, DispatchError>> = OnceLock::new();
    ACTIVE.get_or_init(|| select(std::env::var("OWL_KERNELS").ok().as_deref())).clone()
}

/// The table of the active set (see [`active_isa`]).
pub fn active() -> Result<&'static KernelTable, DispatchError> {
    table(active_isa()?)
}

/// Parses an `OWL_KERNELS` value (None or empty or `auto`: the best available).
pub fn select(value: Option<&str>) -> Result<Isa, DispatchError> {
    let isa = match value.map(str::trim) {
        None | Some("") => return Ok(detected_isa()),
        Some(v) if v.eq_ignore_ascii_case("auto") => return Ok(detected_isa()),
        Some(v) => Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(v))
            .ok_or_else(|| DispatchError::UnknownIsa { value: v.to_string() })?,
    };
    if !isa.is_available() {
        return Err(DispatchError::Unavailable { isa, needs: isa.required_features() });
    }
    Ok(isa)
}

/// The kernel table of `isa`, if this CPU can run it.
pub fn table(isa: Isa) -> Result<&'static KernelTable, DispatchError> {
    if !isa.is_available() {
        return Err(DispatchError::Unavailable { isa, needs: isa.required_features() });
    }
    Ok(match isa {
        Isa::Scalar => &SCALAR,
        Isa::Avx2 => &AVX2,
        Isa::Neon => &NEON,
    })
}

/// `f32` activations → one row of the activation format, as bytes.
pub(crate) type QuantizeFn = fn(&[f32], &mut [u8]);
/// One weight row · one activation row (same element count), as bytes.
pub(crate) type DotFn = fn(&[u8], &[u8]) -> f32;
/// One weight row · four activation rows; column `t` equals `DotFn(w, a[t])` bit for bit.
pub(crate) type Dot4Fn = fn(&[u8], [&[u8]; 4]) -> [f32; 4];
/// Three weight rows · four activation rows (a register tile; rounding differs from `DotFn`).
pub(crate) type Tile3x4Fn = fn([&[u8]; 3], [&[u8]; 4]) -> [[f32; 4]; 3];
/// `out.len()` consecutive weight rows of `row_bytes` each (`w`) · one activation row:
/// `out[r] = DotFn(w[r], a)` bit for bit, several rows per kernel call (decode matvec).
pub(crate) type MatvecFn = fn(&[u8], usize, &[u8], &mut [f32]);
/// Whole groups of an interleaved matrix (`quant::interleave`; `w`: `out.len() / 8` groups of
/// `nb` group-blocks) · one activation row of `nb` blocks: `out[r]` is row `r`'s dot product
/// (decode matvec).
pub(crate) type GroupMatvecFn = fn(&[u8], &[u8], &mut [f32]);
/// One group of an interleaved matrix (`nb` group-blocks) · the first `n` (1..=4) of four
/// activation rows: `out[t]` is the 8 rows' dot products for token `t`, the same bits
/// [`GroupMatvecFn`] gives that token alone (batch-invariant decode of several sequences).
pub(crate) type GroupDot4Fn = fn(&[u8], [&[u8]; 4], usize) -> [[f32; 8]; 4];

/// The row kernels of one weight format on one instruction set.
#[derive(Clone, Copy)]
pub struct FormatKernels {
    weight: BlockFormat,
    act: BlockFormat,
    /// What the dot product really runs: a SIMD table falls back to the scalar kernel for
    /// formats without a SIMD one, and says so here.
    dot_isa: Isa,
    quantize_act: Option<QuantizeFn>,
    dot: DotFn,
    /// The multi-token dot product (prefill), where the instruction set has one.
    dot4: Option<Dot4Fn>,
    /// `dot4` gives each token the bits `dot` gives it (so decode of several sequences may
    /// take it without depending on the batch).
    dot4_exact: bool,
    /// The multi-row one-token kernel (decode), where the instruction set has one.
    matvec: Option<MatvecFn>,
    /// The one-token kernel over the 8-row interleaved layout: every table has it for every
    /// format with that layout (the scalar table its portable reference).
    group_matvec: Option<GroupMatvecFn>,
    /// `group_matvec` is a SIMD kernel: weights are worth storing interleaved.
    group_matvec_simd: bool,
    /// `group_matvec` for up to four tokens at once, each weight block unpacked once.
    group_dot4: Option<GroupDot4Fn>,
    /// Prefill goes through the lane panels (`ops::lane_panel`: AVX2, or AVX-512 VNNI tiles).
    prefill_panel: bool,
    /// Prefill register tile of 3 rows × 4 tokens (float weights).
    tile3x4: Option<Tile3x4Fn>,
}

impl fmt::Debug for FormatKernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormatKernels")
            .field("weight", &self.weight)
            .field("act", &self.act)
            .field("dot_isa", &self.dot_isa)
            .field("dot4", &self.dot4.is_some())
            .field("matvec", &self.matvec.is_some())
            .field("group_matvec", &self.group_matvec.is_some())
            .field("prefill_panel", &self.prefill_panel)
            .field("tile3x4", &self.tile3x4.is_some())
            .finish()
    }
}

impl FormatKernels {
    /// The weight format.
    pub fn weight_format(&self) -> BlockFormat {
        self.weight
    }

    /// The activation format the dot product consumes: F32 for float weights, else the
    /// format's [`BlockFormat::vec_dot_format`].
    pub fn act_format(&self) -> BlockFormat {
        self.act
    }

    /// The instruction set the dot product of this entry actually uses.
    pub fn dot_isa(&self) -> Isa {
        self.dot_isa
    }

    /// Quantizes one row of f32 activations into `out` (the activation format; F32: a copy).
    /// Q8_K output must be 4-byte aligned (its blocks hold an `f32`).
    pub fn quantize_act(&self, x: &[f32], out: &mut [u8]) -> Result<(), KernelError> {
        let bytes = self.act.row_bytes(x.len()).ok_or(KernelError::RowNotBlockMultiple {
            format: self.act,
            len: x.len(),
            block: self.act.block_elems(),
        })?;
        if out.len() != bytes {
            return Err(KernelError::Length { what: "activation row", expected: bytes, got: out.len(), unit: "bytes" });
        }
        match self.quantize_act {
            Some(q) => {
                assert_aligned(self.act, act_align(self.act), out);
                q(x, out)
            }
            None => out.copy_from_slice(cast_slice(x)),
        }
        Ok(())
    }

    /// Σ w·a over one weight row and one activation row (as produced by
    /// [`quantize_act`](Self::quantize_act)).
    ///
    /// # Panics
    /// If the rows do not hold the same whole number of blocks, or if a row whose block type
    /// needs alignment (Q8_K; f32 activations: 4 bytes) is misaligned. The matmul driver checks
    /// shapes once per call; this check is what keeps the SIMD kernels in bounds.
    #[inline]
    pub fn vec_dot(&self, w: &[u8], a: &[u8]) -> f32 {
        let (wb, ab) = (self.weight.block_bytes(), self.act.block_bytes());
        let w_elems = w.len() / wb * self.weight.block_elems();
        assert!(
            w.len().is_multiple_of(wb)
                && a.len().is_multiple_of(ab)
                && w_elems == a.len() / ab * self.act.block_elems(),
            "vec_dot {:?}: weight row of {} bytes and {:?} activation row of {} bytes differ in length",
            self.weight,
            w.len(),
            self.act,
            a.len()
        );
        assert_aligned(self.weight, weight_align(self.weight), w);
        assert_aligned(self.act, act_align(self.act), a);
        (self.dot)(w, a)
    }

    /// The raw activation quantizer (None: F32 activations are used as they are). The
    /// caller guarantees lengths and alignment, as `quantize_act` checks them.
    pub(crate) fn raw_quantize_act(&self) -> Option<QuantizeFn> {
        self.quantize_act
    }

    /// The raw dot product: the caller guarantees what [`vec_dot`](Self::vec_dot) asserts.
    /// For the matmul driver, which validates the shapes once per call.
    pub(crate) fn raw_dot(&self) -> DotFn {
        self.dot
    }

    /// The raw one-row × four-token dot product, if there is one; same contract.
    pub(crate) fn raw_dot4(&self) -> Option<Dot4Fn> {
        self.dot4
    }

    /// The raw one-row × four-token dot product if each of its columns is the bits of
    /// [`Self::raw_dot`] for that token (several one-token rows of a batch-invariant step).
    pub(crate) fn raw_exact_dot4(&self) -> Option<Dot4Fn> {
        self.dot4.filter(|_| self.dot4_exact && group_tokens_enabled())
    }

    /// The raw multi-row matvec kernel, if there is one. The caller guarantees
    /// `w.len() == out.len() * row_bytes`, `row_bytes` a whole weight row, and what
    /// [`vec_dot`](Self::vec_dot) asserts of each row and `a`.
    /// `OWL_MATVEC_ROWS=0` (read once) turns it off, so that decode with and without it can be
    /// compared end to end in one build; the results are the same bits either way.
    pub(crate) fn raw_matvec(&self) -> Option<MatvecFn> {
        self.matvec.filter(|_| multi_row_matvec_enabled())
    }

    /// The raw interleaved-layout matvec kernel, if the format has that layout. The caller
    /// guarantees `w` is `out.len() / 8` whole groups (`out.len()` a multiple of 8) and `a`
    /// one activation row of the matching length, as [`vec_dot`](Self::vec_dot) asserts of
    /// a row.
    pub(crate) fn raw_group_matvec(&self) -> Option<GroupMatvecFn> {
        self.group_matvec
    }

    /// The raw several-token group kernel, if there is one: the caller guarantees `w` is
    /// one whole group and each used activation row matches it, as for `raw_group_matvec`.
    /// `OWL_GROUP_TOKENS=0` (read once) turns it off, to compare decode steps of several
    /// sequences with and without it in one build; the bits are the same either way.
    pub(crate) fn raw_group_dot4(&self) -> Option<GroupDot4Fn> {
        self.group_dot4.filter(|_| group_tokens_enabled())
    }

    /// Whether weights of this format are best stored in the 8-row interleaved layout for
    /// this kernel set: true where it has a SIMD group kernel. Every table can multiply an
    /// interleaved matrix (the portable group kernel), but on a set without a SIMD one the
    /// row-major SIMD kernels are faster, so loaders keep the file's layout there.
    pub fn prefers_interleaved_layout(&self) -> bool {
        self.group_matvec_simd
    }

    /// Whether decode (one token) runs a multi-row kernel that shares each activation block
    /// among several weight rows (its results equal the one-row kernel's bit for bit).
    pub fn has_multi_row_matvec(&self) -> bool {
        self.matvec.is_some()
    }

    /// Whether a multi-token kernel serves prefill for this format.
    pub fn has_multi_token_kernel(&self) -> bool {
        self.dot4.is_some() || self.prefill_panel || self.tile3x4.is_some()
    }

    /// Whether prefill results may round differently from the one-token kernel (register
    /// tiles and int8 panels sum in another order; the one-row × four-token kernels do not).
    pub fn prefill_rounds_differently(&self) -> bool {
        self.prefill_panel || self.tile3x4.is_some()
    }

    /// The raw 3-row × 4-token tile, if there is one; same contract as `raw_dot`.
    pub(crate) fn raw_tile3x4(&self) -> Option<Tile3x4Fn> {
        self.tile3x4
    }

    /// Whether prefill unpacks weight rows into panels (int8 or K) swept by register tiles.
    pub fn has_prefill_panel(&self) -> bool {
        self.prefill_panel
    }
}

/// False when the environment sets `OWL_MATVEC_ROWS=0` (a measurement switch: decode then
/// runs one dot product per row).
fn multi_row_matvec_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("OWL_MATVEC_ROWS").map_or(true, |v| v.trim() != "0"))
}

fn group_tokens_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("OWL_GROUP_TOKENS").map_or(true, |v| v.trim() != "0"))
}

/// Alignment a weight row of `format` needs: its block type's (only Q8_K's blocks hold an
/// `f32`; float weights are read as bytes).
pub(crate) const fn weight_align(format: BlockFormat) -> usize {
    match format {
        BlockFormat::Q8_K => 4,
        _ => 1,
    }
}

/// Alignment an activation row of `format` needs (f32 activations are read as `f32`).
const fn act_align(format: BlockFormat) -> usize {
    match format {
        BlockFormat::F32 | BlockFormat::Q8_K => 4,
        _ => 1,
    }
}

#[inline]
fn assert_aligned(format: BlockFormat, align: usize, bytes: &[u8]) {
    assert!(
        (bytes.as_ptr() as usize).is_multiple_of(align),
        "{format:?} row at {:p} is not {align}-byte aligned",
        bytes.as_ptr()
    );
}

/// Per-format row kernels of one instruction set.
pub struct KernelTable {
    isa: Isa,
    entries: [Option<FormatKernels>; BlockFormat::ALL.len()],
}

impl fmt::Debug for KernelTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelTable").field("isa", &self.isa).finish_non_exhaustive()
    }
}

impl KernelTable {
    /// The instruction set this table was built for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The kernels of weight format `format`, if it can be a matmul weight.
    pub fn get(&self, format: BlockFormat) -> Option<&FormatKernels> {
        self.entries[format as usize].as_ref()
    }
}

// ---------------------------------------------------------------------------------------
// Byte-level wrappers around the typed kernels of `crate::quant`.

/// `fn $name(w: &[u8], a: &[u8]) -> f32` calling `$dot` on the rows cast to `$W`/`$A`.
macro_rules! byte_dot {
    ($name:ident, $dot:path, $W:ty, $A:ty) => {
        fn $name(w: &[u8], a: &[u8]) -> f32 {
            $dot(cast_slice::<u8, $W>(w), cast_slice::<u8, $A>(a))
        }
    };
}

/// `fn $name(x: &[f32], out: &mut [u8])` calling the quantizer `$q` with output blocks `$B`.
macro_rules! byte_quantize {
    ($name:ident, $q:path, $B:ty) => {
        fn $name(x: &[f32], out: &mut [u8]) {
            $q(x, cast_slice_mut::<u8, $B>(out))
        }
    };
}

use quant::bf16::BlockBF16;
use quant::f16::BlockF16;
use quant::iq4_nl::BlockIQ4NL;
use quant::iq4_xs::BlockIQ4XS;
use quant::q2_k::BlockQ2K;
use quant::q3_k::BlockQ3K;
use quant::q4_0::BlockQ4_0;
use quant::q4_1::BlockQ4_1;
use quant::q4_k::BlockQ4K;
use quant::q5_0::BlockQ5_0;
use quant::q5_1::BlockQ5_1;
use quant::q5_k::BlockQ5K;
use quant::q6_k::BlockQ6K;
use quant::q8_0::BlockQ8_0;
use quant::q8_1::BlockQ8_1;
use quant::q8_k::BlockQ8K;

byte_quantize!(quantize_q8_0, quant::q8_0::quantize, BlockQ8_0);
byte_quantize!(quantize_q8_1, quant::q8_1::quantize, BlockQ8_1);
byte_quantize!(quantize_q8_k, quant::q8_k::quantize, BlockQ8K);

fn dot_f32(w: &[u8], a: &[u8]) -> f32 {
    quant::f32::vec_dot_bytes(w, a)
}
byte_dot!(dot_f16, quant::f16::vec_dot_f32, BlockF16, f32);
byte_dot!(dot_bf16, quant::bf16::vec_dot_f32, BlockBF16, f32);
byte_dot!(dot_q4_0, quant::q4_0::vec_dot, BlockQ4_0, BlockQ8_0);
byte_dot!(dot_q4_1, quant::q4_1::vec_dot, BlockQ4_1, BlockQ8_1);
byte_dot!(dot_q5_0, quant::q5_0::vec_dot, BlockQ5_0, BlockQ8_0);
byte_dot!(dot_q5_1, quant::q5_1::vec_dot, BlockQ5_1, BlockQ8_1);
byte_dot!(dot_q8_0, quant::q8_0::vec_dot, BlockQ8_0, BlockQ8_0);
byte_dot!(dot_q8_1, quant::q8_1::vec_dot, BlockQ8_1, BlockQ8_1);
byte_dot!(dot_q2_k, quant::q2_k::vec_dot, BlockQ2K, BlockQ8K);
byte_dot!(dot_q3_k, quant::q3_k::vec_dot, BlockQ3K, BlockQ8K);
byte_dot!(dot_q4_k, quant::q4_k::vec_dot, BlockQ4K, BlockQ8K);
byte_dot!(dot_q5_k, quant::q5_k::vec_dot, BlockQ5K, BlockQ8K);
byte_dot!(dot_q6_k, quant::q6_k::vec_dot, BlockQ6K, BlockQ8K);
byte_dot!(dot_q8_k, quant::q8_k::vec_dot, BlockQ8K, BlockQ8K);
byte_dot!(dot_iq4_nl, quant::iq4_nl::vec_dot, BlockIQ4NL, BlockQ8_0);
byte_dot!(dot_iq4_xs, quant::iq4_xs::vec_dot, BlockIQ4XS, BlockQ8K);

/// The activation format of a weight format's kernels.
const fn act_format_of(weight: BlockFormat) -> BlockFormat {
    match weight {
        BlockFormat::F32 | BlockFormat::F16 | BlockFormat::BF16 => BlockFormat::F32,
        other => other.vec_dot_format(),
    }
}

/// Activation quantizers of one instruction set.
struct Quantizers {
    q8_0: QuantizeFn,
    q8_1: QuantizeFn,
    q8_k: QuantizeFn,
}

const SCALAR_QUANTIZERS: Quantizers = Quantizers { q8_0: quantize_q8_0, q8_1: quantize_q8_1, q8_k: quantize_q8_k };

const fn entry(
    weight: BlockFormat,
    q: &Quantizers,
    dot_isa: Isa,
    dot: DotFn,
    dot4: Option<Dot4Fn>,
) -> Option<FormatKernels> {
    let act = act_format_of(weight);
    let quantize_act = match act {
        BlockFormat::Q8_0 => Some(q.q8_0),
        BlockFormat::Q8_1 => Some(q.q8_1),
        BlockFormat::Q8_K => Some(q.q8_k),
        _ => None,
    };
    Some(FormatKernels {
        weight,
        act,
        dot_isa,
        quantize_act,
        dot,
        dot4,
        dot4_exact: false,
        matvec: None,
        group_matvec: scalar_group_matvec(weight),
        group_matvec_simd: false,
        group_dot4: None,
        prefill_panel: false,
        tile3x4: None,
    })
}

/// `fn $name(w: &[u8], a: &[u8], out: &mut [f32])`: a [`GroupMatvecFn`] over the group
/// kernel `$dot` (`fn(&[u8], &[$A]) -> [f32; 8]`), groups of `$gb · nb` bytes.
macro_rules! group_matvec {
    ($name:ident, $dot:path, $gb:expr, $A:ty) => {
        fn $name(w: &[u8], a: &[u8], out: &mut [f32]) {
            let a = cast_slice::<u8, $A>(a);
            let group = $gb * a.len();
            for (g, o) in w.chunks_exact(group).zip(out.chunks_exact_mut(quant::interleave::INTERLEAVE_ROWS)) {
                o.copy_from_slice(&$dot(g, a));
            }
        }
    };
}

group_matvec!(group_matvec_q4_0, quant::q4_0::x8::dot_x8, quant::q4_0::x8::GROUP_BLOCK_BYTES, BlockQ8_0);
group_matvec!(group_matvec_q4_1, quant::q4_1::x8::dot_x8, quant::q4_1::x8::GROUP_BLOCK_BYTES, BlockQ8_1);
group_matvec!(group_matvec_q5_0, quant::q5_0::x8::dot_x8, quant::q5_0::x8::GROUP_BLOCK_BYTES, BlockQ8_0);
group_matvec!(group_matvec_q8_0, quant::q8_0::x8::dot_x8, quant::q8_0::x8::GROUP_BLOCK_BYTES, BlockQ8_0);
group_matvec!(group_matvec_q4_k, quant::q4_k::x8::dot_x8, quant::q4_k::x8::GROUP_BLOCK_BYTES, BlockQ8K);
group_matvec!(group_matvec_q6_k, quant::q6_k::x8::dot_x8, quant::q6_k::x8::GROUP_BLOCK_BYTES, BlockQ8K);

/// The portable group kernel of a format with the interleaved layout.
const fn scalar_group_matvec(weight: BlockFormat) -> Option<GroupMatvecFn> {
    match weight {
        BlockFormat::Q4_0 => Some(group_matvec_q4_0),
        BlockFormat::Q4_1 => Some(group_matvec_q4_1),
        BlockFormat::Q5_0 => Some(group_matvec_q5_0),
        BlockFormat::Q8_0 => Some(group_matvec_q8_0),
        BlockFormat::Q4_K => Some(group_matvec_q4_k),
        BlockFormat::Q6_K => Some(group_matvec_q6_k),
        _ => None,
    }
}

/// Scalar dot products, in `BlockFormat::ALL` order.
const SCALAR_DOTS: [DotFn; BlockFormat::ALL.len()] = [
    dot_f32, dot_f16, dot_bf16, dot_q4_0, dot_q4_1, dot_q5_0, dot_q5_1, dot_q8_0, dot_q8_1, dot_q2_k, dot_q3_k,
    dot_q4_k, dot_q5_k, dot_q6_k, dot_q8_k, dot_iq4_nl, dot_iq4_xs,
];

/// Every format with scalar kernels, activations quantized by `q`.
const fn scalar_entries(q: &Quantizers) -> [Option<FormatKernels>; BlockFormat::ALL.len()] {
    let mut entries = [None; BlockFormat::ALL.len()];
    let mut i = 0;
    while i < entries.len() {
        entries[i] = entry(BlockFormat::ALL[i], q, Isa::Scalar, SCALAR_DOTS[i], None);
        i += 1;
    }
    entries
}

static SCALAR: KernelTable = KernelTable { isa: Isa::Scalar, entries: scalar_entries(&SCALAR_QUANTIZERS) };

// --- AVX2 -------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Safe byte-level wrappers of the `#[target_feature]` kernels. Every one of them may
    //! only be called on a CPU with avx2, fma and f16c: they are reachable only through the
    //! AVX2 table, which [`super::table`] hands out after checking exactly that.
    use super::*;
    use crate::ops::float_dot;

    /// `$dot` (one row) and `$dot4` (one row × 4 tokens) over `quant::$m::avx2`.
    macro_rules! dots {
        ($dot:ident, $dot4:ident, $m:ident, $W:ty, $A:ty) => {
            pub(super) fn $dot(w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: AVX2 table only (module docs).
                unsafe { quant::$m::avx2::vec_dot(cast_slice::<u8, $W>(w), cast_slice::<u8, $A>(a)) }
            }
            pub(super) fn $dot4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
                // SAFETY: AVX2 table only (module docs).
                unsafe { quant::$m::avx2::vec_dot_n::<4>(cast_slice::<u8, $W>(w), a.map(cast_slice::<u8, $A>)) }
            }
        };
    }

    /// `$name`: a [`MatvecFn`] over `quant::$m::avx2::vec_dot_rows` — groups of
    /// `MATVEC_ROWS` rows, then the 1–3 rows left in one call.
    macro_rules! matvec {
        ($name:ident, $m:ident, $W:ty, $A:ty) => {
            pub(super) fn $name(w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
                use quant::simd_x86::MATVEC_ROWS;
                let a = cast_slice::<u8, $A>(a);
                let rows = |r: usize, n: usize| cast_slice::<u8, $W>(&w[r * row_bytes..(r + n) * row_bytes]);
                let mut groups = out.chunks_exact_mut(MATVEC_ROWS);
                let mut r = 0;
                for o in &mut groups {
                    // SAFETY: AVX2 table only (module docs).
                    o.copy_from_slice(&unsafe {
                        quant::$m::avx2::vec_dot_rows::<MATVEC_ROWS>(rows(r, MATVEC_ROWS), a)
                    });
                    r += MATVEC_ROWS;
                }
                let tail = groups.into_remainder();
                // SAFETY (each arm): AVX2 table only.
                match tail.len() {
                    0 => {}
                    1 => tail.copy_from_slice(&unsafe { quant::$m::avx2::vec_dot_rows::<1>(rows(r, 1), a) }),
                    2 => tail.copy_from_slice(&unsafe { quant::$m::avx2::vec_dot_rows::<2>(rows(r, 2), a) }),
                    _ => tail.copy_from_slice(&unsafe { quant::$m::avx2::vec_dot_rows::<3>(rows(r, 3), a) }),
                }
            }
        };
    }

    matvec!(matvec_q4_0, q4_0, BlockQ4_0, BlockQ8_0);
    matvec!(matvec_q4_1, q4_1, BlockQ4_1, BlockQ8_1);
    matvec!(matvec_q5_0, q5_0, BlockQ5_0, BlockQ8_0);
    matvec!(matvec_q4_k, q4_k, BlockQ4K, BlockQ8K);
    matvec!(matvec_q8_0, q8_0, BlockQ8_0, BlockQ8_0);

    /// `$name`: a [`GroupDot4Fn`] over `quant::$m::avx2_x8::dot_x8_tokens`.
    macro_rules! avx2_group_dot4 {
        ($name:ident, $m:ident, $A:ty) => {
            pub(super) fn $name(g: &[u8], a: [&[u8]; 4], n: usize) -> [[f32; 8]; 4] {
                use quant::$m::avx2_x8::{dot_x8, dot_x8_tokens};
                let a = a.map(cast_slice::<u8, $A>);
                let mut out = [[0.0; 8]; 4];
                // SAFETY: AVX2 table only (module docs).
                unsafe {
                    match n {
                        4 => out = dot_x8_tokens::<4>(g, a),
                        3 => out[..3].copy_from_slice(&dot_x8_tokens::<3>(g, [a[0], a[1], a[2]])),
                        2 => out[..2].copy_from_slice(&dot_x8_tokens::<2>(g, [a[0], a[1]])),
                        _ => out[0] = dot_x8(g, a[0]),
                    }
                }
                out
            }
        };
    }

    avx2_group_dot4!(group_dot4_q4_0, q4_0, BlockQ8_0);
    avx2_group_dot4!(group_dot4_q4_1, q4_1, BlockQ8_1);
    avx2_group_dot4!(group_dot4_q5_0, q5_0, BlockQ8_0);
    avx2_group_dot4!(group_dot4_q8_0, q8_0, BlockQ8_0);
    avx2_group_dot4!(group_dot4_q4_k, q4_k, BlockQ8K);
    avx2_group_dot4!(group_dot4_q6_k, q6_k, BlockQ8K);

    /// `$name`: a [`GroupMatvecFn`] over `quant::$m::avx512_x8::dot_x8` where
    /// [`quant::x8_avx512::enabled`], else `avx2_x8::dot_x8` (the same bits either way).
    macro_rules! x8_group_matvec {
        ($name:ident, $m:ident, $A:ty) => {
            pub(super) fn $name(w: &[u8], a: &[u8], out: &mut [f32]) {
                let a = cast_slice::<u8, $A>(a);
                let group = quant::$m::x8::GROUP_BLOCK_BYTES * a.len();
                let groups = w.chunks_exact(group).zip(out.chunks_exact_mut(quant::interleave::INTERLEAVE_ROWS));
                if quant::x8_avx512::enabled() {
                    for (g, o) in groups {
                        // SAFETY: AVX-512 F/BW/VNNI, AVX2, FMA, F16C checked by `enabled`.
                        o.copy_from_slice(&unsafe { quant::$m::avx512_x8::dot_x8(g, a) });
                    }
                } else {
                    for (g, o) in groups {
                        // SAFETY: AVX2 table only (module docs).
                        o.copy_from_slice(&unsafe { quant::$m::avx2_x8::dot_x8(g, a) });
                    }
                }
            }
        };
    }

    x8_group_matvec!(group_matvec_q4_0, q4_0, BlockQ8_0);
    x8_group_matvec!(group_matvec_q4_1, q4_1, BlockQ8_1);
    x8_group_matvec!(group_matvec_q5_0, q5_0, BlockQ8_0);
    x8_group_matvec!(group_matvec_q8_0, q8_0, BlockQ8_0);
    x8_group_matvec!(group_matvec_q4_k, q4_k, BlockQ8K);
    x8_group_matvec!(group_matvec_q6_k, q6_k, BlockQ8K);

    /// A quantizer over `quant::$m::avx2::quantize`.
    macro_rules! quantizer {
        ($name:ident, $m:ident, $B:ty) => {
            pub(super) fn $name(x: &[f32], out: &mut [u8]) {
                // SAFETY: AVX2 table only (module docs).
                unsafe { quant::$m::avx2::quantize(x, cast_slice_mut::<u8, $B>(out)) }
            }
        };
    }

    quantizer!(quantize_q8_0, q8_0, BlockQ8_0);
    quantizer!(quantize_q8_1, q8_1, BlockQ8_1);
    quantizer!(quantize_q8_k, q8_k, BlockQ8K);

    dots!(dot_q4_0, dot4_q4_0, q4_0, BlockQ4_0, BlockQ8_0);
    dots!(dot_q4_1, dot4_q4_1, q4_1, BlockQ4_1, BlockQ8_1);
    dots!(dot_q5_0, dot4_q5_0, q5_0, BlockQ5_0, BlockQ8_0);
    dots!(dot_q5_1, dot4_q5_1, q5_1, BlockQ5_1, BlockQ8_1);
    dots!(dot_q8_0, dot4_q8_0, q8_0, BlockQ8_0, BlockQ8_0);
    dots!(dot_iq4_nl, dot4_iq4_nl, iq4_nl, BlockIQ4NL, BlockQ8_0);
    dots!(dot_q4_k, dot4_q4_k, q4_k, BlockQ4K, BlockQ8K);
    dots!(dot_q6_k, dot4_q6_k, q6_k, BlockQ6K, BlockQ8K);
    dots!(dot_q2_k, dot4_q2_k, q2_k, BlockQ2K, BlockQ8K);
    dots!(dot_q3_k, dot4_q3_k, q3_k, BlockQ3K, BlockQ8K);
    dots!(dot_q5_k, dot4_q5_k, q5_k, BlockQ5K, BlockQ8K);
    dots!(dot_iq4_xs, dot4_iq4_xs, iq4_xs, BlockIQ4XS, BlockQ8K);

    /// `$dot`, `$dot4` and `$tile` over the float kernels `float_dot::avx2::{$k, $kt}`
    /// (f32 activations).
    macro_rules! float_dots {
        ($dot:ident, $dot4:ident, $tile:ident, $k:ident, $kt:ident) => {
            pub(super) fn $dot(w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: AVX2 table only.
                unsafe { float_dot::avx2::$k::<1>(w, [cast_slice::<u8, f32>(a)])[0] }
            }
            pub(super) fn $dot4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
                // SAFETY: AVX2 table only.
                unsafe { float_dot::avx2::$k::<4>(w, a.map(cast_slice::<u8, f32>)) }
            }
            pub(super) fn $tile(w: [&[u8]; 3], a: [&[u8]; 4]) -> [[f32; 4]; 3] {
                // SAFETY: AVX2 table only.
                unsafe { float_dot::avx2::$kt::<3, 4>(w, a.map(cast_slice::<u8, f32>)) }
            }
        };
    }

    float_dots!(dot_f32, dot4_f32, tile_f32, dot_f32, tile_f32);
    float_dots!(dot_f16, dot4_f16, tile_f16, dot_f16, tile_f16);
    float_dots!(dot_bf16, dot4_bf16, tile_bf16, dot_bf16, tile_bf16);

    pub(super) const QUANTIZERS: Quantizers =
        Quantizers { q8_0: quantize_q8_0, q8_1: quantize_q8_1, q8_k: quantize_q8_k };

    /// AVX2 kernels where they exist; the scalar ones, marked `dot_isa: Scalar`, elsewhere.
    pub(super) const fn table() -> KernelTable {
        let q = &QUANTIZERS;
        let mut e = scalar_entries(q);
        macro_rules! set {
            ($f:ident, $dot:expr, $dot4:expr) => {
                e[BlockFormat::$f as usize] = entry(BlockFormat::$f, q, Isa::Avx2, $dot, $dot4);
            };
        }
        set!(F32, dot_f32, Some(dot4_f32));
        set!(F16, dot_f16, Some(dot4_f16));
        set!(BF16, dot_bf16, Some(dot4_bf16));
        set!(Q4_0, dot_q4_0, Some(dot4_q4_0));
        set!(Q4_1, dot_q4_1, Some(dot4_q4_1));
        set!(Q5_0, dot_q5_0, Some(dot4_q5_0));
        set!(Q5_1, dot_q5_1, Some(dot4_q5_1));
        set!(Q8_0, dot_q8_0, Some(dot4_q8_0));
        set!(IQ4_NL, dot_iq4_nl, Some(dot4_iq4_nl));
        set!(Q4_K, dot_q4_k, Some(dot4_q4_k));
        set!(Q6_K, dot_q6_k, Some(dot4_q6_k));
        set!(Q2_K, dot_q2_k, Some(dot4_q2_k));
        set!(Q3_K, dot_q3_k, Some(dot4_q3_k));
        set!(Q5_K, dot_q5_k, Some(dot4_q5_k));
        set!(IQ4_XS, dot_iq4_xs, Some(dot4_iq4_xs));
        macro_rules! set_matvec {
            ($f:ident, $matvec:expr) => {
                if let Some(k) = &mut e[BlockFormat::$f as usize] {
                    k.matvec = Some($matvec);
                }
            };
        }
        set_matvec!(Q4_0, matvec_q4_0);
        set_matvec!(Q4_1, matvec_q4_1);
        set_matvec!(Q5_0, matvec_q5_0);
        set_matvec!(Q4_K, matvec_q4_k);
        set_matvec!(Q8_0, matvec_q8_0);
        macro_rules! set_group_matvec {
            ($f:ident, $k:expr, $k4:expr) => {
                if let Some(k) = &mut e[BlockFormat::$f as usize] {
                    k.group_matvec = Some($k);
                    k.group_matvec_simd = true;
                    k.group_dot4 = Some($k4);
                }
            };
        }
        set_group_matvec!(Q4_0, group_matvec_q4_0, group_dot4_q4_0);
        set_group_matvec!(Q4_1, group_matvec_q4_1, group_dot4_q4_1);
        set_group_matvec!(Q5_0, group_matvec_q5_0, group_dot4_q5_0);
        set_group_matvec!(Q8_0, group_matvec_q8_0, group_dot4_q8_0);
        set_group_matvec!(Q4_K, group_matvec_q4_k, group_dot4_q4_k);
        set_group_matvec!(Q6_K, group_matvec_q6_k, group_dot4_q6_k);
        // `vec_dot_n` columns equal `vec_dot` bit for bit in these formats (their module
        // docs; tests in each).
        let exact = [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q5_0, BlockFormat::Q5_1, BlockFormat::Q8_0];
        let mut i = 0;
        while i < exact.len() {
            if let Some(k) = &mut e[exact[i] as usize] {
                k.dot4_exact = true;
            }
            i += 1;
        }
        let mut i = 0;
        while i < e.len() {
            if let Some(k) = &mut e[i] {
                k.prefill_panel = crate::ops::lane_panel::kind(k.weight).is_some();
                k.tile3x4 = match k.weight {
                    BlockFormat::F32 => Some(tile_f32),
                    BlockFormat::F16 => Some(tile_f16),
                    BlockFormat::BF16 => Some(tile_bf16),
                    _ => None,
                };
            }
            i += 1;
        }
        KernelTable { isa: Isa::Avx2, entries: e }
    }
}

#[cfg(target_arch = "x86_64")]
static AVX2: KernelTable = avx2::table();

/// Never handed out: `Isa::Avx2.is_available()` is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
static AVX2: KernelTable = KernelTable { isa: Isa::Avx2, entries: scalar_entries(&SCALAR_QUANTIZERS) };

// --- NEON -------------------------------------------------------------------------------

#[cfg(target_arch = "aarch64")]
mod neon {
    //! Byte-level wrappers of the NEON kernels. These are safe functions (NEON is mandatory
    //! on AArch64, see `quant::simd_neon`); activations are quantized by the scalar
    //! quantizers, and there are no multi-row or multi-token kernels yet, so decode and
    //! prefill call the one-row dot product.
    use super::*;
    use crate::ops::float_dot;

    byte_dot!(dot_q4_0, quant::q4_0::neon::vec_dot, BlockQ4_0, BlockQ8_0);
    byte_dot!(dot_q4_1, quant::q4_1::neon::vec_dot, BlockQ4_1, BlockQ8_1);
    byte_dot!(dot_q5_0, quant::q5_0::neon::vec_dot, BlockQ5_0, BlockQ8_0);
    byte_dot!(dot_q8_0, quant::q8_0::neon::vec_dot, BlockQ8_0, BlockQ8_0);
    byte_dot!(dot_q4_k, quant::q4_k::neon::vec_dot, BlockQ4K, BlockQ8K);
    byte_dot!(dot_q6_k, quant::q6_k::neon::vec_dot, BlockQ6K, BlockQ8K);

    /// `$name` over the float kernel `float_dot::neon::$k` (f32 activations, 4-aligned).
    macro_rules! float_dot {
        ($name:ident, $k:ident) => {
            fn $name(w: &[u8], a: &[u8]) -> f32 {
                float_dot::neon::$k(w, cast_slice::<u8, f32>(a))
            }
        };
    }

    float_dot!(dot_f32, dot_f32);
    float_dot!(dot_f16, dot_f16);
    float_dot!(dot_bf16, dot_bf16);

    /// NEON kernels where they exist; the scalar ones, marked `dot_isa: Scalar`, elsewhere.
    pub(super) const fn table() -> KernelTable {
        let q = &SCALAR_QUANTIZERS;
        let mut e = scalar_entries(q);
        macro_rules! set {
            ($f:ident, $dot:expr) => {
                e[BlockFormat::$f as usize] = entry(BlockFormat::$f, q, Isa::Neon, $dot, None);
            };
        }
        set!(F32, dot_f32);
        set!(F16, dot_f16);
        set!(BF16, dot_bf16);
        set!(Q4_0, dot_q4_0);
        set!(Q4_1, dot_q4_1);
        set!(Q5_0, dot_q5_0);
        set!(Q8_0, dot_q8_0);
        set!(Q4_K, dot_q4_k);
        set!(Q6_K, dot_q6_k);
        KernelTable { isa: Isa::Neon, entries: e }
    }
}

#[cfg(target_arch = "aarch64")]
static NEON: KernelTable = neon::table();

/// Never handed out: `Isa::Neon.is_available()` is false off AArch64.
#[cfg(not(target_arch = "aarch64"))]
static NEON: KernelTable = KernelTable { isa: Isa::Neon, entries: scalar_entries(&SCALAR_QUANTIZERS) };

#[cfg(test)]
mod tests {
    use super::*;

    /// Every several-token group kernel gives each of its 1-4 tokens the bits the one-token
    /// group kernel gives that token alone (what batch-invariant decode relies on), on
    /// reference-quantized random rows of every format that has one.
    #[test]
    fn group_dot4_gives_each_token_the_one_token_bits() {
        use crate::quant::interleave::interleave_matrix;
        use crate::quant::{test_rows, test_values};
        let mut checked = Vec::new();
        for isa in Isa::ALL {
            let Ok(t) = table(isa) else { continue };
            for format in BlockFormat::ALL {
                let Some(k) = t.get(format) else { continue };
                let (Some(dot4), Some(one)) = (k.group_dot4, k.group_matvec) else { continue };
                checked.push(format);
                for (cols, seed) in [(512, 1u64), (256, 2), (2048, 3)] {
                    let (w, _) = test_rows(format, &test_values(8 * cols, seed, 0.1, 1.5), 8, cols);
                    let mut g = vec![0u8; w.len()];
                    interleave_matrix(format, 8, cols, &w, &mut g).expect("interleave");
                    let ab = k.act_format().row_bytes(cols).expect("act row");
                    // f32 storage: Q8_K activation blocks need 4-byte alignment.
                    let mut acts = vec![vec![0f32; ab.div_ceil(4)]; 4];
                    for (i, a) in acts.iter_mut().enumerate() {
                        let x = test_values(cols, seed * 10 + i as u64, 0.0, 3.0);
                        k.quantize_act(&x, &mut cast_slice_mut::<f32, u8>(a)[..ab]).expect("quantize");
                    }
                    let rows: [&[u8]; 4] = std::array::from_fn(|i| &cast_slice::<f32, u8>(&acts[i])[..ab]);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    for n in 1..=4 {
                        let got = dot4(&g, rows, n);
                        for (i, got) in got.iter().enumerate().take(n) {
                            let mut want = [0f32; 8];
                            one(&g, rows[i], &mut want);
                            assert_eq!(bits(got), bits(&want), "{isa:?} {format:?} cols {cols}: token {i} of {n}");
                        }
                    }
                }
            }
        }
        if Isa::Avx2.is_available() {
            for f in [
                BlockFormat::Q4_0,
                BlockFormat::Q4_1,
                BlockFormat::Q5_0,
                BlockFormat::Q8_0,
                BlockFormat::Q4_K,
                BlockFormat::Q6_K,
            ] {
                assert!(checked.contains(&f), "{f:?}: no AVX2 several-token group kernel was checked");
            }
        }
    }

    #[test]
    fn select_parses_names_and_rejects_unknown() {
        assert_eq!(select(None), Ok(detected_isa()));
        assert_eq!(select(Some("")), Ok(detected_isa()));
        assert_eq!(select(Some("AUTO")), Ok(detected_isa()));
        assert_eq!(select(Some("scalar")), Ok(Isa::Scalar));
        let err = select(Some("avx9")).expect_err("unknown name");
        assert_eq!(err, DispatchError::UnknownIsa { value: "avx9".into() });
        assert!(err.to_string().contains("OWL_KERNELS=\"avx9\""));
        match select(Some("avx2")) {
            Ok(isa) => assert!(isa.is_available()),
            Err(e) => assert!(e.to_string().contains("lacks avx2")),
        }
    }

    #[test]
    fn tables_cover_every_weight_format() {
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let t = table(isa).expect("available");
            assert_eq!(t.isa(), isa);
            for f in BlockFormat::ALL {
                let k = t.get(f).expect("every format");
                assert_eq!(k.weight_format(), f);
            }
        }
    }

    /// The formats the NEON table runs with NEON kernels (the others fall back to scalar).
    #[cfg(target_arch = "aarch64")]
    const NEON_FORMATS: [BlockFormat; 9] = [
        BlockFormat::F32,
        BlockFormat::F16,
        BlockFormat::BF16,
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q8_0,
        BlockFormat::Q4_K,
        BlockFormat::Q6_K,
    ];

    #[test]
    fn neon_is_available_and_detected_on_aarch64_only() {
        assert_eq!(Isa::Neon.is_available(), cfg!(target_arch = "aarch64"));
        assert_eq!(Isa::Neon.name(), "neon");
        #[cfg(target_arch = "aarch64")]
        {
            assert_eq!(detected_isa(), Isa::Neon);
            assert_eq!(select(Some("NEON")), Ok(Isa::Neon));
            let t = table(Isa::Neon).expect("neon table");
            assert_eq!(t.isa(), Isa::Neon);
            for f in BlockFormat::ALL {
                let k = t.get(f).expect("every format");
                let want = if NEON_FORMATS.contains(&f) { Isa::Neon } else { Isa::Scalar };
                assert_eq!(k.dot_isa(), want, "{f:?}");
            }
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            let err = select(Some("neon")).expect_err("no NEON off AArch64");
            assert_eq!(err, DispatchError::Unavailable { isa: Isa::Neon, needs: "neon (an AArch64 CPU)" });
            assert!(table(Isa::Neon).is_err());
        }
    }

    /// Through the byte-level table entries (quantizer, alignment checks, wrappers): each
    /// NEON format's dot product against the scalar table's on the same bytes. Bit-identical
    /// for the K-quants; within the kernels' tolerances elsewhere (the per-format unit tests
    /// bound those; this checks the wiring, where a wrong kernel or type would be far off).
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_table_entries_match_the_scalar_table() {
        let (neon, scalar) = (table(Isa::Neon).expect("neon"), table(Isa::Scalar).expect("scalar"));
        let (rows, cols) = (3, 512);
        for f in NEON_FORMATS {
            let (kn, ks) = (neon.get(f).expect("entry"), scalar.get(f).expect("entry"));
            assert_eq!(kn.act_format(), ks.act_format(), "{f:?}");
            let (w, _) = quant::test_rows(f, &quant::test_values(rows * cols, 0x51f1_5eed, 0.45, 1.5), rows, cols);
            let x = quant::test_values(cols, 0xace1, 0.5, 3.0);
            // u32 storage: 4-aligned activations (Q8_K, f32).
            let act_bytes = kn.act_format().row_bytes(cols).expect("whole blocks");
            let mut act = vec![0u32; act_bytes.div_ceil(4)];
            let a = &mut cast_slice_mut::<u32, u8>(&mut act)[..act_bytes];
            kn.quantize_act(&x, a).expect("quantize");
            let mut af = vec![0f32; cols];
            quant::dequantize_row(kn.act_format(), a, &mut af).expect("dequantize");
            let rb = f.row_bytes(cols).expect("whole blocks");
            for r in 0..rows {
                let wr = &w[r * rb..(r + 1) * rb];
                let (got, want) = (kn.vec_dot(wr, a), ks.vec_dot(wr, a));
                if matches!(f, BlockFormat::Q4_K | BlockFormat::Q6_K) {
                    assert_eq!(got.to_bits(), want.to_bits(), "{f:?} row {r}: {got:e} vs {want:e}");
                } else {
                    let mut wf = vec![0f32; cols];
                    quant::dequantize_row(f, wr, &mut wf).expect("dequantize");
                    let mag: f64 = wf.iter().zip(&af).map(|(&p, &q)| (p as f64 * q as f64).abs()).sum();
                    let err = (got as f64 - want as f64).abs();
                    assert!(err <= 1e-5 * mag, "{f:?} row {r}: {got:e} vs {want:e} (Σ|w·a| {mag:e})");
                }
            }
        }
    }
}
