//! The `loss:` setting of a `train { }` section: an expression → an [`Objective`].
//!
//! In: the expression after `loss:` and the model's outputs (already elaborated). Out: the
//! weighted terms, every output they name checked to exist. The grammar is the spec's
//! expression grammar read as a sum of terms:
//!
//! - `cross_entropy`, `mse(output=box)`, `triplet(outputs=[a, p, n], margin=0.2)`: a loss, on
//!   the named outputs or (none named) on the model's outputs in order;
//! - `w * term` or `term * w` with `w` a number (an expression of the model's parameters);
//! - `a + b`: the sum;
//! - a bare output name, `loss`: an output that already is a loss (its batch mean is used);
//! - `mse(output=box, mask=object)`: a per-sample loss (cross-entropy, MSE, L1, binary
//!   cross-entropy) counted only on the samples whose 0/1 value `object` is 1;
//! - `yolo(output=grid, anchors=[[w, h], ...], coord=5, noobj=0.5)`: the YOLO loss on a grid
//!   head (anchors in pixels of the input; also flat, `anchors=[w1, h1, w2, h2]`; `classes=C`
//!   optional, else read off the head's channels).

use super::layers::bind_args;
use super::value::{Value, as_f64};
use super::{Elab, R, Scope};
use crate::diag::{Diagnostic, Span, codes, suggest};
use crate::syntax::ast::{Arg, BinOp, Expr, ExprKind, Ident};
use crate::train_config::{Loss, Objective, Term, Yolo};

/// The loss names a term can use.
pub const LOSSES: &[&str] = &[
    "cross_entropy",
    "mse",
    "l1",
    "bce_with_logits",
    "triplet",
    "contrastive",
    "style",
    "content",
    "yolo",
];

fn err(span: Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(codes::TRAIN, msg).at(span, "here")
}

