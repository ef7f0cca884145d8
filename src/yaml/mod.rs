//! The YAML front end: YAML text → AST.
//!
//! In: the text of one YAML spec and its [`FileId`]. Out: the same [`SourceFile`] that
//! [`crate::syntax::parse_file`] produces for the equivalent `.net` text, with spans pointing
//! into the YAML text; or one [`Diagnostic`]. Expressions are written as `.net` expression
//! text inside YAML strings and parsed with [`crate::syntax::parse_expr`].
//!
//! # Schema
//!
//! The top level is a map with the keys below (all optional, but at least one of `blocks` and
//! `models` must be present). Items keep their true source order: the entries of `import`,
//! `blocks` and `models` become [`Item`]s in the order the keys and entries are written.
//!
//! ```yaml
//! import: ["other.net", "blocks.yaml"]      # list of path strings -> Item::Import each
//! blocks:                                   # name -> definition -> Item::Block
//!   basic:
//!     params: {c: int, stride: "int = 1"}   # name -> "TYPE", "TYPE = DEFAULT" or
//!                                           #         {type: TYPE, default: VALUE}
//!     body: [STATEMENT, ...]                # required
//! models:                                   # name -> definition -> Item::Model
//!   lenet5:
//!     params: {classes: "int = 10"}
//!     body: [STATEMENT, ...]
//!     train: {KEY: VALUE, ...}              # -> TrainSection, entries in order
//! ```
//!
//! **Expressions.** Wherever `.net` has an expression, YAML takes an int, float or bool
//! (→ a literal), a list (→ `List` of expressions) or a string, parsed as a `.net` expression:
//! `c * 4`, `in.channels != c`, `conv(6, 5, pad=2)`, `"\"text\""`. Plain scalars follow the
//! YAML 1.2 core schema (`yes` is a string, `0x10` an int); `null`/empty values are errors.
//! In a `train` section, the string value of `data` and the strings of `freeze` (and any
//! string that is not a valid expression) are string literals: `data: fashion-mnist`,
//! `freeze: [conv1, layer1]`. `import` paths are plain strings.
//!
//! **Statements.** A body is a list; each item is one statement:
//!
//! - a string (or number or list): an unnamed layer, `- relu`, `- basic(64, stride=2)`;
//! - a map with exactly one non-reserved key: a named layer, `- conv1: conv(6, 5, pad=2)`;
//!   the value is an expression or a layer map (which may set `frozen`, not `name`);
//! - a layer map, with exactly one of the keys below plus optional `name: NAME` and
//!   `frozen: BOOL`:
//!   - `{seq: [STATEMENTS]}` → `seq { ... }`
//!   - `{repeat: COUNT, body: [STATEMENTS]}` → `repeat COUNT { ... }`
//!   - `{residual: [STATEMENTS], shortcut: [STATEMENTS], shortcut_when: COND}` →
//!     `residual { ... } shortcut when COND { ... }` (`shortcut_when` needs `shortcut`)
//!   - `{concat: [STATEMENTS]}` → `concat { ... }`
//!   - `{layer: EXPR}` → the expression itself;
//! - `{input: NAME, shape: [EXPRS], with: {mean: [...], std: [...]}}` (`with` optional);
//! - `{output: EXPR}` or `{output: [EXPRS]}`;
//! - `{when: COND, then: [STATEMENTS], else: [STATEMENTS]}` (`else` optional);
//! - `{let: NAME, value: EXPR-or-LAYER-MAP, shared: BOOL, frozen: BOOL}` (flags optional;
//!   a layer map used as a `let` value takes neither `name` nor `frozen`).
//!
//! The reserved keys, which cannot name a layer, are `input shape with output when then else
//! let value shared frozen name layer seq repeat body residual shortcut shortcut_when concat`.
//!
//! **Strictness.** Unknown keys, duplicate keys, YAML tags (`!foo`), anchors, aliases and
//! merge keys, several documents, and nesting deeper than [`MAX_DEPTH`] are errors.
//! Every error has code `E0003` ([`codes::YAML`]) and points at the offending key or value,
//! except the limits shared with the `.net` parser: too deep (`E0002`) and literals too large
//! (`E0208`). Syntax errors inside expression strings are reported as `E0003` at the exact
//! place in the YAML text.

mod items;
mod node;
mod scalar;
mod spans;
mod stmt;

use serde_saphyr::granit_parser::ScalarStyle;

use crate::diag::{Diagnostic, FileId, Span, codes, suggest};
use crate::syntax::ast::{Expr, ExprKind, Ident, Item, SourceFile};
use node::{Entry, Node, NodeKind, Scalar, yaml_err};
use scalar::{KEYWORDS, align, describe, is_digits, is_yaml_float};

