//! Losses as primitive ops, appended to a lowered graph (training builds on these).
//!
//! In: a primitive [`Graph`] and the values holding the model's outputs (for [`attach`], the
//! typed `loss:` of the `train` section too). Out: the same graph with new inputs for the
//! targets (`targets`, `same`, `style_target.<i>`, `mask:<name>`, or a name the caller gives) and the output
//! `loss`, a `[1]` tensor: the batch mean, as PyTorch's default `reduction="mean"`.
//!
//! Every loss is built from existing primitives only, so differentiating the primitives
//! differentiates the losses. One convention for the output: each loss function registers its
//! value as the graph output `loss`; when the graph already has a `[1]` output `loss` (a loss
//! attached before), the new term is added to it, so `content_loss` followed by `style_loss`
//! gives Gatys' total objective. Constants (margins, weights) are f32 scalars like every other
//! constant of the IR.

use crate::graph::{BinaryOp, Graph, Op, ReduceOp, UnaryOp, ValueId};
use crate::train_config::{Loss, Objective, Term};

/// The `eps` PyTorch's `pairwise_distance` adds to the difference of the two vectors.
pub const PAIRWISE_EPS: f64 = 1e-6;

/// The origin of every node this module adds.
const O: &str = "loss";

/// The number of classes of a classifier's output of one sample: `[K]`, or `[K, 1, 1]` (a
/// fully convolutional classifier, whose last layer is a convolution over the whole map); `None`
/// for any other shape.
pub fn class_count(sample_shape: &[usize]) -> Option<usize> {
    match sample_shape.split_first() {
        Some((&k, rest)) if rest.iter().all(|&d| d == 1) => Some(k),
        _ => None,
    }
}

/// Softmax cross-entropy of `logits` `[N, K]` against one-hot targets given as a new input
/// `targets` `[N, K]`, with label smoothing `eps` (targets become `(1 - eps) * onehot + eps / K`):
/// `mean_n( -Σ_k t_nk · log_softmax(logits)_nk )`.
pub fn cross_entropy(g: &mut Graph, logits: ValueId, label_smoothing: f64) -> ValueId {
    let loss = cross_entropy_value(g, logits, label_smoothing, "targets", None);
    register(g, loss)
}

/// [`cross_entropy`]'s value, with the one-hot targets in the new input `target`, not
/// registered as the output `loss`; with a `mask` (an input name), the masked mean of the
/// per-sample losses ([`masked_mean`]).
fn cross_entropy_value(
    g: &mut Graph,
    logits: ValueId,
    label_smoothing: f64,
    target: &str,
    mask: Option<&str>,
) -> ValueId {
    let o = O;
    let shape = g.shape(logits).to_vec();
    assert_eq!(shape.len(), 2, "cross-entropy takes [N, K] logits");
    let (n, k) = (shape[0], shape[1]);
    let t = input(g, target, shape);
    let t = if label_smoothing > 0.0 {
        let keep = scalar(g, 1.0 - label_smoothing);
        let spread = scalar(g, label_smoothing / k as f64);
        let t = g.add(Op::Binary(BinaryOp::Mul), vec![t, keep], o);
        g.add(Op::Binary(BinaryOp::Add), vec![t, spread], o)
    } else {
        t
    };
    // log_softmax = x - max - log(sum(exp(x - max)))
    let m = g.add(
        Op::Reduce {
            op: ReduceOp::Max,
            axes: vec![1],
        },
        vec![logits],
        o,
    );
    let d = g.add(Op::Binary(BinaryOp::Sub), vec![logits, m], o);
    let e = g.add(Op::Unary(UnaryOp::Exp), vec![d], o);
    let s = g.add(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![1],
        },
        vec![e],
        o,
    );
    let ls = g.add(Op::Unary(UnaryOp::Log), vec![s], o);
    let logp = g.add(Op::Binary(BinaryOp::Sub), vec![d, ls], o);
    let tl = g.add(Op::Binary(BinaryOp::Mul), vec![t, logp], o);
    if let Some(mask) = mask {
        // Per sample: -Σ_k t_nk · logp_nk, then the masked mean.
        let per = g.add(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![1],
            },
            vec![tl],
            o,
        );
        let per = un(g, UnaryOp::Neg, per);
        let per = g.push(Op::Reshape, vec![per], vec![n], o);
        return masked_mean(g, per, mask);
    }
    let per = g.add(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![0, 1],
        },
        vec![tl],
        o,
    );
    let scale = g.push(
        Op::Scalar {
            value: -1.0 / n as f32,
        },
        vec![],
        vec![],
        o,
    );
    let loss = g.add(Op::Binary(BinaryOp::Mul), vec![per, scale], o);
    g.push(Op::Reshape, vec![loss], vec![1], o)
}

