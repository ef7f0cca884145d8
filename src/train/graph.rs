//! The training graph: forward pass in training mode, the loss, and the backward pass.
//!
//! In: a checked [`LayerGraph`] (frozen layers marked), a batch size and a loss. Out: one
//! primitive [`Graph`] whose outputs are the model's outputs (for accuracy), `loss`, one
//! gradient per trainable parameter (`grad:<path>`) and the updated running statistics of
//! every batchnorm that is not frozen (named by their buffer path).
//!
//! Frozen parameters and fixed (inline) weights are not differentiated: autodiff builds no
//! backward ops for the part of the network that leads only to them, so a frozen prefix costs
//! only its forward pass.

use crate::autodiff::backward;
use crate::graph::{Graph, Op, ValueId};
use crate::layer_graph::LayerGraph;
use crate::lower::{Mode, lower_with};
use crate::train_config::{Loss, Objective, Term};

/// A training graph and what its outputs mean.
#[derive(Debug, Clone)]
pub struct TrainGraph {
    pub prims: Graph,
    /// The model's own outputs (predictions), by name.
    pub predictions: Vec<String>,
    /// Parameters that get a gradient, as (index into `LayerGraph::params`, output name).
    pub grads: Vec<(usize, String)>,
    /// Running statistics updated by the step, as (parameter index, output name).
    pub stats: Vec<(usize, String)>,
    /// Per parameter index: whether it changes during training (trained or a running
    /// statistic), i.e. must not be folded into constants.
    pub variable: Vec<bool>,
    /// The inputs the loss adds (`targets`, ...), beside the model's own inputs.
    pub target_inputs: Vec<String>,
}

/// Attaches `objective` to the model outputs of `g` (its first `n_model` outputs) and
/// returns the loss value (see [`crate::loss::attach_objective`]).
pub fn attach_loss(
    g: &mut Graph,
    objective: &Objective,
    n_model: usize,
) -> Result<ValueId, String> {
    let outs = g.outputs[..n_model].to_vec();
    crate::loss::attach_objective(g, objective, &outs)
}

/// What `lg` is trained to minimize: its `train` section's `loss:`; else the outputs its body
/// computes as losses (`loss = triplet_loss(...)`, `output loss`), summed; else cross-entropy
/// on its first output.
pub fn objective_of(lg: &LayerGraph) -> Objective {
    if let Some(o) = lg.train.as_ref().and_then(|t| t.loss.clone()) {
        return o;
    }
    let terms: Vec<Term> = lg
        .outputs
        .iter()
        .filter(|(_, node)| lg.nodes[*node].op.is_loss())
        .map(|(name, _)| Term {
            weight: 1.0,
            loss: Loss::Value,
            outputs: vec![name.clone()],
            mask: None,
        })
        .collect();
    if terms.is_empty() {
        Objective::classification()
    } else {
        Objective { terms }
    }
}

/// Builds the training graph of `lg` for batches of `batch` samples.
pub fn build(lg: &LayerGraph, batch: usize, objective: &Objective) -> Result<TrainGraph, String> {
    let mut g = lower_with(lg, batch, Mode::Training);
    let n_model = lg.outputs.len();
    let stats: Vec<(usize, String)> = g.outputs[n_model..]
        .iter()
        .map(|(name, _)| {
            let index = lg
                .params
                .iter()
                .position(|p| &p.path == name)
                .ok_or_else(|| format!("running statistic `{name}` is not a parameter"))?;
            Ok((index, name.clone()))
        })
        .collect::<Result<_, String>>()?;
    let inputs_before = g.inputs.len();
    let loss_v = attach_loss(&mut g, objective, n_model)?;
    // The model's outputs that remain (an output read as a loss is part of `loss` now).
    let predictions: Vec<String> = lg
        .outputs
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| g.outputs.iter().any(|(o, _)| o == n))
        .collect();
    let target_inputs = g.inputs[inputs_before..]
        .iter()
        .map(|(n, _)| n.clone())
        .collect();

    // The parameter leaves to differentiate.
    let mut leaves: Vec<(usize, ValueId)> = Vec::new();
    for (v, node) in g.nodes.iter().enumerate() {
        if let Op::Param { index } = node.op
            && lg.params[index].trainable
        {
            leaves.push((index, v));
        }
    }
    let wrt: Vec<ValueId> = leaves.iter().map(|&(_, v)| v).collect();
    let grads = backward(&mut g, loss_v, None, &wrt)?;
    let mut grad_outputs = Vec::new();
    for (&(index, _), grad) in leaves.iter().zip(grads) {
        // A parameter the loss does not reach gets no gradient (PyTorch leaves `.grad` None
        // and the optimizer skips it).
        if let Some(gv) = grad {
            let name = format!("grad:{}", lg.params[index].path);
            g.outputs.push((name.clone(), gv));
            grad_outputs.push((index, name));
        }
    }
    let mut variable = vec![false; lg.params.len()];
    for &(i, _) in grad_outputs.iter().chain(&stats) {
        variable[i] = true;
    }
    Ok(TrainGraph {
        prims: g,
        predictions,
        grads: grad_outputs,
        stats,
        variable,
        target_inputs,
    })
}

/// Marks the parameters picked by `selectors` (see [`crate::elab::select_params`]) as not
/// trainable and their layers as frozen (so batchnorm runs in inference mode). Returns how
/// many parameters were frozen.
pub fn freeze(lg: &mut LayerGraph, selectors: &[String]) -> Result<usize, String> {
    let mut count = 0;
    for sel in selectors {
        let picked = crate::elab::select_params(lg, sel).map_err(|(msg, help)| match help {
            Some(h) => format!("--freeze {sel}: {msg} ({h})"),
            None => format!("--freeze {sel}: {msg}"),
        })?;
        for i in picked {
            if lg.params[i].trainable {
                count += 1;
            }
            lg.params[i].trainable = false;
            for node in lg.nodes.iter_mut() {
                if node.params.contains(&i) {
                    node.frozen = true;
                }
            }
        }
    }
    Ok(count)
}
