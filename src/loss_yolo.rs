//! The YOLO loss (v2/v3 style) as primitive ops: the `yolo(output=grid, anchors=...)` term.
//!
//! In: a grid head `[N, A·(5+C), S_h, S_w]` (the channel layout of [`crate::detect`]) and the
//! name of a new graph input of the same shape holding the batch's targets, encoded on the host
//! by [`crate::detect::encode::yolo_targets`] in the head's own layout. Out: the loss, `[1]`.
//!
//! Definition. Each ground-truth box is assigned to the cell holding its centre
//! (`col = floor(cx·S_w)`, `row = floor(cy·S_h)`, clamped to the grid) and to the anchor whose
//! shape fits it best (largest IoU of the two boxes centred at the origin, anchors in pixels
//! of the input divided by the input's size; the first anchor on ties); that (row, col, a) is
//! *responsible* for it. A later box of the same image assigned to the same (row, col, a)
//! replaces the earlier one (YOLO's own rule: one box per anchor per cell). At a responsible
//! (row, col, a) the targets are `tx* = cx·S_w − col`, `ty* = cy·S_h − row`,
//! `tw* = ln(w / aw)`, `th* = ln(h / ah)` and the class `c`; the loss of a batch of `N` images
//! is
//!
//! ```text
//! 1/N · ( coord · Σ_resp [(σ(tx) − tx*)² + (σ(ty) − ty*)² + (tw − tw*)² + (th − th*)²]
//!         + Σ_resp BCEWithLogits(t_obj, 1) + noobj · Σ_non-resp BCEWithLogits(t_obj, 0)
//!         + Σ_resp CrossEntropy(t_cls, c) )
//! ```
//!
//! with sums over images, cells and anchors (`coord = 5`, `noobj = 0.5` by default). Encoded,
//! the target tensor holds at channels `a·(5+C) + k`: `k = 0..4` the box targets (0 where no
//! box), `k = 4` the responsibility `r` (1 or 0), `k = 5..5+C` the one-hot class (all 0 where
//! no box). So the loss is, elementwise over the head, `coord·r·(box error)² +
//! (noobj + (1 − noobj)·r)·BCE(t_obj, r) − Σ_k onehot_k·log_softmax(t_cls)_k`, summed and
//! divided by `N`: no gather, only masks.

use crate::graph::{BinaryOp, Graph, Op, ReduceOp, UnaryOp, ValueId};
use crate::loss::{bin, input, scalar, un};
use crate::train_config::Yolo;

const O: &str = "loss";

/// The YOLO loss of `head` `[N, A·(5+C), S_h, S_w]` against the new input `target` of the same
/// shape (see the module's definition). Errors when the head does not have `A·(5+C)` channels.
pub fn yolo_value(g: &mut Graph, head: ValueId, y: &Yolo, target: &str) -> Result<ValueId, String> {
    let shape = g.shape(head).to_vec();
    let (a, c) = (y.anchors.len(), y.classes);
    let &[n, ch, sh, sw] = shape.as_slice() else {
        return Err(format!(
            "the yolo loss reads a grid head [N, A·(5+C), S_h, S_w]; the output is {shape:?}"
        ));
    };
    if a == 0 || ch != a * (5 + c) {
        return Err(format!(
            "the yolo loss with {a} anchors and {c} classes reads {a}·(5+{c}) = {} channels; \
             the output has {ch}\n  help: make the head's last layer `conv({}, 1)`",
            a * (5 + c),
            a * (5 + c)
        ));
    }
    let split = vec![n, a, 5 + c, sh, sw];
    let p = g.push(Op::Reshape, vec![head], split.clone(), O);
    let t = input(g, target, shape.clone());
    let t = g.push(Op::Reshape, vec![t], split, O);
    let slice = |g: &mut Graph, v: ValueId, start: usize, end: usize| {
        g.add(
            Op::Slice {
                axis: 2,
                start,
                end,
            },
            vec![v],
            O,
        )
    };
    let sum = |g: &mut Graph, v: ValueId| {
        let rank = g.shape(v).len();
        let s = g.add(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: (0..rank).collect(),
            },
            vec![v],
            O,
        );
        g.push(Op::Reshape, vec![s], vec![1], O)
    };
    // Responsibility r [N, A, 1, S_h, S_w].
    let r = slice(g, t, 4, 5);

    // Box: coord · Σ r · ((σ(txy) − txy*)² + (twh − twh*)²).
    let txy = slice(g, p, 0, 2);
    let sxy = un(g, UnaryOp::Sigmoid, txy);
    let txy_t = slice(g, t, 0, 2);
    let dxy = bin(g, BinaryOp::Sub, sxy, txy_t);
    let twh = slice(g, p, 2, 4);
    let twh_t = slice(g, t, 2, 4);
    let dwh = bin(g, BinaryOp::Sub, twh, twh_t);
    let d = g.add(Op::Concat { axis: 2 }, vec![dxy, dwh], O);
    let d2 = bin(g, BinaryOp::Mul, d, d);
    let d2 = bin(g, BinaryOp::Mul, d2, r);
    let boxes = sum(g, d2);
    let coord = scalar(g, y.coord);
    let boxes = bin(g, BinaryOp::Mul, boxes, coord);

    // Objectness: Σ (noobj + (1 − noobj)·r) · BCE(t_obj, r), PyTorch's stable form
    // max(x, 0) − x·r + log(1 + e^−|x|).
    let x = slice(g, p, 4, 5);
    let pos = un(g, UnaryOp::Relu, x);
    let xr = bin(g, BinaryOp::Mul, x, r);
    let ax = un(g, UnaryOp::Abs, x);
    let nax = un(g, UnaryOp::Neg, ax);
    let e = un(g, UnaryOp::Exp, nax);
    let one = scalar(g, 1.0);
    let e1 = bin(g, BinaryOp::Add, e, one);
    let softplus = un(g, UnaryOp::Log, e1);
    let bce = bin(g, BinaryOp::Sub, pos, xr);
    let bce = bin(g, BinaryOp::Add, bce, softplus);
    let keep = scalar(g, 1.0 - y.noobj);
    let w = bin(g, BinaryOp::Mul, r, keep);
    let noobj = scalar(g, y.noobj);
    let w = bin(g, BinaryOp::Add, w, noobj);
    let obj = bin(g, BinaryOp::Mul, bce, w);
    let obj = sum(g, obj);

    // Classes: −Σ onehot · log_softmax over the class axis (zero rows where no box). The
    // softmax's shift is detached: log_softmax does not depend on it.
    let cls = slice(g, p, 5, 5 + c);
    let onehot = slice(g, t, 5, 5 + c);
    let m = g.add(
        Op::Reduce {
            op: ReduceOp::Max,
            axes: vec![2],
        },
        vec![cls],
        O,
    );
    let m = un(g, UnaryOp::Detach, m);
    let dc = bin(g, BinaryOp::Sub, cls, m);
    let ec = un(g, UnaryOp::Exp, dc);
    let se = g.add(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![2],
        },
        vec![ec],
        O,
    );
    let lse = un(g, UnaryOp::Log, se);
    let logp = bin(g, BinaryOp::Sub, dc, lse);
    let tl = bin(g, BinaryOp::Mul, onehot, logp);
    let classes = sum(g, tl);
    let classes = un(g, UnaryOp::Neg, classes);

    let total = bin(g, BinaryOp::Add, boxes, obj);
    let total = bin(g, BinaryOp::Add, total, classes);
    let per = scalar(g, 1.0 / n as f64);
    Ok(bin(g, BinaryOp::Mul, total, per))
}
