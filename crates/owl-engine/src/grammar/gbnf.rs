//! llama.cpp's GBNF grammars translated to llguidance's Lark dialect.
//!
//! GBNF (llama.cpp `grammars/README.md`): `name ::= alternatives` rules (names of letters,
//! digits and `-`; `root` is the start), sequences of `"literals"` (escapes `\n \r \t \\ \"
//! \[ \] \xHH \uHHHH \UHHHHHHHH`), character classes `[a-z]` / `[^"\\]`, `.` (any
//! character), rule references, `( ... )` groups, `|` alternatives, the repetitions `* + ?
//! {m} {m,} {m,n}`, and `#` comments. A rule ends at a newline unless inside parentheses or
//! after `|`. Token references (`<[id]>`, `!<...>`) are refused.
//!
//! The translation is syntactic: every GBNF rule becomes a Lark rule (`g_` + its name, so a
//! capitalised GBNF name does not become a Lark terminal), literals become Lark strings,
//! character classes and `.` one-character regexes (`/[a-z]/`), and `start: g_root` the top
//! rule. llguidance lexes terminals greedily; a GBNF grammar whose strings are only told
//! apart by reading past a literal's end may therefore accept fewer texts than llama.cpp
//! (none of llama.cpp's shipped grammars does that).

use std::collections::HashMap;
use std::fmt::Write as _;

use super::GrammarError;

/// Whether `text` reads as GBNF rather than Lark: some rule is defined with `::=`.
pub fn looks_like_gbnf(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start();
        !line.starts_with('#') && !line.starts_with("//") && line.contains("::=")
    })
}

