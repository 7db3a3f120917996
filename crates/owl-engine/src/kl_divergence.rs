//! What a quantization costs: a model against its higher-precision source over the same
//! text, with llama-perplexity's `--kl-divergence` report (tools/perplexity/perplexity.cpp,
//! `kl_divergence`): both perplexities, their log-ratio, the token-level KL divergence of
//! the model's distribution from the base's, the change Δp of the probability of the actual
//! next token, and how often both pick the same top token.
//!
//! Windows are [`crate::perplexity`]'s: each runs from an empty cache (BOS first where the
//! model adds one) and only the second half is scored; both models see the same windows.

use std::io::Read;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use crate::base_logprobs::{row_len, BaseLogProbs, SavedRow};
use crate::error::EngineError;
use crate::logprobs::LogSoftmax;
use crate::model::LanguageModel;
use crate::perplexity::{
    check_batch_and_context, check_window, run, run_window, PerplexityParams, PerplexityProgress, LOGITS_BUDGET,
};

/// A value and its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub stderr: f64,
}

/// Quantiles of a per-token statistic, as llama-perplexity lists them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantiles {
    pub max: f64,
    /// (percentile, value), from 99.9 down to 0.1.
    pub percentiles: Vec<(f64, f64)>,
    pub median: f64,
    pub min: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KlDivergence {
    pub chunks: usize,
    /// Tokens scored.
    pub tokens: usize,
    pub n_ctx: usize,
    /// Perplexity of the model (Q) and of the base.
    pub ppl: Estimate,
    pub ppl_base: Estimate,
    /// Pearson correlation of the per-token ln-probabilities of the target under Q and base
    /// (llama's "Cor(ln(PPL(Q)), ln(PPL(base)))").
    pub ln_ppl_correlation: f64,
    /// Mean of ln(p_base / p_Q) of the target: ln(PPL(Q)/PPL(base)).
    pub ln_ppl_ratio: Estimate,
    pub ppl_ratio: Estimate,
    pub ppl_difference: Estimate,
    /// KL(base ‖ Q) per token, in nats.
    pub kld: Estimate,
    pub kld_quantiles: Quantiles,
    /// p_Q(target) − p_base(target), as a fraction (llama prints it in %).
    pub delta_p: Estimate,
    pub delta_p_quantiles: Quantiles,
    pub delta_p_rms: Estimate,
    /// Fraction of positions where Q's and the base's most likely tokens agree.
    pub same_top: Estimate,
}

/// Sums from which the report's means and errors come.
#[derive(Default)]
struct Sums {
    n: f64,
    nll_q: f64,
    nll_q2: f64,
    nll_b: f64,
    nll_b2: f64,
    nll_qb: f64,
    kld: f64,
    kld2: f64,
    dp: f64,
    dp2: f64,
    same_top: f64,
}

impl Sums {
    fn add(&mut self, p: &Position, klds: &mut Vec<f64>, dps: &mut Vec<f64>) {
        let (nq, nb) = (-p.logp_q, -p.logp_b);
        let dp = p.logp_q.exp() - p.logp_b.exp();
        self.n += 1.0;
        self.nll_q += nq;
        self.nll_q2 += nq * nq;
        self.nll_b += nb;
        self.nll_b2 += nb * nb;
        self.nll_qb += nq * nb;
        self.kld += p.kld;
        self.kld2 += p.kld * p.kld;
        self.dp += dp;
        self.dp2 += dp * dp;
        self.same_top += f64::from(u8::from(p.same_top));
        klds.push(p.kld);
        dps.push(dp);
    }
}

fn mean_err(sum: f64, sum2: f64, n: f64) -> Estimate {
    let mean = sum / n;
    let var = (sum2 / n - mean * mean).max(0.0);
    Estimate { value: mean, stderr: if n > 1.0 { (var / (n - 1.0)).sqrt() } else { 0.0 } }
}

fn quantiles(mut v: Vec<f64>, percentiles: &[f64]) -> Quantiles {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        if v.is_empty() {
            return 0.0;
        }
        // llama-perplexity's `percentile`: linear between the two nearest order statistics.
        let x = p / 100.0 * (v.len() - 1) as f64;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
    };
    Quantiles {
        max: v.last().copied().unwrap_or(0.0),
        percentiles: percentiles.iter().map(|&p| (p, at(p))).collect(),
        median: at(50.0),
        min: v.first().copied().unwrap_or(0.0),
    }
}

