//! `.net` text → AST.
//!
//! In: the text of one file and its [`FileId`]. Out: a [`SourceFile`] AST with spans, or a
//! syntax [`Diagnostic`]. The pest grammar is `grammar/net.pest`. Before pest runs, the text is
//! checked for nesting depth so that no input can exhaust the stack; expression trees built
//! from long operator chains are depth-limited for the same reason.

use pest::Parser as _;
use pest::iterators::Pair;

use super::ast::*;
use crate::diag::{Diagnostic, FileId, Span, codes};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/net.pest"]
struct NetParser;

/// Deepest bracket nesting accepted; real specs use fewer than 10.
pub const MAX_NESTING: usize = 64;
/// Deepest expression tree accepted (long chains such as `1+1+...+1` build deep trees).
pub const MAX_EXPR_DEPTH: usize = 200;

/// Parses a whole `.net` file.
///
/// Input nested up to [`MAX_NESTING`] deep needs several MB of stack in debug builds (pest
/// recurses through every precedence level per bracket): [`crate::load_file`] and
/// [`crate::load_str`] run the front end on a large stack; direct callers should too.
pub fn parse_file(file: FileId, text: &str) -> Result<SourceFile, Diagnostic> {
    check_nesting(file, text)?;
    let mut pairs = NetParser::parse(Rule::file, text).map_err(|e| pest_error(file, text, e))?;
    let b = Builder { file };
    let file_pair = pairs.next().expect("file rule");
    let mut items = Vec::new();
    for p in file_pair.into_inner() {
        match p.as_rule() {
            Rule::import => {
                let span = b.span(&p);
                let s = p.into_inner().nth(1).expect("import string");
                items.push(Item::Import {
                    path: b.string(&s)?,
                    span,
                });
            }
            Rule::block_def => items.push(Item::Block(b.def(p, false)?)),
            Rule::model_def => items.push(Item::Model(b.def(p, true)?)),
            Rule::EOI => {}
            r => unreachable!("item {r:?}"),
        }
    }
    Ok(SourceFile { items })
}

/// Parses one expression, e.g. the value of a `--set` override or a YAML scalar. `offset` is
/// where the text starts in the file, so spans point into the file.
pub fn parse_expr(file: FileId, text: &str, offset: usize) -> Result<Expr, Diagnostic> {
    check_nesting(file, text).map_err(|d| shift(d, offset))?;
    let mut pairs = NetParser::parse(Rule::expr_only, text)
        .map_err(|e| shift(pest_error(file, text, e), offset))?;
    let b = Builder { file };
    let p = pairs
        .next()
        .expect("expr_only")
        .into_inner()
        .next()
        .expect("expr");
    let e = b.expr(p, 0).map_err(|d| shift(d, offset))?;
    Ok(shift_expr(e, offset))
}

fn shift(mut d: Diagnostic, offset: usize) -> Diagnostic {
    if let Some(l) = &mut d.primary {
        l.span.start += offset as u32;
        l.span.end += offset as u32;
    }
    d
}

fn shift_span(s: &mut Span, offset: usize) {
    s.start += offset as u32;
    s.end += offset as u32;
}

/// Moves every span of an expression by `offset` bytes.
pub fn shift_expr(mut e: Expr, offset: usize) -> Expr {
    if offset != 0 {
        visit_spans_expr(&mut e, &mut |s| shift_span(s, offset));
    }
    e
}

