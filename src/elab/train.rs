//! The `train { }` section: AST entries → [`TrainConfig`].
//!
//! In: the section's `key: value` entries. Out: typed settings with PyTorch's defaults filled
//! in, and freeze selectors checked against the model's parameters.

use super::layers::bind_args;
use super::value::Value;
use super::{Elab, R, Scope};
use crate::diag::{Diagnostic, Span, codes, suggest};
use crate::layer_graph::LayerGraph;
use crate::syntax::ast::{Arg, Expr, ExprKind, Ident, TrainSection};
use crate::train_config::{Optimizer, Schedule, TrainConfig};

const KEYS: &[&str] = &[
    "loss",
    "optimizer",
    "schedule",
    "batch",
    "epochs",
    "data",
    "augment",
    "freeze",
    "seed",
];

fn train_err(span: Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(codes::TRAIN, msg).at(span, "here")
}

/// Splits `name` or `name(args)` into its parts.
fn callish(e: &Expr) -> Option<(Ident, &[Arg])> {
    match &e.kind {
        ExprKind::Ident(n) => Some((
            Ident {
                name: n.clone(),
                span: e.span,
            },
            &[],
        )),
        ExprKind::Call { callee, args } => Some((callee.clone(), args.as_slice())),
        _ => None,
    }
}

fn unknown_choice(what: &str, got: &Ident, choices: &[&str]) -> Diagnostic {
    let hint = suggest(&got.name, choices.iter().copied());
    Diagnostic::error(codes::TRAIN, format!("unknown {what} `{}`", got.name))
        .at(got.span, format!("not a known {what}"))
        .help(match hint {
            Some(h) => format!("did you mean `{h}`? choices: {}", choices.join(", ")),
            None => format!("choices: {}", choices.join(", ")),
        })
}