/// Mean squared error of `pred` against a new input `target` of the same shape:
/// `mean((pred - target)^2)` over every element (PyTorch's `F.mse_loss`).
pub fn mse(g: &mut Graph, pred: ValueId, target: &str) -> ValueId {
    let loss = mse_value(g, pred, target);
    register(g, loss)
}

fn mse_value(g: &mut Graph, pred: ValueId, target: &str) -> ValueId {
    let d = difference(g, pred, target);
    let sq = bin(g, BinaryOp::Mul, d, d);
    mean_all(g, sq)
}

/// Mean absolute error of `pred` against a new input `target` of the same shape:
/// `mean(|pred - target|)` over every element (PyTorch's `F.l1_loss`).
pub fn l1(g: &mut Graph, pred: ValueId, target: &str) -> ValueId {
    let loss = l1_value(g, pred, target);
    register(g, loss)
}

fn l1_value(g: &mut Graph, pred: ValueId, target: &str) -> ValueId {
    let d = difference(g, pred, target);
    let a = un(g, UnaryOp::Abs, d);
    mean_all(g, a)
}

/// Binary cross-entropy of the logits `x` against a new input `target` `t` of the same shape
/// (probabilities in [0, 1]), in the numerically stable form PyTorch uses,
/// `mean( max(x, 0) - x·t + log(1 + exp(-|x|)) )` (`F.binary_cross_entropy_with_logits`):
/// `exp` only ever sees non-positive arguments, so large `|x|` neither overflows nor loses the
/// linear term.
pub fn bce_with_logits(g: &mut Graph, logits: ValueId, target: &str) -> ValueId {
    let loss = bce_value(g, logits, target);
    register(g, loss)
}

fn bce_value(g: &mut Graph, logits: ValueId, target: &str) -> ValueId {
    let l = bce_elements(g, logits, target);
    mean_all(g, l)
}

/// The elementwise binary cross-entropy of [`bce_with_logits`], before the mean.
pub(crate) fn bce_elements(g: &mut Graph, logits: ValueId, target: &str) -> ValueId {
    let shape = g.shape(logits).to_vec();
    let t = input(g, target, shape);
    let pos = un(g, UnaryOp::Relu, logits);
    let xt = bin(g, BinaryOp::Mul, logits, t);
    let a = un(g, UnaryOp::Abs, logits);
    let na = un(g, UnaryOp::Neg, a);
    let e = un(g, UnaryOp::Exp, na);
    let one = scalar(g, 1.0);
    let e1 = bin(g, BinaryOp::Add, e, one);
    let softplus = un(g, UnaryOp::Log, e1);
    let l = bin(g, BinaryOp::Sub, pos, xt);
    bin(g, BinaryOp::Add, l, softplus)
}

/// Triplet margin loss of embeddings `anchor`, `positive`, `negative` (each `[N, D]`), exactly
/// PyTorch's `F.triplet_margin_loss(p=2, eps=1e-6, swap=False, reduction="mean")`:
/// `mean_n( max(d(a, p) - d(a, n) + margin, 0) )` with `d(x, y) = ‖x - y + 1e-6‖₂` (PyTorch's
/// `pairwise_distance` adds eps to the difference). Adds no input.
pub fn triplet_margin(
    g: &mut Graph,
    anchor: ValueId,
    positive: ValueId,
    negative: ValueId,
    margin: f64,
) -> ValueId {
    let loss = triplet_value(g, anchor, positive, negative, margin);
    register(g, loss)
}

fn triplet_value(
    g: &mut Graph,
    anchor: ValueId,
    positive: ValueId,
    negative: ValueId,
    margin: f64,
) -> ValueId {
    let dp = pairwise_distance(g, anchor, positive);
    let dn = pairwise_distance(g, anchor, negative);
    let diff = bin(g, BinaryOp::Sub, dp, dn);
    let m = scalar(g, margin);
    let t = bin(g, BinaryOp::Add, diff, m);
    let hinge = un(g, UnaryOp::Relu, t);
    mean_all(g, hinge)
}