/// Per position: KL(base ‖ Q) over the whole vocabulary, and the target's probabilities.
struct Position {
    kld: f64,
    logp_q: f64,
    logp_b: f64,
    same_top: bool,
}

fn compare(q: &[f32], base: &[f32], target: usize) -> Position {
    let (lq, lb) = (LogSoftmax::of(q), LogSoftmax::of(base));
    let mut kld = 0.0f64;
    let (mut top_q, mut top_b) = (0usize, 0usize);
    for (i, (&xq, &xb)) in q.iter().zip(base).enumerate() {
        let (log_q, log_b) = (lq.logprob(xq), lb.logprob(xb));
        if log_b > f64::NEG_INFINITY {
            kld += log_b.exp() * (log_b - log_q);
        }
        if xq > q[top_q] {
            top_q = i;
        }
        if xb > base[top_b] {
            top_b = i;
        }
    }
    Position {
        kld: kld.max(0.0),
        logp_q: lq.logprob(q[target]),
        logp_b: lb.logprob(base[target]),
        same_top: top_q == top_b,
    }
}

/// [`compare`] against a saved row (llama-perplexity's `log_softmax(.., base_log_prob, ..)`):
/// the base's log-probabilities below −16 nats count as zero probability, as llama's do.
fn compare_saved(q: &[f32], base: &SavedRow, target: usize) -> Position {
    let lq = LogSoftmax::of(q);
    let mut kld = 0.0f64;
    let (mut top_q, mut top_b, mut max_b) = (0usize, 0usize, f32::NEG_INFINITY);
    for (i, &xq) in q.iter().enumerate() {
        let log_b = base.log_prob(i);
        if log_b > -16.0 {
            let log_b = f64::from(log_b);
            kld += log_b.exp() * (log_b - lq.logprob(xq));
        }
        if xq > q[top_q] {
            top_q = i;
        }
        if i == 0 || log_b > max_b {
            (top_b, max_b) = (i, log_b);
        }
    }
    Position {
        kld: kld.max(0.0),
        logp_q: lq.logprob(q[target]),
        logp_b: f64::from(base.log_prob(target)),
        same_top: top_q == top_b,
    }
}

/// Runs `model` over the windows saved in `base` (a base model's log-probabilities, saved
/// by `owl perplexity --save-logprobs` or llama-perplexity `--kl-divergence-base`) and
/// compares them position by position. The windows are the file's: its tokens and its
/// `n_ctx`, which `params.n_ctx` must equal; `params.max_chunks` may stop early.
pub fn kl_divergence_saved<M: LanguageModel + ?Sized, R: Read>(
    model: &mut M,
    base: &mut BaseLogProbs<R>,
    params: &PerplexityParams,
    cancel: &AtomicBool,
    mut on_chunk: impl FnMut(PerplexityProgress),
) -> Result<KlDivergence, EngineError> {
    let vocab = model.vocab_size();
    if base.n_vocab != vocab {
        return Err(EngineError::VocabularyMismatch { model: vocab, base: base.n_vocab });
    }
    let n_ctx = base.n_ctx;
    if params.n_ctx != n_ctx {
        return Err(EngineError::BaseFile(format!(
            "it was saved with windows of {n_ctx} tokens and this run asks for {}: give --ctx-size {n_ctx}",
            params.n_ctx
        )));
    }
    check_batch_and_context(model, n_ctx, params)?;
    if let Some(bos) = params.bos.filter(|&b| b as usize >= vocab) {
        return Err(EngineError::TokenOutOfRange { id: bos, vocab_size: vocab, what: "bos" });
    }
    let n_chunks = base.n_chunk.min(params.max_chunks.unwrap_or(usize::MAX));
    let stride = row_len(vocab);
    let rows_per_batch = (LOGITS_BUDGET / vocab.max(1)).clamp(1, params.n_batch);
    let mut logits = vec![0.0f32; rows_per_batch * vocab];
    let mut codes = vec![0u16; rows_per_batch * stride];
    let mut window = vec![0u32; n_ctx];
    let mut s = Sums::default();
    let (mut klds, mut dps) = (Vec::new(), Vec::new());
    for chunk in 0..n_chunks {
        window.copy_from_slice(&base.tokens[chunk * n_ctx..(chunk + 1) * n_ctx]);
        if let Some(bos) = params.bos {
            window[0] = bos;
        }
        model.kv_truncate(0);
        run_window(model, &window, params.n_batch, &mut logits, cancel, |pos, rows| {
            let saved = &mut codes[..rows.len() / vocab * stride];
            base.read_rows(saved)?;
            for (r, (q, b)) in rows.chunks_exact(vocab).zip(saved.chunks_exact(stride)).enumerate() {
                let p = compare_saved(q, &SavedRow::new(b, vocab), window[pos + r + 1] as usize);
                s.add(&p, &mut klds, &mut dps);
            }
            Ok(())
        })?;
        on_chunk(PerplexityProgress { chunk: chunk + 1, chunks: n_chunks, ppl: (s.nll_q / s.n).exp() });
    }
    model.kv_truncate(0);
    Ok(report(&s, klds, dps, n_chunks, n_ctx))
}

