//! Constrained decoding: each step's next token is restricted to those that keep the output
//! a prefix of a grammar's language (a JSON Schema, a regular expression, a Lark grammar).
//!
//! The grammar engine is llguidance (an Earley parser over a lazily built derivative-regex
//! lexer, walking a token trie: a mask over a 150k vocabulary in tens of microseconds; what
//! llama.cpp and mistral.rs use). owl gives it the token trie of the model's vocabulary:
//! every token's exact bytes, special tokens behind a `0xFF` marker (which no UTF-8 text
//! contains, so no text grammar ever allows `<|im_end|>` inside a string), and the
//! end-of-generation ids, which the mask allows exactly where the grammar may end.
//!
//! - [`GrammarCompiler`]: built once per tokenizer (the trie and llguidance's parser
//!   factory: a few hundred milliseconds for a 150k vocabulary), shared by every request.
//! - [`Constraint`]: one sequence's matcher, made by [`GrammarCompiler::compile`] (about a
//!   millisecond for a typical schema); the scheduler asks it for the allowed tokens before
//!   each sample and feeds it each sampled token.

pub mod gbnf;

use std::fmt;
use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::earley::SlicedBiasComputer;
use llguidance::{Matcher, ParserFactory};
use owl_tokenizer::Tokenizer;
use serde_json::Value;
use toktrie::{InferenceCapabilities, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// What the generated text must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (OpenAI's `json_object`, Ollama's `"json"`).
    JsonObject,
    /// A JSON Schema. `strict`: a keyword the grammar cannot enforce (`uniqueItems`, `not`,
    /// an unknown `format`, ...) is an error; otherwise it is left unenforced (the output
    /// then matches the schema without that keyword).
    JsonSchema { schema: Value, strict: bool },
    /// A regular expression the whole output matches (Rust `regex` syntax, anchored).
    Regex(String),
    /// A Lark grammar in llguidance's dialect (`start:` is the top rule; `%json {...}`
    /// embeds a schema).
    Lark(String),
}

impl GrammarSpec {
    /// The kind, as error messages and logs name it.
    pub fn kind(&self) -> &'static str {
        match self {
            GrammarSpec::JsonObject => "JSON object",
            GrammarSpec::JsonSchema { .. } => "JSON Schema",
            GrammarSpec::Regex(_) => "regular expression",
            GrammarSpec::Lark(_) => "Lark grammar",
        }
    }
}

/// Why a grammar could not be set up or followed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrammarError {
    #[error("constrained decoding needs an end-of-generation token, and this model's tokenizer has none")]
    NoEndOfGeneration,
    #[error("setting up constrained decoding for this vocabulary failed: {0}")]
    Setup(String),
    /// The grammar does not compile: the message names the rule, keyword or position.
    #[error("invalid {kind}: {message}")]
    Invalid { kind: &'static str, message: String },
    /// The matcher refused a token or failed inside (a bug, or a grammar beyond its limits).
    #[error("the {kind} could not be followed: {message}")]
    Failed { kind: &'static str, message: String },
}

/// The token trie of one vocabulary and llguidance's parser factory over it.
pub struct GrammarCompiler {
    factory: ParserFactory,
    vocab_size: usize,
    eog: Arc<[u32]>,
    digits: Arc<DigitTokens>,
}

impl fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrammarCompiler").field("vocab_size", &self.vocab_size).finish()
    }
}

/// llguidance's view of the tokenizer: the trie, and the model's own tokenization of text the
/// grammar forces (so a forced run of text becomes the tokens the model would have seen).
struct OwlTokenizerEnv {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for OwlTokenizerEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Text runs through the model's tokenizer; bytes that are not valid UTF-8 (a
        // character split across tokens) fall back to the trie's longest matches.
        self.trie.tokenize_with_greedy_fallback(s, |text| self.tokenizer.encode(text, false, false).unwrap_or_default())
    }
}