/// Contrastive loss of embedding pairs `x1`, `x2` (each `[N, D]`) after Hadsell, Chopra &
/// LeCun, "Dimensionality Reduction by Learning an Invariant Mapping" (CVPR 2006), with a new
/// input `same` `[N]` (1 for a pair of the same identity, 0 otherwise):
///
/// `mean_n( same_n · d_n² + (1 - same_n) · max(margin - d_n, 0)² )`,
/// `d_n = ‖x1_n - x2_n + 1e-6‖₂` (the distance of [`triplet_margin`], PyTorch's
/// `pairwise_distance`).
///
/// The paper writes each term with a factor ½; it is left out here, as in the common PyTorch
/// implementations (e.g. pytorch-metric-learning's `ContrastiveLoss`): it halves the loss and
/// its gradient and nothing else, the same as halving the learning rate. Note the paper's label
/// is the other way round (its `Y = 0` means similar); `same` says what it means.
pub fn contrastive(g: &mut Graph, x1: ValueId, x2: ValueId, margin: f64) -> ValueId {
    let loss = contrastive_value(g, x1, x2, margin);
    register(g, loss)
}

/// [`contrastive`]'s value; the input `same` is made, or reused when another term made it.
fn contrastive_value(g: &mut Graph, x1: ValueId, x2: ValueId, margin: f64) -> ValueId {
    let n = g.shape(x1)[0];
    let same = match g.inputs.iter().find(|(name, _)| name == "same") {
        Some(&(_, v)) => v,
        None => input(g, "same", vec![n]),
    };
    let same = g.push(Op::Reshape, vec![same], vec![n, 1], O);
    let d = pairwise_distance(g, x1, x2);
    let d2 = bin(g, BinaryOp::Mul, d, d);
    let pos = bin(g, BinaryOp::Mul, same, d2);
    let m = scalar(g, margin);
    let gap = bin(g, BinaryOp::Sub, m, d);
    let gap = un(g, UnaryOp::Relu, gap);
    let gap2 = bin(g, BinaryOp::Mul, gap, gap);
    let one = scalar(g, 1.0);
    let other = bin(g, BinaryOp::Sub, one, same);
    let neg = bin(g, BinaryOp::Mul, other, gap2);
    let per = bin(g, BinaryOp::Add, pos, neg);
    mean_all(g, per)
}

/// Gram matrices of feature maps `[N, C, H, W]`: `[N, C, C]`, `G_n = F_n F_nᵀ / (C·H·W)` with
/// `F_n` the sample's features as a `[C, H·W]` matrix (Gatys, Ecker & Bethge, "Image Style
/// Transfer Using Convolutional Neural Networks", 2016, normalized by the layer's size). Adds
/// no input and no output.
pub fn gram(g: &mut Graph, features: ValueId) -> ValueId {
    let s = g.shape(features).to_vec();
    assert_eq!(s.len(), 4, "gram takes [N, C, H, W] features");
    let (n, c, hw) = (s[0], s[1], s[2] * s[3]);
    let f = g.push(Op::Reshape, vec![features], vec![n, c, hw], O);
    let ff = g.add(Op::MatMul { transpose_b: true }, vec![f, f], O);
    let size = scalar(g, (c * hw) as f64);
    bin(g, BinaryOp::Div, ff, size)
}

/// Gatys' style loss: `Σ_l w_l · mean((gram(F_l) - G_l)²)` over `layers` = `(F_l, w_l)`, with
/// `F_l` feature maps `[N, C_l, H_l, W_l]`. The target Gram matrices `G_l` (of the style image)
/// are new inputs `style_target.<l>` of shape `[1, C_l, C_l]`, shared by every sample of the
/// batch; the mean is over `[N, C_l, C_l]`.
pub fn style_loss(g: &mut Graph, layers: &[(ValueId, f64)]) -> ValueId {
    assert!(!layers.is_empty(), "style loss over no layers");
    let mut total = None;
    for (i, &(features, weight)) in layers.iter().enumerate() {
        let gm = gram(g, features);
        let c = g.shape(gm)[1];
        let t = input(g, &format!("style_target.{i}"), vec![1, c, c]);
        let d = bin(g, BinaryOp::Sub, gm, t);
        let sq = bin(g, BinaryOp::Mul, d, d);
        let m = mean_all(g, sq);
        let w = scalar(g, weight);
        let term = bin(g, BinaryOp::Mul, m, w);
        total = Some(match total {
            None => term,
            Some(acc) => bin(g, BinaryOp::Add, acc, term),
        });
    }
    register(g, total.expect("at least one layer"))
}

