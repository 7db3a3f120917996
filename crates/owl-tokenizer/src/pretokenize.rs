//! How a byte-level BPE vocabulary cuts text into words before merging: one entry per
//! `tokenizer.ggml.pre` value, with the regexes of the model's original `tokenizer.json`
//! (where llama.cpp rewrote a regex for its own engine, e.g. `(?i:...)`, the original is
//! used: the `tokenizers` engine runs it as is). Names and flags follow llama.cpp's
//! `llama_vocab::impl::load` (src/llama-vocab.cpp); regexes also cross-checked against
//! transformers' `GGUF_PRE_TOKENIZER_SPLITS` (integrations/gguf/gguf_tokenizer_mapping.py).

/// One pre-tokenizer step before the byte-level mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreSplit {
    /// Split off every match of the regex as its own piece (`Split(regex, Isolated)`).
    Regex(&'static str),
    /// Every digit its own piece (`Digits(individual_digits=true)`).
    Digits,
    /// GPT-2's own regex inside the byte-level step (`ByteLevel(use_regex=true)`).
    Gpt2,
}

/// The pre-tokenizer of one `tokenizer.ggml.pre` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreTokenizerSpec {
    /// The canonical name of the family (first name in the table).
    pub family: &'static str,
    pub splits: &'static [PreSplit],
    /// Emit a word as one token when the vocabulary has it whole (Llama 3, Tekken).
    pub ignore_merges: bool,
    /// Whether llama.cpp adds BOS for this family when the file does not say.
    pub add_bos_default: bool,
}

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const QWEN35_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const TEKKEN_REGEX: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const GPT4O_REGEX: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

// DeepSeek LLM (deepseek-llm-7b tokenizer.json): letters of the Latin, Greek, Cyrillic, ...
// blocks with an optional leading space; ASCII/full-width punctuation runs; trailing
// whitespace; CJK runs; then single digits.
// Non-ASCII characters are written as escapes: several of these ranges end in code points
// (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A) that Unicode normalization of the source
// text would silently turn into other characters.
const DEEPSEEK_LLM_SPLITS: &[PreSplit] = &[
    PreSplit::Regex("[\r\n]"),
    PreSplit::Regex("\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+"),
    PreSplit::Regex("\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+"),
    PreSplit::Regex("\\s+$"),
    PreSplit::Regex("[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+"),
    PreSplit::Digits,
];

const DEEPSEEK_CODER_SPLITS: &[PreSplit] = &[
    PreSplit::Regex("[\r\n]"),
    PreSplit::Regex("\\s?\\p{L}+"),
    PreSplit::Regex("\\s?\\p{P}+"),
    PreSplit::Regex("[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+"),
    PreSplit::Digits,
];

