//! The graph cut: a model split into a prefix and a suffix at chosen nodes.
//!
//! In: a [`LayerGraph`] and named nodes of it. Out: new layer graphs —
//! - [`prefix`]: the nodes needed to compute the named nodes, which become its outputs under
//!   those names (inputs not needed are dropped);
//! - [`suffix`]: the model with each named *boundary* node replaced by a new input of that name
//!   and the node's per-sample shape (no mean/std: the values come in as they are), and every
//!   node the outputs no longer reach dropped (an original input still needed stays);
//! - [`frozen_prefix_boundary`]: where a model can be cut so that everything before the cut
//!   computes the same thing in training as in inference (the feature cache's cut).
//!
//! Both keep `lg.params` whole, at the same indices, so one [`crate::io::weights::Weights`]
//! serves the whole model, the prefix and the suffix (a layer not in the graph just never reads
//! its parameters). Node ids are renumbered densely in the original (topological) order; paths,
//! spans, frozen flags, scopes, the model parameters and the train config are kept. Running
//! the prefix and feeding its outputs to the suffix computes what the whole model computes
//! (`tests/cut.rs` checks every spec at several cuts).

use std::collections::HashSet;

use crate::layer_graph::{InputInfo, LayerGraph, Node, NodeId, Op};

/// The sub-graph of `lg` that computes `outputs`, which become its outputs under the given
/// names (in that order). Inputs the outputs do not need are dropped.
pub fn prefix(lg: &LayerGraph, outputs: &[(String, NodeId)]) -> Result<LayerGraph, String> {
    check_named(lg, outputs, "output")?;
    let roots: Vec<NodeId> = outputs.iter().map(|&(_, n)| n).collect();
    let keep = needed(lg, &roots, &HashSet::new());
    let (nodes, map) = renumber(lg, &keep, &[]);
    let inputs = lg
        .inputs
        .iter()
        .filter(|i| keep[i.node])
        .map(|i| InputInfo {
            node: map[i.node].expect("kept"),
            ..i.clone()
        })
        .collect();
    Ok(LayerGraph {
        name: lg.name.clone(),
        model_params: lg.model_params.clone(),
        inputs,
        nodes,
        params: lg.params.clone(),
        outputs: outputs
            .iter()
            .map(|(name, n)| (name.clone(), map[*n].expect("kept")))
            .collect(),
        train: lg.train.clone(),
    })
}

/// `lg` with each `boundary` node replaced by a new input of that name and the node's
/// per-sample shape (no mean/std). Nodes the outputs no longer reach are dropped; an original
/// input still needed stays. The inputs are the boundary inputs, in the order given, then the
/// original inputs still needed. A boundary input is kept even when nothing reads it (another
/// boundary node may hide it), so the suffix always takes every boundary value.
pub fn suffix(lg: &LayerGraph, boundary: &[(String, NodeId)]) -> Result<LayerGraph, String> {
    check_named(lg, boundary, "boundary")?;
    let cut: HashSet<NodeId> = boundary.iter().map(|&(_, n)| n).collect();
    let roots: Vec<NodeId> = lg.outputs.iter().map(|&(_, n)| n).collect();
    let mut keep = needed(lg, &roots, &cut);
    for &n in &cut {
        keep[n] = true;
    }
    for i in &lg.inputs {
        if keep[i.node] && !cut.contains(&i.node) && boundary.iter().any(|(b, _)| *b == i.name) {
            return Err(format!(
                "the boundary name `{}` is also the name of an input the suffix still needs",
                i.name
            ));
        }
    }
    let (nodes, map) = renumber(lg, &keep, boundary);
    let mut inputs: Vec<InputInfo> = boundary
        .iter()
        .map(|(name, n)| InputInfo {
            name: name.clone(),
            node: map[*n].expect("kept"),
            shape: lg.nodes[*n].shape.clone(),
            mean: Vec::new(),
            std: Vec::new(),
        })
        .collect();
    inputs.extend(
        lg.inputs
            .iter()
            .filter(|i| keep[i.node] && !cut.contains(&i.node))
            .map(|i| InputInfo {
                node: map[i.node].expect("kept"),
                ..i.clone()
            }),
    );
    Ok(LayerGraph {
        name: lg.name.clone(),
        model_params: lg.model_params.clone(),
        inputs,
        nodes,
        params: lg.params.clone(),
        outputs: lg
            .outputs
            .iter()
            .map(|(name, n)| (name.clone(), map[*n].expect("kept")))
            .collect(),
        train: lg.train.clone(),
    })
}

/// Whether `node` computes in training exactly what it computes in inference, deterministically
/// and without learning anything: no trainable parameter, no dropout (random in training), and
/// a batchnorm only when frozen (a frozen batchnorm runs with its running statistics in
/// training too; an unfrozen one uses the batch's statistics and updates its buffers).
pub fn is_fixed(lg: &LayerGraph, node: &Node) -> bool {
    if node.params.iter().any(|&p| lg.params[p].trainable) {
        return false;
    }
    match node.op {
        Op::Dropout { p } => p == 0.0,
        Op::BatchNorm { .. } => node.frozen,
        _ => true,
    }
}

