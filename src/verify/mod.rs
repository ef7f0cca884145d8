//! Face verification, the host side: metrics, samplers, triplet mining, and where a
//! verification model's embedding is.
//!
//! In: labelled datasets (labels are identities), embeddings of batches, scores of pairs, a
//! model's layer graph. Out: evaluation pairs, P×K batches and triplets to train on
//! ([`sample`]), the triplets of online mining within a batch ([`mining`]), ROC AUC and the
//! accuracy at the best threshold ([`metrics`]), and the node whose value is the embedding of
//! the first input with how the model compares two images ([`embedding_node`],
//! [`score_kind`]). Nothing here compiles or runs a model; the trainer and the CLI call these.
//!
//! How the pieces fit in verification training:
//!
//! - data: [`open_set`] with an [`IdentitySplit`] (`--identities`-style text through
//!   [`IdentitySplit::parse`], or [`IdentitySplit::default_for`]) gives the training and the
//!   evaluation datasets;
//! - triplet models with online mining: each batch of a [`PkSampler`] epoch is run through the
//!   embedding ([`embedding_node`]; `crate::cut::prefix` cuts the model there), [`mine`] picks
//!   `[anchor, positive, negative]` within it, and those rows feed the triplet loss; without
//!   mining, [`random_triplets`] gives the epoch's triplets directly;
//! - siamese models: pairs for `x1`, `x2` and the `same` target (e.g. [`eval_pairs`] with a
//!   per-epoch seed);
//! - evaluation: [`eval_pairs`] on the evaluation identities (a fixed seed), then for distance
//!   models the embeddings and [`pair_distances`], for a learned similarity
//!   `Score::Similarity(sigmoid(logit))`, and [`evaluate`]: `verification_accuracy`, `auc`, and
//!   the threshold to store in the checkpoint (`train::checkpoint::Progress::threshold`, in the
//!   units `netc verify` prints).

pub mod metrics;
pub mod mining;
pub mod sample;

pub use metrics::{
    Score, ScoreKind, Threshold, Verification, best_threshold, evaluate, pair_distances, roc_auc,
};
pub use mining::{Mining, mine, pairwise_distance};
pub use sample::{
    IdentitySplit, PkSampler, eval_pairs, open_set, random_triplets, select_identities,
    split_identities,
};

use crate::layer_graph::{LayerGraph, NodeId, Op};
use crate::train_config::Loss;

/// The node whose value is the embedding of the model's first input, for a verification
/// model. Found, in this order:
///
/// 1. a `triplet_loss` in the body (`specs/triplet.net`): its first argument, the anchor's
///    embedding;
/// 2. a `triplet` or `contrastive` loss in the `train` section, on outputs: the first output
///    (it must depend on the first input only);
/// 3. otherwise the place where the first input's branch meets another input's branch
///    (`specs/siamese.net`: `sub(embed(x1), embed(x2))`): the first input's operand there, when
///    both operands are applications of one shared module (the same layers with the same
///    parameters, on different inputs). For siamese.net this is the last node of the first
///    application of `embed`, its `l2_normalize`.
///
/// Errors name the model and say what netc looks for.
pub fn embedding_node(lg: &LayerGraph) -> Result<NodeId, String> {
    find(lg).map(|(n, _)| n[0])
}

/// Every embedding [`embedding_node`] finds beside the first: the arguments of the
/// `triplet_loss` (anchor, positive, negative), the outputs under a `triplet`/`contrastive`
/// loss, or the operands of the join that are the shared module's applications (siamese.net:
/// `embed(x1)`, `embed(x2)`), the first input's first. Cutting the model after them
/// (`crate::cut::suffix`) leaves what compares embeddings: siamese.net's similarity head,
/// which can then train on embeddings computed once.
pub fn embedding_nodes(lg: &LayerGraph) -> Result<Vec<NodeId>, String> {
    find(lg).map(|(n, _)| n)
}

/// How the model compares two images: [`ScoreKind::Distance`] between embeddings for triplet
/// and contrastive models (cases 1 and 2 of [`embedding_node`]), and for models of case 3 whose
/// output is not a single value; [`ScoreKind::Similarity`] for a model of case 3 whose one
/// output is a single value computed from both inputs (a learned similarity's logit, as
/// siamese.net's: the similarity is its sigmoid).
pub fn score_kind(lg: &LayerGraph) -> Result<ScoreKind, String> {
    find(lg).map(|(_, k)| k)
}