impl GrammarCompiler {
    /// The compiler for `tokenizer`'s vocabulary, padded to the model's `vocab_size` logits
    /// (ids past the tokenizer's are never allowed).
    pub fn new(tokenizer: Arc<Tokenizer>, vocab_size: usize) -> Result<Self, GrammarError> {
        let eog: Vec<u32> = tokenizer.eog_ids().iter().copied().filter(|&id| (id as usize) < vocab_size).collect();
        if eog.is_empty() {
            return Err(GrammarError::NoEndOfGeneration);
        }
        let words: Vec<Vec<u8>> = (0..vocab_size as u32)
            .map(|id| match tokenizer.token_bytes(id) {
                Some(bytes) if tokenizer.is_special(id) => {
                    let mut marked = Vec::with_capacity(bytes.len() + 1);
                    marked.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    marked.extend_from_slice(&bytes);
                    marked
                }
                Some(bytes) => bytes,
                None => Vec::new(),
            })
            .collect();
        let vocab = u32::try_from(vocab_size).map_err(|_| GrammarError::Setup("the vocabulary is too large".into()))?;
        let trie = TokTrie::from(&TokRxInfo::new(vocab, eog[0]), &words).with_eos_tokens(&eog);
        let env: TokEnv = Arc::new(OwlTokenizerEnv { trie, tokenizer });
        let digits = Arc::new(DigitTokens::new(&words, env.clone()));
        let mut factory =
            ParserFactory::new(&env, InferenceCapabilities::default(), &SlicedBiasComputer::general_slices())
                .map_err(|e| GrammarError::Setup(e.to_string()))?;
        factory.quiet();
        // One-line errors: the default appends a dump of the parser state.
        factory.limits_mut().verbose_errors = false;
        Ok(GrammarCompiler { factory, vocab_size, eog: eog.into(), digits })
    }

    /// The number of logits a [`Constraint`]'s mask covers.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// A fresh matcher for `spec`. Errors name what does not compile.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint, GrammarError> {
        let grammar = match spec {
            GrammarSpec::JsonObject => {
                TopLevelGrammar::from_json_schema(json_schema_options(serde_json::json!({"type": "object"}), true))
            }
            GrammarSpec::JsonSchema { schema, strict } => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(GrammarError::Invalid {
                        kind: spec.kind(),
                        message: "a schema is a JSON object (or true/false)".into(),
                    });
                }
                TopLevelGrammar::from_json_schema(json_schema_options(schema.clone(), *strict))
            }
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
            GrammarSpec::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| GrammarError::Invalid { kind: spec.kind(), message: one_line(&e.to_string()) })?;
        let json = match spec {
            GrammarSpec::JsonObject | GrammarSpec::JsonSchema { .. } => Some(JsonNumberCap::default()),
            GrammarSpec::Regex(_) | GrammarSpec::Lark(_) => None,
        };
        Ok(Constraint {
            matcher: Matcher::new(Ok(parser)),
            spec: spec.clone(),
            mask: None,
            eog: self.eog.clone(),
            digits: self.digits.clone(),
            json,
        })
    }
}

/// One sequence's grammar state. Cloning gives an independent copy at the same point (one
/// per choice when a request asks for several).
pub struct Constraint {
    matcher: Matcher,
    spec: GrammarSpec,
    /// The mask for the next token, once computed (cleared by each accepted token).
    mask: Option<Result<SimpleVob, GrammarError>>,
    eog: Arc<[u32]>,
    digits: Arc<DigitTokens>,
    /// For JSON grammars: the digit run being generated (see [`JsonNumberCap`]).
    json: Option<JsonNumberCap>,
}

impl Constraint {
    /// What this constraint enforces.
    pub fn spec(&self) -> &GrammarSpec {
        &self.spec
    }