/// Runs `model` and `base` over the same windows of `tokens` and compares them position by
/// position. Both must share a vocabulary.
pub fn kl_divergence<M: LanguageModel + ?Sized, B: LanguageModel + ?Sized>(
    model: &mut M,
    base: &mut B,
    tokens: &[u32],
    params: &PerplexityParams,
    cancel: &AtomicBool,
    mut on_chunk: impl FnMut(PerplexityProgress),
) -> Result<KlDivergence, EngineError> {
    let vocab = model.vocab_size();
    if base.vocab_size() != vocab {
        return Err(EngineError::VocabularyMismatch { model: vocab, base: base.vocab_size() });
    }
    check_window(model, tokens, params)?;
    check_window(base, tokens, params)?;
    let n_ctx = params.n_ctx;
    let n_chunks = (tokens.len() / n_ctx).min(params.max_chunks.unwrap_or(usize::MAX));
    let first = n_ctx / 2;
    let rows_per_batch = (LOGITS_BUDGET / 2 / vocab.max(1)).clamp(1, params.n_batch);
    let mut logits_q = vec![0.0f32; rows_per_batch * vocab];
    let mut logits_b = vec![0.0f32; rows_per_batch * vocab];
    let mut window = vec![0u32; n_ctx];
    let mut s = Sums::default();
    let (mut klds, mut dps) = (Vec::new(), Vec::new());
    for chunk in 0..n_chunks {
        let start = chunk * n_ctx;
        window.copy_from_slice(&tokens[start..start + n_ctx]);
        if let Some(bos) = params.bos {
            window[0] = bos;
        }
        model.kv_truncate(0);
        base.kv_truncate(0);
        for piece in window[..first].chunks(params.n_batch) {
            run(model, piece, piece.len(), &mut [], cancel)?;
            run(base, piece, piece.len(), &mut [], cancel)?;
        }
        let mut pos = first;
        while pos < n_ctx {
            let n = rows_per_batch.min(n_ctx - pos);
            let (out_q, out_b) = (&mut logits_q[..n * vocab], &mut logits_b[..n * vocab]);
            run(model, &window[pos..pos + n], 0, out_q, cancel)?;
            run(base, &window[pos..pos + n], 0, out_b, cancel)?;
            for (r, (q, b)) in out_q.chunks_exact(vocab).zip(out_b.chunks_exact(vocab)).enumerate() {
                let j = pos + r;
                if j + 1 >= n_ctx {
                    break;
                }
                s.add(&compare(q, b, window[j + 1] as usize), &mut klds, &mut dps);
            }
            pos += n;
        }
        on_chunk(PerplexityProgress { chunk: chunk + 1, chunks: n_chunks, ppl: (s.nll_q / s.n).exp() });
    }
    model.kv_truncate(0);
    base.kv_truncate(0);
    Ok(report(&s, klds, dps, n_chunks, n_ctx))
}

