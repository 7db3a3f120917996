//! Property tests of stop strings: whatever the split of the text into pieces, the released
//! text is the text up to the first occurrence of any stop string, and no stop string ever
//! appears in it. Checked on the matcher alone and through a whole generation.

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;

use proptest::prelude::*;

use owl_engine::{ByteTableDecoder, Event, GenerateParams, SamplingParams, Session, SessionConfig, StopMatcher};

use crate::fake::FakeModel;

/// Few distinct characters (two of them multi-byte) so that stops occur often.
fn text_from(alphabet: &[char], idx: &[usize]) -> String {
    idx.iter().map(|&i| alphabet[i % alphabet.len()]).collect()
}

const ALPHABET: [char; 5] = ['a', 'b', 'c', 'é', '€'];

/// The released text required by the definition: cut at the earliest stop occurrence.
fn expected(text: &str, stops: &[String]) -> (String, Option<usize>) {
    let first = stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min();
    match first {
        Some(i) => (text[..i].to_string(), Some(i)),
        None => (text.to_string(), None),
    }
}

/// Splits `text` at the given byte positions, moved down to char boundaries.
fn split<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut c = c % (text.len() + 1);
            while !text.is_char_boundary(c) {
                c -= 1;
            }
            c
        })
        .collect();
    points.push(0);
    points.push(text.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matcher_releases_exactly_the_text_before_the_first_stop(
        text_idx in prop::collection::vec(0usize..5, 0..40),
        stop_idx in prop::collection::vec(prop::collection::vec(0usize..5, 1..5), 1..4),
        cuts in prop::collection::vec(0usize..200, 0..20),
    ) {
        let text = text_from(&ALPHABET, &text_idx);
        let stops: Vec<String> = stop_idx.iter().map(|s| text_from(&ALPHABET, s)).collect();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        let mut m = StopMatcher::new(stops.iter().cloned());
        let mut released = String::new();
        let mut hit = None;
        for piece in split(&text, &cuts) {
            hit = m.push(piece, &mut released);
            if hit.is_some() {
                break;
            }
            prop_assert!(m.held().len() < longest, "held {:?} with stops {:?}", m.held(), stops);
            for s in &stops {
                prop_assert!(!released.contains(s.as_str()), "released {:?} contains {:?}", released, s);
            }
        }
        if hit.is_none() {
            hit = m.finish(&mut released);
        }
        let (want, first) = expected(&text, &stops);
        prop_assert_eq!(&released, &want, "text {:?} stops {:?}", text, stops);
        for s in &stops {
            prop_assert!(!released.contains(s.as_str()));
        }
        match (hit, first) {
            (Some(k), Some(i)) => prop_assert!(text[i..].starts_with(stops[k].as_str())),
            (None, None) => {}
            other => prop_assert!(false, "reported {:?} for text {:?} stops {:?}", other, text, stops),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Through Session::generate: random pieces per token, a random model; the output with
    /// stop strings is the stop-free output cut at the first stop.
    #[test]
    fn generation_output_is_cut_at_the_first_stop(
        pieces_idx in prop::collection::vec(prop::collection::vec(0usize..5, 0..4), 12),
        stop_idx in prop::collection::vec(prop::collection::vec(0usize..5, 1..4), 1..3),
        model_seed in 0u64..1000,
    ) {
        let vocab = pieces_idx.len();
        let pieces: Vec<Vec<u8>> = pieces_idx.iter().map(|p| text_from(&ALPHABET, p).into_bytes()).collect();
        let stops: Vec<String> = stop_idx.iter().map(|s| text_from(&ALPHABET, s)).collect();
        let model = FakeModel::random(vocab, 256, model_seed, 0.0);
        let cancel = AtomicBool::new(false);
        let sampling = SamplingParams { seed: Some(model_seed), top_k: 0, top_p: 1.0, min_p: 0.0, temperature: 1.0, ..SamplingParams::default() };
        let free = GenerateParams { sampling: sampling.clone(), max_tokens: Some(40), ..GenerateParams::default() };
        let with_stops = GenerateParams { stop: stops.clone(), ..free.clone() };

        let mut s = Session::new(model.clone(), SessionConfig::default()).unwrap();
        let mut dec = ByteTableDecoder::new(pieces.clone());
        let all = s.generate(&[0], &free, &mut dec, &cancel, |_| ControlFlow::Continue(())).unwrap();

        let mut s = Session::new(model, SessionConfig::default()).unwrap();
        let mut streamed = String::new();
        let cut = s.generate(&[0], &with_stops, &mut dec, &cancel, |ev| {
            if let Event::Text(t) = ev { streamed.push_str(t); }
            ControlFlow::Continue(())
        }).unwrap();

        let (want, _) = expected(&all.text, &stops);
        prop_assert_eq!(&cut.text, &want);
        prop_assert_eq!(&streamed, &want);
        for st in &stops {
            prop_assert!(!streamed.contains(st.as_str()));
        }
        prop_assert!(all.ids.starts_with(&cut.ids), "same seed, same tokens until the stop");
    }
}