impl Elab<'_> {
    pub(super) fn train_section(&mut self, t: &TrainSection, scope: &Scope) -> R<TrainConfig> {
        let mut cfg = TrainConfig::default();
        let mut seen: Vec<(&str, Span)> = Vec::new();
        for e in &t.entries {
            let key = e.key.name.as_str();
            if !KEYS.contains(&key) {
                let hint = suggest(key, KEYS.iter().copied());
                return Err(Diagnostic::error(
                    codes::TRAIN,
                    format!("unknown training setting `{key}`"),
                )
                .at(e.key.span, "unknown setting")
                .help(match hint {
                    Some(h) => format!("did you mean `{h}`? settings: {}", KEYS.join(", ")),
                    None => format!("settings: {}", KEYS.join(", ")),
                }));
            }
            if let Some((_, prev)) = seen.iter().find(|(k, _)| *k == key) {
                return Err(
                    Diagnostic::error(codes::DUPLICATE, format!("`{key}` is set twice"))
                        .at(e.key.span, "second time")
                        .also(*prev, "first time"),
                );
            }
            seen.push((key, e.key.span));
            let v = &e.value;
            match key {
                "loss" => cfg.loss = Some(self.objective(v, scope)?),
                "optimizer" => cfg.optimizer = Some(self.optimizer(v, scope)?),
                "schedule" => cfg.schedule = Some(self.schedule(v, scope)?),
                "batch" => cfg.batch = Some(self.size(v, scope, "the batch size")?),
                "epochs" => cfg.epochs = Some(self.size(v, scope, "the number of epochs")?),
                "seed" => {
                    let s = self.eval_int(v, scope)?;
                    if s < 0 {
                        return Err(train_err(v.span, "the seed must not be negative"));
                    }
                    cfg.seed = Some(s as u64);
                }
                "data" => match self.eval(v, scope)? {
                    Value::Str(s) if !s.is_empty() => cfg.data = Some(s),
                    _ => {
                        return Err(train_err(
                            v.span,
                            "`data` is a string: a dataset name or a path",
                        )
                        .help("e.g. `data: \"fashion-mnist\"` or `data: \"data/train.npz\"`"));
                    }
                },
                "augment" => {
                    let shape = self.g.inputs.first().map(|i| i.shape.clone());
                    cfg.augment = self.augment_list(v, scope, shape.as_deref())?;
                }
                "freeze" => {
                    let items: Vec<&Expr> = match &v.kind {
                        ExprKind::List(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    for it in items {
                        let Value::Str(sel) = self.eval(it, scope)? else {
                            return Err(train_err(it.span, "freeze selectors are strings")
                                .help("e.g. `freeze: [\"conv1\", \"layer1\", \"features.0..7\", \"..2\"]`"));
                        };
                        if let Err(msg) = select(&self.g, &sel) {
                            return Err(Diagnostic::error(codes::TRAIN, msg.0)
                                .at(it.span, "matches nothing")
                                .with_help(msg.1));
                        }
                        cfg.freeze.push(sel);
                    }
                }
                _ => unreachable!(),
            }
        }
        Ok(cfg)
    }

    fn optimizer(&mut self, v: &Expr, scope: &Scope) -> R<Optimizer> {
        const CHOICES: &[&str] = &["sgd", "adam", "adamw"];
        let Some((name, args)) = callish(v) else {
            return Err(train_err(
                v.span,
                "expected an optimizer such as `sgd(lr=0.01, momentum=0.9)`",
            ));
        };
        let names: &[&str] = match name.name.as_str() {
            "sgd" => &["lr", "momentum", "dampening", "nesterov", "weight_decay"],
            "adam" | "adamw" => &["lr", "betas", "eps", "weight_decay"],
            _ => return Err(unknown_choice("optimizer", &name, CHOICES)),
        };
        let s = bind_args(&name, args, names, v.span, "optimizer")?;
        let get = |i: usize| s.get(i).copied().flatten();
        let num = |e: &mut Self, i: usize, d: f64| -> R<f64> {
            let x = match get(i) {
                Some(a) => e.eval_f64(&a.value, scope)?,
                None => d,
            };
            if x < 0.0 {
                return Err(train_err(
                    get(i).map(|a| a.span).unwrap_or(v.span),
                    format!("`{}` must not be negative", names[i]),
                ));
            }
            Ok(x)
        };
        Ok(match name.name.as_str() {
            "sgd" => {
                let lr = num(self, 0, 0.01)?;
                let momentum = num(self, 1, 0.0)?;
                let dampening = num(self, 2, 0.0)?;
                let nesterov = match get(3) {
                    Some(a) => self.eval_bool(&a.value, scope)?,
                    None => false,
                };
                let weight_decay = num(self, 4, 0.0)?;
                if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                    return Err(train_err(
                        v.span,
                        "nesterov momentum needs momentum > 0 and dampening = 0 (as in PyTorch)",
                    ));
                }
                Optimizer::Sgd {
                    lr,
                    momentum,
                    dampening,
                    nesterov,
                    weight_decay,
                }
            }
            kind => {
                let lr = num(self, 0, 0.001)?;
                let betas = match get(1) {
                    None => [0.9, 0.999],
                    Some(a) => match self.eval(&a.value, scope)? {
                        Value::List(l) if l.len() == 2 => {
                            let b0 = super::value::as_f64(&l[0]);
                            let b1 = super::value::as_f64(&l[1]);
                            match (b0, b1) {
                                (Some(x), Some(y))
                                    if (0.0..1.0).contains(&x) && (0.0..1.0).contains(&y) =>
                                {
                                    [x, y]
                                }
                                _ => {
                                    return Err(train_err(
                                        a.value.span,
                                        "betas are two numbers in [0, 1)",
                                    ));
                                }
                            }
                        }
                        _ => {
                            return Err(train_err(
                                a.value.span,
                                "betas are a list of two numbers, e.g. [0.9, 0.999]",
                            ));
                        }
                    },
                };
                let eps = num(self, 2, 1e-8)?;
                let wd_default = if kind == "adamw" { 0.01 } else { 0.0 };
                let weight_decay = num(self, 3, wd_default)?;
                if kind == "adam" {
                    Optimizer::Adam {
                        lr,
                        betas,
                        eps,
                        weight_decay,
                    }
                } else {
                    Optimizer::AdamW {
                        lr,
                        betas,
                        eps,
                        weight_decay,
                    }
                }
            }
        })
    }

    fn schedule(&mut self, v: &Expr, scope: &Scope) -> R<Schedule> {
        const CHOICES: &[&str] = &["constant", "step", "cosine"];
        let Some((name, args)) = callish(v) else {
            return Err(train_err(
                v.span,
                "expected a schedule such as `cosine(warmup=1)`",
            ));
        };
        let names: &[&str] = match name.name.as_str() {
            "constant" => &["warmup"],
            "step" => &["step_size", "gamma", "warmup"],
            "cosine" => &["min_lr", "warmup"],
            _ => return Err(unknown_choice("schedule", &name, CHOICES)),
        };
        let s = bind_args(&name, args, names, v.span, "schedule")?;
        let get = |n: &str| names.iter().position(|x| *x == n).and_then(|i| s[i]);
        let warmup = match get("warmup") {
            Some(a) => {
                let w = self.eval_int(&a.value, scope)?;
                if w < 0 {
                    return Err(train_err(a.value.span, "warmup must not be negative"));
                }
                w as usize
            }
            None => 0,
        };
        Ok(match name.name.as_str() {
            "constant" => Schedule::Constant { warmup },
            "step" => {
                let Some(ss) = get("step_size") else {
                    return Err(train_err(
                        v.span,
                        "`step` needs `step_size` (epochs between decays)",
                    )
                    .help("e.g. `step(step_size=10, gamma=0.1)`"));
                };
                let step_size = self.size(&ss.value, scope, "step_size")?;
                let gamma = match get("gamma") {
                    Some(a) => self.eval_f64(&a.value, scope)?,
                    None => 0.1,
                };
                Schedule::Step {
                    step_size,
                    gamma,
                    warmup,
                }
            }
            _ => {
                let min_lr = match get("min_lr") {
                    Some(a) => self.eval_f64(&a.value, scope)?,
                    None => 0.0,
                };
                Schedule::Cosine { min_lr, warmup }
            }
        })
    }
}