/// Calls `f` on every span in `e`, including those of nested statements.
pub(crate) fn visit_spans_expr(e: &mut Expr, f: &mut dyn FnMut(&mut Span)) {
    f(&mut e.span);
    match &mut e.kind {
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Bool(_)
        | ExprKind::Str(_)
        | ExprKind::Ident(_)
        | ExprKind::In => {}
        ExprKind::List(v) => v.iter_mut().for_each(|x| visit_spans_expr(x, f)),
        ExprKind::Unary(_, a) => visit_spans_expr(a, f),
        ExprKind::Binary(_, a, b) | ExprKind::Pipe(a, b) | ExprKind::Index(a, b) => {
            visit_spans_expr(a, f);
            visit_spans_expr(b, f);
        }
        ExprKind::Cond(a, b, c) => {
            visit_spans_expr(a, f);
            visit_spans_expr(b, f);
            visit_spans_expr(c, f);
        }
        ExprKind::Member(a, id) => {
            visit_spans_expr(a, f);
            f(&mut id.span);
        }
        ExprKind::Call { callee, args } => {
            f(&mut callee.span);
            for a in args {
                visit_spans_arg(a, f);
            }
        }
        ExprKind::Seq(body) | ExprKind::Concat(body) => visit_spans_body(body, f),
        ExprKind::Repeat { count, body } => {
            visit_spans_expr(count, f);
            visit_spans_body(body, f);
        }
        ExprKind::Residual { body, shortcut } => {
            visit_spans_body(body, f);
            if let Some(s) = shortcut {
                f(&mut s.span);
                if let Some(c) = &mut s.cond {
                    visit_spans_expr(c, f);
                }
                visit_spans_body(&mut s.body, f);
            }
        }
    }
}

fn visit_spans_arg(a: &mut Arg, f: &mut dyn FnMut(&mut Span)) {
    f(&mut a.span);
    if let Some(n) = &mut a.name {
        f(&mut n.span);
    }
    visit_spans_expr(&mut a.value, f);
}

fn visit_spans_body(body: &mut [Stmt], f: &mut dyn FnMut(&mut Span)) {
    for s in body {
        match s {
            Stmt::Input(i) => {
                f(&mut i.span);
                f(&mut i.name.span);
                i.shape.iter_mut().for_each(|e| visit_spans_expr(e, f));
                i.attrs.iter_mut().for_each(|a| visit_spans_arg(a, f));
            }
            Stmt::Layer(l) => {
                f(&mut l.span);
                if let Some(n) = &mut l.name {
                    f(&mut n.span);
                }
                visit_spans_expr(&mut l.expr, f);
            }
            Stmt::Let(l) => {
                f(&mut l.span);
                f(&mut l.name.span);
                visit_spans_expr(&mut l.value, f);
            }
            Stmt::Output { values, span } => {
                f(span);
                values.iter_mut().for_each(|e| visit_spans_expr(e, f));
            }
            Stmt::When(w) => {
                f(&mut w.span);
                visit_spans_expr(&mut w.cond, f);
                visit_spans_body(&mut w.then_body, f);
                if let Some(b) = &mut w.else_body {
                    visit_spans_body(b, f);
                }
            }
        }
    }
}

/// Rejects inputs nested deeper than [`MAX_NESTING`] before the recursive parser sees them.
fn check_nesting(file: FileId, text: &str) -> Result<(), Diagnostic> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escape = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if escape {
                escape = false;
            } else if c == b'\\' {
                escape = true;
            } else if c == b'"' || c == b'\n' {
                in_str = false;
            }
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'/') || c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(Diagnostic::error(
                            codes::TOO_DEEP,
                            format!("brackets nested more than {MAX_NESTING} deep"),
                        )
                        .at(Span::new(file, i, i + 1), "too deep here")
                        .help("split the expression or the nested blocks into named blocks"));
                    }
                }
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    Ok(())
}

/// Converts a pest error into a diagnostic with friendly names for what was expected.
fn pest_error(file: FileId, text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let (expected, unexpected) = match &e.variant {
        ErrorVariant::ParsingError {
            positives,
            negatives,
        } => (describe_rules(positives), describe_rules(negatives)),
        ErrorVariant::CustomError { message } => (vec![message.clone()], vec![]),
    };
    let found = found_at(text, pos);
    let mut msg = String::from("syntax error: ");
    if !expected.is_empty() {
        msg += &format!("expected {}", join_or(&expected));
    } else if !unexpected.is_empty() {
        msg += &format!("unexpected {}", join_or(&unexpected));
    } else {
        msg += "unexpected input";
    }
    msg += &format!(", found {found}");
    let end = (pos + found_len(text, pos)).min(text.len());
    let mut d = Diagnostic::error(codes::SYNTAX, msg).at(Span::new(file, pos, end), "here");
    if let Some(h) = syntax_help(text, pos, &expected) {
        d = d.help(h);
    }
    d
}

