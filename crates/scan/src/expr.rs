//! A mini-parser and partial evaluator for GitHub Actions expressions (`${{ … }}`).
//!
//! Hand-written on purpose: the scanner needs only two things from an expression — which
//! contexts flow into its *value* (for template injection: `contains(github.event.issue.title,
//! 'x')` is a boolean and cannot inject, `format('{0}', github.head_ref)` can), and the set of
//! values it can take when the only inputs are a static matrix (for `runs-on`). The grammar is
//! small (literals, context paths, `.`/`[]`/`.*`, function calls, `!`, comparisons, `&&`,
//! `||`, parentheses) and a dedicated parser keeps both analyses in one place.

use serde_json::Value;

/// One segment of a context path after its head.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    /// `.name` or `['name']`.
    Key(String),
    /// `.*` or `[*]`.
    Star,
    /// `[expr]` with a non-literal index.
    Dynamic(Box<Expr>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `&&`
    And,
    /// `||`
    Or,
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`
    Cmp(CmpOp),
}

/// Which comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`, `<=`, `>`, `>=`
    Order,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal: string, number, boolean or null.
    Lit(Value),
    /// A context access such as `github.event.pull_request.title` or `matrix['os']`.
    Ctx(String, Vec<Seg>),
    /// A function call, name lower-cased.
    Call(String, Vec<Expr>),
    /// `!e`
    Not(Box<Expr>),
    /// `a op b`
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `(e)[index]` on a non-context value, e.g. `fromJSON('[..]')[0]`.
    Index(Box<Expr>, Vec<Seg>),
}

