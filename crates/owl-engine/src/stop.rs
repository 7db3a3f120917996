//! Stop conditions: stop strings matched on the detokenized text stream, end-of-generation
//! token ids, and why a generation ended.
//!
//! [`StopMatcher`] sees the text in whatever pieces the detokenizer produces. A stop
//! string may be split over several tokens, so text that could still be the beginning of
//! one is held back; everything before it is released at once. The released text is
//! exactly the generated text up to the first occurrence of any stop string (the earliest
//! start; when a shorter stop completes inside a longer one that began earlier and could
//! still complete, the matcher waits to see which occurs first). The stop string itself
//! and anything after it are never released. Held text is always shorter than the longest
//! stop string.

use serde::Serialize;

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-generation token (not part of the output).
    Eog { id: u32 },
    /// A stop string occurred; the text ends right before it.
    Stop { index: usize, text: String },
    /// The token limit was reached.
    MaxTokens,
    /// The context is full: no position left for another token.
    ContextFull,
    /// The cancellation flag was raised (Ctrl-C, a client that went away).
    Cancelled,
    /// The output's grammar ([`crate::GrammarSpec`]) is complete: nothing may follow. With
    /// `error`, the grammar engine failed and the output stops where it was (a grammar
    /// beyond its limits); the text so far is still a prefix of the grammar's language.
    Grammar { error: Option<String> },
}

impl StopReason {
    /// OpenAI's `finish_reason`: `stop`, `length` or `cancelled`.
    pub fn finish_reason(&self) -> &'static str {
        match self {
            StopReason::Eog { .. } | StopReason::Stop { .. } | StopReason::Grammar { .. } => "stop",
            StopReason::MaxTokens | StopReason::ContextFull => "length",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// A set of end-of-generation token ids (a model may have several: `<|im_end|>`,
/// `<|endoftext|>`, `<end_of_turn>`...). Sorted for a binary search per token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EogSet {
    ids: Vec<u32>,
}

impl EogSet {
    pub fn new(ids: impl IntoIterator<Item = u32>) -> Self {
        let mut ids: Vec<u32> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        EogSet { ids }
    }

