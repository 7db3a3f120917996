//! Model-card front matter: the YAML subset Hugging Face cards use, read as gguf-py's
//! PyYAML reads it for the keys it looks at (block and flow collections, plain, quoted and
//! block scalars, comments), every scalar kept as its text.

/// A YAML value, as far as model cards need: every scalar is kept as its text (PyYAML would
/// type `1.0` as a number; gguf-py only uses strings).
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    Str(String),
    List(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A mapping's value for `key` (the last one, as PyYAML keeps).
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// The YAML front matter of a model card (`README.md`) as gguf-py finds it: the first line
/// is exactly `---` and the block ends at the next line that is exactly `---`. A card
/// without one, or whose front matter is not a mapping, gives an empty mapping.
pub fn front_matter(readme: &str) -> Yaml {
    let mut lines = readme.lines();
    if lines.next() != Some("---") {
        return Yaml::Map(Vec::new());
    }
    let mut raw: Vec<(usize, String)> = Vec::new();
    for line in lines {
        if line == "---" {
            break;
        }
        // gguf-py: "yaml should use 2 spaces instead of tab".
        let line = line.replace('\t', "  ");
        let text = line.trim_start();
        raw.push((line.len() - text.len(), text.trim_end().to_string()));
    }
    let mut p = Parser { lines: raw, i: 0 };
    p.skip_blank();
    match p.peek() {
        Some((indent, text)) if !is_item(&text) => Yaml::Map(p.map(indent)),
        _ => Yaml::Map(Vec::new()),
    }
}

/// An indentation-structured YAML subset: block mappings and sequences, flow sequences and
/// mappings, plain, quoted and block (`|`, `>`) scalars, comments.
struct Parser {
    /// Indentation and text (trimmed) of each line.
    lines: Vec<(usize, String)>,
    i: usize,
}

fn is_blank(text: &str) -> bool {
    text.is_empty() || text.starts_with('#')
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

impl Parser {
    fn skip_blank(&mut self) {
        while self.i < self.lines.len() && is_blank(&self.lines[self.i].1) {
            self.i += 1;
        }
    }

    /// The next non-blank line's indentation and text.
    fn peek(&mut self) -> Option<(usize, String)> {
        self.skip_blank();
        self.lines.get(self.i).cloned()
    }

    fn map(&mut self, indent: usize) -> Vec<(String, Yaml)> {
        let mut out = Vec::new();
        while let Some((ind, text)) = self.peek() {
            if ind < indent || (ind == indent && is_item(&text)) {
                break;
            }
            self.i += 1;
            if ind > indent {
                continue; // stray over-indented line
            }
            let Some((key, rest)) = split_key(&text) else { continue };
            let value = self.value_after(indent, rest, true);
            out.push((key, value));
        }
        out
    }

    fn list(&mut self, indent: usize) -> Vec<Yaml> {
        let mut out = Vec::new();
        while let Some((ind, text)) = self.peek() {
            if ind != indent || !is_item(&text) {
                if ind > indent {
                    self.i += 1;
                    continue;
                }
                break;
            }
            let item = text[1..].trim_start();
            let col = indent + (text.len() - item.len());
            if is_item(item) {
                self.lines[self.i] = (col, item.to_string());
                out.push(Yaml::List(self.list(col)));
            } else if split_key(item).is_some() && !item.starts_with(['[', '{']) {
                self.lines[self.i] = (col, item.to_string());
                out.push(Yaml::Map(self.map(col)));
            } else {
                self.i += 1;
                out.push(self.value_after(indent, item, false));
            }
        }
        out
    }

    /// The value whose text begins `rest` on a line of `indent` (a mapping key's line, or a
    /// sequence item's), reading any lines that continue it.
    fn value_after(&mut self, indent: usize, rest: &str, in_map: bool) -> Yaml {
        let rest = strip_comment(rest);
        if rest.is_empty() {
            return match self.peek() {
                Some((ind, text)) if is_item(&text) && (ind > indent || (in_map && ind == indent)) => {
                    Yaml::List(self.list(ind))
                }
                Some((ind, _)) if ind > indent => Yaml::Map(self.map(ind)),
                _ => Yaml::Null,
            };
        }
        if rest.starts_with(['|', '>']) && rest[1..].chars().all(|c| matches!(c, '+' | '-' | '0'..='9')) {
            return Yaml::Str(self.block_scalar(indent, rest));
        }
        let mut text = rest.to_string();
        if text.starts_with(['[', '{']) {
            // A flow collection may run over several lines.
            while !balanced(&text) && self.i < self.lines.len() {
                text.push(' ');
                text.push_str(strip_comment(&self.lines[self.i].1));
                self.i += 1;
            }
            return flow(&text);
        }
        // A plain or quoted scalar continued on more-indented lines: folded with spaces.
        while let Some((ind, more)) = self.peek() {
            if ind <= indent || (!text.starts_with(['"', '\'']) && split_key(&more).is_some()) {
                break;
            }
            text.push(' ');
            text.push_str(strip_comment(&more));
            self.i += 1;
        }
        scalar(&text)
    }

    /// `|` keeps line breaks, `>` folds them into spaces; `-` drops the final newline.
    fn block_scalar(&mut self, indent: usize, header: &str) -> String {
        let mut body: Vec<String> = Vec::new();
        let mut body_indent = None;
        while let Some((ind, text)) = self.lines.get(self.i).cloned() {
            if text.is_empty() {
                body.push(String::new());
                self.i += 1;
                continue;
            }
            if ind <= indent {
                break;
            }
            let base = *body_indent.get_or_insert(ind);
            body.push(format!("{}{}", " ".repeat(ind.saturating_sub(base)), text));
            self.i += 1;
        }
        while body.last().is_some_and(|l| l.is_empty()) {
            body.pop();
        }
        let mut s = if header.starts_with('|') {
            body.join("\n")
        } else {
            // Folded: a line break between two lines becomes a space; an empty line, one.
            let mut s = String::new();
            let mut after_break = true;
            for line in &body {
                if line.is_empty() {
                    s.push('\n');
                    after_break = true;
                    continue;
                }
                if !after_break {
                    s.push(' ');
                }
                s.push_str(line);
                after_break = false;
            }
            s
        };
        if !header.contains('-') && !s.is_empty() {
            s.push('\n');
        }
        s
    }
}

/// `key: rest` (a key followed by `:` and a space or the end of the line).
fn split_key(text: &str) -> Option<(String, &str)> {
    if text.starts_with(['"', '\'']) {
        let end = quoted_end(text)?;
        let rest = text[end..].trim_start().strip_prefix(':')?;
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        let Yaml::Str(key) = scalar(&text[..end]) else { return None };
        return Some((key, rest.trim_start()));
    }
    if is_item(text) || text.starts_with(['[', '{', '#', '|', '>']) {
        return None;
    }
    let bytes = text.as_bytes();
    let pos = (0..bytes.len()).find(|&i| bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' '))?;
    let key = text[..pos].trim_end();
    if key.is_empty() || key.contains(" #") {
        return None;
    }
    Some((key.to_string(), text[pos + 1..].trim_start()))
}

/// The byte index just past the closing quote of the quoted string `text` starts with.
fn quoted_end(text: &str) -> Option<usize> {
    let q = text.as_bytes()[0];
    let b = text.as_bytes();
    let mut i = 1;
    while i < b.len() {
        if q == b'"' && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// A quoted scalar being scanned through: `"…"` honours backslash escapes, `'…'` does not.
#[derive(Default)]
struct Quotes {
    open: Option<char>,
    escaped: bool,
}

impl Quotes {
    /// Feeds `c`: true while `c` belongs to an open quoted scalar (its closing quote included).
    fn inside(&mut self, c: char) -> bool {
        let Some(q) = self.open else { return false };
        if self.escaped {
            self.escaped = false;
        } else if q == '"' && c == '\\' {
            self.escaped = true;
        } else if c == q {
            self.open = None;
        }
        true
    }

    fn open(&mut self, quote: char) {
        self.open = Some(quote);
    }
}

/// The text before a ` #` comment outside quotes.
fn strip_comment(text: &str) -> &str {
    let mut quotes = Quotes::default();
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        let after = prev.replace(c);
        if quotes.inside(c) {
            continue;
        }
        if matches!(c, '"' | '\'') && after.is_none_or(|p| matches!(p, ' ' | '[' | ',' | '{' | ':')) {
            quotes.open(c);
        } else if c == '#' && after.is_none_or(|p| p == ' ') {
            return text[..i].trim_end();
        }
    }
    text.trim_end()
}

/// Whether the flow collection's brackets close.
fn balanced(text: &str) -> bool {
    let mut depth = 0i32;
    let mut quotes = Quotes::default();
    let mut prev = ' ';
    for c in text.chars() {
        let at_start = matches!(prev, ' ' | '[' | '{' | ',' | ':');
        prev = c;
        if quotes.inside(c) {
            continue;
        }
        match c {
            '"' | '\'' if at_start => quotes.open(c),
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// A flow sequence `[a, "b"]` or mapping `{k: v}`.
fn flow(text: &str) -> Yaml {
    let text = text.trim();
    let (open, inner) = (text.as_bytes()[0], &text[1..]);
    let close = if open == b'[' { ']' } else { '}' };
    let inner = inner.trim_end().strip_suffix(close).unwrap_or(inner);
    let mut items: Vec<String> = Vec::new();
    let mut cur = String::new();
    let (mut depth, mut quotes) = (0i32, Quotes::default());
    for c in inner.chars() {
        if !quotes.inside(c) {
            match c {
                '"' | '\'' if cur.trim().is_empty() || cur.trim_end().ends_with(':') => quotes.open(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
        }
        cur.push(c);
    }
    items.push(cur);
    let items = items.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if open == b'[' {
        Yaml::List(items.map(|s| if s.starts_with(['[', '{']) { flow(&s) } else { scalar(&s) }).collect())
    } else {
        Yaml::Map(
            items
                .filter_map(|s| {
                    let (k, v) = split_key(&s)?;
                    let v = if v.starts_with(['[', '{']) { flow(v) } else { scalar(v) };
                    Some((k, v))
                })
                .collect(),
        )
    }
}

/// A plain or quoted scalar; `null`, `~` and nothing are null.
fn scalar(text: &str) -> Yaml {
    let text = text.trim();
    if let Some(body) = text.strip_prefix('"') {
        let body = body.strip_suffix('"').unwrap_or(body);
        let mut s = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                s.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some('0') => s.push('\0'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    s.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
                }
                Some(other) => s.push(other),
                None => {}
            }
        }
        return Yaml::Str(s);
    }
    if let Some(body) = text.strip_prefix('\'') {
        let body = body.strip_suffix('\'').unwrap_or(body);
        return Yaml::Str(body.replace("''", "'"));
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Yaml::Null,
        _ => Yaml::Str(text.to_string()),
    }
}
