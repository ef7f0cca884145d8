//! Statements: bodies, named layers, layer maps, `input`, `output`, `when` and `let`.

use super::node::{Entry, Node, NodeKind, yaml_err};
use super::scalar::describe;
use super::{Cx, get};
use crate::diag::{Diagnostic, Span, suggest};
use crate::syntax::ast::*;

/// Keys that cannot name a layer.
const RESERVED: &[&str] = &[
    "input",
    "shape",
    "with",
    "output",
    "when",
    "then",
    "else",
    "let",
    "value",
    "shared",
    "frozen",
    "name",
    "layer",
    "seq",
    "repeat",
    "body",
    "residual",
    "shortcut",
    "shortcut_when",
    "concat",
];

/// Keys that say which statement a map is.
const HEADS: &[&str] = &[
    "input", "output", "when", "let", "seq", "repeat", "residual", "concat", "layer",
];
const LAYER_KEYS: &[&str] = &["seq", "repeat", "residual", "concat", "layer"];

/// Where a layer map appears; decides whether it takes `name` and `frozen`.
#[derive(Clone, Copy, PartialEq)]
enum LayerCtx {
    /// A list item: `name` and `frozen` allowed.
    Item,
    /// The value of a named layer `- conv1: {...}`: `frozen` allowed.
    Named,
    /// The value of a `let`: neither.
    LetValue,
}