// DeepSeek V3/R1 (tokenizer.json of DeepSeek-V3): up to three digits, CJK/kana runs, then
// a punctuation-aware word regex.
const DEEPSEEK_V3_SPLITS: &[PreSplit] = &[
    PreSplit::Regex(r"\p{N}{1,3}"),
    PreSplit::Regex("[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+"),
    PreSplit::Regex(
        r"[!\x22#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
];

const fn spec(
    family: &'static str,
    splits: &'static [PreSplit],
    ignore_merges: bool,
    add_bos_default: bool,
) -> PreTokenizerSpec {
    PreTokenizerSpec { family, splits, ignore_merges, add_bos_default }
}

const GPT2: PreTokenizerSpec = spec("gpt2", &[PreSplit::Gpt2], false, false);
const LLAMA3: PreTokenizerSpec = spec("llama3", &[PreSplit::Regex(LLAMA3_REGEX)], true, true);
const LLAMA3_KEEP_MERGES: PreTokenizerSpec = spec("dbrx", &[PreSplit::Regex(LLAMA3_REGEX)], false, false);
const QWEN2: PreTokenizerSpec = spec("qwen2", &[PreSplit::Regex(QWEN2_REGEX)], false, false);
const QWEN35: PreTokenizerSpec = spec("qwen35", &[PreSplit::Regex(QWEN35_REGEX)], false, false);
const STARCODER: PreTokenizerSpec = spec("smollm", &[PreSplit::Digits, PreSplit::Gpt2], false, false);
const TEKKEN: PreTokenizerSpec = spec("tekken", &[PreSplit::Regex(TEKKEN_REGEX)], true, true);
const GPT4O: PreTokenizerSpec = spec("gpt-4o", &[PreSplit::Regex(GPT4O_REGEX)], false, false);
const DEEPSEEK_LLM: PreTokenizerSpec = spec("deepseek-llm", DEEPSEEK_LLM_SPLITS, false, false);
const DEEPSEEK_CODER: PreTokenizerSpec = spec("deepseek-coder", DEEPSEEK_CODER_SPLITS, false, false);
const DEEPSEEK_V3: PreTokenizerSpec = spec("deepseek-v3", DEEPSEEK_V3_SPLITS, false, false);

/// `tokenizer.ggml.pre` values and the family each belongs to.
const TABLE: &[(&str, PreTokenizerSpec)] = &[
    ("default", GPT2),
    ("gpt2", GPT2),
    ("gpt-2", GPT2),
    ("phi-2", GPT2),
    ("mpt", GPT2),
    ("olmo", GPT2),
    ("jais", GPT2),
    ("exaone4", GPT2),
    ("roberta-bpe", GPT2),
    ("gigachat", GPT2),
    ("mellum", GPT2),
    ("trillion", GPT2),
    ("granite-docling", GPT2),
    ("llama3", LLAMA3),
    ("llama-v3", LLAMA3),
    ("llama-bpe", LLAMA3),
    ("falcon3", LLAMA3),
    ("falcon-h1", LLAMA3),
    ("pixtral", LLAMA3),
    ("midm-2.0", LLAMA3),
    ("lfm2", LLAMA3),
    ("dbrx", LLAMA3_KEEP_MERGES),
    ("smaug-bpe", LLAMA3_KEEP_MERGES),
    ("chatglm-bpe", LLAMA3_KEEP_MERGES),
    ("glm4", LLAMA3_KEEP_MERGES),
    ("qwen2", QWEN2),
    ("deepseek-r1-qwen", QWEN2),
    ("kormo", QWEN2),
    ("megrez", QWEN2),
    ("stablelm2", QWEN2),
    ("hunyuan", QWEN2),
    ("grok-2", QWEN2),
    ("qwen35", QWEN35),
    ("smollm", STARCODER),
    ("starcoder", STARCODER),
    ("refact", STARCODER),
    ("command-r", STARCODER),
    ("codeshell", STARCODER),
    ("exaone", STARCODER),
    ("minerva-7b", STARCODER),
    ("tekken", TEKKEN),
    ("gpt-4o", GPT4O),
    ("llama4", GPT4O),
    ("minimax-m2", GPT4O),
    ("deepseek-llm", DEEPSEEK_LLM),
    ("deepseek-coder", DEEPSEEK_CODER),
    ("deepseek-v3", DEEPSEEK_V3),
];

/// The pre-tokenizer for a `tokenizer.ggml.pre` value; a file without the key gets GPT-2's
/// (what both llama.cpp's converter of old and transformers assume).
pub fn pre_tokenizer_spec(pre: Option<&str>) -> Option<PreTokenizerSpec> {
    let name = pre.unwrap_or("default");
    TABLE.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Every `tokenizer.ggml.pre` value owl knows.
pub fn known_names() -> Vec<&'static str> {
    TABLE.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_regex_compiles() {
        for (name, spec) in TABLE {
            for split in spec.splits {
                if let PreSplit::Regex(re) = split {
                    tokenizers::pre_tokenizers::split::Split::new(
                        tokenizers::pre_tokenizers::split::SplitPattern::Regex(re.to_string()),
                        tokenizers::SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                }
            }
        }
        assert_eq!(pre_tokenizer_spec(Some("smollm")).map(|s| s.family), Some("smollm"));
        assert_eq!(pre_tokenizer_spec(None).map(|s| s.family), Some("gpt2"));
        assert!(pre_tokenizer_spec(Some("no-such-pre")).is_none());
    }
}