/// The Lark grammar for the GBNF grammar `text`; errors name the line and what is wrong.
pub fn to_lark(text: &str) -> Result<String, GrammarError> {
    let mut p = Parser { s: text.as_bytes(), pos: 0 };
    let mut rules: Vec<(String, Expr)> = Vec::new();
    loop {
        p.space(true);
        if p.pos >= p.s.len() {
            break;
        }
        let name = p.name()?;
        p.space(false);
        if !p.eat_str("::=") {
            return Err(p.error("expected '::=' after the rule name"));
        }
        p.space(true);
        let body = p.alternatives(false)?;
        p.space(false);
        if p.pos < p.s.len() && !p.eat_newline() {
            return Err(p.error("expected the end of the line after the rule"));
        }
        rules.push((name, body));
    }
    if !rules.iter().any(|(n, _)| n == "root") {
        return Err(GrammarError::Invalid { kind: "GBNF grammar", message: "no 'root' rule".into() });
    }
    // Lark names: `g_` + the GBNF name, lower-cased with `-` as `_`, made unique.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut taken: HashMap<String, usize> = HashMap::new();
    for (name, _) in &rules {
        if names.contains_key(name) {
            continue;
        }
        let base = format!("g_{}", name.to_ascii_lowercase().replace('-', "_"));
        let n = taken.entry(base.clone()).or_insert(0);
        *n += 1;
        let lark = if *n == 1 { base } else { format!("{base}_{n}") };
        names.insert(name.clone(), lark);
    }
    let mut out = String::from("start: g_root\n");
    // GBNF may define a rule in several places: its alternatives add up.
    let mut order: Vec<&str> = Vec::new();
    let mut bodies: HashMap<&str, Vec<&Expr>> = HashMap::new();
    for (name, body) in &rules {
        if !bodies.contains_key(name.as_str()) {
            order.push(name);
        }
        bodies.entry(name).or_default().push(body);
    }
    for name in order {
        let alts: Vec<String> = bodies[name].iter().map(|e| emit(e, &names)).collect::<Result<_, _>>()?;
        let _ = writeln!(out, "{}: {}", names[name], alts.join(" | "));
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Alt(Vec<Expr>),
    Seq(Vec<Expr>),
    Literal(String),
    /// A character class: negated, and its ranges (a single character is `(c, c)`).
    Class(bool, Vec<(char, char)>),
    Any,
    Rule(String),
    Repeat(Box<Expr>, u32, Option<u32>),
}

fn emit(e: &Expr, names: &HashMap<String, String>) -> Result<String, GrammarError> {
    Ok(match e {
        Expr::Alt(alts) => {
            let parts: Vec<String> = alts.iter().map(|a| emit(a, names)).collect::<Result<_, _>>()?;
            format!("({})", parts.join(" | "))
        }
        Expr::Seq(items) if items.is_empty() => "\"\"".into(),
        Expr::Seq(items) => {
            let parts: Vec<String> = items.iter().map(|a| emit(a, names)).collect::<Result<_, _>>()?;
            parts.join(" ")
        }
        Expr::Literal(s) => lark_string(s),
        Expr::Class(negated, ranges) => {
            let mut rx = String::from("/[");
            if *negated {
                rx.push('^');
            }
            for &(a, b) in ranges {
                rx.push_str(&class_char(a));
                if a != b {
                    rx.push('-');
                    rx.push_str(&class_char(b));
                }
            }
            rx.push_str("]/");
            rx
        }
        Expr::Any => "/(?s:.)/".into(),
        Expr::Rule(name) => match names.get(name) {
            Some(n) => n.clone(),
            None => {
                return Err(GrammarError::Invalid {
                    kind: "GBNF grammar",
                    message: format!("rule '{name}' is used but never defined"),
                })
            }
        },
        Expr::Repeat(inner, min, max) => {
            let inner = match **inner {
                Expr::Seq(ref items) if items.len() > 1 => format!("({})", emit(inner, names)?),
                _ => emit(inner, names)?,
            };
            match (min, max) {
                (0, None) => format!("{inner}*"),
                (1, None) => format!("{inner}+"),
                (0, Some(1)) => format!("{inner}?"),
                (m, None) => format!("{inner}{{{m},}}"),
                (m, Some(n)) if m == n => format!("{inner}{{{m}}}"),
                (m, Some(n)) => format!("{inner}{{{m},{n}}}"),
            }
        }
    })
}

/// A Lark string literal: `\` and `"` escaped, control characters as `\n`, `\t`, ...
/// (other controls as `\xHH`, which Lark's Python-style strings read).
fn lark_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One character inside a regex class: letters and digits as they are, anything else as
/// `\x{HEX}` (so `]`, `-`, `^`, `\`, `/` and the class-set operators need no thought).
fn class_char(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\x{{{:x}}}", c as u32)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> GrammarError {
        let line = 1 + self.s[..self.pos.min(self.s.len())].iter().filter(|&&b| b == b'\n').count();
        GrammarError::Invalid { kind: "GBNF grammar", message: format!("line {line}: {what}") }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skips blanks and comments; newlines too when `newlines`.
    fn space(&mut self, newlines: bool) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' => self.pos += 1,
                b'\r' | b'\n' if newlines => self.pos += 1,
                b'#' => {
                    while self.peek().is_some_and(|b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn eat_newline(&mut self) -> bool {
        match self.peek() {
            Some(b'\n') => {
                self.pos += 1;
                true
            }
            Some(b'\r') => {
                self.pos += 1;
                if self.peek() == Some(b'\n') {
                    self.pos += 1;
                }
                true
            }
            _ => false,
        }
    }

    fn eat_str(&mut self, lit: &str) -> bool {
        if self.s[self.pos..].starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }

    fn name(&mut self) -> Result<String, GrammarError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error("expected a rule name"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    /// `seq ( '|' seq )*`; inside parentheses (`nested`) newlines are blanks.
    fn alternatives(&mut self, nested: bool) -> Result<Expr, GrammarError> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some(b'|') {
            self.pos += 1;
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(if alts.len() == 1 { alts.pop().unwrap_or(Expr::Seq(Vec::new())) } else { Expr::Alt(alts) })
    }

    fn sequence(&mut self, nested: bool) -> Result<Expr, GrammarError> {
        let mut items = Vec::new();
        loop {
            self.space(nested);
            let Some(b) = self.peek() else { break };
            let atom = match b {
                b'"' => Expr::Literal(self.literal()?),
                b'[' => self.class()?,
                b'.' => {
                    self.pos += 1;
                    Expr::Any
                }
                b'(' => {
                    self.pos += 1;
                    self.space(true);
                    let inner = self.alternatives(true)?;
                    self.space(true);
                    if self.peek() != Some(b')') {
                        return Err(self.error("expected ')'"));
                    }
                    self.pos += 1;
                    inner
                }
                b'<' | b'!' => return Err(self.error("token references (<[id]>, !<...>) are not supported")),
                b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => {
                    // A name followed by `::=` starts the next rule: this sequence is over.
                    let save = self.pos;
                    let name = self.name()?;
                    let after = self.pos;
                    self.space(false);
                    if self.eat_str("::=") {
                        self.pos = save;
                        break;
                    }
                    self.pos = after;
                    Expr::Rule(name)
                }
                _ => break,
            };
            items.push(self.repetition(atom)?);
        }
        Ok(if items.len() == 1 { items.pop().unwrap_or(Expr::Seq(Vec::new())) } else { Expr::Seq(items) })
    }

    fn repetition(&mut self, mut atom: Expr) -> Result<Expr, GrammarError> {
        loop {
            atom = match self.peek() {
                Some(b'*') => Expr::Repeat(Box::new(atom), 0, None),
                Some(b'+') => Expr::Repeat(Box::new(atom), 1, None),
                Some(b'?') => Expr::Repeat(Box::new(atom), 0, Some(1)),
                Some(b'{') => {
                    self.pos += 1;
                    let min = self.number()?;
                    let max = if self.peek() == Some(b',') {
                        self.pos += 1;
                        if self.peek() == Some(b'}') {
                            None
                        } else {
                            Some(self.number()?)
                        }
                    } else {
                        Some(min)
                    };
                    if self.peek() != Some(b'}') {
                        return Err(self.error("expected '}' to close the repetition"));
                    }
                    if max.is_some_and(|m| m < min) {
                        return Err(self.error("a repetition {m,n} needs m <= n"));
                    }
                    self.pos += 1;
                    atom = Expr::Repeat(Box::new(atom), min, max);
                    continue;
                }
                _ => return Ok(atom),
            };
            self.pos += 1;
        }
    }

    fn number(&mut self) -> Result<u32, GrammarError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos])
            .ok()
            .and_then(|t| t.parse().ok())
            .filter(|&n: &u32| n <= 100_000)
            .ok_or_else(|| self.error("expected a repetition count (0 to 100000)"))
    }

    /// One character of a literal or class, escapes decoded.
    fn char(&mut self) -> Result<char, GrammarError> {
        let rest = std::str::from_utf8(&self.s[self.pos..]).map_err(|_| self.error("the grammar is not UTF-8"))?;
        let mut chars = rest.chars();
        let c = chars.next().ok_or_else(|| self.error("unexpected end of the grammar"))?;
        self.pos += c.len_utf8();
        if c != '\\' {
            return Ok(c);
        }
        let e = chars.next().ok_or_else(|| self.error("unexpected end after '\\'"))?;
        self.pos += e.len_utf8();
        let hex = |p: &mut Self, n: usize| -> Result<char, GrammarError> {
            let digits = p.s.get(p.pos..p.pos + n).and_then(|d| std::str::from_utf8(d).ok());
            let c = digits.and_then(|d| u32::from_str_radix(d, 16).ok()).and_then(char::from_u32);
            p.pos += n;
            c.ok_or_else(|| p.error(&format!("a \\x, \\u or \\U escape needs {n} hex digits of a valid character")))
        };
        Ok(match e {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            '\\' | '"' | '[' | ']' | '-' | '^' | '/' | '.' | '(' | ')' | '|' | '*' | '+' | '?' => e,
            other => return Err(self.error(&format!("unknown escape '\\{other}'"))),
        })
    }

    fn literal(&mut self) -> Result<String, GrammarError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => out.push(self.char()?),
            }
        }
    }

    fn class(&mut self) -> Result<Expr, GrammarError> {
        self.pos += 1;
        let negated = self.peek() == Some(b'^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.error("unterminated character class")),
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                _ => {
                    let a = self.char()?;
                    let b = if self.peek() == Some(b'-') && self.s.get(self.pos + 1) != Some(&b']') {
                        self.pos += 1;
                        self.char()?
                    } else {
                        a
                    };
                    if b < a {
                        return Err(self.error(&format!("the class range {a}-{b} is backwards")));
                    }
                    ranges.push((a, b));
                }
            }
        }
        if ranges.is_empty() {
            return Err(self.error("an empty character class"));
        }
        Ok(Expr::Class(negated, ranges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_gbnf() {
        assert!(looks_like_gbnf("root ::= \"a\"\n"));
        assert!(looks_like_gbnf("# a comment ::= here\nroot   ::= x\nx ::= \"y\""));
        assert!(!looks_like_gbnf("start: \"a\" | \"b\"\n"));
        assert!(!looks_like_gbnf("// root ::= in a comment\nstart: /x/\n"));
    }

    #[test]
    fn translates_every_construct() {
        let gbnf = r#"
# yes or no, then digits
root ::= answer " " num{1,3} ws? (item ("," item)*)? [^"\\] . "\x41\u00e9\n"
answer ::= "yes" | "no" |
           "maybe"
num ::= [0-9]
item ::= [a-zA-Z_-]+ | "\"q\""
ws ::= [ \t\n]*
"#;
        let lark = to_lark(gbnf).unwrap();
        let want = [
            "start: g_root",
            r#"g_root: g_answer " " g_num{1,3} g_ws? (g_item ("," g_item)*)? /[^\x{22}\x{5c}]/ /(?s:.)/ "Aé\n""#,
            r#"g_answer: ("yes" | "no" | "maybe")"#,
            "g_num: /[0-9]/",
            r#"g_item: (/[a-zA-Z\x{5f}\x{2d}]/+ | "\"q\"")"#,
            r#"g_ws: /[\x{20}\x{9}\x{a}]/*"#,
        ];
        assert_eq!(lark.lines().collect::<Vec<_>>(), want, "{lark}");
    }

    #[test]
    fn names_stay_rules_and_distinct() {
        let lark = to_lark("root ::= JSON json-x\nJSON ::= \"a\"\njson_x ::= \"b\"\njson-x ::= \"c\"\n").unwrap();
        assert!(lark.contains("g_root: g_json g_json_x_2"), "{lark}");
        assert!(lark.contains("g_json_x: \"b\"") && lark.contains("g_json_x_2: \"c\""), "{lark}");
    }

    #[test]
    fn errors_name_the_line() {
        let err = |g: &str| to_lark(g).unwrap_err().to_string();
        assert!(err("root ::= \"a\nx ::= \"b\"\n").contains("line 1: unterminated string"));
        assert!(err("root ::= a\n\nx ::= [z-a]\n").contains("line 3"));
        assert!(err("x ::= \"a\"\n").contains("no 'root' rule"));
        assert!(err("root ::= y\n").contains("rule 'y' is used but never defined"));
        assert!(err("root ::= <[12]>\n").contains("token references"));
        assert!(err("root ::= \"a\"{3,1}\n").contains("m <= n"));
        assert!(err("root = \"a\"\n").contains("expected '::='"));
    }
}
