//! Built-in layers: argument binding, shape inference and parameters.
//!
//! In: a call such as `conv(64, 3, stride=2, pad=1)` and its input tensor. Out: a layer node
//! with its output shape and its parameters (PyTorch's names and layouts: conv weights are
//! `[out, in/groups, kh, kw]`, dense weights `[out, in]`, batchnorm has `weight`, `bias`,
//! `running_mean`, `running_var`, `num_batches_tracked`).

use super::value::{Value, as_f64, show_shape};
use super::{Elab, Naming, R, Scope};
use crate::diag::{Diagnostic, Span, codes, suggest};
use crate::layer_graph::{NodeId, Op, ParamKind};
use crate::syntax::ast::{Arg, ExprKind, Ident};

/// Every built-in layer and tensor operation, for lookups and suggestions.
pub const BUILTINS: &[&str] = &[
    "conv",
    "maxpool",
    "avgpool",
    "global_avgpool",
    "adaptive_avgpool",
    "dense",
    "flatten",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "abs",
    "softmax",
    "batchnorm",
    "lrn",
    "dropout",
    "l2_normalize",
    "gram",
    "identity",
    "add",
    "sub",
    "mul",
    "concat",
    "triplet_loss",
];

pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

/// Matches positional and named arguments to parameter slots, in order.
pub fn bind_args<'e>(
    callee: &Ident,
    args: &'e [Arg],
    names: &[&str],
    span: Span,
    what: &str,
) -> R<Vec<Option<&'e Arg>>> {
    let mut slots: Vec<Option<&Arg>> = vec![None; names.len()];
    let mut next = 0;
    for a in args {
        match &a.name {
            None => {
                if next >= names.len() {
                    let list = if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    };
                    return Err(Diagnostic::error(
                        codes::BAD_ARG,
                        format!(
                            "too many arguments to {what} `{}`: it takes {} ({list})",
                            callee.name,
                            names.len()
                        ),
                    )
                    .at(a.span, "extra argument")
                    .also(span, "in this call"));
                }
                if slots[next].is_some() {
                    return Err(Diagnostic::error(
                        codes::BAD_ARG,
                        format!("argument `{}` given twice", names[next]),
                    )
                    .at(a.span, "again"));
                }
                slots[next] = Some(a);
                next += 1;
            }
            Some(n) => {
                let Some(i) = names.iter().position(|&x| x == n.name) else {
                    let hint = suggest(&n.name, names.iter().copied());
                    return Err(Diagnostic::error(
                        codes::BAD_ARG,
                        format!("{what} `{}` has no argument `{}`", callee.name, n.name),
                    )
                    .at(n.span, "unknown argument")
                    .help(match hint {
                        Some(h) => format!("did you mean `{h}`?"),
                        None if names.is_empty() => format!("`{}` takes no arguments", callee.name),
                        None => format!("its arguments are: {}", names.join(", ")),
                    }));
                };
                if slots[i].is_some() {
                    return Err(Diagnostic::error(
                        codes::BAD_ARG,
                        format!("argument `{}` given twice", n.name),
                    )
                    .at(a.span, "again"));
                }
                slots[i] = Some(a);
            }
        }
    }
    Ok(slots)
}

fn range_err(span: Span, msg: String) -> Diagnostic {
    Diagnostic::error(codes::RANGE, msg).at(span, "out of range")
}

/// Arguments of one built-in call, evaluated on demand.
struct Args<'e> {
    slots: Vec<Option<&'e Arg>>,
    names: &'static [&'static str],
}

impl<'e> Args<'e> {
    fn get(&self, name: &str) -> Option<&'e Arg> {
        let i = self
            .names
            .iter()
            .position(|&n| n == name)
            .expect("known arg");
        self.slots[i]
    }
}