impl Elab<'_> {
    pub(super) fn objective(&mut self, v: &Expr, scope: &Scope) -> R<Objective> {
        let mut terms = Vec::new();
        self.terms(v, scope, 1.0, &mut terms)?;
        Ok(Objective { terms })
    }

    fn terms(&mut self, v: &Expr, scope: &Scope, weight: f64, out: &mut Vec<Term>) -> R<()> {
        match &v.kind {
            ExprKind::Binary(BinOp::Add, a, b) => {
                self.terms(a, scope, weight, out)?;
                self.terms(b, scope, weight, out)
            }
            ExprKind::Binary(BinOp::Mul, a, b) => {
                // The side that is a term holds a loss name; the other is the weight.
                let (w, t) = if self.is_term(a) && !self.is_term(b) {
                    (b, a)
                } else {
                    (a, b)
                };
                let w = self.eval_f64(w, scope)?;
                if !w.is_finite() || w < 0.0 {
                    return Err(err(
                        v.span,
                        format!("a loss weight must be a number ≥ 0, found {w}"),
                    )
                    .help("write e.g. `cross_entropy(output=cls) + 5 * mse(output=box)`"));
                }
                self.terms(t, scope, weight * w, out)
            }
            ExprKind::Ident(_) | ExprKind::Call { .. } => {
                out.push(self.term(v, scope, weight)?);
                Ok(())
            }
            _ => Err(err(
                v.span,
                "expected a loss, a weighted loss or a sum of losses",
            )
            .help("e.g. `loss: cross_entropy(output=cls) + 5 * mse(output=box)`")),
        }
    }

    fn term(&mut self, v: &Expr, scope: &Scope, weight: f64) -> R<Term> {
        let (name, args): (Ident, &[Arg]) = match &v.kind {
            ExprKind::Ident(n) => (
                Ident {
                    name: n.clone(),
                    span: v.span,
                },
                &[],
            ),
            ExprKind::Call { callee, args } => (callee.clone(), args.as_slice()),
            _ => unreachable!("checked by the caller"),
        };
        if !LOSSES.contains(&name.name.as_str()) {
            // A bare output name: an output that is a loss already.
            if args.is_empty() && self.g.outputs.iter().any(|(o, _)| *o == name.name) {
                return Ok(Term {
                    weight,
                    loss: Loss::Value,
                    outputs: vec![name.name],
                    mask: None,
                });
            }
            let outputs: Vec<&str> = self.g.outputs.iter().map(|(o, _)| o.as_str()).collect();
            let hint = suggest(&name.name, LOSSES.iter().copied().chain(outputs.clone()));
            return Err(Diagnostic::error(
                codes::TRAIN,
                format!(
                    "`{}` is neither a loss nor an output of the model",
                    name.name
                ),
            )
            .at(name.span, "unknown loss")
            .help(match hint {
                Some(h) => format!(
                    "did you mean `{h}`? losses: {}; outputs: {}",
                    LOSSES.join(", "),
                    outputs.join(", ")
                ),
                None => format!(
                    "losses: {}; outputs: {}",
                    LOSSES.join(", "),
                    outputs.join(", ")
                ),
            }));
        }
        let own: &[&str] = match name.name.as_str() {
            "cross_entropy" => &["label_smoothing"],
            "triplet" | "contrastive" => &["margin"],
            "yolo" => &["anchors", "classes", "coord", "noobj"],
            _ => &[],
        };
        // `output`/`outputs` only by name: positional arguments are the loss's own.
        let positional: Vec<Arg> = args.iter().filter(|a| a.name.is_none()).cloned().collect();
        let named: Vec<&Arg> = args.iter().filter(|a| a.name.is_some()).collect();
        let mut outputs_arg = None;
        let mut mask_arg: Option<(&Expr, Span)> = None;
        let mut rest: Vec<Arg> = positional;
        for a in named {
            let n = a.name.as_ref().expect("named");
            match n.name.as_str() {
                "mask" => {
                    if let Some((_, prev)) = &mask_arg {
                        return Err(Diagnostic::error(
                            codes::DUPLICATE,
                            "the mask of a loss is given twice",
                        )
                        .at(n.span, "second time")
                        .also(*prev, "first time"));
                    }
                    mask_arg = Some((&a.value, n.span));
                }
                "output" | "outputs" => {
                    if let Some((_, prev)) = &outputs_arg {
                        return Err(Diagnostic::error(
                            codes::DUPLICATE,
                            "the outputs of a loss are given twice",
                        )
                        .at(n.span, "second time")
                        .also(*prev, "first time"));
                    }
                    outputs_arg = Some((&a.value, n.span));
                }
                _ => rest.push(a.clone()),
            }
        }
        let s = bind_args(&name, &rest, own, v.span, "loss")?;
        let f = |e: &mut Self, i: usize, d: f64| -> R<f64> {
            match s.get(i).copied().flatten() {
                Some(a) => e.eval_f64(&a.value, scope),
                None => Ok(d),
            }
        };
        let loss = match name.name.as_str() {
            "cross_entropy" => {
                let ls = f(self, 0, 0.0)?;
                if !(0.0..1.0).contains(&ls) {
                    return Err(err(
                        v.span,
                        format!("label_smoothing must be in [0, 1), found {ls}"),
                    ));
                }
                Loss::CrossEntropy {
                    label_smoothing: ls,
                }
            }
            "triplet" | "contrastive" => {
                let m = f(self, 0, 1.0)?;
                if !m.is_finite() || m < 0.0 {
                    return Err(err(
                        v.span,
                        format!("margin must be a number ≥ 0, found {m}"),
                    ));
                }
                if name.name == "triplet" {
                    Loss::Triplet { margin: m }
                } else {
                    Loss::Contrastive { margin: m }
                }
            }
            "mse" => Loss::Mse,
            "l1" => Loss::L1,
            "bce_with_logits" => Loss::BceWithLogits,
            "style" => Loss::Style,
            "content" => Loss::Content,
            _ => Loss::Yolo(Yolo {
                anchors: vec![],
                classes: 0,
                coord: 0.0,
                noobj: 0.0,
            }),
        };
        let outputs = match outputs_arg {
            None => vec![],
            Some((e, _)) => self.output_names(e)?,
        };
        let loss = match loss {
            Loss::Yolo(_) => {
                let out = outputs
                    .first()
                    .cloned()
                    .or_else(|| self.g.outputs.first().map(|(o, _)| o.clone()))
                    .unwrap_or_default();
                let weight = |e: &mut Self, i: usize, d: f64, what: &str| -> R<f64> {
                    let w = f(e, i, d)?;
                    if !w.is_finite() || w < 0.0 {
                        let span = s[i].map_or(v.span, |a| a.value.span);
                        return Err(err(span, format!("{what} must be a number ≥ 0, found {w}")));
                    }
                    Ok(w)
                };
                let coord = weight(self, 2, 5.0, "coord")?;
                let noobj = weight(self, 3, 0.5, "noobj")?;
                let anchors = self.anchors(s[0], v.span, scope)?;
                let classes = match s[1] {
                    None => None,
                    Some(a) => match self.eval_int(&a.value, scope)? {
                        c if c >= 1 => Some(c as usize),
                        c => {
                            return Err(err(
                                a.value.span,
                                format!("classes must be at least 1, found {c}"),
                            ));
                        }
                    },
                };
                let classes = self.yolo_classes(&out, anchors.len(), classes, v.span)?;
                Loss::Yolo(Yolo {
                    anchors,
                    classes,
                    coord,
                    noobj,
                })
            }
            l => l,
        };
        let mask = match mask_arg {
            None => None,
            Some((e, span)) => {
                if !Term::per_sample(&loss) {
                    return Err(
                        err(span, format!("the `{}` loss takes no mask", name.name)).help(
                            "a mask selects samples of a per-sample loss: cross_entropy, mse, l1, \
                         bce_with_logits (e.g. `mse(output=box, mask=object)`)",
                        ),
                    );
                }
                match &e.kind {
                    ExprKind::Ident(n) | ExprKind::Str(n) if !n.is_empty() => Some(n.clone()),
                    _ => {
                        return Err(err(
                            e.span,
                            "expected the name of per-sample 0/1 values in the data",
                        )
                        .help(
                            "e.g. `mask=object` (detection data derive `object` from their boxes)",
                        ));
                    }
                }
            }
        };
        let want = match loss {
            Loss::Triplet { .. } => 3,
            Loss::Contrastive { .. } => 2,
            _ => 1,
        };
        if !outputs.is_empty() && outputs.len() != want {
            let (_, span) = outputs_arg.expect("outputs given");
            return Err(Diagnostic::error(
                codes::TRAIN,
                format!(
                    "the `{}` loss reads {want} output{}, {} given",
                    name.name,
                    if want == 1 { "" } else { "s" },
                    outputs.len()
                ),
            )
            .at(span, "here")
            .help(match want {
                3 => "name the anchor, positive and negative embeddings: `outputs=[a, p, n]`",
                2 => "name the two embeddings of a pair: `outputs=[e1, e2]`",
                _ => "name one output: `output=NAME`",
            }));
        }
        Ok(Term {
            weight,
            loss,
            outputs,
            mask,
        })
    }

    /// The anchors of a `yolo` term: `[[w, h], ...]` or `[w1, h1, w2, h2, ...]`, each a
    /// positive number (pixels of the model's input).
    fn anchors(&mut self, arg: Option<&Arg>, call: Span, scope: &Scope) -> R<Vec<[f64; 2]>> {
        let help = "e.g. `anchors=[[12, 16], [30, 28], [56, 60]]` (width and height in pixels \
                    of the model's input; `netc anchors` computes them from a dataset's boxes)";
        let Some(arg) = arg else {
            return Err(err(call, "the `yolo` loss needs its anchor boxes").help(help));
        };
        let span = arg.value.span;
        let Value::List(items) = self.eval(&arg.value, scope)? else {
            return Err(err(span, "expected a list of anchor boxes").help(help));
        };
        let mut flat = Vec::new();
        let nested = items.iter().all(|i| matches!(i, Value::List(_)));
        for (k, it) in items.iter().enumerate() {
            match it {
                Value::List(pair) if nested => {
                    if pair.len() != 2 {
                        return Err(err(
                            span,
                            format!(
                                "anchor {k} has {} values; an anchor is a pair [width, height]",
                                pair.len()
                            ),
                        )
                        .help(help));
                    }
                    flat.extend(pair.iter().cloned());
                }
                v => flat.push(v.clone()),
            }
        }
        let mut nums = Vec::new();
        for v in &flat {
            match as_f64(v) {
                Some(x) if x.is_finite() && x > 0.0 => nums.push(x),
                Some(x) => {
                    return Err(err(
                        span,
                        format!("anchor sizes must be positive numbers, found {x}"),
                    )
                    .help(help));
                }
                None => {
                    return Err(err(
                        span,
                        format!("anchor sizes are numbers, found a {}", v.type_name()),
                    )
                    .help(help));
                }
            }
        }
        if nums.is_empty() || !nums.len().is_multiple_of(2) {
            return Err(err(
                span,
                format!(
                    "anchors come in pairs (width, height); {} number{} given",
                    nums.len(),
                    if nums.len() == 1 { " is" } else { "s are" }
                ),
            )
            .help(help));
        }
        Ok(nums.chunks(2).map(|p| [p[0], p[1]]).collect())
    }

    /// The number of classes of a `yolo` term on the output `out`, checked against its shape:
    /// a grid head `[A·(5 + C), S_h, S_w]` (see `detect`).
    fn yolo_classes(
        &self,
        out: &str,
        anchors: usize,
        classes: Option<usize>,
        span: Span,
    ) -> R<usize> {
        let Some(&(_, node)) = self.g.outputs.iter().find(|(o, _)| o == out) else {
            return Err(err(
                span,
                "the `yolo` loss needs a model output (the grid head)",
            ));
        };
        let shape = self.g.nodes[node].shape.clone();
        let shown = crate::layer_graph::show_shape(&shape);
        let &[ch, _, _] = shape.as_slice() else {
            return Err(err(
                span,
                format!(
                    "the `yolo` loss reads a grid head [A·(5+C), S, S]; the output `{out}` is \
                     {shown}"
                ),
            )
            .help("end the head with a 1×1 convolution: `conv(A * (5 + C), 1)`"));
        };
        let fix = |c: usize| {
            format!(
                "with {anchors} anchor{} and {c} class{}, make the head's last layer \
                 `conv({}, 1)` ({anchors}·(5+{c}))",
                if anchors == 1 { "" } else { "s" },
                if c == 1 { "" } else { "es" },
                anchors * (5 + c)
            )
        };
        match classes {
            Some(c) if ch != anchors * (5 + c) => Err(err(
                span,
                format!(
                    "the `yolo` loss with {anchors} anchors and {c} classes reads \
                     {anchors}·(5+{c}) = {} channels; the output `{out}` has {ch} ({shown})",
                    anchors * (5 + c)
                ),
            )
            .help(fix(c))),
            Some(c) => Ok(c),
            None if !ch.is_multiple_of(anchors) || ch / anchors < 6 => Err(err(
                span,
                format!(
                    "the `yolo` loss with {anchors} anchors reads A·(5+C) channels (a multiple \
                     of {anchors}, at least {}); the output `{out}` has {ch} ({shown})",
                    anchors * 6
                ),
            )
            .help(fix((ch / anchors).saturating_sub(5).max(1)))),
            None => Ok(ch / anchors - 5),
        }
    }

    /// Whether `e` is a loss term (a loss or an output's name, a call), not a weight.
    fn is_term(&self, e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Call { callee, .. } => LOSSES.contains(&callee.name.as_str()),
            ExprKind::Ident(n) => {
                LOSSES.contains(&n.as_str()) || self.g.outputs.iter().any(|(o, _)| o == n)
            }
            ExprKind::Binary(BinOp::Add | BinOp::Mul, a, b) => self.is_term(a) || self.is_term(b),
            _ => false,
        }
    }

    /// `cls`, `"cls"` or `[a, p, n]`: names of model outputs, each checked to exist.
    fn output_names(&mut self, e: &Expr) -> R<Vec<String>> {
        let items: Vec<&Expr> = match &e.kind {
            ExprKind::List(items) => items.iter().collect(),
            _ => vec![e],
        };
        let mut names = Vec::new();
        for it in items {
            let name = match &it.kind {
                ExprKind::Ident(n) | ExprKind::Str(n) => n.clone(),
                _ => {
                    return Err(err(it.span, "expected the name of a model output")
                        .help("e.g. `output=cls` or `outputs=[a, p, n]`"));
                }
            };
            if !self.g.outputs.iter().any(|(o, _)| *o == name) {
                let outputs: Vec<&str> = self.g.outputs.iter().map(|(o, _)| o.as_str()).collect();
                let hint = suggest(&name, outputs.iter().copied());
                return Err(Diagnostic::error(
                    codes::TRAIN,
                    format!("the model has no output `{name}`"),
                )
                .at(it.span, "not an output")
                .help(match hint {
                    Some(h) => format!("did you mean `{h}`? outputs: {}", outputs.join(", ")),
                    None => format!(
                        "outputs: {} (name a value with `output NAME`)",
                        outputs.join(", ")
                    ),
                }));
            }
            names.push(name);
        }
        Ok(names)
    }
}