/// Why an expression did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid expression at offset {offset}: {message}")]
pub struct ExprError {
    /// Byte offset in the expression text.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Dot,
    Star,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
    Not,
    And,
    Or,
    Cmp(CmpOp),
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |offset: usize, m: &str| ExprError {
        offset,
        message: m.to_owned(),
    };
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push((start, Tok::Dot));
                i += 1;
            }
            b'*' => {
                out.push((start, Tok::Star));
                i += 1;
            }
            b'[' => {
                out.push((start, Tok::LBracket));
                i += 1;
            }
            b']' => {
                out.push((start, Tok::RBracket));
                i += 1;
            }
            b'(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            b')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            b',' => {
                out.push((start, Tok::Comma));
                i += 1;
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                out.push((start, Tok::Cmp(CmpOp::Ne)));
                i += 2;
            }
            b'!' => {
                out.push((start, Tok::Not));
                i += 1;
            }
            b'=' if b.get(i + 1) == Some(&b'=') => {
                out.push((start, Tok::Cmp(CmpOp::Eq)));
                i += 2;
            }
            b'<' | b'>' => {
                i += if b.get(i + 1) == Some(&b'=') { 2 } else { 1 };
                out.push((start, Tok::Cmp(CmpOp::Order)));
            }
            b'&' if b.get(i + 1) == Some(&b'&') => {
                out.push((start, Tok::And));
                i += 2;
            }
            b'|' if b.get(i + 1) == Some(&b'|') => {
                out.push((start, Tok::Or));
                i += 2;
            }
            b'\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match src[i..].find('\'') {
                        None => return Err(err(start, "unterminated string")),
                        Some(j) => {
                            s.push_str(&src[i..i + j]);
                            i += j + 1;
                            if b.get(i) == Some(&b'\'') {
                                s.push('\'');
                                i += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                out.push((start, Tok::Str(s)));
            }
            c if c.is_ascii_digit() || c == b'-' || c == b'.' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.') {
                    j += 1;
                }
                let text = &src[i..j];
                let n = if let Some(hex) = text.strip_prefix("0x") {
                    i64::from_str_radix(hex, 16).ok().map(|v| v as f64)
                } else {
                    text.parse::<f64>().ok()
                };
                match n {
                    Some(n) => out.push((start, Tok::Num(n))),
                    None => return Err(err(start, "invalid number")),
                }
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'-')
                {
                    j += 1;
                }
                out.push((start, Tok::Ident(src[i..j].to_owned())));
                i = j;
            }
            _ => {
                return Err(err(
                    start,
                    &format!(
                        "unexpected character {:?}",
                        src[i..].chars().next().unwrap_or('?')
                    ),
                ))
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

/// Nesting limit, so that a hostile file cannot overflow the stack.
const MAX_DEPTH: usize = 64;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }
    fn offset(&self) -> usize {
        self.toks.get(self.pos).map(|t| t.0).unwrap_or(self.end)
    }
    fn bump(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.1.clone());
        self.pos += 1;
        t
    }
    fn err<T>(&self, m: &str) -> Result<T, ExprError> {
        Err(ExprError {
            offset: self.offset(),
            message: m.to_owned(),
        })
    }
    fn expect(&mut self, t: Tok, what: &str) -> Result<(), ExprError> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(&format!("expected {what}"))
        }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("expression nested too deeply");
        }
        let mut l = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let r = self.and()?;
            l = Expr::Bin(BinOp::Or, Box::new(l), Box::new(r));
        }
        self.depth -= 1;
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.cmp()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let r = self.cmp()?;
            l = Expr::Bin(BinOp::And, Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.unary()?;
        while let Some(Tok::Cmp(op)) = self.peek().cloned() {
            self.pos += 1;
            let r = self.unary()?;
            l = Expr::Bin(BinOp::Cmp(op), Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return self.err("expression nested too deeply");
            }
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        let p = self.primary()?;
        let segs = self.segments()?;
        Ok(match p {
            Expr::Ctx(h, mut s) => {
                s.extend(segs);
                Expr::Ctx(h, s)
            }
            other if segs.is_empty() => other,
            other => Expr::Index(Box::new(other), segs),
        })
    }
    fn segments(&mut self) -> Result<Vec<Seg>, ExprError> {
        let mut segs = Vec::new();
        loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.pos += 1;
                    match self.bump() {
                        Some(Tok::Ident(n)) => segs.push(Seg::Key(n)),
                        Some(Tok::Star) => segs.push(Seg::Star),
                        _ => {
                            self.pos -= 1;
                            return self.err("expected a property name after '.'");
                        }
                    }
                }
                Some(Tok::LBracket) => {
                    self.pos += 1;
                    if self.peek() == Some(&Tok::Star) {
                        self.pos += 1;
                        segs.push(Seg::Star);
                    } else {
                        match self.or()? {
                            Expr::Lit(Value::String(s)) => segs.push(Seg::Key(s)),
                            Expr::Lit(Value::Number(n))
                                if n.as_f64().is_some_and(|f| f >= 0.0 && f.fract() == 0.0) =>
                            {
                                segs.push(Seg::Key(format!("{}", n.as_f64().unwrap_or(0.0) as u64)))
                            }
                            e => segs.push(Seg::Dynamic(Box::new(e))),
                        }
                    }
                    self.expect(Tok::RBracket, "']'")?;
                }
                _ => return Ok(segs),
            }
        }
    }
    fn primary(&mut self) -> Result<Expr, ExprError> {
        match self.bump() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.expect(Tok::RParen, "')'")?;
                Ok(e)
            }
            Some(Tok::Str(s)) => Ok(Expr::Lit(Value::String(s))),
            Some(Tok::Num(n)) => Ok(Expr::Lit(
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
            )),
            Some(Tok::Ident(id)) => match id.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                _ if self.peek() == Some(&Tok::LParen) => {
                    self.pos += 1;
                    let mut args = Vec::new();
                    if self.peek() != Some(&Tok::RParen) {
                        loop {
                            args.push(self.or()?);
                            if self.peek() == Some(&Tok::Comma) {
                                self.pos += 1;
                            } else {
                                break;
                            }
                        }
                    }
                    self.expect(Tok::RParen, "')'")?;
                    Ok(Expr::Call(id.to_ascii_lowercase(), args))
                }
                _ => Ok(Expr::Ctx(id.to_ascii_lowercase(), Vec::new())),
            },
            _ => {
                self.pos = self.pos.saturating_sub(1);
                self.err("expected a value")
            }
        }
    }
}

/// Parses the text between `${{` and `}}`.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        end: src.len(),
        depth: 0,
    };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return p.err("unexpected trailing input");
    }
    Ok(e)
}

/// A piece of a string that may contain `${{ … }}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// An expression's inner text and its byte offset in the string.
    Expr(&'a str, usize),
}