    /// Computes the next mask now, so that [`Constraint::allowed`] has it at once: the
    /// scheduler calls this on a second thread while the forward pass computes the logits
    /// (the mask depends only on the tokens accepted so far).
    pub fn prepare(&mut self) {
        if self.mask.is_none() {
            let mut mask = self.matcher.compute_mask_or_eos().map_err(|e| self.failed(&e.to_string()));
            if let (Ok(mask), Some(json)) = (&mut mask, &self.json) {
                json.restrict(mask, &self.digits.leading);
            }
            self.mask = Some(mask);
        }
    }

    /// The allowed next tokens as a bitset (bit `i % 32` of word `i / 32` is token `i`),
    /// covering [`GrammarCompiler::vocab_size`] ids. End-of-generation ids are set where the
    /// grammar may end; once it cannot go on, they are the only ones.
    pub fn allowed(&mut self) -> Result<&[u32], GrammarError> {
        self.prepare();
        match &self.mask {
            Some(Ok(mask)) => Ok(mask.as_slice()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(self.failed("no mask was computed")),
        }
    }

    /// Advances past a sampled token (not an end-of-generation id: those end the sequence).
    pub fn accept(&mut self, id: u32) -> Result<(), GrammarError> {
        self.mask = None;
        self.matcher.consume_token(id).map_err(|e| self.failed(&e.to_string()))?;
        if let Some(json) = &mut self.json {
            json.advance(self.digits.bytes(id));
        }
        Ok(())
    }

    /// Whether `id` is one of the vocabulary's end-of-generation ids, which the mask allows
    /// where the grammar may end (also when the request's own EOG set leaves them out).
    pub fn is_end(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The grammar cannot go on: nothing may follow the text generated so far.
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped()
    }

    fn failed(&self, message: &str) -> GrammarError {
        GrammarError::Failed { kind: self.spec.kind(), message: one_line(message) }
    }
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Constraint {
            matcher: self.matcher.deep_clone(),
            spec: self.spec.clone(),
            mask: None,
            eog: self.eog.clone(),
            digits: self.digits.clone(),
            json: self.json,
        }
    }
}

impl fmt::Debug for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Constraint").field("spec", &self.spec).field("complete", &self.is_complete()).finish()
    }
}

/// Two constraints are equal when they enforce the same grammar (their progress aside).
impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

/// Whitespace between JSON tokens: at most this pattern per gap (llguidance's default
/// allows any run, and a sampled model can fill its whole budget with newlines; llama.cpp's
/// schema grammars bound it the same way).
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,24}";

/// A JSON Schema with owl's llguidance options in its `x-guidance` (unless it sets them):
/// whitespace between tokens limited to [`JSON_WHITESPACE`], so that a model cannot pad
/// forever; unless `strict`, keywords the grammar cannot enforce are left unenforced instead
/// of failing. Also for `%json {...}` inside a Lark grammar.
pub fn json_schema_options(mut schema: Value, strict: bool) -> Value {
    if let Value::Object(map) = &mut schema {
        if let Value::Object(options) = map.entry("x-guidance").or_insert_with(|| serde_json::json!({})) {
            if !options.contains_key("whitespace_flexible") {
                options.entry("whitespace_pattern").or_insert_with(|| Value::String(JSON_WHITESPACE.into()));
            }
            if !strict {
                options.entry("lenient").or_insert(Value::Bool(true));
            }
        }
    }
    schema
}

/// Digits in a row a JSON number may have outside strings: llama.cpp's schema grammars allow
/// an integral part of up to 16 digits and a fraction of 1 to 16 (`json-schema-to-grammar`'s
/// `integral-part` and `decimal-part`). llguidance's number lexeme is unbounded, and a small
/// model at temperature 0 can repeat a digit until `max_tokens` ("3.1111111111…"), so owl
/// bounds each run the same way, unless the grammar itself needs more digits (then nothing
/// else is allowed and the bound steps aside).
const JSON_DIGIT_RUN: usize = 16;

