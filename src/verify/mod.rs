//! Face verification, the host side: metrics, samplers and triplet mining.
//!
//! In: labelled datasets (labels are identities), embeddings of batches, scores of pairs.
//! Out: evaluation pairs, P×K batches and triplets to train on ([`sample`]), the triplets of
//! online mining within a batch ([`mining`]), ROC AUC and the accuracy at the best threshold
//! ([`metrics`]). Nothing here compiles or runs a model; the trainer and the CLI call these.

pub mod metrics;
pub mod mining;
pub mod sample;

pub use metrics::{Score, ScoreKind, Threshold, best_threshold, roc_auc};
pub use mining::{Mining, mine, pairwise_distance};
pub use sample::{
    IdentitySplit, PkSampler, eval_pairs, open_set, random_triplets, select_identities,
    split_identities,
};