/// Gatys' content loss: the [`mse`] of `features` against a new input `target` (the content
/// image's features at the same layer, same shape).
pub fn content_loss(g: &mut Graph, features: ValueId, target: &str) -> ValueId {
    mse(g, features, target)
}

/// Attaches one loss to a lowered graph, on `outputs` (the model's outputs in order), with
/// the target input names of a plain `loss: NAME` (`targets`, `same`): [`attach_objective`]
/// with that single term.
pub fn attach(g: &mut Graph, loss: &Loss, outputs: &[ValueId]) -> Result<ValueId, String> {
    let named: Vec<(String, ValueId)> = outputs
        .iter()
        .map(|&v| {
            let name = g
                .outputs
                .iter()
                .find(|(_, o)| *o == v)
                .map(|(n, _)| n.clone());
            (name.unwrap_or_default(), v)
        })
        .collect();
    attach_objective(g, &Objective::from(loss.clone()), &named)
}

/// Attaches a model's training objective to its lowered graph, after checking that the
/// outputs each term reads (`outputs`: the model's, by name, in order) fit it:
///
/// - `cross_entropy`: one output `[N, K]` or `[N, K, 1, 1]` (class scores), one-hot targets
///   `[N, K]`;
/// - `mse`, `l1`, `bce_with_logits`, `content`: one output of any shape, targets of that shape;
/// - `style`: one output `[N, C, H, W]`, targets `[N, C, C]` (the Gram matrices to match);
/// - `triplet`: three outputs `[N, D]` of one shape (anchor, positive, negative embeddings);
/// - `contrastive`: two outputs `[N, D]` (the pair), input `same` `[N]`;
/// - an output used as a loss (`Loss::Value`): its mean over every element.
/// - `yolo`: one grid head `[N, A·(5+C), S_h, S_w]`, targets of that shape in the input
///   `yolo:<output>` ([`crate::loss_yolo`]).
///
/// A term with a mask (`cross_entropy`, `mse`, `l1`, `bce_with_logits`) reads it from the new
/// input [`Term::mask_input`] `[N]` and counts only the masked-in samples (`masked_mean`);
/// for MSE, L1 and BCE a sample's loss is the mean over its elements.
///
/// Each term's targets are the new input [`Term::target_input`], shared by terms on one output
/// that need targets of one shape (`mse(output=box) + l1(output=box)`). The weighted sum is the
/// `[1]` output `loss`; a model output read as a loss stops being a separate output. Returns
/// the loss value, or a message saying what a term expects and what the model has.
pub fn attach_objective(
    g: &mut Graph,
    objective: &Objective,
    outputs: &[(String, ValueId)],
) -> Result<ValueId, String> {
    let values: Vec<&str> = objective
        .terms
        .iter()
        .filter(|t| t.loss == Loss::Value)
        .flat_map(|t| t.outputs.iter().map(String::as_str))
        .collect();
    if g.outputs
        .iter()
        .any(|(n, _)| n == "loss" && !values.contains(&"loss"))
    {
        return Err(format!(
            "the model already has an output named `loss`; the `{objective}` objective adds \
             its own (train that output itself with `loss: loss`, or rename it)"
        ));
    }
    // The model's own inputs; the terms add theirs after these.
    let model_inputs = g.inputs.len();
    let mut total: Option<ValueId> = None;
    for term in &objective.terms {
        let reads: Vec<ValueId> = if term.outputs.is_empty() {
            outputs.iter().map(|(_, v)| *v).collect()
        } else {
            term.outputs
                .iter()
                .map(|name| {
                    outputs
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| format!("the model has no output `{name}`"))
                })
                .collect::<Result<_, _>>()?
        };
        let value = term_value(g, term, &reads, model_inputs)?;
        let value = if term.weight == 1.0 {
            value
        } else {
            let w = scalar(g, term.weight);
            bin(g, BinaryOp::Mul, value, w)
        };
        total = Some(match total {
            None => value,
            Some(acc) => bin(g, BinaryOp::Add, acc, value),
        });
    }
    let total = total.ok_or("the training objective has no terms")?;
    // Outputs read as losses are part of `loss` now.
    g.outputs.retain(|(n, _)| !values.contains(&n.as_str()));
    Ok(register(g, total))
}