    pub fn contains(&self, id: u32) -> bool {
        self.ids.binary_search(&id).is_ok()
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl FromIterator<u32> for EogSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        EogSet::new(iter)
    }
}

/// Finds stop strings in a text stream fed piece by piece.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    longest: usize,
    pending: String,
    matched: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored: they would match everywhere).
    /// Indices reported by [`StopMatcher::push`] refer to this list as given.
    pub fn new<I, S>(stops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut m = StopMatcher::default();
        m.set_stops(stops);
        m
    }

    /// Replaces the stop strings and resets the stream (buffers are kept).
    pub fn set_stops<I, S>(&mut self, stops: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.stops.clear();
        self.stops.extend(stops.into_iter().map(Into::into));
        self.longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        self.reset();
    }

    /// Forgets the stream (held text and any match); keeps the stop strings.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.matched = None;
    }

    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Text held back because it could be the start of a stop string.
    pub fn held(&self) -> &str {
        &self.pending
    }

    /// The index of the stop string that ended the stream, once one has.
    pub fn matched(&self) -> Option<usize> {
        self.matched
    }

    /// Feeds the next piece of text; appends to `released` the text that is now final.
    /// Returns the index of the stop string once the stream has ended on one (further
    /// pushes are ignored).
    pub fn push(&mut self, text: &str, released: &mut String) -> Option<usize> {
        if self.matched.is_some() {
            return self.matched;
        }
        if self.stops.is_empty() {
            released.push_str(text);
            return None;
        }
        self.pending.push_str(text);
        self.scan(released, false)
    }

    /// The stream has ended (EOG, token limit, cancellation): releases the held text, cut
    /// at a stop string if one occurred in it. Returns that stop's index, if any.
    pub fn finish(&mut self, released: &mut String) -> Option<usize> {
        if self.matched.is_some() {
            return self.matched;
        }
        self.scan(released, true)
    }

    fn scan(&mut self, released: &mut String, at_end: bool) -> Option<usize> {
        // Earliest complete occurrence (ties: the first stop in the list).
        let mut full: Option<(usize, usize)> = None;
        for (k, s) in self.stops.iter().enumerate() {
            if s.is_empty() {
                continue;
            }
            if let Some(i) = self.pending.find(s.as_str()) {
                if full.is_none_or(|(j, _)| i < j) {
                    full = Some((i, k));
                }
            }
        }
        let partial = if at_end { None } else { self.earliest_partial() };
        match (full, partial) {
            (Some((i, k)), p) if p.is_none_or(|j| j >= i) => {
                released.push_str(&self.pending[..i]);
                self.pending.clear();
                self.matched = Some(k);
                Some(k)
            }
            // A longer stop that began earlier may still complete: release only what
            // precedes it and wait (the complete match stays in the held text).
            (_, Some(j)) => {
                released.push_str(&self.pending[..j]);
                self.pending.drain(..j);
                None
            }
            (None, None) => {
                released.push_str(&self.pending);
                self.pending.clear();
                None
            }
            // Unreachable: (Some, None) is taken by the first arm.
            (Some(_), None) => None,
        }
    }

    /// The smallest `j` such that `pending[j..]` is a proper prefix of some stop string
    /// (a stop that may still be completed by text to come).
    fn earliest_partial(&self) -> Option<usize> {
        let len = self.pending.len();
        let from = len.saturating_sub(self.longest.saturating_sub(1));
        (from..len).find(|&j| {
            self.pending.is_char_boundary(j) && {
                let tail = &self.pending[j..];
                self.stops.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().copied());
        let mut out = String::new();
        for c in chunks {
            if let Some(k) = m.push(c, &mut out) {
                return (out, Some(k));
            }
        }
        let k = m.finish(&mut out);
        (out, k)
    }

    #[test]
    fn stop_split_over_pieces_is_never_released() {
        let mut m = StopMatcher::new(["</s>"]);
        let mut out = String::new();
        assert_eq!(m.push("Hello <", &mut out), None);
        assert_eq!(out, "Hello ");
        assert_eq!(m.held(), "<");
        assert_eq!(m.push("/", &mut out), None);
        assert_eq!(out, "Hello ");
        assert_eq!(m.push("s> tail", &mut out), Some(0));
        assert_eq!(out, "Hello ");
        assert_eq!(m.push("more", &mut out), Some(0), "ignored after the stop");
        assert_eq!(out, "Hello ");
    }

    #[test]
    fn false_start_is_released_later() {
        assert_eq!(run(&["</s>"], &["a <", "/b", "> c"]), ("a </b> c".to_string(), None));
        assert_eq!(run(&["abc"], &["ab"]), ("ab".to_string(), None), "held text released at the end");
    }

    #[test]
    fn earliest_occurrence_wins_even_when_a_later_one_completes_first() {
        // "c" completes at byte 2, but "abcd" started at 0 and completes later.
        assert_eq!(run(&["abcd", "c"], &["ab", "c", "d"]), (String::new(), Some(0)));
        // If "abcd" does not complete, "c" is the first occurrence.
        assert_eq!(run(&["abcd", "c"], &["ab", "c", "x"]), ("ab".to_string(), Some(1)));
        // And at the end of the stream the waiting complete match is taken.
        assert_eq!(run(&["abcd", "c"], &["ab", "c"]), ("ab".to_string(), Some(1)));
    }

    #[test]
    fn multibyte_stops_and_text() {
        assert_eq!(run(&["€uro"], &["price: 5", "€", "ur", "o!"]), ("price: 5".to_string(), Some(0)));
        assert_eq!(run(&["é"], &["caf", "é au lait"]), ("caf".to_string(), Some(0)));
        assert_eq!(run(&["€uro"], &["5€", "x"]), ("5€x".to_string(), None));
    }

    #[test]
    fn no_stops_passes_through_and_empty_stop_is_ignored() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".to_string(), None));
        assert_eq!(run(&[""], &["a", "b"]), ("ab".to_string(), None));
    }

    #[test]
    fn eog_set() {
        let s = EogSet::new([151645, 2, 151643, 2]);
        assert_eq!(s.ids(), &[2, 151643, 151645]);
        assert!(s.contains(151643) && s.contains(2) && !s.contains(3));
        assert!(EogSet::default().is_empty());
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(StopReason::Eog { id: 2 }.finish_reason(), "stop");
        assert_eq!(StopReason::MaxTokens.finish_reason(), "length");
        assert_eq!(StopReason::ContextFull.finish_reason(), "length");
        assert_eq!(StopReason::Cancelled.finish_reason(), "cancelled");
    }
}
