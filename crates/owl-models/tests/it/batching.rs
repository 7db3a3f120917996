//! Batching and cache behaviour: several sequences in one call equal separate calls;
//! prompts fed in chunks (across sliding windows) equal one-shot prefill; rewinding a
//! sequence and copying a prefix reproduce the same logits.

use owl_models::{Batch, KvDtype};

use crate::common::*;

/// Two prompts of different lengths, interleaved in one call, then a decode step of both
/// plus a third sequence's prompt chunk in one call: every logit row equals the one
/// computed alone.
#[test]
fn mixed_batches_equal_separate_runs() {
    for variant in ["llama", "mistral", "gemma2", "gemma3", "qwen2", "phi3_longrope_long"] {
        let r = reference(variant);
        let a = ids(&r["input_ids"]);
        let b: Vec<u32> = a.iter().rev().take(11).copied().collect();
        let c: Vec<u32> = a[5..20].to_vec();
        let mut model = load_variant(variant, "config.json", 64);
        let vocab = model.vocab_size();

        // Alone.
        let mut kv = new_cache(&model, 3, KvDtype::F32);
        let la = prompt_logits(&mut model, &mut kv, 0, &a);
        let lb = prompt_logits(&mut model, &mut kv, 1, &b);
        let next_a = argmax(&la[(a.len() - 1) * vocab..]) as u32;
        let next_b = argmax(&lb[(b.len() - 1) * vocab..]) as u32;
        let la2 = prompt_logits(&mut model, &mut kv, 0, &[next_a]);
        let lb2 = prompt_logits(&mut model, &mut kv, 1, &[next_b]);
        let lc = prompt_logits(&mut model, &mut kv, 2, &c);

        // Together: a and b interleaved token by token.
        let mut kv = new_cache(&model, 3, KvDtype::F32);
        let mut batch = Batch::new();
        for i in 0..a.len().max(b.len()) {
            if i < b.len() {
                batch.push(b[i], 1, i, true);
            }
            if i < a.len() {
                batch.push(a[i], 0, i, true);
            }
        }
        let mut logits = vec![0.0; batch.n_logits() * vocab];
        model.forward(&batch, &mut kv, &mut logits).unwrap();
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let mut row = 0;
        for i in 0..a.len().max(b.len()) {
            if i < b.len() {
                got_b.extend_from_slice(&logits[row * vocab..(row + 1) * vocab]);
                row += 1;
            }
            if i < a.len() {
                got_a.extend_from_slice(&logits[row * vocab..(row + 1) * vocab]);
                row += 1;
            }
        }
        // Decode steps of a and b with a prompt of c in the same call.
        batch.clear();
        batch.push(next_a, 0, a.len(), true);
        batch.push_sequence(2, 0, &c, true);
        batch.push(next_b, 1, b.len(), true);
        let mut logits2 = vec![0.0; batch.n_logits() * vocab];
        model.forward(&batch, &mut kv, &mut logits2).unwrap();

        let tol = 1e-5;
        let e = [
            max_abs(&got_a, &la),
            max_abs(&got_b, &lb),
            max_abs(&logits2[..vocab], &la2),
            max_abs(&logits2[vocab..(c.len() + 1) * vocab], &lc),
            max_abs(&logits2[(c.len() + 1) * vocab..], &lb2),
        ];
        println!("{variant:20} batched vs alone: {:?}", e.map(|x| format!("{x:.1e}")));
        assert!(e.iter().all(|&x| x <= tol), "{variant}: {e:?}");
    }
}

/// A prompt fed 5 tokens at a time (cache rings sized window + 4) gives the logits of the
/// one-shot prefill — sliding-window layers included (window 8 < 24 tokens).
#[test]
fn chunked_prefill_equals_one_shot() {
    for variant in ["mistral", "gemma2", "gemma3", "gemma3_rope_scaling", "llama"] {
        let r = reference(variant);
        let prompt = ids(&r["input_ids"]);
        let mut model = load_variant(variant, "config.json", 5);
        let vocab = model.vocab_size();
        let mut kv = model.new_kv_cache(1, 64, KvDtype::F32).unwrap();
        let mut got = Vec::new();
        for chunk in prompt.chunks(5) {
            got.extend(prompt_logits(&mut model, &mut kv, 0, chunk));
        }
        let e = owl_test::assert_close(&format!("{variant} chunked"), &got, &r["logits"].data, 1e-4);
        println!("{variant:20} chunked prefill vs reference: {e:.2e}");
        assert_eq!(got.len(), prompt.len() * vocab);
    }
}

/// Rewinding a sequence and feeding the same tokens again, and copying a prefix to another
/// slot, reproduce the logits.
#[test]
fn truncate_and_copy_prefix_reproduce_logits() {
    let r = reference("gemma2");
    let prompt = ids(&r["input_ids"]);
    let mut model = load_variant("gemma2", "config.json", 8);
    let vocab = model.vocab_size();
    let mut kv = model.new_kv_cache(2, 64, KvDtype::F32).unwrap();
    let mut first = Vec::new();
    for chunk in prompt.chunks(8) {
        first.extend(prompt_logits(&mut model, &mut kv, 0, chunk));
    }
    // Rewind by 6 (within the ring's slack of 8) and replay.
    kv.truncate_seq(0, 18).unwrap();
    let again = prompt_logits(&mut model, &mut kv, 0, &prompt[18..]);
    assert!(max_abs(&again, &first[18 * vocab..]) <= 1e-6);
    // Rewinding further than the ring holds is refused.
    assert!(kv.truncate_seq(0, 10).is_err());
    // A copied prefix continues like the original.
    kv.copy_prefix(0, 1, 20).unwrap();
    let copied = prompt_logits(&mut model, &mut kv, 1, &prompt[20..]);
    assert!(max_abs(&copied, &first[20 * vocab..]) <= 1e-6);
}