/// Splits a string into literal text and `${{ … }}` expressions. A `}}` inside a quoted
/// string literal does not close the expression. An unclosed `${{` is kept as text.
pub fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(open) = s[rest..].find("${{") {
        let open = rest + open;
        let inner_start = open + 3;
        let b = s.as_bytes();
        let mut i = inner_start;
        let mut in_str = false;
        let mut close = None;
        while i < b.len() {
            if b[i] == b'\'' {
                in_str = !in_str;
            } else if !in_str && b[i] == b'}' && b.get(i + 1) == Some(&b'}') {
                close = Some(i);
                break;
            }
            i += 1;
        }
        let Some(close) = close else { break };
        if open > rest {
            out.push(Piece::Text(&s[rest..open]));
        }
        out.push(Piece::Expr(&s[inner_start..close], inner_start));
        rest = close + 2;
    }
    if rest < s.len() {
        out.push(Piece::Text(&s[rest..]));
    }
    out
}

/// The context path of a `Ctx`, as `head.key.key` with `*` for stars and dynamic indexes.
pub fn ctx_path(head: &str, segs: &[Seg]) -> String {
    let mut p = head.to_owned();
    for s in segs {
        p.push('.');
        match s {
            Seg::Key(k) => p.push_str(&k.to_ascii_lowercase()),
            Seg::Star | Seg::Dynamic(_) => p.push('*'),
        }
    }
    p
}

/// Context paths whose value flows into the expression's result (not those only tested by
/// a comparison or a boolean function).
pub fn value_contexts(e: &Expr) -> Vec<String> {
    let mut out = Vec::new();
    flow(e, &mut out);
    out
}

fn flow(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Lit(_) | Expr::Not(_) | Expr::Bin(BinOp::Cmp(_), _, _) => {}
        Expr::Ctx(h, segs) => out.push(ctx_path(h, segs)),
        Expr::Index(inner, _) => flow(inner, out),
        // `a && b` yields a falsy `a` or `b`; `a || b` yields a truthy `a` or `b`: both sides
        // can reach the result.
        Expr::Bin(_, a, b) => {
            flow(a, out);
            flow(b, out);
        }
        Expr::Call(name, args) => match name.as_str() {
            "contains" | "startswith" | "endswith" | "success" | "failure" | "always"
            | "cancelled" | "hashfiles" => {}
            "format" => args.iter().skip(1).for_each(|a| flow(a, out)),
            // `join(array, sep)`, `tojson(x)`, `fromjson(x)` and unknown functions pass
            // their arguments' values through.
            _ => args.iter().for_each(|a| flow(a, out)),
        },
    }
}

/// Every context path named anywhere in the expression.
pub fn all_contexts(e: &Expr) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(e: &Expr, out: &mut Vec<String>) {
        match e {
            Expr::Lit(_) => {}
            Expr::Ctx(h, segs) => {
                out.push(ctx_path(h, segs));
                for s in segs {
                    if let Seg::Dynamic(d) = s {
                        walk(d, out);
                    }
                }
            }
            Expr::Index(i, _) | Expr::Not(i) => walk(i, out),
            Expr::Bin(_, a, b) => {
                walk(a, out);
                walk(b, out);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| walk(a, out)),
        }
    }
    walk(e, &mut out);
    out
}

/// A value an expression can take under static evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Possible {
    /// A known value.
    Known(Value),
    /// Depends on something not known statically.
    Unknown,
}

/// Maximum number of alternatives tracked, so combinatorial expressions stay cheap.
const MAX_ALTERNATIVES: usize = 64;

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// Renders a value as GitHub does when it is interpolated into a string.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn lookup(root: &Value, segs: &[Seg]) -> Possible {
    let mut cur = root;
    for s in segs {
        match s {
            Seg::Key(k) => {
                let next = match cur {
                    Value::Object(m) => m
                        .iter()
                        .find(|(mk, _)| mk.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v),
                    Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                match next {
                    Some(n) => cur = n,
                    None => return Possible::Known(Value::Null),
                }
            }
            _ => return Possible::Unknown,
        }
    }
    Possible::Known(cur.clone())
}

fn dedup(mut v: Vec<Possible>) -> Vec<Possible> {
    let mut out: Vec<Possible> = Vec::new();
    for p in v.drain(..) {
        if !out.contains(&p) {
            out.push(p);
        }
        if out.len() >= MAX_ALTERNATIVES {
            break;
        }
    }
    out
}

