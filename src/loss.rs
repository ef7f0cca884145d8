//! Losses as primitive ops, appended to a lowered graph (training builds on these).
//!
//! In: a primitive [`Graph`] and the value holding the model's output. Out: the same graph with
//! a new input for the targets and a new output `loss` (a `[1]` tensor, the batch mean, as
//! PyTorch's default `reduction="mean"`).

use crate::graph::{BinaryOp, Graph, Op, ReduceOp, UnaryOp, ValueId};

/// Softmax cross-entropy of `logits` `[N, K]` against one-hot targets given as a new input
/// `targets` `[N, K]`, with label smoothing `eps` (targets become `(1 - eps) * onehot + eps / K`):
/// `mean_n( -Σ_k t_nk · log_softmax(logits)_nk )`.
pub fn cross_entropy(g: &mut Graph, logits: ValueId, label_smoothing: f64) -> ValueId {
    let o = "loss";
    let shape = g.shape(logits).to_vec();
    assert_eq!(shape.len(), 2, "cross-entropy takes [N, K] logits");
    let (n, k) = (shape[0], shape[1]);
    let t = g.push(
        Op::Input {
            name: "targets".into(),
        },
        vec![],
        shape.clone(),
        o,
    );
    g.inputs.push(("targets".into(), t));
    let t = if label_smoothing > 0.0 {
        let keep = g.push(
            Op::Scalar {
                value: (1.0 - label_smoothing) as f32,
            },
            vec![],
            vec![],
            o,
        );
        let spread = g.push(
            Op::Scalar {
                value: (label_smoothing / k as f64) as f32,
            },
            vec![],
            vec![],
            o,
        );
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
    let loss = g.push(Op::Reshape, vec![loss], vec![1], o);
    g.outputs.push(("loss".into(), loss));
    loss
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