/// The tokens that begin with ASCII digits, with how many, and the trie for every token's
/// bytes.
struct DigitTokens {
    env: TokEnv,
    leading: Vec<(u32, usize)>,
}

impl DigitTokens {
    fn new(words: &[Vec<u8>], env: TokEnv) -> Self {
        let leading = (0u32..)
            .zip(words)
            .filter_map(|(id, w)| {
                let n = w.iter().take_while(|b| b.is_ascii_digit()).count();
                (n > 0).then_some((id, n))
            })
            .collect();
        DigitTokens { env, leading }
    }

    fn bytes(&self, id: u32) -> &[u8] {
        self.env.tok_trie().token(id)
    }
}

/// Where a JSON text is, for [`JSON_DIGIT_RUN`]: inside a string (and after a backslash), or
/// outside with the length of the digit run that ends the text.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct JsonNumberCap {
    in_string: bool,
    escaped: bool,
    run: usize,
}

impl JsonNumberCap {
    fn advance(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
            } else if b.is_ascii_digit() {
                self.run += 1;
            } else {
                self.in_string = b == b'"';
                self.run = 0;
            }
        }
    }

    /// Disallows the tokens that would make the current digit run longer than
    /// [`JSON_DIGIT_RUN`], unless they are all the grammar allows.
    fn restrict(&self, mask: &mut SimpleVob, leading: &[(u32, usize)]) {
        if self.in_string || self.run == 0 {
            return;
        }
        let over: Vec<u32> = leading
            .iter()
            .filter(|&&(id, n)| self.run + n > JSON_DIGIT_RUN && mask.is_allowed(id))
            .map(|&(id, _)| id)
            .collect();
        if over.is_empty() {
            return;
        }
        let mut capped = mask.clone();
        for &id in &over {
            capped.disallow_token(id);
        }
        if !capped.is_zero() {
            *mask = capped;
        }
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_digit_runs_are_counted_outside_strings_only() {
        let mut cap = JsonNumberCap::default();
        cap.advance(br#"{"a": 12"#);
        assert_eq!(cap, JsonNumberCap { in_string: false, escaped: false, run: 2 });
        cap.advance(b"345.6");
        assert_eq!(cap.run, 1);
        cap.advance(br#", "b": "99\"9"#);
        assert!(cap.in_string && cap.run == 0);
        cap.advance(br#"9\\" ,"#);
        assert_eq!(cap, JsonNumberCap::default());
        cap.advance(b"1e12");
        assert_eq!(cap.run, 2);
    }

    #[test]
    fn a_digit_run_stops_at_the_cap_unless_only_digits_may_follow() {
        // Tokens: 0 = "1", 1 = "22", 2 = ",", 3 = "}".
        let leading = [(0u32, 1usize), (1, 2)];
        let mut all = SimpleVob::alloc(4);
        all.set_all(true);
        let at = |run| JsonNumberCap { run, ..JsonNumberCap::default() };
        let allowed = |mask: &SimpleVob| (0..4).filter(|&t| mask.is_allowed(t)).collect::<Vec<_>>();
        let mut m = all.clone();
        at(14).restrict(&mut m, &leading);
        assert_eq!(allowed(&m), [0, 1, 2, 3]);
        let mut m = all.clone();
        at(15).restrict(&mut m, &leading);
        assert_eq!(allowed(&m), [0, 2, 3]);
        let mut m = all.clone();
        at(16).restrict(&mut m, &leading);
        assert_eq!(allowed(&m), [2, 3]);
        // Inside a string the cap does not apply.
        let mut m = all.clone();
        JsonNumberCap { in_string: true, ..at(40) }.restrict(&mut m, &leading);
        assert_eq!(allowed(&m), [0, 1, 2, 3]);
        // A grammar that needs more digits keeps them.
        let mut m = SimpleVob::alloc(4);
        m.allow_token(0);
        at(30).restrict(&mut m, &leading);
        assert_eq!(allowed(&m), [0]);
    }
}