/// Evaluates an expression with `matrix` bound to `matrix` (the one combination being
/// considered); every other context is unknown. Returns every value it can take.
pub fn eval(e: &Expr, matrix: &Value) -> Vec<Possible> {
    use Possible::*;
    let r = match e {
        Expr::Lit(v) => vec![Known(v.clone())],
        Expr::Ctx(h, segs) if h == "matrix" => vec![lookup(matrix, segs)],
        Expr::Ctx(..) => vec![Unknown],
        Expr::Index(inner, segs) => eval(inner, matrix)
            .into_iter()
            .map(|p| match p {
                Known(v) => lookup(&v, segs),
                Unknown => Unknown,
            })
            .collect(),
        Expr::Not(_) | Expr::Bin(BinOp::Cmp(_), ..) => {
            vec![Known(Value::Bool(true)), Known(Value::Bool(false))]
        }
        Expr::Bin(op, a, b) => {
            let mut out = Vec::new();
            for p in eval(a, matrix) {
                match (&p, op) {
                    (Known(v), BinOp::Or) if truthy(v) => out.push(p),
                    (Known(v), BinOp::And) if !truthy(v) => out.push(p),
                    (Known(_), _) => out.extend(eval(b, matrix)),
                    // Unknown left side: either it or the right side.
                    (Unknown, BinOp::Or) => {
                        out.push(Unknown);
                        out.extend(eval(b, matrix));
                    }
                    (Unknown, _) => {
                        out.extend(eval(b, matrix));
                    }
                }
            }
            out
        }
        Expr::Call(name, args) => match (name.as_str(), args.as_slice()) {
            ("fromjson", [a]) => eval(a, matrix)
                .into_iter()
                .map(|p| match p {
                    Known(Value::String(s)) => {
                        serde_json::from_str(&s).map(Known).unwrap_or(Unknown)
                    }
                    _ => Unknown,
                })
                .collect(),
            ("tojson", [a]) => eval(a, matrix)
                .into_iter()
                .map(|p| match p {
                    Known(v) => Known(Value::String(
                        serde_json::to_string_pretty(&v).unwrap_or_default(),
                    )),
                    Unknown => Unknown,
                })
                .collect(),
            ("format", [f, rest @ ..]) => {
                let mut out = Vec::new();
                for fp in eval(f, matrix) {
                    let Known(fv) = fp else {
                        out.push(Unknown);
                        continue;
                    };
                    let fmt = to_text(&fv);
                    let mut partial = vec![Some(fmt)];
                    for (i, a) in rest.iter().enumerate() {
                        let vals = eval(a, matrix);
                        let mut next = Vec::new();
                        for s in &partial {
                            for v in &vals {
                                next.push(match (s, v) {
                                    (Some(s), Known(v)) => {
                                        Some(s.replace(&format!("{{{i}}}"), &to_text(v)))
                                    }
                                    _ => None,
                                });
                                if next.len() >= MAX_ALTERNATIVES {
                                    break;
                                }
                            }
                        }
                        partial = next;
                    }
                    out.extend(partial.into_iter().map(|s| match s {
                        Some(s) => Known(Value::String(s.replace("{{", "{").replace("}}", "}"))),
                        None => Unknown,
                    }));
                }
                out
            }
            ("join", [a, rest @ ..]) => {
                let sep = match rest.first().map(|s| eval(s, matrix)) {
                    Some(v) => match v.as_slice() {
                        [Known(v)] => Some(to_text(v)),
                        _ => None,
                    },
                    None => Some(",".to_owned()),
                };
                eval(a, matrix)
                    .into_iter()
                    .map(|p| match (p, &sep) {
                        (Known(Value::Array(items)), Some(sep)) => Known(Value::String(
                            items.iter().map(to_text).collect::<Vec<_>>().join(sep),
                        )),
                        (Known(v), Some(_)) => Known(Value::String(to_text(&v))),
                        _ => Unknown,
                    })
                    .collect()
            }
            ("contains" | "startswith" | "endswith", _) => {
                vec![Known(Value::Bool(true)), Known(Value::Bool(false))]
            }
            _ => vec![Unknown],
        },
    };
    dedup(r)
}

