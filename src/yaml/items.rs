//! The top level, block and model definitions, parameters and `train` sections.

use super::node::{Entry, Node, NodeKind, Scalar, yaml_err};
use super::scalar::describe;
use super::{Cx, Plain, get};
use crate::diag::{Diagnostic, Span, suggest};
use crate::syntax::ast::*;

const TOP_KEYS: &[&str] = &["import", "blocks", "models"];
const BLOCK_KEYS: &[&str] = &["params", "body"];
const MODEL_KEYS: &[&str] = &["params", "body", "train"];
const TYPES: &str = "the types are int, float, bool and str";

impl Cx<'_> {
    pub(super) fn file_items(&self, root: &Node) -> Result<Vec<Item>, Diagnostic> {
        let NodeKind::Map(entries) = &root.kind else {
            return Err(yaml_err(
                root.span,
                format!("expected a map at the top level, found {}", describe(root)),
                "expected `blocks:` or `models:`",
            )
            .help("a YAML spec is a map with the keys `import`, `blocks` and `models`"));
        };
        self.check_keys(entries, TOP_KEYS, "the top level")?;
        if get(entries, "blocks").is_none() && get(entries, "models").is_none() {
            let span = entries.first().map_or(root.span, |e| e.key.span);
            return Err(
                yaml_err(span, "no `blocks:` or `models:` in this YAML spec", "here").help(
                    "define at least one block or model, e.g. `models: {net: {body: [relu]}}`",
                ),
            );
        }
        let mut items = Vec::new();
        for e in entries {
            match e.key.name.as_str() {
                "import" => {
                    let NodeKind::Seq(paths) = &e.value.kind else {
                        return Err(yaml_err(
                            e.value.span,
                            format!("expected a list of paths, found {}", describe(&e.value)),
                            "expected a list",
                        )
                        .help("write `import: [\"other.net\"]`"));
                    };
                    for p in paths {
                        match &p.kind {
                            NodeKind::Scalar(s)
                                if matches!(self.resolve(s, p.span)?, Plain::Str) =>
                            {
                                items.push(Item::Import {
                                    path: s.value.clone(),
                                    span: p.span,
                                })
                            }
                            _ => {
                                return Err(yaml_err(
                                    p.span,
                                    format!("expected a file path, found {}", describe(p)),
                                    "not a path",
                                )
                                .help("quote the path: `\"other.net\"`"));
                            }
                        }
                    }
                }
                kind => {
                    let model = kind == "models";
                    let what = if model {
                        "a map from model names to models"
                    } else {
                        "a map from block names to blocks"
                    };
                    for d in self.map(&e.value, what)? {
                        let def = self.def(d, model)?;
                        items.push(if model {
                            Item::Model(def)
                        } else {
                            Item::Block(def)
                        });
                    }
                }
            }
        }
        Ok(items)
    }

    fn def(&self, e: &Entry, model: bool) -> Result<Def, Diagnostic> {
        let kind = if model { "model" } else { "block" };
        let name = self.name(&e.key.name, e.key.span, &format!("a {kind} name"))?;
        let entries = self.map(&e.value, &format!("a {kind} definition (`params`, `body`)"))?;
        if !model && let Some(t) = get(entries, "train") {
            return Err(yaml_err(
                t.key.span,
                "a `train` section belongs in a model, not in a block",
                "inside a block",
            )
            .help("move it into the model that uses this block"));
        }
        let keys = if model { MODEL_KEYS } else { BLOCK_KEYS };
        self.check_keys(entries, keys, &format!("{kind} `{}`", name.name))?;
        let mut params = Vec::new();
        if let Some(p) = get(entries, "params") {
            for pe in self.map(&p.value, "a map from parameter names to types")? {
                params.push(self.param(pe)?);
            }
        }
        let Some(body) = get(entries, "body") else {
            return Err(yaml_err(
                e.key.span,
                format!("{kind} `{}` has no `body`", name.name),
                "missing `body:`",
            )
            .help("add `body: [...]` with the list of layers"));
        };
        let body = self.body(&body.value)?;
        let train = match get(entries, "train") {
            Some(t) => Some(self.train(t)?),
            None => None,
        };
        Ok(Def {
            name,
            params,
            body,
            train,
            span: e.span(),
        })
    }

    fn param(&self, e: &Entry) -> Result<Param, Diagnostic> {
        let name = self.name(&e.key.name, e.key.span, "a parameter name")?;
        let span = e.span();
        let v = &e.value;
        let (ty, ty_span, default) = match &v.kind {
            NodeKind::Scalar(s) if matches!(self.resolve(s, v.span)?, Plain::Str) => {
                self.type_and_default(s, v.span)?
            }
            NodeKind::Map(entries) => {
                self.check_keys(entries, &["type", "default"], "a parameter")?;
                let Some(t) = get(entries, "type") else {
                    return Err(
                        yaml_err(v.span, "parameter without a `type`", "missing `type:`")
                            .help(TYPES),
                    );
                };
                let (ty, ty_span) = match &t.value.kind {
                    NodeKind::Scalar(s) if matches!(self.resolve(s, t.value.span)?, Plain::Str) => {
                        let ty_span = self.text_span(s, t.value.span, 0, s.value.len());
                        (self.type_name(s.value.trim(), ty_span)?, ty_span)
                    }
                    _ => {
                        return Err(yaml_err(
                            t.value.span,
                            format!("expected a type, found {}", describe(&t.value)),
                            "not a type",
                        )
                        .help(TYPES));
                    }
                };
                let default = match get(entries, "default") {
                    Some(d) => Some(self.expr(&d.value)?),
                    None => None,
                };
                (ty, ty_span, default)
            }
            _ => {
                return Err(yaml_err(
                    v.span,
                    format!(
                        "expected a parameter type such as `int` or `\"int = 1\"`, found {}",
                        describe(v)
                    ),
                    "not a type",
                )
                .help(format!(
                    "write `{0}: \"int = 1\"` or `{0}: {{type: int, default: 1}}`",
                    name.name
                )));
            }
        };
        Ok(Param {
            name,
            ty,
            ty_span,
            default,
            span,
        })
    }

    /// `"TYPE"` or `"TYPE = DEFAULT"`.
    fn type_and_default(
        &self,
        s: &Scalar,
        span: Span,
    ) -> Result<(TypeName, Span, Option<Expr>), Diagnostic> {
        let (ty_text, rest) = match s.value.find('=') {
            Some(i) => (&s.value[..i], Some(i + 1)),
            None => (s.value.as_str(), None),
        };
        let lead = ty_text.len() - ty_text.trim_start().len();
        let ty_name = ty_text.trim();
        let ty_span = self.text_span(s, span, lead, lead + ty_name.len());
        let ty = self.type_name(ty_name, ty_span)?;
        let default = match rest {
            Some(i) => {
                let sub = Scalar {
                    value: s.value[i..].to_string(),
                    style: s.style,
                    content_start: s.content_start + i,
                    exact: s.exact,
                    before_comma: s.before_comma,
                };
                Some(self.parse_str(&sub, span)?)
            }
            None => None,
        };
        Ok((ty, ty_span, default))
    }

    /// The span of bytes `a..b` of a scalar's value (the whole scalar if not exact).
    fn text_span(&self, s: &Scalar, span: Span, a: usize, b: usize) -> Span {
        if s.exact {
            Span::new(self.file, s.content_start + a, s.content_start + b)
        } else {
            span
        }
    }

    fn type_name(&self, t: &str, span: Span) -> Result<TypeName, Diagnostic> {
        TypeName::from_name(t).ok_or_else(|| {
            let help = match suggest(t, ["int", "float", "bool", "str"]) {
                Some(h) => format!("did you mean `{h}`? {TYPES}"),
                None => TYPES.to_string(),
            };
            yaml_err(span, format!("unknown type `{t}`"), "not a type").help(help)
        })
    }

    fn train(&self, t: &Entry) -> Result<TrainSection, Diagnostic> {
        let mut entries = Vec::new();
        for e in self.map(&t.value, "a map of training settings (`key: value`)")? {
            let key = self.name(&e.key.name, e.key.span, "a setting name")?;
            let strings = matches!(key.name.as_str(), "data" | "freeze");
            entries.push(TrainEntry {
                value: self.train_value(&e.value, strings)?,
                key,
                span: e.span(),
            });
        }
        Ok(TrainSection {
            entries,
            span: t.span(),
        })
    }

    /// A training value: like [`Cx::expr`], but strings that are not expressions (and, for
    /// `data` and `freeze`, all strings that are not string literals) are string literals.
    fn train_value(&self, n: &Node, strings: bool) -> Result<Expr, Diagnostic> {
        match &n.kind {
            NodeKind::Scalar(s) if matches!(self.resolve(s, n.span)?, Plain::Str) => {
                let str_lit = || Expr {
                    kind: ExprKind::Str(s.value.clone()),
                    span: n.span,
                };
                Ok(match self.parse_str(s, n.span) {
                    Ok(e) if !strings || matches!(e.kind, ExprKind::Str(_)) => e,
                    _ => str_lit(),
                })
            }
            NodeKind::Seq(items) => Ok(Expr {
                kind: ExprKind::List(
                    items
                        .iter()
                        .map(|i| self.train_value(i, strings))
                        .collect::<Result<_, _>>()?,
                ),
                span: n.span,
            }),
            _ => self.expr(n),
        }
    }
}