/// The unweighted value (`[1]`) of one term on the values `reads`. The first `model_inputs`
/// inputs of `g` are the model's; a target input an earlier term made is shared.
fn term_value(
    g: &mut Graph,
    term: &Term,
    reads: &[ValueId],
    model_inputs: usize,
) -> Result<ValueId, String> {
    let target = term.target_input();
    let mask = term.mask_input();
    if let Some(m) = &mask {
        if !Term::per_sample(&term.loss) {
            return Err(format!("the `{term}` loss takes no mask"));
        }
        if g.inputs[..model_inputs].iter().any(|(n, _)| n == m) {
            return Err(format!(
                "the `{term}` loss takes its mask as an input `{m}`, but the model already has \
                 an input of that name"
            ));
        }
    }
    if let Some(t) = target.as_deref()
        && t != "same"
        && let Some(i) = g.inputs.iter().position(|(n, _)| n == t)
    {
        if i < model_inputs {
            return Err(format!(
                "the `{term}` loss takes its targets as an input `{t}`, but the model already \
                 has an input of that name"
            ));
        }
        // An earlier term on the same output made it: the two share the targets (`mse(output=
        // box) + l1(output=box)`), unless they need targets of different shapes.
        let have = g.shape(g.inputs[i].1).to_vec();
        if let Some(want) = target_shape(g, term, reads)
            && want != have
        {
            let out = term.outputs.first().map_or("OUT", String::as_str);
            return Err(format!(
                "the `{term}` loss and an earlier term on the output `{out}` both take their \
                 targets as the input `{t}`, but of different shapes ({want:?} and {have:?}); \
                 apply one of them to a copy of the output (`{out}_copy = {out} |> identity`, \
                 `output {out}_copy`), which takes its own targets"
            ));
        }
    }
    let wrong = |g: &Graph, expected: &str| -> String {
        format!(
            "the `{term}` loss needs {expected}; the model has {}",
            describe_outputs(g, reads)
        )
    };
    let embeddings = |g: &Graph, count: usize, what: &str| -> Result<(), String> {
        let s0 = reads.first().map(|&v| g.shape(v));
        let ok = reads.len() == count
            && s0.is_some_and(|s| s.len() == 2)
            && reads.iter().all(|&v| Some(g.shape(v)) == s0);
        if ok { Ok(()) } else { Err(wrong(g, what)) }
    };
    let target = target.unwrap_or_default();
    Ok(match term.loss {
        Loss::CrossEntropy { label_smoothing } => {
            let shape = reads.first().map(|&v| g.shape(v).to_vec());
            let scores = match shape.as_deref() {
                Some([n, sample @ ..]) if reads.len() == 1 && !sample.is_empty() => {
                    class_count(sample).map(|k| (*n, k))
                }
                _ => None,
            };
            let Some((n, k)) = scores else {
                return Err(wrong(
                    g,
                    "one output [N, K] (or [N, K, 1, 1]) of class scores",
                ));
            };
            // A fully convolutional classifier's [N, K, 1, 1] scores, as rows of [N, K].
            let logits = if g.shape(reads[0]).len() == 2 {
                reads[0]
            } else {
                g.push(Op::Reshape, vec![reads[0]], vec![n, k], O)
            };
            cross_entropy_value(g, logits, label_smoothing, &target, mask.as_deref())
        }
        Loss::Mse | Loss::L1 | Loss::BceWithLogits | Loss::Content => {
            if reads.len() != 1 {
                return Err(wrong(g, "one output (the prediction)"));
            }
            if let Some(mask) = mask.as_deref() {
                let per = match term.loss {
                    Loss::Mse => {
                        let d = difference(g, reads[0], &target);
                        bin(g, BinaryOp::Mul, d, d)
                    }
                    Loss::L1 => {
                        let d = difference(g, reads[0], &target);
                        un(g, UnaryOp::Abs, d)
                    }
                    _ => bce_elements(g, reads[0], &target),
                };
                let per = per_sample_mean(g, per);
                return Ok(masked_mean(g, per, mask));
            }
            match term.loss {
                Loss::Mse | Loss::Content => mse_value(g, reads[0], &target),
                Loss::L1 => l1_value(g, reads[0], &target),
                _ => bce_value(g, reads[0], &target),
            }
        }
        Loss::Style => {
            if reads.len() != 1 || g.shape(reads[0]).len() != 4 {
                return Err(wrong(g, "one output [N, C, H, W] (feature maps)"));
            }
            let gm = gram(g, reads[0]);
            let d = difference(g, gm, &target);
            let sq = bin(g, BinaryOp::Mul, d, d);
            mean_all(g, sq)
        }
        Loss::Triplet { margin } => {
            embeddings(
                g,
                3,
                "three outputs [N, D] of the same shape (anchor, positive and negative \
                 embeddings)",
            )?;
            triplet_value(g, reads[0], reads[1], reads[2], margin)
        }
        Loss::Contrastive { margin } => {
            embeddings(
                g,
                2,
                "two outputs [N, D] of the same shape (the embeddings of a pair)",
            )?;
            if let Some(&(_, v)) = g.inputs.iter().find(|(n, _)| n == "same")
                && g.shape(v) != [g.shape(reads[0])[0]]
            {
                return Err("the model already has an input named `same`, which the \
                            contrastive loss takes its pair labels in"
                    .into());
            }
            contrastive_value(g, reads[0], reads[1], margin)
        }
        Loss::Value => {
            if reads.len() != 1 {
                return Err(wrong(g, "one output (a loss the model computes)"));
            }
            mean_all(g, reads[0])
        }
        Loss::Yolo(ref y) => {
            if reads.len() != 1 {
                return Err(wrong(g, "one output (the grid head)"));
            }
            crate::loss_yolo::yolo_value(g, reads[0], y, &target)?
        }
    })
}

