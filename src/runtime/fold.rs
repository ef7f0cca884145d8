//! Constant folding for an [`Executable`](super::Executable): the values of the constants a
//! fused graph needs (inference's folded batchnorm weights, reshaped biases), evaluated from the
//! parameters before the kernels run.
//!
//! In: the primitive graph, the parameter values and the constants wanted. Out: each wanted
//! value as an array, or an error when memory for one cannot be had: every result is allocated
//! fallibly ([`crate::budget`]), so a model whose estimate was wrong fails instead of aborting.
//! The common ops (reshape, unary, the batchnorm fold's per-channel product) skip the reference
//! interpreter's per-element overhead; the rest go through it.

use std::collections::HashMap;

use ndarray::ArrayD;

use crate::graph::{Graph, Op, ValueId, numel};

/// Evaluates the constant values the fused graph needs, from the parameters.
pub(super) fn eval_consts(
    prims: &Graph,
    params: &[ArrayD<f32>],
    wanted: &[ValueId],
) -> Result<HashMap<ValueId, ArrayD<f32>>, String> {
    let mut need = vec![false; prims.nodes.len()];
    let mut stack: Vec<ValueId> = wanted.to_vec();
    while let Some(v) = stack.pop() {
        if !need[v] {
            need[v] = true;
            stack.extend(&prims.nodes[v].inputs);
        }
    }
    let mut vals: HashMap<ValueId, ArrayD<f32>> = HashMap::new();
    for (v, node) in prims.nodes.iter().enumerate() {
        if !need[v] {
            continue;
        }
        let value = match &node.op {
            Op::Param { index } => {
                let p = params
                    .get(*index)
                    .ok_or_else(|| format!("no value for parameter #{index}"))?;
                if p.shape() != node.shape.as_slice() {
                    return Err(format!(
                        "parameter #{index} has shape {:?}, expected {:?}",
                        p.shape(),
                        node.shape
                    ));
                }
                let what = format!("parameter #{index}");
                ArrayD::from_shape_vec(p.raw_dim(), copy_of(p, &what)?)
                    .map_err(|e| e.to_string())?
            }
            // A reshape of a parameter (biases, scales) needs no evaluation beyond a copy.
            op => {
                let ins: Vec<&ArrayD<f32>> = node.inputs.iter().map(|i| &vals[i]).collect();
                let what = format!("a constant of {}", node.origin);
                match fast_const(op, &ins, &node.shape, &what)? {
                    Some(a) => a,
                    None => {
                        // The interpreter allocates infallibly: a trial allocation of the
                        // result's size first turns a failure into an error.
                        crate::budget::try_reserve::<f32>(numel(&node.shape), &what)?;
                        crate::reference::eval_node(op, &ins, &node.shape)
                    }
                }
            }
        };
        vals.insert(v, value);
    }
    Ok(vals)
}

/// The values of `a` in row-major order, allocated fallibly ([`crate::budget`]); a plain copy
/// when `a` is contiguous.
pub(super) fn copy_of(a: &ArrayD<f32>, what: &str) -> Result<Vec<f32>, String> {
    match a.as_slice() {
        Some(s) => crate::budget::try_copy(s.iter().copied(), what),
        None => crate::budget::try_copy(a.iter().copied(), what),
    }
}

/// An array of `shape` from row-major values, allocated fallibly ([`crate::budget`]).
fn array(
    shape: &[usize],
    values: impl ExactSizeIterator<Item = f32>,
    what: &str,
) -> Result<ArrayD<f32>, String> {
    let data = crate::budget::try_copy(values, what)?;
    ArrayD::from_shape_vec(ndarray::IxDyn(shape), data).map_err(|e| format!("{what}: {e}"))
}

/// The common constant ops (folding batchnorm into weights touches every weight) without the
/// reference interpreter's per-element overhead; `None` for the rest. Allocates fallibly.
fn fast_const(
    op: &Op,
    ins: &[&ArrayD<f32>],
    shape: &[usize],
    what: &str,
) -> Result<Option<ArrayD<f32>>, String> {
    use ndarray::IxDyn;
    match op {
        Op::Reshape if numel(ins[0].shape()) == numel(shape) => {
            let data = copy_of(ins[0], what)?;
            Ok(ArrayD::from_shape_vec(IxDyn(shape), data).ok())
        }
        Op::Unary(u) => array(
            ins[0].shape(),
            ins[0].iter().map(|&x| u.apply(x as f64) as f32),
            what,
        )
        .map(Some),
        Op::Binary(b) => {
            // The batchnorm fold: a weight times a per-output-channel scale, on plain slices.
            if let (Some(w), Some(sc)) = (ins[0].as_slice(), ins[1].as_slice())
                && ins[0].shape() == shape
                && !sc.is_empty()
                && w.len() % sc.len() == 0
                && ins[1].shape().iter().skip(1).all(|&d| d == 1)
                && ins[1].shape().first() == shape.first()
            {
                let inner = w.len() / sc.len();
                let mut out = crate::budget::try_filled(w.len(), 0f32, what)?;
                for ((dst, row), &k) in out.chunks_mut(inner).zip(w.chunks(inner)).zip(sc) {
                    for (d, &x) in dst.iter_mut().zip(row) {
                        *d = b.apply(x as f64, k as f64) as f32;
                    }
                }
                return Ok(ArrayD::from_shape_vec(IxDyn(shape), out).ok());
            }
            let (Some(x), Some(y)) = (
                ins[0].broadcast(IxDyn(shape)),
                ins[1].broadcast(IxDyn(shape)),
            ) else {
                return Ok(None);
            };
            let values = x
                .iter()
                .zip(y.iter())
                .map(|(&p, &q)| b.apply(p as f64, q as f64) as f32);
            array(shape, ExactZip(values, numel(shape)), what).map(Some)
        }
        _ => Ok(None),
    }
}

/// An iterator of known length (ndarray's zipped iterators do not say theirs).
struct ExactZip<I>(I, usize);

impl<I: Iterator<Item = f32>> Iterator for ExactZip<I> {
    type Item = f32;
    fn next(&mut self) -> Option<f32> {
        let v = self.0.next()?;
        self.1 = self.1.saturating_sub(1);
        Some(v)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator<Item = f32>> ExactSizeIterator for ExactZip<I> {}
