//! Verification metrics: ROC AUC and the accuracy at the best threshold.
//!
//! In: one score per evaluation pair and whether the pair is the same identity. Out: the area
//! under the ROC curve ([`roc_auc`]) and the threshold that classifies the pairs best
//! ([`best_threshold`]), with its accuracy.
//!
//! Both functions take *similarities*: a higher score means "more likely the same". Models
//! that measure a distance (triplet and contrastive embeddings: lower means "more likely the
//! same") go through [`Score`], which says which of the two a list of numbers is, negates
//! distances on the way in and gives the threshold back in the caller's units, with the one
//! decision rule [`Score`]'s kind implies ([`ScoreKind::is_same`]):
//!
//! - `Similarity`: `score >= threshold` ⇒ same;
//! - `Distance`: `distance <= threshold` ⇒ same.
//!
//! Scores must be finite (a NaN or infinite score is an error naming the pair), there must be
//! as many labels as scores, and both classes must be present (AUC is undefined otherwise, as
//! in scikit-learn's `roc_auc_score`, which raises there).

/// Whether a list of scores is a similarity (higher = same) or a distance (lower = same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreKind {
    Similarity,
    Distance,
}

impl ScoreKind {
    /// The decision at `threshold` for one pair of score `value`, in the kind's own units:
    /// `value >= threshold` for a similarity, `value <= threshold` for a distance.
    pub fn is_same(self, value: f64, threshold: f64) -> bool {
        match self {
            ScoreKind::Similarity => value >= threshold,
            ScoreKind::Distance => value <= threshold,
        }
    }

    /// `"similarity"` or `"distance"`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            ScoreKind::Similarity => "similarity",
            ScoreKind::Distance => "distance",
        }
    }
}

/// Scores of evaluation pairs, tagged with what they measure, so nobody gets a sign wrong:
/// `Score::Distance(d).best_threshold(same)` returns a distance threshold (`d <= t` ⇒ same),
/// `Score::Similarity(s).best_threshold(same)` a similarity threshold (`s >= t` ⇒ same).
#[derive(Debug, Clone, PartialEq)]
pub enum Score {
    Distance(Vec<f64>),
    Similarity(Vec<f64>),
}

impl Score {
    pub fn kind(&self) -> ScoreKind {
        match self {
            Score::Distance(_) => ScoreKind::Distance,
            Score::Similarity(_) => ScoreKind::Similarity,
        }
    }

    /// The raw values, in the kind's own units.
    pub fn values(&self) -> &[f64] {
        match self {
            Score::Distance(v) | Score::Similarity(v) => v,
        }
    }

    /// The values as similarities (distances negated).
    fn similarities(&self) -> Vec<f64> {
        match self {
            Score::Distance(v) => v.iter().map(|d| -d).collect(),
            Score::Similarity(v) => v.clone(),
        }
    }

    /// ROC AUC of the pairs (a distance ranks pairs in the reverse order of a similarity).
    pub fn roc_auc(&self, same: &[bool]) -> Result<f64, String> {
        roc_auc(&self.similarities(), same)
    }

    /// The best threshold, in the kind's own units: for a distance, a distance `t` with
    /// `distance <= t` ⇒ same (ties between thresholds of equal accuracy go to the largest
    /// distance, the negation of [`best_threshold`]'s rule).
    pub fn best_threshold(&self, same: &[bool]) -> Result<Threshold, String> {
        let t = best_threshold(&self.similarities(), same)?;
        Ok(match self {
            Score::Distance(_) => Threshold {
                threshold: -t.threshold,
                accuracy: t.accuracy,
            },
            Score::Similarity(_) => t,
        })
    }
}

/// A decision threshold and the accuracy it gives on the pairs it was chosen on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub threshold: f64,
    /// The fraction of pairs classified correctly, in `[0, 1]`.
    pub accuracy: f64,
}

/// Checks the lengths, finiteness and the presence of both classes; returns the counts of
/// same and different pairs.
fn check(scores: &[f64], same: &[bool]) -> Result<(usize, usize), String> {
    if scores.len() != same.len() {
        return Err(format!(
            "{} scores but {} same/different labels; give one label per pair",
            scores.len(),
            same.len()
        ));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(format!(
            "the score of pair {i} is {}; scores must be finite numbers (a NaN usually means \
             the model's outputs diverged)",
            scores[i]
        ));
    }
    let pos = same.iter().filter(|&&s| s).count();
    let neg = same.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(format!(
            "the {} evaluation pairs are all {}; verification metrics need both same and \
             different pairs",
            same.len(),
            if pos == 0 { "different" } else { "same" }
        ));
    }
    Ok((pos, neg))
}

/// The indices of `scores` sorted by ascending score (the sort is stable, so equal scores
/// keep their order).
fn ascending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    order
}