/// The shape of the targets of `term` on `reads` (`None` where the outputs do not fit it,
/// which [`term_value`] reports).
fn target_shape(g: &Graph, term: &Term, reads: &[ValueId]) -> Option<Vec<usize>> {
    let s = g.shape(*reads.first()?);
    match term.loss {
        Loss::CrossEntropy { .. } => Some(vec![s[0], class_count(s.get(1..)?)?]),
        Loss::Style if s.len() == 4 => Some(vec![s[0], s[1], s[1]]),
        Loss::Style => None,
        _ => Some(s.to_vec()),
    }
}

/// One-hot targets `[N, K]` for class labels.
pub fn one_hot(labels: &[i64], classes: usize) -> Result<ndarray::ArrayD<f32>, String> {
    let mut t = ndarray::ArrayD::zeros(ndarray::IxDyn(&[labels.len(), classes]));
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 || l as usize >= classes {
            return Err(format!(
                "label {l} at position {i} is not a class in 0..{classes}"
            ));
        }
        t[[i, l as usize]] = 1.0;
    }
    Ok(t)
}

// ---- helpers ----

/// "2 outputs: `a` [4, 16], [4, 16]" (names where the value is a named graph output).
fn describe_outputs(g: &Graph, outputs: &[ValueId]) -> String {
    let list: Vec<String> = outputs
        .iter()
        .map(|&v| {
            let shape = format!("{:?}", g.shape(v));
            match g.outputs.iter().find(|(_, o)| *o == v) {
                Some((name, _)) => format!("`{name}` {shape}"),
                None => shape,
            }
        })
        .collect();
    match outputs.len() {
        0 => "no outputs".into(),
        1 => format!("1 output: {}", list[0]),
        n => format!("{n} outputs: {}", list.join(", ")),
    }
}

/// Makes the `[1]` value `loss` the graph output `loss`, or adds it to the existing one.
fn register(g: &mut Graph, loss: ValueId) -> ValueId {
    assert_eq!(g.shape(loss), [1], "a loss is a [1] tensor");
    match g.outputs.iter().position(|(n, _)| n == "loss") {
        None => {
            g.outputs.push(("loss".into(), loss));
            loss
        }
        Some(i) => {
            let prev = g.outputs[i].1;
            assert_eq!(g.shape(prev), [1], "the output `loss` is not a [1] loss");
            let total = bin(g, BinaryOp::Add, prev, loss);
            g.outputs[i].1 = total;
            total
        }
    }
}