fn find(lg: &LayerGraph) -> Result<(Vec<NodeId>, ScoreKind), String> {
    let not_verification = |why: String| {
        format!(
            "model `{}` is not a verification model: {why}; netc finds the embedding as the \
             first argument of a `triplet_loss`, the first output under a `triplet` or \
             `contrastive` loss, or where the first input meets another input through one \
             shared module (`embed = shared face_net(...)`, as specs/triplet.net and \
             specs/siamese.net do)",
            lg.name
        )
    };
    let Some(first) = lg.inputs.first() else {
        return Err(not_verification("it has no input".into()));
    };
    let deps = input_dependencies(lg);
    if let Some(n) = lg
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::TripletLoss { .. }))
    {
        return Ok((n.inputs.clone(), ScoreKind::Distance));
    }
    let objective = crate::train::graph::objective_of(lg);
    let comparing = objective
        .terms
        .iter()
        .find(|t| matches!(t.loss, Loss::Triplet { .. } | Loss::Contrastive { .. }));
    let first_read = comparing.and_then(|t| match t.outputs.first() {
        Some(name) => lg.outputs.iter().find(|(n, _)| n == name),
        None => lg.outputs.first(),
    });
    if let Some(&(ref name, out)) = first_read {
        if deps[out] != [0] {
            return Err(not_verification(format!(
                "under its triplet/contrastive loss, its first output `{name}` should be the \
                 embedding of its first input `{}` alone, but it is not",
                first.name
            )));
        }
        let outs = lg.outputs.iter().map(|&(_, o)| o).collect();
        return Ok((outs, ScoreKind::Distance));
    }
    if lg.inputs.len() < 2 {
        return Err(not_verification(format!(
            "it has one input, `{}` (a verification model compares two images or more)",
            first.name
        )));
    }
    // The first node that joins the first input with another one.
    let Some(join) = lg
        .nodes
        .iter()
        .find(|n| deps[n.id].len() >= 2 && deps[n.id][0] == 0)
    else {
        return Err(not_verification(format!(
            "its first input `{}` never meets another input",
            first.name
        )));
    };
    let own = join.inputs.iter().find(|&&i| deps[i] == [0]);
    let other = join
        .inputs
        .iter()
        .find(|&&i| deps[i].len() == 1 && deps[i][0] != 0);
    let (Some(&a), Some(&b)) = (own, other) else {
        return Err(not_verification(format!(
            "`{}` joins its inputs, but not as one value of each",
            join.path
        )));
    };
    if !same_application(lg, a, b) {
        return Err(not_verification(format!(
            "`{}` joins `{}` and `{}`, which are not one shared module applied to two inputs",
            join.path, lg.nodes[a].path, lg.nodes[b].path
        )));
    }
    let mut all = vec![a];
    for &i in &join.inputs {
        if deps[i].len() == 1 && deps[i][0] != 0 && !all.contains(&i) && same_application(lg, a, i)
        {
            all.push(i);
        }
    }
    let similarity = matches!(lg.outputs.as_slice(),
        [(_, out)] if lg.nodes[*out].shape == [1] && deps[*out].len() >= 2);
    Ok((
        all,
        if similarity {
            ScoreKind::Similarity
        } else {
            ScoreKind::Distance
        },
    ))
}

/// For each node, the indices (into `lg.inputs`) of the inputs it depends on, sorted.
fn input_dependencies(lg: &LayerGraph) -> Vec<Vec<usize>> {
    let mut deps: Vec<Vec<usize>> = vec![vec![]; lg.nodes.len()];
    for (k, inp) in lg.inputs.iter().enumerate() {
        if let Some(d) = deps.get_mut(inp.node) {
            d.push(k);
        }
    }
    // Nodes are in creation order, so every node's inputs come before it.
    for n in &lg.nodes {
        let mut d = deps[n.id].clone();
        for &i in &n.inputs {
            if i < n.id {
                d.extend_from_slice(&deps[i]);
            }
        }
        d.sort_unstable();
        d.dedup();
        deps[n.id] = d;
    }
    deps
}

/// Whether `a` and `b` are the outputs of the same layers with the same parameters applied to
/// two different model inputs: walking back in step, every pair of nodes has the same path,
/// op and parameters, until both reach (different) inputs; and some layer on the way has
/// parameters (so the module is shared, not merely alike).
fn same_application(lg: &LayerGraph, a: NodeId, b: NodeId) -> bool {
    let mut stack = vec![(a, b)];
    let mut seen = std::collections::HashSet::new();
    let mut has_params = false;
    while let Some((x, y)) = stack.pop() {
        if !seen.insert((x, y)) {
            continue;
        }
        let (nx, ny) = (&lg.nodes[x], &lg.nodes[y]);
        if matches!(nx.op, Op::Input { .. }) && matches!(ny.op, Op::Input { .. }) {
            if x == y {
                return false;
            }
            continue;
        }
        if x == y
            || nx.op != ny.op
            || nx.path != ny.path
            || nx.params != ny.params
            || nx.inputs.len() != ny.inputs.len()
        {
            return false;
        }
        has_params |= !nx.params.is_empty();
        stack.extend(nx.inputs.iter().copied().zip(ny.inputs.iter().copied()));
    }
    has_params
}