fn report(s: &Sums, klds: Vec<f64>, dps: Vec<f64>, chunks: usize, n_ctx: usize) -> KlDivergence {
    let n = s.n;
    let nll_q = mean_err(s.nll_q, s.nll_q2, n);
    let nll_b = mean_err(s.nll_b, s.nll_b2, n);
    let ppl = Estimate { value: nll_q.value.exp(), stderr: nll_q.value.exp() * nll_q.stderr };
    let ppl_base = Estimate { value: nll_b.value.exp(), stderr: nll_b.value.exp() * nll_b.stderr };
    // Covariance of the two mean nlls (llama: log_ppl_cov).
    let cov = (s.nll_qb / n - nll_q.value * nll_b.value) / (n - 1.0).max(1.0);
    let var_q = (s.nll_q2 / n - nll_q.value * nll_q.value).max(0.0);
    let var_b = (s.nll_b2 / n - nll_b.value * nll_b.value).max(0.0);
    let correlation = {
        let c = s.nll_qb / n - nll_q.value * nll_b.value;
        if var_q > 0.0 && var_b > 0.0 {
            c / (var_q * var_b).sqrt()
        } else {
            1.0
        }
    };
    let ratio_ln = nll_q.value - nll_b.value;
    let ratio_ln_err = (nll_q.stderr.powi(2) + nll_b.stderr.powi(2) - 2.0 * cov).max(0.0).sqrt();
    let ratio = ratio_ln.exp();
    let ppl_cov = ppl.value * ppl_base.value * cov;
    let diff_err = (ppl.stderr.powi(2) + ppl_base.stderr.powi(2) - 2.0 * ppl_cov).max(0.0).sqrt();
    let dp_rms = {
        let ms = s.dp2 / n;
        // Error of the RMS from the error of the mean square (delta method).
        let sq: Vec<f64> = dps.iter().map(|d| d * d).collect();
        let ms_err = mean_err(sq.iter().sum(), sq.iter().map(|x| x * x).sum(), n).stderr;
        Estimate { value: ms.sqrt(), stderr: if ms > 0.0 { ms_err / (2.0 * ms.sqrt()) } else { 0.0 } }
    };
    let same = s.same_top / n;
    KlDivergence {
        chunks,
        tokens: n as usize,
        n_ctx,
        ppl,
        ppl_base,
        ln_ppl_correlation: correlation,
        ln_ppl_ratio: Estimate { value: ratio_ln, stderr: ratio_ln_err },
        ppl_ratio: Estimate { value: ratio, stderr: ratio * ratio_ln_err },
        ppl_difference: Estimate { value: ppl.value - ppl_base.value, stderr: diff_err },
        kld: mean_err(s.kld, s.kld2, n),
        kld_quantiles: quantiles(klds, &[99.9, 99.0, 10.0, 5.0, 1.0, 0.1]),
        delta_p: mean_err(s.dp, s.dp2, n),
        delta_p_quantiles: quantiles(dps, &[99.9, 99.0, 95.0, 90.0, 75.0, 25.0, 10.0, 5.0, 1.0, 0.1]),
        delta_p_rms: dp_rms,
        same_top: Estimate { value: same, stderr: (same * (1.0 - same) / (n - 1.0).max(1.0)).sqrt() },
    }
}