/// A new graph input, or the input of this name a term made before (the same targets, read
/// by two terms on one output; the shapes must agree, as [`term_value`] checks).
pub(crate) fn input(g: &mut Graph, name: &str, shape: Vec<usize>) -> ValueId {
    if let Some(&(_, v)) = g.inputs.iter().find(|(n, _)| n == name) {
        assert_eq!(
            g.shape(v),
            shape,
            "the graph's input `{name}` has another shape"
        );
        return v;
    }
    let v = g.push(
        Op::Input {
            name: name.to_string(),
        },
        vec![],
        shape,
        O,
    );
    g.inputs.push((name.to_string(), v));
    v
}

/// `pred - target` with `target` a new input of `pred`'s shape.
fn difference(g: &mut Graph, pred: ValueId, target: &str) -> ValueId {
    let shape = g.shape(pred).to_vec();
    let t = input(g, target, shape);
    bin(g, BinaryOp::Sub, pred, t)
}

/// PyTorch's `pairwise_distance(a, b, p=2, eps=1e-6)` of `[N, D]` rows: `[N, 1]`,
/// `‖a - b + eps‖₂`.
fn pairwise_distance(g: &mut Graph, a: ValueId, b: ValueId) -> ValueId {
    assert_eq!(g.shape(a).len(), 2, "distances between [N, D] embeddings");
    assert_eq!(g.shape(a), g.shape(b), "embeddings of the same shape");
    let d = bin(g, BinaryOp::Sub, a, b);
    let e = scalar(g, PAIRWISE_EPS);
    let d = bin(g, BinaryOp::Add, d, e);
    let sq = bin(g, BinaryOp::Mul, d, d);
    let s = g.add(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![1],
        },
        vec![sq],
        O,
    );
    un(g, UnaryOp::Sqrt, s)
}

/// The mean over every axis but the batch's: `[N, ...]` → `[N]`.
fn per_sample_mean(g: &mut Graph, v: ValueId) -> ValueId {
    let shape = g.shape(v).to_vec();
    let n = shape[0];
    let v = if shape.len() > 1 {
        g.add(
            Op::Reduce {
                op: ReduceOp::Mean,
                axes: (1..shape.len()).collect(),
            },
            vec![v],
            O,
        )
    } else {
        v
    };
    g.push(Op::Reshape, vec![v], vec![n], O)
}

/// The masked mean of per-sample losses `per` `[N]` with the 0/1 mask in the new input `mask`
/// `[N]` (shared by the terms with one mask): `Σ_n per_n·m_n / max(Σ_n m_n, 1)` as a `[1]`
/// tensor — the mean over the masked-in samples, 0 when there are none (PyTorch:
/// `(per * m).sum() / m.sum().clamp(min=1)`).
fn masked_mean(g: &mut Graph, per: ValueId, mask: &str) -> ValueId {
    let n = g.shape(per)[0];
    let m = input(g, mask, vec![n]);
    let pm = bin(g, BinaryOp::Mul, per, m);
    let all = vec![0];
    let num = g.add(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: all.clone(),
        },
        vec![pm],
        O,
    );
    let count = g.add(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: all,
        },
        vec![m],
        O,
    );
    let one = scalar(g, 1.0);
    let count = bin(g, BinaryOp::Max, count, one);
    let v = bin(g, BinaryOp::Div, num, count);
    g.push(Op::Reshape, vec![v], vec![1], O)
}

/// The mean of every element, as a `[1]` tensor.
fn mean_all(g: &mut Graph, v: ValueId) -> ValueId {
    let rank = g.shape(v).len();
    let m = g.add(
        Op::Reduce {
            op: ReduceOp::Mean,
            axes: (0..rank).collect(),
        },
        vec![v],
        O,
    );
    g.push(Op::Reshape, vec![m], vec![1], O)
}

pub(crate) fn scalar(g: &mut Graph, value: f64) -> ValueId {
    g.push(
        Op::Scalar {
            value: value as f32,
        },
        vec![],
        vec![],
        O,
    )
}

pub(crate) fn bin(g: &mut Graph, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
    g.add(Op::Binary(op), vec![a, b], O)
}

pub(crate) fn un(g: &mut Graph, op: UnaryOp, a: ValueId) -> ValueId {
    g.add(Op::Unary(op), vec![a], O)
}