pub use node::MAX_DEPTH;

/// Parses a whole YAML spec.
///
/// Nesting is depth-limited ([`MAX_DEPTH`]), but expression strings go through the pest parser,
/// which needs a deep stack for deeply bracketed input in debug builds: call this through
/// [`crate::load_file`] / [`crate::load_str`], which run the front end on a large stack.
pub fn parse_yaml(file: FileId, text: &str) -> Result<SourceFile, Diagnostic> {
    let root = node::read(file, text)?;
    let cx = Cx { file, text };
    let Some(root) = root else {
        return Err(yaml_err(
            Span::new(file, 0, 0),
            "empty YAML file",
            "expected a map with `blocks:` or `models:`",
        ));
    };
    let items: Vec<Item> = cx.file_items(&root)?;
    Ok(SourceFile { items })
}

/// A plain scalar resolved by the YAML 1.2 core schema.
enum Plain {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
}

/// Conversion context.
struct Cx<'a> {
    file: FileId,
    text: &'a str,
}

impl Cx<'_> {
    fn resolve(&self, s: &Scalar, span: Span) -> Result<Plain, Diagnostic> {
        if s.style != ScalarStyle::Plain {
            return Ok(Plain::Str);
        }
        let v = s.value.as_str();
        Ok(match v {
            "" | "~" | "null" | "Null" | "NULL" => Plain::Null,
            "true" | "True" | "TRUE" => Plain::Bool(true),
            "false" | "False" | "FALSE" => Plain::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf"
            | "-.INF" | ".nan" | ".NaN" | ".NAN" => {
                return Err(yaml_err(
                    span,
                    format!("`{v}` is not supported"),
                    "not a finite number",
                ));
            }
            _ => {
                let too_large = || {
                    Diagnostic::error(codes::TOO_LARGE, "integer literal too large")
                        .at(span, "does not fit in 64 bits")
                };
                if let Some(h) = v.strip_prefix("0x").filter(|h| is_digits(h, 16)) {
                    Plain::Int(i64::from_str_radix(h, 16).map_err(|_| too_large())?)
                } else if let Some(o) = v.strip_prefix("0o").filter(|o| is_digits(o, 8)) {
                    Plain::Int(i64::from_str_radix(o, 8).map_err(|_| too_large())?)
                } else if is_digits(v.strip_prefix(['-', '+']).unwrap_or(v), 10) {
                    Plain::Int(v.parse::<i64>().map_err(|_| too_large())?)
                } else if is_yaml_float(v) {
                    let f: f64 = v.parse().unwrap_or(f64::INFINITY);
                    if !f.is_finite() {
                        return Err(
                            Diagnostic::error(codes::TOO_LARGE, "float literal too large")
                                .at(span, "not a finite number"),
                        );
                    }
                    Plain::Float(f)
                } else {
                    Plain::Str
                }
            }
        })
    }

    /// Any expression: a literal, a list, or a string parsed as a `.net` expression.
    fn expr(&self, n: &Node) -> Result<Expr, Diagnostic> {
        let mk = |kind| Expr { kind, span: n.span };
        match &n.kind {
            NodeKind::Scalar(s) => match self.resolve(s, n.span)? {
                Plain::Null => Err(yaml_err(n.span, "missing value", "expected an expression")
                    .help("write a value after the `:`")),
                Plain::Bool(b) => Ok(mk(ExprKind::Bool(b))),
                Plain::Int(i) => Ok(mk(ExprKind::Int(i))),
                Plain::Float(f) => Ok(mk(ExprKind::Float(f))),
                Plain::Str => self.parse_str(s, n.span),
            },
            NodeKind::Seq(items) => Ok(mk(ExprKind::List(
                items
                    .iter()
                    .map(|i| self.expr(i))
                    .collect::<Result<_, _>>()?,
            ))),
            NodeKind::Map(_) => Err(yaml_err(
                n.span,
                "expected an expression, found a map",
                "not an expression",
            )
            .help("an expression is a string such as `conv(6, 5)`, a number, a boolean or a list")),
        }
    }

    /// Parses a string scalar as a `.net` expression, with spans in the YAML text.
    fn parse_str(&self, s: &Scalar, span: Span) -> Result<Expr, Diagnostic> {
        if s.exact {
            return crate::syntax::parse_expr(self.file, &s.value, s.content_start)
                .map_err(|d| self.expr_error(d, s));
        }
        // Escapes, folding or block indentation: parse the value, then map its offsets back
        // to the source text (or, failing that, keep them inside the scalar).
        let raw = self
            .text
            .get(s.content_start..span.end as usize)
            .unwrap_or("");
        let map = align(&s.value, raw);
        let fix = |sp: &mut Span| match &map {
            Some(m) => {
                sp.start = (s.content_start + m[sp.start as usize]) as u32;
                sp.end = (s.content_start + m[sp.end as usize]) as u32;
            }
            None => {
                sp.start += s.content_start as u32;
                sp.end += s.content_start as u32;
                spans::clamp(sp, span);
            }
        };
        match crate::syntax::parse_expr(self.file, &s.value, 0) {
            Ok(mut e) => {
                crate::syntax::parse::visit_spans_expr(&mut e, &mut |sp| fix(sp));
                Ok(e)
            }
            Err(mut d) => {
                if let Some(l) = &mut d.primary {
                    l.span.start = l.span.start.min(s.value.len() as u32);
                    l.span.end = l.span.end.clamp(l.span.start, s.value.len() as u32);
                    fix(&mut l.span);
                }
                Err(self.expr_error(d, s))
            }
        }
    }

    fn expr_error(&self, mut d: Diagnostic, s: &Scalar) -> Diagnostic {
        if d.code == codes::SYNTAX {
            d.code = codes::YAML;
        }
        // Line numbers in the `.net` parser's hints count from the start of the string.
        if d.help.as_deref().is_some_and(|h| h.contains(" at line ")) {
            d.help = None;
        }
        if s.before_comma && s.style == ScalarStyle::Plain {
            d = d.help(
                "inside `[...]` and `{...}` YAML splits values at commas: \
                 quote the expression, e.g. `\"conv(6, 5)\"`",
            );
        }
        d.note("this YAML string is read as a `.net` expression")
    }

    /// A name given as a YAML string value.
    fn ident(&self, n: &Node, what: &str) -> Result<Ident, Diagnostic> {
        if let NodeKind::Scalar(s) = &n.kind
            && matches!(self.resolve(s, n.span)?, Plain::Str)
        {
            let span = if s.exact {
                Span::new(self.file, s.content_start, s.content_start + s.value.len())
            } else {
                n.span
            };
            return self.name(&s.value, span, what);
        }
        Err(yaml_err(
            n.span,
            format!("expected {what}, found {}", describe(n)),
            "not a name",
        )
        .help("names start with a letter or `_` and contain letters, digits and `_`"))
    }

    /// Checks that `name` is a valid `.net` identifier.
    fn name(&self, name: &str, span: Span, what: &str) -> Result<Ident, Diagnostic> {
        let mut chars = name.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(yaml_err(
                span,
                format!("`{name}` is not a valid name"),
                format!("expected {what}"),
            )
            .help("names start with a letter or `_` and contain letters, digits and `_`"));
        }
        if KEYWORDS.contains(&name) {
            return Err(yaml_err(
                span,
                format!("`{name}` is a keyword and cannot be used as a name"),
                format!("expected {what}"),
            ));
        }
        Ok(Ident {
            name: name.to_string(),
            span,
        })
    }

    fn bool(&self, n: &Node) -> Result<bool, Diagnostic> {
        if let NodeKind::Scalar(s) = &n.kind
            && let Plain::Bool(b) = self.resolve(s, n.span)?
        {
            return Ok(b);
        }
        Err(yaml_err(
            n.span,
            format!("expected `true` or `false`, found {}", describe(n)),
            "not a boolean",
        ))
    }

    /// The entries of a map, or an error saying what the map was for.
    fn map<'n>(&self, n: &'n Node, what: &str) -> Result<&'n [Entry], Diagnostic> {
        match &n.kind {
            NodeKind::Map(e) => Ok(e),
            _ => {
                let d = yaml_err(
                    n.span,
                    format!("expected {what}, found {}", describe(n)),
                    "expected a map",
                );
                Err(if describe(n) == "an empty value" {
                    d.help("indent the keys that belong here further than this line")
                } else {
                    d
                })
            }
        }
    }

    /// Rejects keys not in `allowed`, suggesting the nearest allowed key.
    fn check_keys(&self, entries: &[Entry], allowed: &[&str], ctx: &str) -> Result<(), Diagnostic> {
        for e in entries {
            let k = e.key.name.as_str();
            if !allowed.contains(&k) {
                let list = allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let help = match suggest(k, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? the keys allowed here are {list}"),
                    None => format!("the keys allowed here are {list}"),
                };
                return Err(yaml_err(
                    e.key.span,
                    format!("unknown key `{k}` in {ctx}"),
                    "unknown key",
                )
                .help(help));
            }
        }
        Ok(())
    }
}

fn get<'n>(entries: &'n [Entry], key: &str) -> Option<&'n Entry> {
    entries.iter().find(|e| e.key.name == key)
}