impl KlDivergence {
    /// llama-perplexity's three sections, line by line.
    pub fn report_lines(&self) -> Vec<String> {
        let pct = |e: Estimate| format!("{:8.3} ± {:6.3} %", 100.0 * e.value, 100.0 * e.stderr);
        let mut out = vec![
            "====== Perplexity statistics ======".to_string(),
            format!("Mean PPL(Q)                   : {:10.6} ± {:10.6}", self.ppl.value, self.ppl.stderr),
            format!("Mean PPL(base)                : {:10.6} ± {:10.6}", self.ppl_base.value, self.ppl_base.stderr),
            format!("Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%", 100.0 * self.ln_ppl_correlation),
            format!(
                "Mean ln(PPL(Q)/PPL(base))     : {:10.6} ± {:10.6}",
                self.ln_ppl_ratio.value, self.ln_ppl_ratio.stderr
            ),
            format!("Mean PPL(Q)/PPL(base)         : {:10.6} ± {:10.6}", self.ppl_ratio.value, self.ppl_ratio.stderr),
            format!(
                "Mean PPL(Q)-PPL(base)         : {:10.6} ± {:10.6}",
                self.ppl_difference.value, self.ppl_difference.stderr
            ),
            String::new(),
            "====== KL divergence statistics ======".to_string(),
            format!("Mean    KLD: {:10.6} ± {:10.6}", self.kld.value, self.kld.stderr),
            format!("Maximum KLD: {:10.6}", self.kld_quantiles.max),
        ];
        let named = |p: f64| format!("{:<5}", format!("{p:.1}%"));
        for &(p, v) in self.kld_quantiles.percentiles.iter().filter(|(p, _)| *p > 50.0) {
            out.push(format!("{}   KLD: {v:10.6}", named(p)));
        }
        out.push(format!("Median  KLD: {:10.6}", self.kld_quantiles.median));
        for &(p, v) in self.kld_quantiles.percentiles.iter().filter(|(p, _)| *p < 50.0) {
            out.push(format!("{}   KLD: {v:10.6}", named(p)));
        }
        out.push(format!("Minimum KLD: {:10.6}", self.kld_quantiles.min));
        out.push(String::new());
        out.push("====== Token probability statistics ======".to_string());
        out.push(format!("Mean    Δp: {}", pct(self.delta_p)));
        out.push(format!("Maximum Δp: {:8.3}%", 100.0 * self.delta_p_quantiles.max));
        for &(p, v) in self.delta_p_quantiles.percentiles.iter().filter(|(p, _)| *p > 50.0) {
            out.push(format!("{}   Δp: {:8.3}%", named(p), 100.0 * v));
        }
        out.push(format!("Median  Δp: {:8.3}%", 100.0 * self.delta_p_quantiles.median));
        for &(p, v) in self.delta_p_quantiles.percentiles.iter().filter(|(p, _)| *p < 50.0) {
            out.push(format!("{}   Δp: {:8.3}%", named(p), 100.0 * v));
        }
        out.push(format!("Minimum Δp: {:8.3}%", 100.0 * self.delta_p_quantiles.min));
        out.push(format!("RMS Δp    : {}", pct(self.delta_p_rms)));
        out.push(format!("Same top p: {}", pct(self.same_top)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_rows_have_no_divergence_and_shifted_ones_have_the_closed_form() {
        let base = [1.0f32, 2.0, 3.0, 0.5];
        let same = compare(&base, &base, 2);
        assert!(same.kld.abs() < 1e-12 && same.same_top);
        assert_eq!(same.logp_q, same.logp_b);
        // Q = base with token 0 raised by ln 2: KL(base‖Q) = ln Z_Q/Z_B − p_b0 ln 2.
        let mut q = base;
        q[0] += std::f32::consts::LN_2;
        let z_b: f64 = base.iter().map(|&x| f64::from(x).exp()).sum();
        let z_q: f64 = q.iter().map(|&x| f64::from(x).exp()).sum();
        let p0 = f64::from(base[0]).exp() / z_b;
        let want = (z_q / z_b).ln() - p0 * std::f64::consts::LN_2;
        let got = compare(&q, &base, 2).kld;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn a_saved_row_compares_like_its_logits() {
        use crate::base_logprobs::encode_row;
        let base: Vec<f32> = (0..300).map(|i| ((i * 37) % 101) as f32 * 0.1 - 5.0).collect();
        let q: Vec<f32> = base.iter().enumerate().map(|(i, &x)| x + ((i % 7) as f32 - 3.0) * 0.05).collect();
        let mut row = vec![0u16; row_len(base.len())];
        encode_row(&base, &mut row);
        let saved = SavedRow::new(&row, base.len());
        let (live, stored) = (compare(&q, &base, 17), compare_saved(&q, &saved, 17));
        assert!(live.kld > 1e-3 && (live.kld - stored.kld).abs() < 3e-4, "{} vs {}", live.kld, stored.kld);
        assert!((live.logp_b - stored.logp_b).abs() < 2.5e-4, "{} vs {}", live.logp_b, stored.logp_b);
        assert_eq!((live.logp_q, live.same_top), (stored.logp_q, stored.same_top));
        // Probabilities more than 16 nats under the top are left out, as llama leaves them.
        let mut wide = base.clone();
        wide[0] = -40.0;
        encode_row(&wide, &mut row);
        let saved = SavedRow::new(&row, wide.len());
        assert!(saved.log_prob(0) <= -16.0 + 1e-3);
        let (live, stored) = (compare(&q, &wide, 17), compare_saved(&q, &saved, 17));
        assert!((live.kld - stored.kld).abs() < 3e-4, "{} vs {}", live.kld, stored.kld);
    }

    #[test]
    fn percentiles_interpolate_like_llama_perplexity() {
        let q = quantiles(vec![4.0, 1.0, 3.0, 2.0, 5.0], &[90.0, 10.0]);
        assert_eq!((q.min, q.median, q.max), (1.0, 3.0, 5.0));
        assert!((q.percentiles[0].1 - 4.6).abs() < 1e-12 && (q.percentiles[1].1 - 1.4).abs() < 1e-12);
    }
}