/// A fixture model run to its full trained context (128 positions): one-shot prefill and
/// 7-token chunks agree at every position (sliding-window rings wrap many times), scratch
/// does not depend on the context, and position 128 is refused.
///
/// (Not LongRoPE models: like transformers, they pick short or long factors from the length a
/// sequence reaches in each forward call, so chunking across `original_max_position` changes
/// the rotation of the earlier chunks' keys — see `skeleton::rope`.)
#[test]
fn full_trained_context_in_chunks_equals_one_shot() {
    for variant in ["gemma3", "qwen3", "mistral"] {
        let prompt: Vec<u32> = (0..128u32).map(|i| (i * 37 + 11) % 512).collect();
        let mut whole = load_variant(variant, "config.json", 128);
        assert_eq!(whole.config().context_length, 128);
        let mut kv = whole.new_kv_cache(1, 128, KvDtype::F32).unwrap();
        let one_shot = prompt_logits(&mut whole, &mut kv, 0, &prompt);
        let err = whole.forward(&owl_models::Batch::new(), &mut kv, &mut []);
        assert!(err.is_ok(), "an empty batch is a no-op");

        let mut chunked = load_variant(variant, "config.json", 7);
        let mut kv = chunked.new_kv_cache(1, 128, KvDtype::F32).unwrap();
        let mut got = Vec::new();
        for chunk in prompt.chunks(7) {
            got.extend(prompt_logits(&mut chunked, &mut kv, 0, chunk));
        }
        let e = max_abs(&got, &one_shot);
        println!("{variant:20} 128 positions, chunks of 7 vs one shot: {e:.1e}");
        assert!(e <= 1e-5, "{variant}: {e}");
        let mut batch = owl_models::Batch::new();
        batch.push(1, 0, 128, true);
        let mut logits = vec![0.0; chunked.vocab_size()];
        assert!(chunked.forward(&batch, &mut kv, &mut logits).is_err(), "beyond the trained context");
        let (small, large) = (chunked.memory_report(KvDtype::F16), whole.memory_report(KvDtype::F16));
        assert_eq!(small.weight_bytes, large.weight_bytes);
        assert!(small.scratch_bytes < large.scratch_bytes, "scratch follows the batch size, not the context");
    }
}

/// Batch-invariant mode: a sequence's logits are bit for bit the same alone (its prompt in
/// one call, then one decode step a call) and beside others (its prompt cut into chunks
/// that share calls with other prompts, its decode steps listed first beside other decode
/// steps and a prompt chunk). Not LongRoPE past its switch: there the factors of a prompt
/// chunk depend on how far its sequence reaches in that call, which is a matter of chunking.
#[test]
fn batch_invariant_mode_gives_the_same_bits_alone_and_together() {
    for variant in ["llama", "mistral", "gemma2", "gemma3", "qwen2"] {
        let r = reference(variant);
        let a = ids(&r["input_ids"]);
        let b: Vec<u32> = a.iter().rev().take(9).copied().collect();
        let c: Vec<u32> = a[3..17].to_vec();
        let mut model = load_variant(variant, "config.json", 64);
        model.set_batch_invariant(true);
        let vocab = model.vocab_size();
        let steps = 4;

        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        // Alone: the prompt, then greedy decode steps, one token per call.
        let mut kv = new_cache(&model, 1, KvDtype::F16);
        let mut batch = Batch::new();
        batch.push_sequence(0, 0, &a, false);
        let mut row = vec![0.0; vocab];
        model.forward(&batch, &mut kv, &mut row).unwrap();
        let mut alone = vec![bits(&row)];
        let mut tokens = Vec::new();
        for s in 0..steps {
            let next = argmax(&row) as u32;
            tokens.push(next);
            batch.clear();
            batch.push(next, 0, a.len() + s, true);
            model.forward(&batch, &mut kv, &mut row).unwrap();
            alone.push(bits(&row));
        }

        // Together: b's prompt and a's first 7 tokens; then b decodes (first) beside the
        // rest of a's prompt; then a and b decode (a first, then b) beside c's prompt.
        let mut kv = new_cache(&model, 3, KvDtype::F16);
        batch.clear();
        batch.push_sequence(1, 0, &b, false);
        batch.push_sequence(0, 0, &a[..7], false);
        let mut out = vec![0.0; batch.n_logits() * vocab];
        model.forward(&batch, &mut kv, &mut out).unwrap();
        batch.clear();
        batch.push(b[0], 1, b.len(), true);
        batch.push_sequence(0, 7, &a[7..], false);
        let mut out = vec![0.0; 2 * vocab];
        model.forward(&batch, &mut kv, &mut out).unwrap();
        let mut together = vec![bits(&out[vocab..])];
        for (s, &t) in tokens.iter().enumerate() {
            batch.clear();
            batch.push(t, 0, a.len() + s, true);
            batch.push(b[1], 1, b.len() + 1 + s, true);
            if s == 0 {
                batch.push_sequence(2, 0, &c, false);
            } else {
                batch.push(c[0], 2, c.len() + s - 1, true);
            }
            let mut out = vec![0.0; batch.n_logits() * vocab];
            model.forward(&batch, &mut kv, &mut out).unwrap();
            together.push(bits(&out[..vocab]));
        }
        for (i, (x, y)) in alone.iter().zip(&together).enumerate() {
            assert!(x == y, "{variant}: logits row {i} of sequence a differ alone and together");
        }
    }
}