/// The area under the ROC curve of `scores` (higher = more likely same) against `same`: the
/// probability that a random same pair scores higher than a random different pair, a tie
/// counting one half. Computed from ranks (Mann–Whitney U), tied scores sharing their average
/// rank, which is what scikit-learn's `roc_auc_score` gives (its trapezoidal ROC curve joins
/// tied scores by a straight segment).
///
/// Errors: lengths differ, a score is not finite, or only one class is present.
pub fn roc_auc(scores: &[f64], same: &[bool]) -> Result<f64, String> {
    let (pos, neg) = check(scores, same)?;
    let order = ascending(scores);
    // Sum of the (1-based, tie-averaged) ranks of the same pairs, doubled to stay in integers:
    // a run of equal scores at positions i..j (0-based) has average rank (i + 1 + j) / 2.
    let mut rank_sum2: u128 = 0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let same_in_run = order[i..j].iter().filter(|&&k| same[k]).count() as u128;
        rank_sum2 += same_in_run * (i as u128 + 1 + j as u128);
        i = j;
    }
    // U = R - P(P+1)/2, AUC = U / (P·N).
    let (p, n) = (pos as u128, neg as u128);
    let u2 = rank_sum2 - p * (p + 1);
    Ok(u2 as f64 / (2.0 * p as f64 * n as f64))
}

/// The threshold `t` maximizing the accuracy of the rule `score >= t` ⇒ same, and that
/// accuracy.
///
/// The candidates are every distinct decision the rule can make on these scores, each named by
/// one threshold: the smallest score (every pair same), the midpoint between each two adjacent
/// distinct sorted scores, and one above the largest score (every pair different: the largest
/// score plus 1, or the next float up when adding 1 does not change it). Among candidates of
/// equal accuracy the smallest threshold wins, so the result does not depend on the order of
/// the pairs.
///
/// Errors: as [`roc_auc`].
pub fn best_threshold(scores: &[f64], same: &[bool]) -> Result<Threshold, String> {
    let (pos, _) = check(scores, same)?;
    let order = ascending(scores);
    let total = scores.len();
    // At threshold below everything, all pairs are called same: the correct ones are the
    // same pairs. Moving the threshold past a run of equal scores calls that run different:
    // each same pair in it becomes wrong, each different pair right.
    let mut correct = pos as i64;
    let mut best = (correct, scores[order[0]]);
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        for &k in &order[i..j] {
            correct += if same[k] { -1 } else { 1 };
        }
        let lo = scores[order[i]];
        let t = match order.get(j) {
            Some(&next) => midpoint(lo, scores[next]),
            None => above(lo),
        };
        if correct > best.0 {
            best = (correct, t);
        }
        i = j;
    }
    Ok(Threshold {
        threshold: best.1,
        accuracy: best.0 as f64 / total as f64,
    })
}

/// The midpoint of `a < b`, computed without overflow; `b` itself when rounding leaves no float
/// strictly between (either way `a` falls below the threshold and `b` at or above it).
fn midpoint(a: f64, b: f64) -> f64 {
    let m = a / 2.0 + b / 2.0;
    if m > a { m } else { b }
}

/// A threshold strictly above `max`: `max + 1`, or the next float when 1 is lost to rounding.
fn above(max: f64) -> f64 {
    let t = max + 1.0;
    if t > max { t } else { max.next_up() }
}

/// What verification evaluation reports: the accuracy at the best threshold, that threshold
/// (in the score's own units, as [`Score::best_threshold`]) and the ROC AUC. The training
/// JSON's keys for them are `verification_accuracy`, `threshold` and `auc`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verification {
    pub accuracy: f64,
    pub threshold: f64,
    pub auc: f64,
}

/// Evaluates scored pairs: [`Score::best_threshold`] and [`Score::roc_auc`] at once.
pub fn evaluate(score: &Score, same: &[bool]) -> Result<Verification, String> {
    let t = score.best_threshold(same)?;
    Ok(Verification {
        accuracy: t.accuracy,
        threshold: t.threshold,
        auc: score.roc_auc(same)?,
    })
}

/// The distances (`pairwise_distance`, as the triplet loss measures them) of evaluation pairs
/// `(i, j, same)` whose samples' embeddings are the rows of `embeddings` (`rows × dim`,
/// row-major), and the pairs' labels. Errors: `dim` is 0 or does not divide the embeddings,
/// or a pair indexes a row that does not exist.
pub fn pair_distances(
    embeddings: &[f32],
    dim: usize,
    pairs: &[(usize, usize, bool)],
) -> Result<(Score, Vec<bool>), String> {
    if dim == 0 || !embeddings.len().is_multiple_of(dim) {
        return Err(format!(
            "{} embedding values do not divide into rows of {dim}",
            embeddings.len()
        ));
    }
    let rows = embeddings.len() / dim;
    let row = |i: usize| &embeddings[i * dim..(i + 1) * dim];
    let mut d = Vec::with_capacity(pairs.len());
    for (k, &(i, j, _)) in pairs.iter().enumerate() {
        if i >= rows || j >= rows {
            return Err(format!(
                "pair {k} is ({i}, {j}) but there are {rows} embeddings"
            ));
        }
        d.push(super::mining::pairwise_distance(row(i), row(j)));
    }
    Ok((
        Score::Distance(d),
        pairs.iter().map(|&(_, _, s)| s).collect(),
    ))
}