impl Cx<'_> {
    /// A list of statements.
    pub(super) fn body(&self, n: &Node) -> Result<Vec<Stmt>, Diagnostic> {
        let NodeKind::Seq(items) = &n.kind else {
            let help = match &n.kind {
                NodeKind::Map(_) => "start each statement with `- ` to make a list",
                _ => "write the statements as a list, e.g. `[relu]` or one `- relu` per line",
            };
            return Err(yaml_err(
                n.span,
                format!("expected a list of statements, found {}", describe(n)),
                "expected a list",
            )
            .help(help));
        };
        items.iter().map(|i| self.stmt(i)).collect()
    }

    fn stmt(&self, n: &Node) -> Result<Stmt, Diagnostic> {
        let span = n.span;
        let NodeKind::Map(entries) = &n.kind else {
            let expr = self.expr(n).map_err(|d| stmt_help(d, n))?;
            return Ok(Stmt::Layer(LayerStmt {
                name: None,
                frozen: false,
                expr,
                span,
            }));
        };
        let Some(head) = entries
            .iter()
            .find(|e| HEADS.contains(&e.key.name.as_str()))
        else {
            return self.named_layer(entries, span);
        };
        match head.key.name.as_str() {
            "input" => {
                self.check_keys(entries, &["input", "shape", "with"], "an `input` statement")?;
                let name = self.ident(&head.value, "an input name")?;
                let Some(shape) = get(entries, "shape") else {
                    return Err(yaml_err(head.key.span, "`input` without a `shape`", "here")
                        .help("add `shape: [C, H, W]`"));
                };
                let shape = self.shape(&shape.value)?;
                let mut attrs = Vec::new();
                if let Some(w) = get(entries, "with") {
                    for a in self.map(&w.value, "a map of input attributes (`mean`, `std`)")? {
                        attrs.push(Arg {
                            name: Some(self.name(&a.key.name, a.key.span, "an attribute name")?),
                            value: self.expr(&a.value)?,
                            span: a.span(),
                        });
                    }
                }
                Ok(Stmt::Input(InputDecl {
                    name,
                    shape,
                    attrs,
                    span,
                }))
            }
            "output" => {
                self.check_keys(entries, &["output"], "an `output` statement")?;
                let values = match &head.value.kind {
                    NodeKind::Seq(items) => items
                        .iter()
                        .map(|i| self.expr(i))
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => vec![self.expr(&head.value)?],
                };
                if values.is_empty() {
                    return Err(
                        yaml_err(head.value.span, "`output` of nothing", "empty list")
                            .help("name at least one value, e.g. `output: [logits]`"),
                    );
                }
                Ok(Stmt::Output { values, span })
            }
            "when" => {
                self.check_keys(entries, &["when", "then", "else"], "a `when` statement")?;
                let cond = self.scalar_expr(&head.value, "a condition")?;
                let Some(then) = get(entries, "then") else {
                    return Err(yaml_err(head.key.span, "`when` without `then`", "here")
                        .help("add `then: [...]` with the statements to use when it holds"));
                };
                let then_body = self.body(&then.value)?;
                let else_body = match get(entries, "else") {
                    Some(e) => Some(self.body(&e.value)?),
                    None => None,
                };
                Ok(Stmt::When(WhenStmt {
                    cond,
                    then_body,
                    else_body,
                    span,
                }))
            }
            "let" => {
                self.check_keys(
                    entries,
                    &["let", "value", "shared", "frozen"],
                    "a `let` statement",
                )?;
                let name = self.ident(&head.value, "a name for the value")?;
                let Some(v) = get(entries, "value") else {
                    return Err(yaml_err(head.key.span, "`let` without a `value`", "here")
                        .help("add `value: EXPR`"));
                };
                let value = match &v.value.kind {
                    NodeKind::Map(m) => self.layer_map(m, v.value.span, LayerCtx::LetValue)?.2,
                    _ => self.expr(&v.value)?,
                };
                let flag = |k| get(entries, k).map_or(Ok(false), |e| self.bool(&e.value));
                Ok(Stmt::Let(LetStmt {
                    name,
                    shared: flag("shared")?,
                    frozen: flag("frozen")?,
                    value,
                    span,
                }))
            }
            _ => {
                let (name, frozen, expr) = self.layer_map(entries, span, LayerCtx::Item)?;
                Ok(Stmt::Layer(LayerStmt {
                    name,
                    frozen,
                    expr,
                    span,
                }))
            }
        }
    }

    /// `- NAME: LAYER` (a map with no statement key).
    fn named_layer(&self, entries: &[Entry], span: Span) -> Result<Stmt, Diagnostic> {
        let (free, reserved): (Vec<&Entry>, Vec<&Entry>) = entries
            .iter()
            .partition(|e| !RESERVED.contains(&e.key.name.as_str()));
        match (free.as_slice(), reserved.as_slice()) {
            ([e], []) => {
                let name = self.name(&e.key.name, e.key.span, "a layer name")?;
                let (frozen, expr) = match &e.value.kind {
                    NodeKind::Map(m) => {
                        let (_, frozen, expr) = self.layer_map(m, e.value.span, LayerCtx::Named)?;
                        (frozen, expr)
                    }
                    _ => (false, self.expr(&e.value)?),
                };
                Ok(Stmt::Layer(LayerStmt {
                    name: Some(name),
                    frozen,
                    expr,
                    span,
                }))
            }
            ([], [r, ..]) => {
                let k = r.key.name.as_str();
                let help = match k {
                    "then" | "else" => "`then` and `else` belong to `when: COND`",
                    "shape" | "with" => "`shape` and `with` belong to `input: NAME`",
                    "value" | "shared" => "`value` and `shared` belong to `let: NAME`",
                    "body" => "`body` belongs to `repeat: COUNT`",
                    "shortcut" | "shortcut_when" => "`shortcut` belongs to `residual: [...]`",
                    _ => {
                        "`name` and `frozen` go with `layer: EXPR` (or seq, repeat, residual, concat)"
                    }
                };
                Err(yaml_err(
                    r.key.span,
                    format!("`{k}` is a reserved key and cannot start a statement"),
                    "reserved key",
                )
                .help(format!(
                    "{help}; a statement map has one of `input`, `output`, `when`, `let`, \
                     `layer`, `seq`, `repeat`, `residual`, `concat`, or is `NAME: LAYER`"
                )))
            }
            ([e], [r, ..]) => {
                if let Some(s) = suggest(&e.key.name, HEADS.iter().copied()) {
                    return Err(yaml_err(
                        e.key.span,
                        format!("unknown key `{}` in a statement", e.key.name),
                        "unknown key",
                    )
                    .help(format!("did you mean `{s}`?")));
                }
                Err(yaml_err(
                    r.key.span,
                    format!(
                        "named layer `{}` cannot be combined with `{}` in one map",
                        e.key.name, r.key.name
                    ),
                    "not allowed here",
                )
                .help(format!(
                    "write `- {}: {{layer: ..., {}: ...}}` or `- {{name: {}, layer: ..., ...}}`",
                    e.key.name, r.key.name, e.key.name
                )))
            }
            (free, _) => {
                let second = free.get(1).unwrap_or(&free[0]);
                Err(yaml_err(
                    second.key.span,
                    format!(
                        "several named layers in one list item: `{}` and `{}`",
                        free[0].key.name, second.key.name
                    ),
                    "second layer",
                )
                .help("start each statement with `- ` (one named layer per list item)"))
            }
        }
    }

    /// A map with one of `seq`, `repeat`, `residual`, `concat`, `layer` (plus `name` and
    /// `frozen` where `ctx` allows): returns the name, the frozen flag and the expression.
    fn layer_map(
        &self,
        entries: &[Entry],
        span: Span,
        ctx: LayerCtx,
    ) -> Result<(Option<Ident>, bool, Expr), Diagnostic> {
        let mut layer_keys = entries
            .iter()
            .filter(|e| LAYER_KEYS.contains(&e.key.name.as_str()));
        let Some(head) = layer_keys.next() else {
            let k = entries.first().map(|e| &e.key);
            let kspan = k.map_or(span, |k| k.span);
            let mut d = yaml_err(
                kspan,
                "expected a layer map (`seq`, `repeat`, `residual`, `concat` or `layer`)",
                "no layer key in this map",
            );
            if let Some(s) = k.and_then(|k| suggest(&k.name, LAYER_KEYS.iter().copied())) {
                d = d.help(format!("did you mean `{s}`?"));
            } else {
                d = d.help("write an expression string, or a map such as `{seq: [...]}`");
            }
            return Err(d);
        };
        if let Some(other) = layer_keys.next() {
            return Err(yaml_err(
                other.key.span,
                format!(
                    "a layer map has one layer key, found both `{}` and `{}`",
                    head.key.name, other.key.name
                ),
                "second layer key",
            )
            .help("split them into two statements"));
        }
        let hk = head.key.name.as_str();
        for e in entries {
            match (e.key.name.as_str(), ctx) {
                ("name", LayerCtx::Named) => {
                    return Err(
                        yaml_err(e.key.span, "this layer is already named", "second name")
                            .help("remove `name:`; the key before this map names the layer"),
                    );
                }
                ("name" | "frozen", LayerCtx::LetValue) => {
                    return Err(yaml_err(
                        e.key.span,
                        format!("`{}` is not allowed in a `let` value", e.key.name),
                        "not allowed here",
                    )
                    .help("the `let` names the value; put `frozen: true` on the `let` itself"));
                }
                _ => {}
            }
        }
        let own: &[&str] = match hk {
            "repeat" => &["repeat", "body"],
            "residual" => &["residual", "shortcut", "shortcut_when"],
            _ => &[],
        };
        let mut allowed = vec![hk, "name", "frozen"];
        allowed.extend(own.iter().filter(|k| **k != hk));
        self.check_keys(entries, &allowed, &format!("a `{hk}` layer"))?;

        let name = match get(entries, "name") {
            Some(n) => Some(self.ident(&n.value, "a layer name")?),
            None => None,
        };
        let frozen = match get(entries, "frozen") {
            Some(f) => self.bool(&f.value)?,
            None => false,
        };
        let mk = |kind| Expr { kind, span };
        let expr = match hk {
            "seq" => mk(ExprKind::Seq(self.body(&head.value)?)),
            "concat" => mk(ExprKind::Concat(self.body(&head.value)?)),
            "layer" => self.expr(&head.value)?,
            "repeat" => {
                let count = self.scalar_expr(&head.value, "a repeat count")?;
                let Some(b) = get(entries, "body") else {
                    return Err(yaml_err(head.key.span, "`repeat` without a `body`", "here")
                        .help("add `body: [...]` with the layers to repeat"));
                };
                mk(ExprKind::Repeat {
                    count: Box::new(count),
                    body: self.body(&b.value)?,
                })
            }
            _ => {
                let body = self.body(&head.value)?;
                let sc = get(entries, "shortcut");
                let when = get(entries, "shortcut_when");
                let shortcut = match (sc, when) {
                    (None, Some(w)) => {
                        return Err(yaml_err(
                            w.key.span,
                            "`shortcut_when` without a `shortcut`",
                            "here",
                        )
                        .help("add `shortcut: [...]` with the projection used when it holds"));
                    }
                    (None, None) => None,
                    (Some(s), w) => Some(Box::new(Shortcut {
                        cond: w
                            .map(|w| self.scalar_expr(&w.value, "a condition"))
                            .transpose()?,
                        body: self.body(&s.value)?,
                        span: w.map_or(s.span(), |w| s.span().to(w.span())),
                    })),
                };
                mk(ExprKind::Residual { body, shortcut })
            }
        };
        Ok((name, frozen, expr))
    }

    /// An expression where a YAML list or map is surely a mistake (a count, a condition).
    fn scalar_expr(&self, n: &Node, what: &str) -> Result<Expr, Diagnostic> {
        if let NodeKind::Scalar(_) = n.kind {
            return self.expr(n);
        }
        let help = match what {
            "a repeat count" => "`repeat` takes the count; put the layers under `body:`",
            _ => "write the condition as a string, e.g. `in.channels != c`",
        };
        Err(yaml_err(
            n.span,
            format!("expected {what}, found {}", describe(n)),
            format!("expected {what}"),
        )
        .help(help))
    }

    /// `shape: [1, 28, 28]` (or a string holding a list expression).
    fn shape(&self, n: &Node) -> Result<Vec<Expr>, Diagnostic> {
        if let NodeKind::Seq(items) = &n.kind {
            return items.iter().map(|i| self.expr(i)).collect();
        }
        let e = self.expr(n)?;
        match e.kind {
            ExprKind::List(items) => Ok(items),
            _ => Err(yaml_err(
                n.span,
                format!("expected a shape list, found {}", describe(n)),
                "not a list",
            )
            .help("write the per-sample shape as a list, e.g. `shape: [3, 224, 224]`")),
        }
    }
}

/// Replaces the hint of an expression error in statement position when the string looks like
/// `.net` statement syntax (`x = ...`, `name: ...`).
fn stmt_help(d: Diagnostic, n: &Node) -> Diagnostic {
    let NodeKind::Scalar(s) = &n.kind else {
        return d;
    };
    let v = s.value.trim_start();
    let ident_len = v
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(v.len());
    let after = v[ident_len..].trim_start();
    if ident_len > 0 && after.starts_with('=') && !after.starts_with("==") {
        d.help("to bind a value, write `- {let: NAME, value: EXPR}`")
    } else if ident_len > 0 && after.starts_with(':') {
        d.help("to name a layer, write `- NAME: LAYER` (with a space after the colon)")
    } else {
        d
    }
}
