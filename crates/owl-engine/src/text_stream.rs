//! [`TextStream`]: the text side of one generated sequence — detokenization, stop strings
//! across token boundaries, and the [`Event`]s a caller prints or sends. The scheduler
//! reports token ids; every consumer (the CLI's session, each server route) turns them
//! into text through this one type.
//!
//! Per token it allocates nothing once warmed up: the event (its text, bytes and top list
//! are cleared and refilled) and the stop matcher's buffers are reused.

use std::ops::ControlFlow;

use crate::model::TextDecoder;
use crate::scheduler::{Sampled, Verdict};
use crate::session::{Event, TokenEvent};
use crate::stop::{StopMatcher, StopReason};

/// Detokenizer state and stop matching of one sequence.
#[derive(Debug, Default)]
pub struct TextStream {
    matcher: StopMatcher,
    stops: Vec<String>,
    event: TokenEvent,
    released: String,
    text: String,
}

impl TextStream {
    pub fn new() -> Self {
        TextStream::default()
    }

    /// Starts a stream that continues `context` (the prompt as run) and ends at any of `stops`.
    pub fn start<D: TextDecoder + ?Sized>(&mut self, decoder: &mut D, context: &[u32], stops: &[String]) {
        decoder.reset(context);
        self.stops.clear();
        self.stops.extend_from_slice(stops);
        self.matcher.set_stops(stops.iter().map(String::as_str));
        self.text.clear();
    }

    /// One generated token: reports [`Event::Token`] and any text that became final. A stop
    /// string, or `on_event` breaking, ends the sequence.
    pub fn push<D, F>(&mut self, decoder: &mut D, token: &Sampled<'_>, on_event: &mut F) -> Verdict
    where
        D: TextDecoder + ?Sized,
        F: FnMut(Event<'_>) -> ControlFlow<()>,
    {
        let event = &mut self.event;
        event.id = token.id;
        event.text.clear();
        event.bytes.clear();
        decoder.push(token.id, &mut event.text, &mut event.bytes);
        event.logprob = token.logprob;
        event.top.clear();
        event.top.extend_from_slice(token.top);
        self.released.clear();
        let hit = self.matcher.push(&event.text, &mut self.released);
        let mut flow = on_event(Event::Token(event));
        if !self.released.is_empty() {
            self.text.push_str(&self.released);
            if on_event(Event::Text(&self.released)).is_break() {
                flow = ControlFlow::Break(());
            }
        }
        if let Some(index) = hit {
            return Verdict::Stop(StopReason::Stop { index, text: self.stops[index].clone() });
        }
        if flow.is_break() {
            return Verdict::Stop(StopReason::Cancelled);
        }
        Verdict::Continue
    }

    /// End of the sequence: flushes the detokenizer and the text held back for a possible
    /// stop string, and returns the final reason (a stop string completed by the flush wins).
    pub fn finish<D, F>(&mut self, decoder: &mut D, reason: StopReason, on_event: &mut F) -> StopReason
    where
        D: TextDecoder + ?Sized,
        F: FnMut(Event<'_>) -> ControlFlow<()>,
    {
        if matches!(reason, StopReason::Stop { .. }) {
            return reason;
        }
        self.event.text.clear();
        decoder.finish(&mut self.event.text);
        self.released.clear();
        let hit = match self.matcher.push(&self.event.text, &mut self.released) {
            Some(k) => Some(k),
            None => self.matcher.finish(&mut self.released),
        };
        if !self.released.is_empty() {
            self.text.push_str(&self.released);
            // The stream is over: a Break here changes nothing.
            let _ = on_event(Event::Text(&self.released));
        }
        match hit {
            Some(index) => StopReason::Stop { index, text: self.stops[index].clone() },
            None => reason,
        }
    }

    /// The visible text so far: the concatenation of every [`Event::Text`].
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn take_text(&mut self) -> String {
        std::mem::take(&mut self.text)
    }
}
