//! Value parsers for flags whose range or spelling is ours: clap calls them while parsing,
//! so a bad value is reported before anything runs, as
//! `invalid value 'X' for '--top-p <P>': must be in [0, 1]` — the flag the user typed.

/// `--cache-type`: the KV cache's element type, by llama.cpp's `-ctk/-ctv` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CacheType {
    F32,
    #[default]
    F16,
    #[value(name = "q8_0")]
    Q8_0,
}

impl CacheType {
    pub fn dtype(self) -> owl_models::KvDtype {
        match self {
            CacheType::F32 => owl_models::KvDtype::F32,
            CacheType::F16 => owl_models::KvDtype::F16,
            CacheType::Q8_0 => owl_models::KvDtype::Q8_0,
        }
    }
}

/// `-n/--max-tokens`: a positive count, or `-1` for no limit (llama.cpp's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLimit(pub Option<usize>);

/// `--seed`: a number, or `-1` for a random seed (llama.cpp's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub Option<u64>);

pub fn token_limit(s: &str) -> Result<TokenLimit, String> {
    match s.trim() {
        "-1" => Ok(TokenLimit(None)),
        t => match t.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(TokenLimit(Some(n))),
            _ => Err("must be at least 1, or -1 for no limit (until the end of the text or a full context)".into()),
        },
    }
}

pub fn seed(s: &str) -> Result<Seed, String> {
    match s.trim() {
        "-1" => Ok(Seed(None)),
        t => t
            .parse::<u64>()
            .map(|n| Seed(Some(n)))
            .map_err(|_| format!("must be a whole number from 0 to {}, or -1 for a random seed", u64::MAX)),
    }
}

/// A count of at least 1 (`-t`, `-r`, `-b`, `--chunks`).
pub fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number, at least 1".into()),
    }
}

/// `serve --shutdown-grace`: seconds, 0 to one day.
pub fn grace_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=86_400.0).contains(&x) => Ok(x),
        _ => Err("must be a number of seconds from 0 to 86400".into()),
    }
}

/// `perplexity -c`: a window of at least 2 tokens, or 0 for the model's trained context.
pub fn window(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n != 1 => Ok(n),
        _ => Err("must be at least 2 tokens, or 0 for the model's trained context".into()),
    }
}

fn float(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err("must be a finite number".into()),
    }
}

/// `--temperature`: >= 0 (0 = greedy).
pub fn temperature(s: &str) -> Result<f32, String> {
    float(s).and_then(|x| if x >= 0.0 { Ok(x) } else { Err("must be at least 0 (0 = greedy)".into()) })
}

/// `--top-p` and `--min-p`: a probability in [0, 1]. `--top-p 0` keeps only the most likely
/// token, as llama.cpp does.
pub fn probability(s: &str) -> Result<f32, String> {
    float(s).and_then(|x| if (0.0..=1.0).contains(&x) { Ok(x) } else { Err("must be in [0, 1]".into()) })
}

/// `--repeat-penalty`: a divisor, > 0 (1 = off).
pub fn repeat_penalty(s: &str) -> Result<f32, String> {
    float(s).and_then(|x| if x > 0.0 { Ok(x) } else { Err("must be greater than 0 (1 = off)".into()) })
}

/// `--presence-penalty` and `--frequency-penalty`: any finite number (0 = off).
pub fn penalty(s: &str) -> Result<f32, String> {
    float(s)
}

/// `--stop TEXT`: not empty; `\n`, `\t`, `\r` and `\\` are escapes (a shell passes them
/// literally), any other backslash stays as it is.
pub fn stop_text(s: &str) -> Result<String, String> {
    let text = unescape(s);
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(text)
}

/// Resolves `\n`, `\t`, `\r` and `\\`; other backslashes are kept.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_seeds_take_minus_one() {
        assert_eq!(token_limit("-1"), Ok(TokenLimit(None)));
        assert_eq!(token_limit("12"), Ok(TokenLimit(Some(12))));
        assert!(token_limit("0").is_err());
        assert!(token_limit("-2").is_err());
        assert_eq!(seed("-1"), Ok(Seed(None)));
        assert_eq!(seed("18446744073709551615"), Ok(Seed(Some(u64::MAX))));
        assert!(seed("-5").is_err());
        assert!(seed("x").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(probability("0"), Ok(0.0));
        assert_eq!(probability("1"), Ok(1.0));
        assert!(probability("1.01").is_err());
        assert!(probability("nan").is_err());
        assert!(temperature("-0.1").is_err());
        assert!(repeat_penalty("0").is_err());
        assert_eq!(penalty("-1.5"), Ok(-1.5));
        assert!(penalty("inf").is_err());
        assert!(positive("0").is_err());
        assert_eq!(positive("3"), Ok(3));
    }

    #[test]
    fn stop_escapes() {
        assert_eq!(unescape(r"a\nb\tc\\d\re"), "a\nb\tc\\d\re");
        assert_eq!(unescape(r"\x\"), r"\x\");
        assert_eq!(unescape(r"\\n"), r"\n");
        assert!(stop_text("").is_err());
        assert_eq!(stop_text(r"\n\n"), Ok("\n\n".to_string()));
    }
}