fn describe_rules(rules: &[Rule]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rules {
        let s = match r {
            Rule::EOI => "end of file",
            Rule::import | Rule::kw_import => "`import`",
            Rule::block_def | Rule::kw_block => "`block`",
            Rule::model_def | Rule::kw_model => "`model`",
            Rule::params => "a parameter list `(...)`",
            Rule::param => "a parameter `name: type`",
            Rule::type_name => "a type (int, float, bool, str)",
            Rule::body => "`{`",
            Rule::input_stmt | Rule::kw_input => "`input`",
            Rule::output_stmt | Rule::kw_output => "`output`",
            Rule::when_stmt | Rule::kw_when => "`when`",
            Rule::let_stmt | Rule::layer_stmt => "a statement",
            Rule::train_section | Rule::kw_train => "`train`",
            Rule::train_entry => "a setting `key: value`",
            Rule::shape => "a shape `[...]`",
            Rule::ident => "a name",
            Rule::string | Rule::str_inner => "a string",
            Rule::int | Rule::float => "a number",
            Rule::cmp_op => "a comparison",
            Rule::add_op | Rule::mul_op | Rule::op_or | Rule::op_and => "an operator",
            Rule::arg => "an argument",
            Rule::shortcut | Rule::kw_shortcut => "`shortcut`",
            Rule::kw_else => "`else`",
            Rule::kw_then => "`then`",
            Rule::kw_with => "`with`",
            _ => "an expression",
        };
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    out
}

fn join_or(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} or {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

fn found_at(text: &str, pos: usize) -> String {
    let rest = &text[pos.min(text.len())..];
    match rest.chars().next() {
        None => "end of file".into(),
        Some('\n') | Some('\r') => "end of line".into(),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let w: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            format!("`{w}`")
        }
        Some(c) => format!("`{c}`"),
    }
}

fn found_len(text: &str, pos: usize) -> usize {
    let rest = &text[pos.min(text.len())..];
    match rest.chars().next() {
        None => 0,
        Some(c) if c.is_alphanumeric() || c == '_' => rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .map(char::len_utf8)
            .sum(),
        Some(c) => c.len_utf8(),
    }
}

fn syntax_help(text: &str, pos: usize, expected: &[String]) -> Option<String> {
    let rest = &text[pos.min(text.len())..];
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    const KEYWORDS: &[&str] = &[
        "import", "block", "model", "input", "output", "when", "else", "train", "shared", "frozen",
        "seq", "repeat", "residual", "shortcut", "with", "if", "then", "in",
    ];
    // A keyword used as a name: `repeat: conv(...)` fails at the `:` after it.
    let before = text[..pos.min(text.len())].trim_end();
    let prev: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if KEYWORDS.contains(&prev.as_str()) && (rest.starts_with(':') || rest.starts_with('=')) {
        return Some(format!(
            "`{prev}` is a keyword; to name a statement choose another name (e.g. `{prev}_`)"
        ));
    }
    if let Some((open, line, col)) = unclosed_bracket(&text[..pos.min(text.len())]) {
        let close = match open {
            '(' => ')',
            '[' => ']',
            _ => '}',
        };
        let (found_line, _) = line_of(text, pos);
        if open != '{' && found_line > line {
            return Some(format!(
                "the `{open}` at line {line}, column {col} is not closed: add `{close}`"
            ));
        }
    }
    if KEYWORDS.contains(&word.as_str()) {
        return Some(format!(
            "`{word}` is a keyword; if you meant a name, choose another (e.g. `{word}_`)"
        ));
    }
    if rest.starts_with('=') && expected.iter().any(|e| e.contains("expression")) {
        return Some("named arguments are written `name=value` inside a call".into());
    }
    if pos >= text.len() {
        return Some("a `{`, `(` or `[` may be missing its closing bracket".into());
    }
    None
}

/// 1-based line and column of a byte offset.
fn line_of(text: &str, pos: usize) -> (usize, usize) {
    let before = &text[..pos.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The innermost bracket still open at the end of `text` (skipping strings and comments).
fn unclosed_bracket(text: &str) -> Option<(char, usize, usize)> {
    let mut stack: Vec<(char, usize)> = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let mut escaped = false;
                for (_, d) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == '"' || d == '\n' {
                        break;
                    }
                }
            }
            '#' => {
                for (_, d) in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek().map(|p| p.1) == Some('/') => {
                for (_, d) in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => stack.push((c, i)),
            ')' | ']' | '}' => {
                stack.pop();
            }
            _ => {}
        }
    }
    stack.last().map(|&(c, i)| {
        let (l, col) = line_of(text, i);
        (c, l, col)
    })
}

struct Builder {
    file: FileId,
}

fn too_deep(span: Span) -> Diagnostic {
    Diagnostic::error(
        codes::TOO_DEEP,
        format!("expression nested more than {MAX_EXPR_DEPTH} operations deep"),
    )
    .at(span, "too complex")
    .help("split it into named block parameters or simpler expressions")
}

impl Builder {
    /// The span of a pair, without the whitespace pest may leave at its end.
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        let trimmed = p.as_str().trim_end().len();
        Span::new(self.file, s.start(), s.start() + trimmed)
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        debug_assert!(matches!(p.as_rule(), Rule::ident | Rule::arg_name));
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn string(&self, p: &Pair<Rule>) -> Result<String, Diagnostic> {
        let inner = p
            .clone()
            .into_inner()
            .next()
            .map(|x| x.as_str())
            .unwrap_or("");
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    other => {
                        return Err(Diagnostic::error(
                            codes::SYNTAX,
                            format!(
                                "unknown escape `\\{}` in string",
                                other.map(String::from).unwrap_or_default()
                            ),
                        )
                        .at(self.span(p), "in this string")
                        .help("the escapes are \\n, \\t, \\\\ and \\\""));
                    }
                }
            } else {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn def(&self, p: Pair<Rule>, is_model: bool) -> Result<Def, Diagnostic> {
        let span = self.span(&p);
        let mut inner = p.into_inner();
        inner.next(); // keyword
        let name = self.ident(inner.next().expect("def name"));
        let mut params = Vec::new();
        let mut body_pair = None;
        for q in inner {
            match q.as_rule() {
                Rule::params => {
                    for pp in q.into_inner() {
                        params.push(self.param(pp)?);
                    }
                }
                Rule::body => body_pair = Some(q),
                r => unreachable!("def part {r:?}"),
            }
        }
        let mut train = None;
        let mut body = Vec::new();
        for s in body_pair.expect("def body").into_inner() {
            if s.as_rule() == Rule::train_section {
                let sec = self.train(s)?;
                if !is_model {
                    return Err(Diagnostic::error(
                        codes::STRUCTURE,
                        "a `train` section belongs in a model, not in a block",
                    )
                    .at(sec.span, "inside a block")
                    .help("move it into the model that uses this block"));
                }
                if let Some(prev) = &train {
                    let prev: &TrainSection = prev;
                    return Err(
                        Diagnostic::error(codes::DUPLICATE, "a second `train` section")
                            .at(sec.span, "second one")
                            .also(prev.span, "first one here")
                            .help("merge the two sections"),
                    );
                }
                train = Some(sec);
            } else {
                body.push(self.stmt(s)?);
            }
        }
        Ok(Def {
            name,
            params,
            body,
            train,
            span,
        })
    }

    fn param(&self, p: Pair<Rule>) -> Result<Param, Diagnostic> {
        let span = self.span(&p);
        let mut inner = p.into_inner();
        let name = self.ident(inner.next().expect("param name"));
        let ty_pair = inner.next().expect("param type");
        let ty_span = self.span(&ty_pair);
        let ty_name = ty_pair.as_str();
        let ty = TypeName::from_name(ty_name).ok_or_else(|| {
            let mut d = Diagnostic::error(codes::TYPE, format!("unknown type `{ty_name}`"))
                .at(ty_span, "not a type");
            let hint = crate::diag::suggest(ty_name, ["int", "float", "bool", "str"]);
            d = d.help(match hint {
                Some(h) => format!("did you mean `{h}`? the types are int, float, bool and str"),
                None => "the types are int, float, bool and str".into(),
            });
            d
        })?;
        let default = match inner.next() {
            Some(e) => Some(self.expr(e, 0)?),
            None => None,
        };
        Ok(Param {
            name,
            ty,
            ty_span,
            default,
            span,
        })
    }

    fn body(&self, p: Pair<Rule>) -> Result<Vec<Stmt>, Diagnostic> {
        let mut out = Vec::new();
        for s in p.into_inner() {
            if s.as_rule() == Rule::train_section {
                return Err(Diagnostic::error(
                    codes::STRUCTURE,
                    "a `train` section belongs at the top level of a model",
                )
                .at(self.span(&s), "nested here")
                .help("move it to the model's body"));
            }
            out.push(self.stmt(s)?);
        }
        Ok(out)
    }

    fn stmt(&self, p: Pair<Rule>) -> Result<Stmt, Diagnostic> {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::input_stmt => {
                let mut inner = p.into_inner();
                inner.next(); // kw
                let name = self.ident(inner.next().expect("input name"));
                let shape_pair = inner.next().expect("shape");
                let shape = shape_pair
                    .into_inner()
                    .map(|e| self.expr(e, 0))
                    .collect::<Result<_, _>>()?;
                let mut attrs = Vec::new();
                for q in inner {
                    if q.as_rule() == Rule::arg {
                        attrs.push(self.arg(q)?);
                    }
                }
                Ok(Stmt::Input(InputDecl {
                    name,
                    shape,
                    attrs,
                    span,
                }))
            }
            Rule::output_stmt => {
                let values = p
                    .into_inner()
                    .skip(1)
                    .map(|e| self.expr(e, 0))
                    .collect::<Result<_, _>>()?;
                Ok(Stmt::Output { values, span })
            }
            Rule::when_stmt => Ok(Stmt::When(self.when(p)?)),
            Rule::let_stmt => {
                let mut inner = p.into_inner();
                let name = self.ident(inner.next().expect("let name"));
                let (mut shared, mut frozen) = (false, false);
                let mut value = None;
                for q in inner {
                    match q.as_rule() {
                        Rule::shared => shared = true,
                        Rule::frozen => frozen = true,
                        Rule::expr => value = Some(self.expr(q, 0)?),
                        r => unreachable!("let part {r:?}"),
                    }
                }
                Ok(Stmt::Let(LetStmt {
                    name,
                    shared,
                    frozen,
                    value: value.expect("let value"),
                    span,
                }))
            }
            Rule::layer_stmt => {
                let mut name = None;
                let mut frozen = false;
                let mut expr = None;
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::ident => name = Some(self.ident(q)),
                        Rule::frozen => frozen = true,
                        Rule::expr => expr = Some(self.expr(q, 0)?),
                        r => unreachable!("layer part {r:?}"),
                    }
                }
                Ok(Stmt::Layer(LayerStmt {
                    name,
                    frozen,
                    expr: expr.expect("layer expr"),
                    span,
                }))
            }
            r => unreachable!("stmt {r:?}"),
        }
    }

    fn when(&self, p: Pair<Rule>) -> Result<WhenStmt, Diagnostic> {
        let span = self.span(&p);
        let mut inner = p.into_inner();
        inner.next(); // kw
        let cond = self.expr(inner.next().expect("when cond"), 0)?;
        let then_body = self.body(inner.next().expect("when body"))?;
        let mut else_body = None;
        for q in inner {
            match q.as_rule() {
                Rule::kw_else => {}
                Rule::body => else_body = Some(self.body(q)?),
                Rule::else_when => {
                    let w = q.into_inner().next().expect("else when");
                    else_body = Some(vec![Stmt::When(self.when(w)?)]);
                }
                r => unreachable!("when part {r:?}"),
            }
        }
        Ok(WhenStmt {
            cond,
            then_body,
            else_body,
            span,
        })
    }

    fn train(&self, p: Pair<Rule>) -> Result<TrainSection, Diagnostic> {
        let span = self.span(&p);
        let mut entries = Vec::new();
        for q in p.into_inner() {
            if q.as_rule() != Rule::train_entry {
                continue;
            }
            let espan = self.span(&q);
            let mut inner = q.into_inner();
            let key = self.ident(inner.next().expect("train key"));
            let value = self.expr(inner.next().expect("train value"), 0)?;
            entries.push(TrainEntry {
                key,
                value,
                span: espan,
            });
        }
        Ok(TrainSection { entries, span })
    }

    fn arg(&self, p: Pair<Rule>) -> Result<Arg, Diagnostic> {
        let span = self.span(&p);
        let mut name = None;
        let mut value = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::ident | Rule::arg_name => name = Some(self.ident(q)),
                Rule::expr => value = Some(self.expr(q, 0)?),
                r => unreachable!("arg part {r:?}"),
            }
        }
        Ok(Arg {
            name,
            value: value.expect("arg value"),
            span,
        })
    }

    /// Builds an expression from any expression-level rule. `depth` bounds recursion.
    fn expr(&self, p: Pair<Rule>, depth: usize) -> Result<Expr, Diagnostic> {
        let span = self.span(&p);
        if depth > MAX_EXPR_DEPTH {
            return Err(too_deep(span));
        }
        let d = depth + 1;
        let mk = |kind| Expr { kind, span };
        match p.as_rule() {
            Rule::expr | Rule::paren => {
                let inner = p.into_inner().next().expect("inner expr");
                let mut e = self.expr(inner, d)?;
                e.span = span;
                Ok(e)
            }
            Rule::cond_expr => {
                let mut parts = p.into_inner().filter(|q| q.as_rule() == Rule::expr);
                let c = self.expr(parts.next().expect("cond"), d)?;
                let t = self.expr(parts.next().expect("then"), d)?;
                let e = self.expr(parts.next().expect("else"), d)?;
                Ok(mk(ExprKind::Cond(Box::new(c), Box::new(t), Box::new(e))))
            }
            Rule::pipe_expr => {
                let mut inner = p.into_inner();
                let mut acc = self.expr(inner.next().expect("pipe lhs"), d)?;
                for (n, q) in inner.enumerate() {
                    if d + n > MAX_EXPR_DEPTH {
                        return Err(too_deep(span));
                    }
                    let rhs = self.expr(q, d)?;
                    let s = acc.span.to(rhs.span);
                    acc = Expr {
                        kind: ExprKind::Pipe(Box::new(acc), Box::new(rhs)),
                        span: s,
                    };
                }
                Ok(acc)
            }
            Rule::or_expr | Rule::and_expr | Rule::cmp_expr | Rule::add_expr | Rule::mul_expr => {
                let mut inner = p.into_inner();
                let mut acc = self.expr(inner.next().expect("lhs"), d)?;
                let mut n = 0;
                while let Some(op) = inner.next() {
                    n += 1;
                    if d + n > MAX_EXPR_DEPTH {
                        return Err(too_deep(span));
                    }
                    let op = match op.as_str() {
                        "||" => BinOp::Or,
                        "&&" => BinOp::And,
                        "==" => BinOp::Eq,
                        "!=" => BinOp::Ne,
                        "<" => BinOp::Lt,
                        "<=" => BinOp::Le,
                        ">" => BinOp::Gt,
                        ">=" => BinOp::Ge,
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        "/" => BinOp::Div,
                        "%" => BinOp::Rem,
                        o => unreachable!("operator {o}"),
                    };
                    let rhs = self.expr(inner.next().expect("rhs"), d)?;
                    let s = acc.span.to(rhs.span);
                    acc = Expr {
                        kind: ExprKind::Binary(op, Box::new(acc), Box::new(rhs)),
                        span: s,
                    };
                }
                Ok(acc)
            }
            Rule::unary => {
                let parts: Vec<_> = p.into_inner().collect();
                let (ops, operand) = parts.split_at(parts.len() - 1);
                if d + ops.len() > MAX_EXPR_DEPTH {
                    return Err(too_deep(span));
                }
                let mut acc = self.expr(operand[0].clone(), d)?;
                for op in ops.iter().rev() {
                    let u = if op.as_str() == "-" {
                        UnOp::Neg
                    } else {
                        UnOp::Not
                    };
                    // Fold negative literals so that `-1` is a literal, as users expect.
                    acc = match (u, &acc.kind) {
                        (UnOp::Neg, ExprKind::Int(v)) if *v >= 0 => Expr {
                            kind: ExprKind::Int(-v),
                            span: self.span(op).to(acc.span),
                        },
                        (UnOp::Neg, ExprKind::Float(v)) => Expr {
                            kind: ExprKind::Float(-v),
                            span: self.span(op).to(acc.span),
                        },
                        _ => Expr {
                            span: self.span(op).to(acc.span),
                            kind: ExprKind::Unary(u, Box::new(acc)),
                        },
                    };
                }
                Ok(acc)
            }
            Rule::postfix => {
                let mut inner = p.into_inner();
                let mut acc = self.expr(inner.next().expect("primary"), d)?;
                for (n, q) in inner.enumerate() {
                    if d + n > MAX_EXPR_DEPTH {
                        return Err(too_deep(span));
                    }
                    let qs = self.span(&q);
                    let s = acc.span.to(qs);
                    acc = match q.as_rule() {
                        Rule::member => {
                            let id = self.ident(q.into_inner().next().expect("member name"));
                            Expr {
                                kind: ExprKind::Member(Box::new(acc), id),
                                span: s,
                            }
                        }
                        Rule::index => {
                            let i = self.expr(q.into_inner().next().expect("index"), d)?;
                            Expr {
                                kind: ExprKind::Index(Box::new(acc), Box::new(i)),
                                span: s,
                            }
                        }
                        r => unreachable!("postfix {r:?}"),
                    };
                }
                Ok(acc)
            }
            Rule::int => p
                .as_str()
                .parse::<i64>()
                .map(|v| mk(ExprKind::Int(v)))
                .map_err(|_| {
                    Diagnostic::error(codes::TOO_LARGE, "integer literal too large")
                        .at(span, "does not fit in 64 bits")
                }),
            Rule::float => {
                let v: f64 = p.as_str().parse().unwrap_or(f64::INFINITY);
                if !v.is_finite() {
                    return Err(
                        Diagnostic::error(codes::TOO_LARGE, "float literal too large")
                            .at(span, "not a finite number"),
                    );
                }
                Ok(mk(ExprKind::Float(v)))
            }
            Rule::boolean => Ok(mk(ExprKind::Bool(p.as_str() == "true"))),
            Rule::string => Ok(mk(ExprKind::Str(self.string(&p)?))),
            Rule::ident => Ok(mk(ExprKind::Ident(p.as_str().to_string()))),
            Rule::in_expr => Ok(mk(ExprKind::In)),
            Rule::list => {
                let items = p
                    .into_inner()
                    .map(|q| self.expr(q, d))
                    .collect::<Result<_, _>>()?;
                Ok(mk(ExprKind::List(items)))
            }
            Rule::call => {
                let mut inner = p.into_inner();
                let callee = self.ident(inner.next().expect("callee"));
                let args = inner.map(|q| self.arg(q)).collect::<Result<_, _>>()?;
                Ok(mk(ExprKind::Call { callee, args }))
            }
            Rule::seq_expr => {
                let body = p.into_inner().nth(1).expect("seq body");
                Ok(mk(ExprKind::Seq(self.body(body)?)))
            }
            Rule::concat_expr => {
                let body = p.into_inner().next().expect("concat body");
                Ok(mk(ExprKind::Concat(self.body(body)?)))
            }
            Rule::repeat_expr => {
                let mut inner = p.into_inner();
                inner.next();
                let count = self.expr(inner.next().expect("repeat count"), d)?;
                let body = self.body(inner.next().expect("repeat body"))?;
                Ok(mk(ExprKind::Repeat {
                    count: Box::new(count),
                    body,
                }))
            }
            Rule::residual_expr => {
                let mut inner = p.into_inner();
                inner.next();
                let body = self.body(inner.next().expect("residual body"))?;
                let shortcut = match inner.next() {
                    Some(s) => {
                        let sspan = self.span(&s);
                        let mut cond = None;
                        let mut sbody = Vec::new();
                        for q in s.into_inner() {
                            match q.as_rule() {
                                Rule::expr => cond = Some(self.expr(q, d)?),
                                Rule::body => sbody = self.body(q)?,
                                _ => {}
                            }
                        }
                        Some(Box::new(Shortcut {
                            cond,
                            body: sbody,
                            span: sspan,
                        }))
                    }
                    None => None,
                };
                Ok(mk(ExprKind::Residual { body, shortcut }))
            }
            r => unreachable!("expression rule {r:?}"),
        }
    }
}