/// The latest single-node cut with everything before it fixed, as `(path, node)`.
///
/// Precisely: the node `b` of largest index such that (1) `b` is the only node among
/// `nodes[0..=b]` whose value is used after it (read by a later node or a model output):
/// everything after `b` depends on the inputs only through `b`; (2) every node in
/// `nodes[0..=b]` is fixed ([`is_fixed`]): no trainable parameter, no dropout, no batchnorm in
/// training mode; (3) `b` is not an input (a cut at the input caches nothing) and not a model
/// output (then nothing would be left to train); (4) the model has one input. Nodes are in
/// topological order, so the prefix that computes `b` lies within `nodes[0..=b]`.
///
/// Given such a cut, running the prefix in inference mode and training the suffix on its
/// outputs gives the same results as training the whole model (the prefix's value for a
/// sample never changes while training), as long as nothing random (augmentation) acts on
/// the input: that is the caller's to check. The name is the node's module path.
pub fn frozen_prefix_boundary(lg: &LayerGraph) -> Option<(String, NodeId)> {
    if lg.inputs.len() != 1 {
        return None;
    }
    let n = lg.nodes.len();
    // last_use[v]: the largest index of a node reading v (n for a model output).
    let mut last_use = vec![None::<usize>; n];
    for node in &lg.nodes {
        for &i in &node.inputs {
            last_use[i] = Some(last_use[i].map_or(node.id, |u: usize| u.max(node.id)));
        }
    }
    for &(_, o) in &lg.outputs {
        last_use[o] = Some(n);
    }
    let is_output = |v: NodeId| lg.outputs.iter().any(|&(_, o)| o == v);
    let mut best = None;
    // Nodes among 0..=k still used after k.
    let mut live: HashSet<NodeId> = HashSet::new();
    for (k, node) in lg.nodes.iter().enumerate() {
        if !is_fixed(lg, node) {
            break;
        }
        for &i in &node.inputs {
            if last_use[i].is_some_and(|u| u <= k) {
                live.remove(&i);
            }
        }
        if last_use[k].is_some_and(|u| u > k) {
            live.insert(k);
        }
        if live.len() == 1
            && live.contains(&k)
            && !matches!(node.op, Op::Input { .. })
            && !is_output(k)
        {
            best = Some((node.path.clone(), k));
        }
    }
    best
}

/// Checks names are distinct and nodes exist.
fn check_named(lg: &LayerGraph, named: &[(String, NodeId)], what: &str) -> Result<(), String> {
    if named.is_empty() {
        return Err(format!("a cut needs at least one {what} node"));
    }
    let mut seen = HashSet::new();
    for (name, n) in named {
        if *n >= lg.nodes.len() {
            return Err(format!(
                "{what} `{name}`: node {n} is not in model `{}` ({} nodes)",
                lg.name,
                lg.nodes.len()
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("{what} name `{name}` is given twice"));
        }
    }
    Ok(())
}

/// Marks the nodes `roots` depend on (the roots included), not looking past `stop` nodes.
fn needed(lg: &LayerGraph, roots: &[NodeId], stop: &HashSet<NodeId>) -> Vec<bool> {
    let mut keep = vec![false; lg.nodes.len()];
    let mut stack: Vec<NodeId> = roots.to_vec();
    while let Some(v) = stack.pop() {
        if std::mem::replace(&mut keep[v], true) || stop.contains(&v) {
            continue;
        }
        stack.extend(&lg.nodes[v].inputs);
    }
    keep
}

/// The kept nodes with dense ids, and the old → new id map. Nodes named in `as_inputs` become
/// `Op::Input` nodes of that name (no inputs, no parameters, not frozen).
fn renumber(
    lg: &LayerGraph,
    keep: &[bool],
    as_inputs: &[(String, NodeId)],
) -> (Vec<Node>, Vec<Option<NodeId>>) {
    let mut map = vec![None; lg.nodes.len()];
    let mut nodes = Vec::new();
    for node in lg.nodes.iter().filter(|n| keep[n.id]) {
        let id = nodes.len();
        map[node.id] = Some(id);
        let mut new = node.clone();
        new.id = id;
        if let Some((name, _)) = as_inputs.iter().find(|&&(_, b)| b == node.id) {
            new.op = Op::Input { name: name.clone() };
            new.inputs = Vec::new();
            new.params = Vec::new();
            new.frozen = false;
        } else {
            new.inputs = node
                .inputs
                .iter()
                .map(|&i| map[i].expect("inputs come first"))
                .collect();
        }
        nodes.push(new);
    }
    (nodes, map)
}

/// The node of `lg` a layer name refers to: a node path as `netc summary` prints it (`fc`,
/// `layer4.1.1`), or an input's or output's name. Errors suggest the nearest paths.
pub fn find_node(lg: &LayerGraph, name: &str) -> Result<NodeId, String> {
    if let Some(n) = lg.nodes.iter().find(|n| n.path == name) {
        return Ok(n.id);
    }
    if let Some(i) = lg.inputs.iter().find(|i| i.name == name) {
        return Ok(i.node);
    }
    if let Some((_, n)) = lg.outputs.iter().find(|(o, _)| o == name) {
        return Ok(*n);
    }
    let hint = crate::diag::suggest(name, lg.nodes.iter().map(|n| n.path.as_str()))
        .map(|h| format!("did you mean `{h}`? "))
        .unwrap_or_default();
    Err(format!(
        "model `{}` has no layer `{name}`\n  help: {hint}layers are named by their path as \
         `netc summary` prints it",
        lg.name
    ))
}