/// The layers `..N` counts and `netc summary` numbers (1, 2, ...): the top-level modules
/// that have parameters (the first part of the parameter paths: `conv1`, `bn1`, `layer1`, ...,
/// `fc` on ResNet-18), in parameter order.
pub fn numbered_layers(g: &LayerGraph) -> Vec<&str> {
    let mut tops: Vec<&str> = Vec::new();
    for p in &g.params {
        let top = p.path.split('.').next().unwrap_or("");
        if !tops.contains(&top) {
            tops.push(top);
        }
    }
    tops
}

/// The parameter indices a freeze selector picks:
/// - `PATH`: the module at PATH and everything inside it (`conv1`, `layer1`, `features.0`);
/// - `PATH.A..B`: children A to B-1 of PATH (`features.0..7`);
/// - `..N`: the first N layers as `netc summary` numbers them ([`numbered_layers`]: the
///   top-level modules that have parameters; `..2` on LeNet-5: conv1, conv2; `..6` on
///   ResNet-18: everything but `fc`).
///
/// Errors carry a message and an optional help line.
pub fn select(g: &LayerGraph, sel: &str) -> Result<Vec<usize>, (String, Option<String>)> {
    let sel = sel.trim();
    let under = |p: &str, m: &str| p == m || p.starts_with(&format!("{m}."));
    let mut picked = Vec::new();
    if let Some((base, range)) = sel.rsplit_once("..") {
        let (parent, start) = match base.rsplit_once('.') {
            Some((p, s)) => (p, s),
            None => ("", base),
        };
        let start: usize = if start.is_empty() {
            0
        } else {
            start.parse().map_err(|_| {
                (
                    format!("bad range `{sel}`"),
                    Some("ranges look like `features.0..7` or `..2`".to_string()),
                )
            })?
        };
        let end: usize = range.parse().map_err(|_| {
            (
                format!("bad range `{sel}`"),
                Some("ranges look like `features.0..7` or `..2`".to_string()),
            )
        })?;
        if start >= end {
            return Err((
                format!("empty range `{sel}`"),
                Some("the end is exclusive: `0..3` is 0, 1, 2".into()),
            ));
        }
        if parent.is_empty() && base.is_empty() {
            // The first N layers as `summary` numbers them.
            let tops = numbered_layers(g);
            if end > tops.len() {
                return Err((
                    format!(
                        "`{sel}` asks for {end} layers, but model `{}` has {} (numbered 1 to {} \
                         in `netc summary`)",
                        g.name,
                        tops.len(),
                        tops.len()
                    ),
                    Some(format!(
                        "`..{}` freezes every layer but the last ({})",
                        tops.len().saturating_sub(1),
                        tops.last().copied().unwrap_or("")
                    )),
                ));
            }
            let chosen: Vec<&str> = tops.iter().skip(start).take(end - start).copied().collect();
            for (i, p) in g.params.iter().enumerate() {
                if chosen.iter().any(|c| under(&p.path, c)) {
                    picked.push(i);
                }
            }
        } else {
            for (i, p) in g.params.iter().enumerate() {
                let rest = if parent.is_empty() {
                    Some(p.path.as_str())
                } else {
                    p.path.strip_prefix(&format!("{parent}."))
                };
                if let Some(rest) = rest
                    && let Some(child) = rest.split('.').next()
                    && let Ok(k) = child.parse::<usize>()
                    && (start..end).contains(&k)
                {
                    picked.push(i);
                }
            }
        }
    } else {
        for (i, p) in g.params.iter().enumerate() {
            if under(&p.path, sel) {
                picked.push(i);
            }
        }
    }
    if picked.is_empty() {
        let modules = g.module_paths();
        let hint = suggest(sel, modules.iter().map(String::as_str));
        return Err((
            format!("freeze selector `{sel}` matches no parameter"),
            Some(match hint {
                Some(h) => format!("did you mean `{h}`?"),
                None => "selectors are module paths (`conv1`, `layer1.0`), child ranges (`features.0..7`) or `..N` for the first N layers".into(),
            }),
        ));
    }
    Ok(picked)
}
