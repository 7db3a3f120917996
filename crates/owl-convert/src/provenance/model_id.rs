//! gguf-py's name heuristics (`Metadata.get_model_id_components`, `id_to_title`): what a
//! model id such as `org/SmolLM2-135M-Instruct` says of basename, size, finetune, version.

/// What gguf-py's `get_model_id_components` reads from a model id (`org/Name-7B-Instruct`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdComponents {
    /// The model's name as in the id (without the organisation).
    pub name: Option<String>,
    pub organization: Option<String>,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Types {
    basename: bool,
    size_label: bool,
    finetune: bool,
    version: bool,
    quant: bool,
}

impl Types {
    fn len(&self) -> usize {
        [self.basename, self.size_label, self.finetune, self.version, self.quant].iter().filter(|&&b| b).count()
    }
}

fn digits(s: &[char]) -> usize {
    s.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// `(v|iter)?\d+([.]\d+)*`, ignoring case.
fn is_version(part: &str) -> bool {
    let l = part.to_lowercase();
    let rest = l.strip_prefix("iter").or_else(|| l.strip_prefix('v')).unwrap_or(&l);
    !rest.is_empty() && rest.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// `i?q\d(_\w)*|b?fp?(16|32)`, ignoring case.
fn is_quant_type(part: &str) -> bool {
    let l: Vec<char> = part.to_lowercase().chars().collect();
    let q = if l.first() == Some(&'i') { &l[1..] } else { &l[..] };
    if q.len() >= 2 && q[0] == 'q' && q[1].is_ascii_digit() {
        let rest = &q[2..];
        if rest.len() % 2 == 0 && rest.chunks(2).all(|p| p[0] == '_' && (p[1].is_alphanumeric() || p[1] == '_')) {
            return true;
        }
    }
    let s: String = l.iter().collect();
    let s = s.strip_prefix('b').unwrap_or(&s);
    let Some(s) = s.strip_prefix('f') else { return false };
    let s = s.strip_prefix('p').unwrap_or(s);
    s == "16" || s == "32"
}

/// `\d+([._]\d+)?[KMBT]\d?`, ignoring case.
fn is_size_core(s: &[char]) -> bool {
    let mut i = digits(s);
    if i == 0 {
        return false;
    }
    if i < s.len() && (s[i] == '.' || s[i] == '_') {
        let d = digits(&s[i + 1..]);
        if d > 0 {
            i += 1 + d;
        }
    }
    if i >= s.len() || !matches!(s[i].to_ascii_lowercase(), 'k' | 'm' | 'b' | 't') {
        return false;
    }
    i += 1;
    if i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    i == s.len()
}

/// `(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)`, ignoring case.
fn is_size(part: &str) -> bool {
    let l = part.to_lowercase();
    if matches!(l.as_str(), "small" | "mini" | "medium" | "large" | "xl" | "xxl") {
        return true;
    }
    let c: Vec<char> = l.chars().collect();
    if is_size_core(&c) || (c.first() == Some(&'a') && is_size_core(&c[1..])) {
        return true;
    }
    let d = digits(&c);
    d > 0 && c.get(d) == Some(&'x') && is_size_core(&c[d + 1..])
}

/// gguf-py `Metadata.get_model_id_components` for a model that is not a LoRA adapter.
pub fn model_id_components(model_id: &str, total_params: u64) -> IdComponents {
    if model_id.contains(' ') {
        return IdComponents { name: Some(model_id.to_string()), ..Default::default() };
    }
    let (mut org, full) = match model_id.split_once('/') {
        Some((o, n)) => (Some(o.to_string()), n),
        None => (None, model_id),
    };
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }
    let mut parts: Vec<String> = full.split('-').filter(|p| !p.is_empty()).map(str::to_string).collect();
    let mut types = vec![Types::default(); parts.len()];
    for i in 0..parts.len() {
        let part = parts[i].clone();
        let t = &mut types[i];
        if is_version(&part) {
            t.version = true;
        } else if is_quant_type(&part) {
            t.quant = true;
            parts[i] = part.to_uppercase();
        } else if i > 0 && is_size(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            // bloom-7b1 → 7.1b
            if p.last().is_some_and(|c| c.is_ascii_digit()) && p.len() >= 2 {
                let n = p.len();
                let (a, b) = (p[n - 2], p[n - 1]);
                p.truncate(n - 2);
                p.extend(['.', b, a]);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_ascii_digit() && matches!(p[n - 1], 'k' | 'm' | 'b' | 't') {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            if total_params != 0 {
                let number: String = p[..n - 1].iter().collect();
                if let Ok(v) = number.parse::<f64>() {
                    let scale = match " KMBT".find(p[n - 1]) {
                        Some(e) => 1000f64.powi(e as i32),
                        None => 1e-3,
                    };
                    let label = v * scale;
                    // Far from the model's size: likely a context length.
                    if (label - total_params as f64).abs() > (7 * total_params / 8) as f64 {
                        t.finetune = true;
                        p[n - 1] = p[n - 1].to_ascii_lowercase();
                    }
                }
            }
            if t.len() == 0 {
                t.size_label = true;
            }
            parts[i] = p.into_iter().collect();
        } else if i > 0 && matches!(part.to_lowercase().as_str(), "chat" | "instruct" | "vision" | "lora") {
            t.finetune = true;
        }
    }
    // Word sizes (`small`) give way to a numeric one.
    let numeric_size = parts.iter().zip(&types).any(|(p, t)| t.size_label && p.chars().any(|c| c.is_ascii_digit()));
    if numeric_size {
        for (p, t) in parts.iter().zip(types.iter_mut()) {
            if t.size_label && p.chars().all(char::is_alphabetic) {
                t.size_label = false;
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(types.iter_mut()) {
        if at_start && ((t.len() == 0 && p.chars().next().is_some_and(char::is_alphabetic)) || t.version) {
            t.basename = true;
        } else {
            at_start = false;
            if t.len() == 0 {
                t.finetune = true;
            }
        }
    }
    // A trailing version is not part of the basename.
    for t in types.iter_mut().rev() {
        if t.basename && t.len() > 1 {
            t.basename = false;
        } else {
            break;
        }
    }
    let join = |f: &dyn Fn(&Types) -> bool| {
        let mut picked: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&types) {
            if f(t) {
                picked.push(p);
            }
        }
        (!picked.is_empty()).then(|| picked.join("-"))
    };
    let mut basename = join(&|t| t.basename);
    let size_label = {
        let mut seen: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&types) {
            if t.size_label && !seen.contains(&p.as_str()) {
                seen.push(p);
            }
        }
        (!seen.is_empty()).then(|| seen.join("-"))
    };
    let finetune = join(&|t| t.finetune);
    let version = join(&|t| t.version && !t.basename);
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None; // too ambiguous
    }
    IdComponents { name: Some(full.to_string()), organization: org, basename, finetune, version, size_label }
}

/// gguf-py `Metadata.id_to_title`: words title-cased unless they hold capitals or are
/// versions or numbers.
pub fn id_to_title(s: &str) -> String {
    let keep = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_digit())
            || w.strip_prefix('v')
                .is_some_and(|r| r.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())))
    };
    let is_lower = |w: &str| w.chars().any(char::is_lowercase) && !w.chars().any(char::is_uppercase);
    let title = |w: &str| {
        let mut out = String::new();
        let mut prev_cased = false;
        for c in w.chars() {
            if prev_cased {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            prev_cased = c.is_lowercase() || c.is_uppercase();
        }
        out
    };
    let words: Vec<String> = s
        .trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| if is_lower(w) && !keep(w) { title(w) } else { w.to_string() })
        .collect();
    words.join(" ")
}