impl Elab<'_> {
    fn arg_size(&mut self, a: Option<&Arg>, default: usize, scope: &Scope, what: &str) -> R<usize> {
        match a {
            None => Ok(default),
            Some(a) => self.size(&a.value, scope, what),
        }
    }

    fn arg_f64(&mut self, a: Option<&Arg>, default: f64, scope: &Scope) -> R<f64> {
        match a {
            None => Ok(default),
            Some(a) => self.eval_f64(&a.value, scope),
        }
    }

    fn arg_bool(&mut self, a: Option<&Arg>, default: bool, scope: &Scope) -> R<bool> {
        match a {
            None => Ok(default),
            Some(a) => self.eval_bool(&a.value, scope),
        }
    }

    /// An int or `[h, w]`; each positive (or, with `allow_zero`, non-negative).
    fn arg_pair(
        &mut self,
        a: Option<&Arg>,
        default: [usize; 2],
        scope: &Scope,
        what: &str,
        allow_zero: bool,
    ) -> R<[usize; 2]> {
        let Some(a) = a else { return Ok(default) };
        let v = self.eval(&a.value, scope)?;
        let items = match v {
            Value::Int(i) => vec![i, i],
            Value::List(l) if l.len() == 2 => {
                let mut out = vec![];
                for x in l {
                    match x {
                        Value::Int(i) => out.push(i),
                        other => {
                            return Err(Diagnostic::error(
                                codes::TYPE,
                                format!(
                                    "{what} must be an int or [h, w], found {}",
                                    other.type_name()
                                ),
                            )
                            .at(a.value.span, "expected ints"));
                        }
                    }
                }
                out
            }
            other => {
                return Err(Diagnostic::error(
                    codes::TYPE,
                    format!(
                        "{what} must be an int or [h, w], found {} `{}`",
                        other.type_name(),
                        other.show()
                    ),
                )
                .at(a.value.span, "expected an int or a pair"));
            }
        };
        let min = if allow_zero { 0 } else { 1 };
        for &i in &items {
            if i < min {
                return Err(range_err(
                    a.value.span,
                    format!(
                        "{what} must be {}, found {i}",
                        if allow_zero {
                            "zero or more"
                        } else {
                            "positive"
                        }
                    ),
                ));
            }
            if i > (1 << 31) {
                return Err(Diagnostic::error(
                    codes::TOO_LARGE,
                    format!("{what} {i} is larger than the limit of 2^31"),
                )
                .at(a.value.span, "too large"));
            }
        }
        Ok([items[0] as usize, items[1] as usize])
    }

    /// Fixed values given inline (`weight=[[...]]`), checked against the expected shape.
    fn fixed_values(&mut self, a: &Arg, shape: &[usize], scope: &Scope) -> R<Vec<f32>> {
        let v = self.eval(&a.value, scope)?;
        let mut out = Vec::new();
        fn walk(v: &Value, shape: &[usize], out: &mut Vec<f32>) -> Result<(), String> {
            match shape.split_first() {
                None => match as_f64(v) {
                    Some(f) => {
                        out.push(f as f32);
                        Ok(())
                    }
                    None => Err(format!("expected a number, found {}", v.type_name())),
                },
                Some((&n, rest)) => match v {
                    Value::List(items) if items.len() == n => {
                        items.iter().try_for_each(|x| walk(x, rest, out))
                    }
                    Value::List(items) => Err(format!(
                        "expected a list of {n} at this depth, found {}",
                        items.len()
                    )),
                    other => Err(format!(
                        "expected a list of {n} at this depth, found {}",
                        other.type_name()
                    )),
                },
            }
        }
        walk(&v, shape, &mut out).map_err(|m| {
            Diagnostic::error(
                codes::SHAPE,
                format!("inline values must have shape {}: {m}", show_shape(shape)),
            )
            .at(
                a.value.span,
                format!("expected shape {}", show_shape(shape)),
            )
        })?;
        Ok(out)
    }

    fn input_shape(&self, n: NodeId) -> Vec<usize> {
        self.g.nodes[n].shape.clone()
    }

    /// Requires a `[C, H, W]` input.
    fn need_image(&self, input: NodeId, layer: &str, span: Span) -> R<[usize; 3]> {
        let s = &self.g.nodes[input].shape;
        if s.len() == 3 {
            return Ok([s[0], s[1], s[2]]);
        }
        Err(Diagnostic::error(
            codes::SHAPE,
            format!(
                "`{layer}` needs an image-shaped input [channels, height, width], found {}",
                show_shape(s)
            ),
        )
        .at(span, "expects [C, H, W]")
        .also(
            self.producer_span(input),
            format!("this gives {}", show_shape(s)),
        )
        .help("convolution and pooling come before `flatten`"))
    }

    /// The `weight` (given inline or learned) and optional `bias` of a conv or dense layer.
    #[allow(clippy::too_many_arguments)]
    fn weight_and_bias(
        &mut self,
        a: &Args,
        path: &str,
        wshape: Vec<usize>,
        out: usize,
        scope: &Scope,
        span: Span,
    ) -> R<(Vec<crate::layer_graph::ParamId>, bool)> {
        let wfixed = match a.get("weight") {
            Some(wa) => Some(self.fixed_values(wa, &wshape, scope)?),
            None => None,
        };
        let (has_bias, bfixed) = match a.get("bias") {
            Some(b) if matches!(b.value.kind, ExprKind::List(_)) => {
                (true, Some(self.fixed_values(b, &[out], scope)?))
            }
            other => (self.arg_bool(other, true, scope)?, None),
        };
        let mut params = vec![self.param(
            format!("{path}.weight"),
            wshape,
            ParamKind::Weight,
            scope,
            wfixed,
            span,
        )?];
        if has_bias {
            params.push(self.param(
                format!("{path}.bias"),
                vec![out],
                ParamKind::Bias,
                scope,
                bfixed,
                span,
            )?);
        }
        Ok((params, has_bias))
    }

    /// A built-in layer or tensor operation applied to `cur` (or to its tensor arguments).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn builtin_layer(
        &mut self,
        callee: &Ident,
        args: &[Arg],
        span: Span,
        scope: &mut Scope,
        naming: &Naming,
        cur: Option<NodeId>,
        stmt_span: Span,
    ) -> R<NodeId> {
        let name = callee.name.as_str();
        if matches!(name, "add" | "sub" | "mul" | "concat" | "triplet_loss") {
            return self.tensor_op(callee, args, span, scope, naming, cur, stmt_span);
        }
        let names: &'static [&'static str] = match name {
            "conv" => &[
                "out", "kernel", "stride", "pad", "dilation", "groups", "bias", "weight",
            ],
            "maxpool" => &["kernel", "stride", "pad", "dilation", "ceil"],
            "avgpool" => &["kernel", "stride", "pad", "ceil", "count_include_pad"],
            "adaptive_avgpool" => &["output"],
            "dense" => &["out", "bias", "weight"],
            "leaky_relu" => &["slope"],
            "batchnorm" => &["eps", "momentum", "affine"],
            "lrn" => &["size", "alpha", "beta", "k"],
            "dropout" => &["p"],
            "l2_normalize" => &["eps"],
            _ => &[],
        };
        // A tensor passed where a layer's settings go: `relu(x)` instead of `x |> relu`.
        for a in args.iter().filter(|a| a.name.is_none()) {
            if let ExprKind::Ident(n)
            | ExprKind::Call {
                callee: Ident { name: n, .. },
                ..
            } = &a.value.kind
                && matches!(scope.vars.get(n), Some(Value::Tensor(_) | Value::Module(_)))
            {
                return Err(Diagnostic::error(
                    codes::BAD_ARG,
                    format!("`{name}` takes settings, not tensors"),
                )
                .at(a.span, "a tensor")
                .help(format!("to apply `{name}` to `{n}`, write `{n} |> {name}`")));
            }
        }
        let slots = bind_args(callee, args, names, span, "layer")?;
        let a = Args { slots, names };
        let input = self.need_input(cur, span)?;
        let in_shape = self.input_shape(input);
        let path = naming.path();
        let ps = |suffix: &str| format!("{path}.{suffix}");
        let required = |a: &Args, n: &str| -> R<()> {
            if a.get(n).is_none() {
                return Err(Diagnostic::error(
                    codes::BAD_ARG,
                    format!("`{name}` needs the argument `{n}`"),
                )
                .at(span, format!("`{n}` missing"))
                .help(match name {
                    "conv" => {
                        "e.g. `conv(64, 3, stride=1, pad=1)`: output channels, then kernel size"
                    }
                    "dense" => "e.g. `dense(10)`: the number of outputs",
                    "maxpool" | "avgpool" => "e.g. `maxpool(2)` or `maxpool(3, stride=2, pad=1)`",
                    "lrn" => "e.g. `lrn(5, alpha=0.0001, beta=0.75, k=2)`",
                    _ => "see the README's layer list",
                }));
            }
            Ok(())
        };
        let (op, shape, params) = match name {
            "conv" => {
                required(&a, "out")?;
                required(&a, "kernel")?;
                let [c, h, w] = self.need_image(input, name, span)?;
                let out = self.arg_size(a.get("out"), 0, scope, "output channels")?;
                let kernel = self.arg_pair(a.get("kernel"), [1, 1], scope, "kernel size", false)?;
                let stride = self.arg_pair(a.get("stride"), [1, 1], scope, "stride", false)?;
                let dilation =
                    self.arg_pair(a.get("dilation"), [1, 1], scope, "dilation", false)?;
                let groups = self.arg_size(a.get("groups"), 1, scope, "groups")?;
                if c % groups != 0 || out % groups != 0 {
                    let g = a.get("groups").map(|x| x.span).unwrap_or(span);
                    return Err(Diagnostic::error(
                        codes::SHAPE,
                        format!(
                            "groups={groups} must divide both the input channels ({c}) and the output channels ({out})"
                        ),
                    )
                    .at(g, "does not divide")
                    .also(self.producer_span(input), format!("input has {c} channels"))
                    .help(format!("for a depthwise convolution use groups={c} and a multiple of {c} outputs")));
                }
                let padding = match a.get("pad") {
                    Some(p) if matches!(&p.value.kind, ExprKind::Ident(s) if (s == "same" || s == "valid") && !scope.vars.contains_key(s)) =>
                    {
                        let ExprKind::Ident(s) = &p.value.kind else {
                            unreachable!()
                        };
                        if s == "valid" {
                            [0; 4]
                        } else {
                            let same = |n: usize, k: usize, s: usize, d: usize| {
                                let eff = d * (k - 1) + 1;
                                let out = n.div_ceil(s);
                                let total = ((out - 1) * s + eff).saturating_sub(n);
                                (total / 2, total - total / 2)
                            };
                            let (t, b) = same(h, kernel[0], stride[0], dilation[0]);
                            let (l, r) = same(w, kernel[1], stride[1], dilation[1]);
                            [t, b, l, r]
                        }
                    }
                    other => {
                        let p = self.arg_pair(other, [0, 0], scope, "padding", true)?;
                        [p[0], p[0], p[1], p[1]]
                    }
                };
                let oh = conv_out(
                    h,
                    padding[0] + padding[1],
                    kernel[0],
                    stride[0],
                    dilation[0],
                );
                let ow = conv_out(
                    w,
                    padding[2] + padding[3],
                    kernel[1],
                    stride[1],
                    dilation[1],
                );
                let (Some(oh), Some(ow)) = (oh, ow) else {
                    return Err(Diagnostic::error(
                        codes::SHAPE,
                        format!(
                            "the {}x{} kernel (dilation {}x{}) is larger than the padded {}x{} input",
                            kernel[0], kernel[1], dilation[0], dilation[1],
                            h + padding[0] + padding[1], w + padding[2] + padding[3]
                        ),
                    )
                    .at(span, "kernel too large")
                    .also(self.producer_span(input), format!("input is {}", show_shape(&in_shape)))
                    .help("use a smaller kernel, add padding (`pad=same`), or a larger input size"));
                };
                let wshape = vec![out, c / groups, kernel[0], kernel[1]];
                let (params, has_bias) =
                    self.weight_and_bias(&a, &path, wshape, out, scope, span)?;
                (
                    Op::Conv2d {
                        out_channels: out,
                        kernel,
                        stride,
                        padding,
                        dilation,
                        groups,
                        bias: has_bias,
                    },
                    vec![out, oh, ow],
                    params,
                )
            }
            "maxpool" | "avgpool" => {
                required(&a, "kernel")?;
                let [c, h, w] = self.need_image(input, name, span)?;
                let kernel = self.arg_pair(a.get("kernel"), [1, 1], scope, "kernel size", false)?;
                let stride = self.arg_pair(a.get("stride"), kernel, scope, "stride", false)?;
                let pad = self.arg_pair(a.get("pad"), [0, 0], scope, "padding", true)?;
                let dilation = if name == "maxpool" {
                    self.arg_pair(a.get("dilation"), [1, 1], scope, "dilation", false)?
                } else {
                    [1, 1]
                };
                let ceil = self.arg_bool(a.get("ceil"), false, scope)?;
                if pad[0] > kernel[0] / 2 || pad[1] > kernel[1] / 2 {
                    let s = a.get("pad").map(|x| x.span).unwrap_or(span);
                    return Err(range_err(
                        s,
                        format!(
                            "pooling padding must be at most half the kernel ({}x{})",
                            kernel[0] / 2,
                            kernel[1] / 2
                        ),
                    ));
                }
                let oh = pool_out(h, pad[0], kernel[0], stride[0], dilation[0], ceil);
                let ow = pool_out(w, pad[1], kernel[1], stride[1], dilation[1], ceil);
                let (Some(oh), Some(ow)) = (oh, ow) else {
                    return Err(Diagnostic::error(
                        codes::SHAPE,
                        format!(
                            "the {}x{} pooling window is larger than the {h}x{w} input",
                            kernel[0], kernel[1]
                        ),
                    )
                    .at(span, "window too large")
                    .also(
                        self.producer_span(input),
                        format!("input is {}", show_shape(&in_shape)),
                    )
                    .help("use a smaller window or a larger input size"));
                };
                let op = if name == "maxpool" {
                    Op::MaxPool2d {
                        kernel,
                        stride,
                        padding: pad,
                        dilation,
                        ceil_mode: ceil,
                    }
                } else {
                    let cip = self.arg_bool(a.get("count_include_pad"), true, scope)?;
                    Op::AvgPool2d {
                        kernel,
                        stride,
                        padding: pad,
                        ceil_mode: ceil,
                        count_include_pad: cip,
                    }
                };
                (op, vec![c, oh, ow], vec![])
            }
            "global_avgpool" => {
                let [c, _, _] = self.need_image(input, name, span)?;
                (Op::GlobalAvgPool, vec![c, 1, 1], vec![])
            }
            "adaptive_avgpool" => {
                required(&a, "output")?;
                let [c, _, _] = self.need_image(input, name, span)?;
                let o = self.arg_pair(a.get("output"), [1, 1], scope, "output size", false)?;
                (
                    Op::AdaptiveAvgPool2d { output: o },
                    vec![c, o[0], o[1]],
                    vec![],
                )
            }
            "dense" => {
                required(&a, "out")?;
                if in_shape.len() != 1 {
                    return Err(Diagnostic::error(
                        codes::SHAPE,
                        format!(
                            "`dense` needs a flat input [features], found {}",
                            show_shape(&in_shape)
                        ),
                    )
                    .at(span, "expects [features]")
                    .also(
                        self.producer_span(input),
                        format!("this gives {}", show_shape(&in_shape)),
                    )
                    .help("insert `flatten` before the dense layer"));
                }
                let fin = in_shape[0];
                let out = self.arg_size(a.get("out"), 0, scope, "output features")?;
                let wshape = vec![out, fin];
                let (params, has_bias) =
                    self.weight_and_bias(&a, &path, wshape, out, scope, span)?;
                (
                    Op::Dense {
                        out_features: out,
                        bias: has_bias,
                    },
                    vec![out],
                    params,
                )
            }
            "flatten" => {
                let n: usize = in_shape.iter().product();
                (Op::Flatten, vec![n], vec![])
            }
            "relu" => (Op::Relu, in_shape, vec![]),
            "sigmoid" => (Op::Sigmoid, in_shape, vec![]),
            "tanh" => (Op::Tanh, in_shape, vec![]),
            "abs" => (Op::Abs, in_shape, vec![]),
            "identity" => (Op::Identity, in_shape, vec![]),
            "softmax" => (Op::Softmax, in_shape, vec![]),
            "leaky_relu" => {
                let slope = self.arg_f64(a.get("slope"), 0.01, scope)?;
                (Op::LeakyRelu { slope }, in_shape, vec![])
            }
            "gram" => {
                let [c, _, _] = self.need_image(input, name, span)?;
                (Op::Gram, vec![c, c], vec![])
            }
            "batchnorm" => {
                let eps = self.arg_f64(a.get("eps"), 1e-5, scope)?;
                let momentum = self.arg_f64(a.get("momentum"), 0.1, scope)?;
                let affine = self.arg_bool(a.get("affine"), true, scope)?;
                if eps <= 0.0 {
                    return Err(range_err(
                        a.get("eps").map(|x| x.span).unwrap_or(span),
                        format!("eps must be positive, found {eps}"),
                    ));
                }
                if !(0.0..=1.0).contains(&momentum) {
                    return Err(range_err(
                        a.get("momentum").map(|x| x.span).unwrap_or(span),
                        format!("momentum must be in [0, 1], found {momentum}"),
                    ));
                }
                if in_shape.len() != 1 && in_shape.len() != 3 {
                    return Err(Diagnostic::error(
                        codes::SHAPE,
                        format!(
                            "`batchnorm` needs [C, H, W] or [features], found {}",
                            show_shape(&in_shape)
                        ),
                    )
                    .at(span, "unsupported rank"));
                }
                let c = in_shape[0];
                let mut params = Vec::new();
                if affine {
                    params.push(self.param(
                        ps("weight"),
                        vec![c],
                        ParamKind::Weight,
                        scope,
                        None,
                        span,
                    )?);
                    params.push(self.param(
                        ps("bias"),
                        vec![c],
                        ParamKind::Bias,
                        scope,
                        None,
                        span,
                    )?);
                }
                params.push(self.param(
                    ps("running_mean"),
                    vec![c],
                    ParamKind::RunningMean,
                    scope,
                    None,
                    span,
                )?);
                params.push(self.param(
                    ps("running_var"),
                    vec![c],
                    ParamKind::RunningVar,
                    scope,
                    None,
                    span,
                )?);
                params.push(self.param(
                    ps("num_batches_tracked"),
                    vec![],
                    ParamKind::NumBatchesTracked,
                    scope,
                    None,
                    span,
                )?);
                (
                    Op::BatchNorm {
                        eps,
                        momentum,
                        affine,
                    },
                    in_shape,
                    params,
                )
            }
            "lrn" => {
                required(&a, "size")?;
                self.need_image(input, name, span)?;
                let size = self.arg_size(a.get("size"), 5, scope, "LRN size")?;
                let alpha = self.arg_f64(a.get("alpha"), 1e-4, scope)?;
                let beta = self.arg_f64(a.get("beta"), 0.75, scope)?;
                let k = self.arg_f64(a.get("k"), 1.0, scope)?;
                (
                    Op::Lrn {
                        size,
                        alpha,
                        beta,
                        k,
                    },
                    in_shape,
                    vec![],
                )
            }
            "dropout" => {
                let p = self.arg_f64(a.get("p"), 0.5, scope)?;
                if !(0.0..1.0).contains(&p) {
                    return Err(range_err(
                        a.get("p").map(|x| x.span).unwrap_or(span),
                        format!("dropout probability must be in [0, 1), found {p}"),
                    ));
                }
                (Op::Dropout { p }, in_shape, vec![])
            }
            "l2_normalize" => {
                let eps = self.arg_f64(a.get("eps"), 1e-12, scope)?;
                (Op::L2Normalize { eps }, in_shape, vec![])
            }
            other => unreachable!("builtin {other}"),
        };
        self.check_numel(&shape, span)?;
        self.node(path, op, vec![input], shape, params, scope, stmt_span)
    }

    /// Operations on several tensors: `add(a, b)`, `concat(a, b)`, `triplet_loss(a, p, n)`.
    /// In a sequence, the current value is the first operand when fewer are given.
    #[allow(clippy::too_many_arguments)]
    fn tensor_op(
        &mut self,
        callee: &Ident,
        args: &[Arg],
        span: Span,
        scope: &mut Scope,
        naming: &Naming,
        cur: Option<NodeId>,
        stmt_span: Span,
    ) -> R<NodeId> {
        let name = callee.name.as_str();
        let (arity, attrs): (usize, &[&str]) = match name {
            "triplet_loss" => (3, &["margin"]),
            "concat" => (0, &[]),
            _ => (2, &[]),
        };
        let mut tensors = Vec::new();
        let mut margin = 1.0;
        for (i, a) in args.iter().enumerate() {
            match &a.name {
                Some(n) if attrs.contains(&n.name.as_str()) => {
                    margin = self.eval_f64(&a.value, scope)?;
                    if margin < 0.0 {
                        return Err(range_err(
                            a.value.span,
                            format!("margin must not be negative, found {margin}"),
                        ));
                    }
                }
                Some(n) => {
                    return Err(Diagnostic::error(
                        codes::BAD_ARG,
                        format!("`{name}` has no argument `{}`", n.name),
                    )
                    .at(n.span, "unknown argument")
                    .help(if attrs.is_empty() {
                        format!("`{name}` takes only tensors")
                    } else {
                        format!("its named arguments are: {}", attrs.join(", "))
                    }));
                }
                None => {
                    let sub = Naming {
                        prefix: naming.path(),
                        local: i.to_string(),
                        named: true,
                    };
                    let mut inner = scope.clone();
                    let t = self.tensor(&a.value, &mut inner, &sub, cur, stmt_span)?;
                    tensors.push((t, a.value.span));
                }
            }
        }
        let min = if arity == 0 { 2 } else { arity };
        if tensors.len() < min
            && let Some(c) = cur
        {
            tensors.insert(0, (c, self.producer_span(c)));
        }
        if tensors.len() < min || (arity != 0 && tensors.len() > arity) {
            return Err(Diagnostic::error(
                codes::BAD_ARG,
                format!(
                    "`{name}` takes {} tensors, got {}",
                    if arity == 0 {
                        "two or more".to_string()
                    } else {
                        arity.to_string()
                    },
                    tensors.len()
                ),
            )
            .at(span, "wrong number of tensors"));
        }
        let path = naming.path();
        if name == "concat" {
            return self.concat_node(path, tensors, scope, stmt_span);
        }
        let (first, first_span) = tensors[0];
        let fs = self.g.nodes[first].shape.clone();
        for &(t, s) in &tensors[1..] {
            let sh = &self.g.nodes[t].shape;
            if *sh != fs {
                return Err(Diagnostic::error(
                    codes::SHAPE,
                    format!(
                        "`{name}` needs tensors of one shape: {} and {}",
                        show_shape(&fs),
                        show_shape(sh)
                    ),
                )
                .at(s, format!("gives {}", show_shape(sh)))
                .also(first_span, format!("gives {}", show_shape(&fs))));
            }
        }
        let (op, shape) = match name {
            "add" => (Op::Add, fs),
            "sub" => (Op::Sub, fs),
            "mul" => (Op::Mul, fs),
            "triplet_loss" => {
                if fs.len() != 1 {
                    return Err(Diagnostic::error(
                        codes::SHAPE,
                        format!(
                            "`triplet_loss` needs embeddings [features], found {}",
                            show_shape(&fs)
                        ),
                    )
                    .at(first_span, "not flat")
                    .help("end the embedding network with `flatten` and `dense`"));
                }
                (Op::TripletLoss { margin }, vec![1])
            }
            _ => unreachable!(),
        };
        let inputs = tensors.iter().map(|t| t.0).collect();
        self.node(path, op, inputs, shape, vec![], scope, stmt_span)
    }
}

/// `floor((n + pad - d(k-1) - 1) / s) + 1`, or None when the kernel does not fit.
pub(crate) fn conv_out(n: usize, pad: usize, k: usize, s: usize, d: usize) -> Option<usize> {
    let eff = d.checked_mul(k - 1)?.checked_add(1)?;
    let padded = n.checked_add(pad)?;
    if padded < eff {
        return None;
    }
    Some((padded - eff) / s + 1)
}

/// PyTorch's pooling size rule, including ceil mode's "last window must start inside".
pub(crate) fn pool_out(
    n: usize,
    pad: usize,
    k: usize,
    s: usize,
    d: usize,
    ceil: bool,
) -> Option<usize> {
    let eff = d.checked_mul(k - 1)?.checked_add(1)?;
    let padded = n.checked_add(2 * pad)?;
    if padded < eff {
        return None;
    }
    let span = padded - eff;
    let mut out = if ceil { span.div_ceil(s) } else { span / s } + 1;
    if ceil && (out - 1) * s >= n + pad {
        out -= 1;
    }
    Some(out)
}