/// Evaluates a whole string that may embed expressions. A string that is exactly one
/// expression keeps the expression's type (so `${{ fromJSON('[..]') }}` is an array).
pub fn eval_template(s: &str, matrix: &Value) -> Vec<Possible> {
    let ps = pieces(s);
    if let [Piece::Expr(inner, _)] = ps.as_slice() {
        if s.trim() == s {
            return match parse(inner) {
                Ok(e) => eval(&e, matrix),
                Err(_) => vec![Possible::Unknown],
            };
        }
    }
    let mut acc: Vec<Option<String>> = vec![Some(String::new())];
    for p in ps {
        let vals = match p {
            Piece::Text(t) => vec![Possible::Known(Value::String(t.to_owned()))],
            Piece::Expr(inner, _) => match parse(inner) {
                Ok(e) => eval(&e, matrix),
                Err(_) => vec![Possible::Unknown],
            },
        };
        let mut next = Vec::new();
        for a in &acc {
            for v in &vals {
                next.push(match (a, v) {
                    (Some(a), Possible::Known(v)) => Some(format!("{a}{}", to_text(v))),
                    _ => None,
                });
            }
        }
        next.truncate(MAX_ALTERNATIVES);
        acc = next;
    }
    dedup(
        acc.into_iter()
            .map(|a| match a {
                Some(s) => Possible::Known(Value::String(s)),
                None => Possible::Unknown,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Expr {
        parse(s).expect("parses")
    }

    #[test]
    fn parses_paths_calls_and_operators() {
        assert_eq!(
            value_contexts(&p("github.event.pull_request.title")),
            vec!["github.event.pull_request.title"]
        );
        assert_eq!(
            value_contexts(&p("github.event['pull_request'].head.ref")),
            vec!["github.event.pull_request.head.ref"]
        );
        assert_eq!(
            value_contexts(&p("github.event.commits[0].message")),
            vec!["github.event.commits.0.message"]
        );
        assert!(value_contexts(&p("contains(github.event.issue.title, 'x')")).is_empty());
        assert!(value_contexts(&p("github.event.issue.title == 'x'")).is_empty());
        assert!(value_contexts(&p("!github.event.issue.title")).is_empty());
        assert_eq!(
            value_contexts(&p("format('{0} {1}', 'a', github.head_ref)")),
            vec!["github.head_ref"]
        );
        assert_eq!(
            value_contexts(&p(
                "github.event_name == 'x' && github.event.comment.body || 'n'"
            )),
            vec!["github.event.comment.body"]
        );
        assert_eq!(
            all_contexts(&p("contains(github.event.issue.title, 'x')")),
            vec!["github.event.issue.title"]
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for s in [
            "",
            "(",
            "a.",
            "'x",
            "a[",
            "1 +",
            "f(a,",
            "a == == b",
            "}}{{",
            "\u{1F600}",
        ] {
            assert!(parse(s).is_err(), "{s:?} should not parse");
        }
        let deep = format!("{}a{}", "(".repeat(500), ")".repeat(500));
        assert!(parse(&deep).is_err());
        let nots = format!("{}a", "!".repeat(500));
        assert!(parse(&nots).is_err());
    }

    #[test]
    fn pieces_respect_quoted_braces() {
        let s = "echo ${{ format('}}{0}', github.head_ref) }} done";
        let ps = pieces(s);
        assert_eq!(ps.len(), 3);
        assert_eq!(ps[1], Piece::Expr(" format('}}{0}', github.head_ref) ", 8));
        assert_eq!(
            pieces("x ${{ unclosed"),
            vec![Piece::Text("x ${{ unclosed")]
        );
    }

    #[test]
    fn evaluates_matrix_values() {
        let m = json!({"os": "self-hosted", "cfg": {"runner": ["self-hosted", "gpu"]}});
        let k = |v: Value| Possible::Known(v);
        assert_eq!(
            eval_template("${{ matrix.os }}", &m),
            vec![k(json!("self-hosted"))]
        );
        assert_eq!(
            eval_template("${{ matrix.cfg.runner }}", &m),
            vec![k(json!(["self-hosted", "gpu"]))]
        );
        assert_eq!(
            eval_template("${{ fromJSON('[\"a\",\"b\"]') }}", &m),
            vec![k(json!(["a", "b"]))]
        );
        assert_eq!(
            eval_template("x-${{ matrix.os }}", &m),
            vec![k(json!("x-self-hosted"))]
        );
        assert_eq!(
            eval_template("${{ format('{0}-large', matrix.os) }}", &m),
            vec![k(json!("self-hosted-large"))]
        );
        assert_eq!(
            eval_template(
                "${{ github.repository == 'a/b' && 'self-hosted' || 'ubuntu-latest' }}",
                &m
            ),
            vec![k(json!("self-hosted")), k(json!("ubuntu-latest"))]
        );
        assert_eq!(
            eval_template("${{ inputs.runner }}", &m),
            vec![Possible::Unknown]
        );
        assert_eq!(
            eval_template("${{ matrix.missing }}", &m),
            vec![k(Value::Null)]
        );
    }
}
