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
        let mut factory =
            ParserFactory::new(&env, InferenceCapabilities::default(), &SlicedBiasComputer::general_slices())
                .map_err(|e| GrammarError::Setup(e.to_string()))?;
        factory.quiet();
        // One-line errors: the default appends a dump of the parser state.
        factory.limits_mut().verbose_errors = false;
        Ok(GrammarCompiler { factory, vocab_size, eog: eog.into() })
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
        Ok(Constraint { matcher: Matcher::new(Ok(parser)), spec: spec.clone(), mask: None, eog: self.eog.clone() })
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
            let mask = self.matcher.compute_mask_or_eos().map_err(|e| self.failed(&e.to_string()));
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
        self.matcher.consume_token(id).map_err(|e| self.failed(&e.to_string()))
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
        Constraint { matcher: self.matcher.deep_clone(), spec: self.spec.clone(), mask: None, eog: self.eog.clone() }
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

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
