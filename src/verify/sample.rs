//! Samplers for verification: labelled samples in, identity splits, batches, triplets and
//! evaluation pairs out (as indices into the dataset).
//!
//! In: a labelled [`Dataset`] whose labels are identities (class subfolders of an image folder,
//! the classes of IDX/NPZ/CIFAR data), a seed, and for batches an epoch. Out:
//!
//! - [`IdentitySplit`]: which identities train and which evaluate (open-set verification:
//!   evaluation identities are never seen in training), parsed from `TRAIN/EVAL` text such as
//!   `0-6/7-9` ([`IdentitySplit::parse`]), or the default ([`IdentitySplit::default_for`]: the
//!   first 70% of identities train, as `0-6/7-9` on Fashion-MNIST's ten classes);
//!   [`split_identities`] and [`open_set`] cut datasets by it.
//! - [`PkSampler`]: batches of P identities × K samples (Hermans et al. 2017), for online
//!   mining ([`super::mining`]).
//! - [`random_triplets`]: one (anchor, positive, negative) per sample.
//! - [`eval_pairs`]: balanced same/different pairs in which every identity appears.
//!
//! Every random choice comes from [`Rng::from_words`] with the seed, a tag of this module and
//! the epoch, so results depend on nothing else (not on threads, nor on what ran before).
//! Labels stay the dataset's own identity numbers throughout. Errors name the data source
//! (the dataset's name) and say what to change.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crate::data::rng::Rng;
use crate::data::{DataError, Dataset, MAX_CLASSES, Pixels, Split};

const TAG_PK: u64 = 0x5645_5249_4650_4b31; // "VERIFPK1"
const TAG_TRIPLET: u64 = 0x5645_5249_4654_5231; // "VERIFTR1"
const TAG_PAIRS: u64 = 0x5645_5249_4650_5231; // "VERIFPR1"

/// The most evaluation pairs of each kind [`eval_pairs`] makes.
pub const MAX_PAIRS: usize = 1 << 20;

/// Which identities train and which evaluate. Both lists are sorted, without duplicates, and
/// disjoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySplit {
    pub train: Vec<i64>,
    pub eval: Vec<i64>,
}

impl IdentitySplit {
    /// Parses `TRAIN/EVAL`, each side a comma-separated list of identity numbers and inclusive
    /// ranges: `0-6/7-9`, `0,2,4-9/1,3`. Spaces around items are allowed. Errors (returned
    /// as text for the caller to prefix with its flag name) say what was expected.
    pub fn parse(text: &str) -> Result<IdentitySplit, String> {
        let example = "write TRAIN/EVAL identity lists, e.g. `0-6/7-9` or `0,2,4-9/1,3`";
        let Some((train, eval)) = text.split_once('/') else {
            return Err(format!("`{}` has no `/`; {example}", esc(text)));
        };
        if eval.contains('/') {
            return Err(format!("`{}` has more than one `/`; {example}", esc(text)));
        }
        let train = parse_list(train, "training")?;
        let eval = parse_list(eval, "evaluation")?;
        if let Some(id) = train.iter().find(|id| eval.binary_search(id).is_ok()) {
            return Err(format!(
                "identity {id} is both a training and an evaluation identity in `{}`; open-set \
                 evaluation uses identities never seen in training",
                esc(text)
            ));
        }
        Ok(IdentitySplit { train, eval })
    }

    /// The default protocol for `identities` identities numbered `0..identities`: the first
    /// 70% (rounded to nearest, at least two) train, the rest (at least two) evaluate. On
    /// Fashion-MNIST's ten classes: `0-6/7-9`. Errors for fewer than four identities.
    pub fn default_for(identities: usize) -> Result<IdentitySplit, String> {
        if identities < 4 {
            return Err(format!(
                "the data have {identities} identit{}; open-set verification needs at least \
                 four (two to train on, two to evaluate on)",
                if identities == 1 { "y" } else { "ies" }
            ));
        }
        let n = identities as i64;
        let k = ((7 * n + 5) / 10).clamp(2, n - 2);
        Ok(IdentitySplit {
            train: (0..k).collect(),
            eval: (k..n).collect(),
        })
    }
}

impl IdentitySplit {
    /// The two sides as text, ranges compacted: (`0-6`, `7-9`).
    pub fn sides(&self) -> (String, String) {
        (show_ids(&self.train), show_ids(&self.eval))
    }
}

impl fmt::Display for IdentitySplit {
    /// The text [`IdentitySplit::parse`] reads, ranges compacted: `0-6/7-9`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", show_ids(&self.train), show_ids(&self.eval))
    }
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    crate::diag::escape_controls(s)
}

/// One side of `TRAIN/EVAL`: sorted, deduplicated identity numbers.
fn parse_list(text: &str, side: &str) -> Result<Vec<i64>, String> {
    let mut ids = BTreeSet::new();
    if text.trim().is_empty() {
        return Err(format!(
            "the {side} identities are empty; give numbers or ranges such as `0-6`"
        ));
    }
    for item in text.split(',') {
        let item = item.trim();
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (parse_id(a, item, side)?, parse_id(b, item, side)?),
            None => {
                let id = parse_id(item, item, side)?;
                (id, id)
            }
        };
        if lo > hi {
            return Err(format!(
                "the range `{}` of the {side} identities runs backwards; write `{hi}-{lo}`",
                esc(item)
            ));
        }
        ids.extend(lo..=hi);
    }
    Ok(ids.into_iter().collect())
}

fn parse_id(text: &str, item: &str, side: &str) -> Result<i64, String> {
    let t = text.trim();
    match t.parse::<u64>() {
        Ok(v) if v < MAX_CLASSES as u64 => Ok(v as i64),
        Ok(v) => Err(format!(
            "identity {v} in the {side} identities is too large (at most {})",
            MAX_CLASSES - 1
        )),
        Err(_) => Err(format!(
            "`{}` in the {side} identities is not an identity number or a range `A-B` of them",
            esc(if t.is_empty() { item } else { t })
        )),
    }
}

/// `0-6, 8, 10-12` → `0-6,8,10-12` (sorted input).
fn show_ids(ids: &[i64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        parts.push(if j == i {
            ids[i].to_string()
        } else {
            format!("{}-{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// The sample indices of each identity, in dataset order, by identity.
fn by_identity(ds: &Dataset) -> BTreeMap<i64, Vec<usize>> {
    let mut map: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &l) in ds.labels.iter().enumerate() {
        map.entry(l).or_default().push(i);
    }
    map
}

/// The samples of `ds` whose identities are in `ids`, in dataset order, named after `ds` and
/// the identities. Every identity asked for must have samples.
pub fn select_identities(ds: &Dataset, ids: &[i64]) -> Result<Dataset, DataError> {
    let groups = by_identity(ds);
    let wanted: BTreeSet<i64> = ids.iter().copied().collect();
    let absent: Vec<i64> = wanted
        .iter()
        .copied()
        .filter(|id| !groups.contains_key(id))
        .collect();
    if !absent.is_empty() {
        let present: Vec<i64> = groups.keys().copied().collect();
        return Err(DataError::general(format!(
            "identit{} {} asked for but {} has no samples of {}",
            if absent.len() == 1 { "y" } else { "ies" },
            show_ids(&absent),
            ds.name,
            if absent.len() == 1 { "it" } else { "them" }
        ))
        .with_help(format!(
            "choose among the identities it has: {}",
            if present.is_empty() {
                "none (it is empty)".to_string()
            } else {
                show_ids(&present)
            }
        )));
    }
    let indices: Vec<usize> = (0..ds.len())
        .filter(|&i| wanted.contains(&ds.labels[i]))
        .collect();
    let shown: Vec<i64> = wanted.into_iter().collect();
    Ok(ds.subset(
        &indices,
        format!("{} identities {}", ds.name, show_ids(&shown)),
    ))
}

/// One dataset cut in two by identity: the samples of the training identities and those of
/// the evaluation identities.
pub fn split_identities(
    ds: &Dataset,
    split: &IdentitySplit,
) -> Result<(Dataset, Dataset), DataError> {
    Ok((
        select_identities(ds, &split.train)?,
        select_identities(ds, &split.eval)?,
    ))
}

/// The open-set protocol on a training/test split: training samples are the training
/// identities' samples of `split.train`; evaluation samples are *all* the evaluation
/// identities' samples, from `split.train` and `split.test` (these identities are never
/// trained on, so none of their images has been seen, and face folders whose test part holds
/// out too few images of small identities still give every identity).
pub fn open_set(split: &Split, ids: &IdentitySplit) -> Result<(Dataset, Dataset), DataError> {
    let train = select_identities(&split.train, &ids.train)?;
    let wanted: BTreeSet<i64> = ids.eval.iter().copied().collect();
    let pick = |ds: &Dataset| -> Vec<usize> {
        (0..ds.len())
            .filter(|&i| wanted.contains(&ds.labels[i]))
            .collect()
    };
    let both = concat(
        &split.train.subset(&pick(&split.train), ""),
        &split.test.subset(&pick(&split.test), ""),
        format!("{} + {}", split.train.name, split.test.name),
    )?;
    // Every evaluation identity must be present somewhere (the error names both halves).
    let eval = select_identities(&both, &ids.eval)?;
    Ok((train, eval))
}

/// `a`'s samples then `b`'s, as one dataset named `name`.
fn concat(a: &Dataset, b: &Dataset, name: String) -> Result<Dataset, DataError> {
    let pixels = match (&a.pixels, &b.pixels) {
        (Pixels::U8(x), Pixels::U8(y)) => Pixels::U8([x.as_slice(), y].concat()),
        (x, y) if x.floats().is_some() && y.floats().is_some() => Pixels::F32(
            [
                x.floats().unwrap_or_default(),
                y.floats().unwrap_or_default(),
            ]
            .concat(),
        ),
        _ => {
            return Err(DataError::general(format!(
                "{} stores bytes and {} floats (or the other way round); one data source \
                 stores one kind",
                a.name, b.name
            )));
        }
    };
    if a.sample_shape != b.sample_shape {
        return Err(DataError::general(format!(
            "{} and {} have samples of different shapes",
            a.name, b.name
        )));
    }
    Ok(Dataset {
        name,
        sample_shape: a.sample_shape.clone(),
        pixels,
        labels: [a.labels.as_slice(), &b.labels].concat(),
        classes: a.classes.max(b.classes),
        class_names: if a.class_names.is_empty() {
            b.class_names.clone()
        } else {
            a.class_names.clone()
        },
        // Verification uses images and identities only.
        fields: Vec::new(),
        objects: Vec::new(),
    })
}

/// The identities of `ds` with samples, checked for what triplets or pairs need: at least two
/// identities, and at least one with two samples (for positives). `what` names the user
/// ("triplets", "evaluation pairs").
fn groups_for(ds: &Dataset, what: &str) -> Result<Vec<(i64, Vec<usize>)>, DataError> {
    let groups: Vec<(i64, Vec<usize>)> = by_identity(ds).into_iter().collect();
    match groups.as_slice() {
        [] => Err(
            DataError::general(format!("{what} need samples, and {} is empty", ds.name))
                .with_help("choose identities that have samples in the data"),
        ),
        [(id, _)] => Err(DataError::general(format!(
            "{what} need at least two identities (a negative is another identity), but every \
             sample of {} is identity {id}",
            ds.name
        ))
        .with_help(
            "train on labelled data with several identities: class subfolders of an image \
             folder, or the classes of an IDX/NPZ file",
        )),
        _ if groups.iter().all(|(_, s)| s.len() < 2) => Err(DataError::general(format!(
            "{what} need an identity with at least two samples (a positive is another sample \
             of the anchor's identity), but each identity of {} has one",
            ds.name
        ))
        .with_help("add a second image of some identities")),
        _ => Ok(groups),
    }
}

/// Batches of P identities × K samples each, for online triplet mining.
///
/// An epoch is `⌊n / (P·K)⌋` batches (at least one), `n` the samples of the identities that
/// take part, so an epoch sees about as many samples as the dataset has. Within an epoch:
///
/// - identities are drawn from a queue of shuffled identity lists (a new shuffle when it runs
///   out), skipping any already in the batch, so every identity gets its turn and the P
///   identities of a batch are distinct;
/// - each identity deals its samples from a shuffled order, reshuffled when exhausted, so
///   samples recur only after all of the identity's samples have been dealt, and a batch holds
///   K distinct samples of each identity that has K. An identity with fewer than K samples
///   repeats some of its samples within a batch (sampling with replacement, as common P×K
///   samplers do), rather than being dropped.
/// - Identities with a single sample cannot give a positive and take no part (see
///   [`PkSampler::skipped`]).
///
/// Everything is drawn from the stream `(seed, epoch)`.
#[derive(Debug, Clone)]
pub struct PkSampler {
    groups: Vec<(i64, Vec<usize>)>,
    skipped: Vec<i64>,
    p: usize,
    k: usize,
    seed: u64,
}

impl PkSampler {
    /// A sampler of `p` identities × `k` samples over `ds`. Errors: `p < 2` or `k < 2` (a
    /// batch needs negatives and positives), fewer than `p` identities with two or more
    /// samples, or data unfit for triplets at all.
    pub fn new(ds: &Dataset, p: usize, k: usize, seed: u64) -> Result<PkSampler, DataError> {
        if p < 2 || k < 2 {
            return Err(DataError::general(format!(
                "a P×K batch of {p} identit{} × {k} sample{} has no {} ({})",
                if p == 1 { "y" } else { "ies" },
                if k == 1 { "" } else { "s" },
                if p < 2 { "negatives" } else { "positives" },
                ds.name
            ))
            .with_help("use at least 2 identities per batch and 2 samples per identity"));
        }
        let (groups, skipped): (Vec<_>, Vec<_>) = groups_for(ds, "triplets")?
            .into_iter()
            .partition(|(_, s)| s.len() >= 2);
        let skipped: Vec<i64> = skipped.into_iter().map(|(id, _)| id).collect();
        if groups.len() < p {
            return Err(DataError::general(format!(
                "a P×K batch takes {p} identities, but {} has {} identit{} with two or more \
                 samples",
                ds.name,
                groups.len(),
                if groups.len() == 1 { "y" } else { "ies" }
            ))
            .with_help(format!(
                "use at most {} identities per batch (a smaller batch, or more samples per \
                 identity)",
                groups.len()
            )));
        }
        Ok(PkSampler {
            groups,
            skipped,
            p,
            k,
            seed,
        })
    }

    /// P (identities) and K (samples of each) of every batch.
    pub fn shape(&self) -> (usize, usize) {
        (self.p, self.k)
    }

    /// P and K for a batch of about `batch` samples over `identities` usable identities:
    /// P = `batch / 4` identities (Hermans et al. take K = 4), at most `identities`, at least
    /// 2; K = `batch / P`, at least 2. The batch is `P·K ≤ batch` (4 when `batch < 4`): 32 over
    /// Fashion-MNIST's seven training classes gives 7 × 4.
    pub fn shape_for(batch: usize, identities: usize) -> (usize, usize) {
        let p = (batch / 4).min(identities).max(2);
        (p, (batch / p).max(2))
    }

    pub fn p(&self) -> usize {
        self.p
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Identities left out because they have a single sample.
    pub fn skipped(&self) -> &[i64] {
        &self.skipped
    }

    /// Batches per epoch: `⌊n / (P·K)⌋`, at least 1.
    pub fn batches_per_epoch(&self) -> usize {
        let n: usize = self.groups.iter().map(|(_, s)| s.len()).sum();
        (n / (self.p * self.k)).max(1)
    }

    /// The batches of `epoch`: each `P·K` dataset indices, identity by identity (K of the
    /// first identity, then K of the second, ...).
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = Rng::from_words(&[self.seed, TAG_PK, epoch]);
        let g = self.groups.len();
        let mut queue: VecDeque<usize> = VecDeque::new();
        // Per identity: its shuffled order and how far it has been dealt.
        let mut decks: Vec<(Vec<usize>, usize)> = self
            .groups
            .iter()
            .map(|(_, s)| (s.clone(), s.len()))
            .collect();
        let count = self.batches_per_epoch();
        let mut batches = Vec::with_capacity(count);
        for _ in 0..count {
            let mut chosen: Vec<usize> = Vec::with_capacity(self.p);
            let mut deferred: Vec<usize> = Vec::new();
            while chosen.len() < self.p {
                if queue.is_empty() {
                    let mut ids: Vec<usize> = (0..g).collect();
                    rng.shuffle(&mut ids);
                    queue.extend(ids);
                }
                let id = queue.pop_front().unwrap_or(0);
                if chosen.contains(&id) {
                    deferred.push(id);
                } else {
                    chosen.push(id);
                }
            }
            for id in deferred.into_iter().rev() {
                queue.push_front(id);
            }
            let mut batch = Vec::with_capacity(self.p * self.k);
            for &id in &chosen {
                let (deck, dealt) = &mut decks[id];
                let first = batch.len();
                for _ in 0..self.k {
                    if *dealt == deck.len() {
                        rng.shuffle(deck);
                        // Samples this batch already holds go last, so a batch repeats a
                        // sample only when the identity has fewer than K.
                        let held = &batch[first..];
                        deck.sort_by_key(|i| held.contains(i));
                        *dealt = 0;
                    }
                    batch.push(deck[*dealt]);
                    *dealt += 1;
                }
            }
            batches.push(batch);
        }
        batches
    }
}

/// A uniform index into `0..n` other than `skip` (`n ≥ 2`).
fn other_than(rng: &mut Rng, n: usize, skip: usize) -> usize {
    let r = rng.below(n as u64 - 1) as usize;
    if r < skip { r } else { r + 1 }
}

/// Random triplets for `epoch`: every sample whose identity has another sample is an anchor
/// once, in a shuffled order; its positive is a uniformly chosen other sample of its identity,
/// its negative a uniformly chosen sample of any other identity (so larger identities are
/// chosen more often, as when drawing a random sample until its identity differs). Samples
/// of single-sample identities appear only as negatives. Indices are into `ds`.
///
/// Errors: fewer than two identities, or no identity with two samples.
pub fn random_triplets(ds: &Dataset, seed: u64, epoch: u64) -> Result<Vec<[usize; 3]>, DataError> {
    let groups = groups_for(ds, "triplets")?;
    // Samples grouped by identity, contiguous: identity g owns sorted[start[g]..start[g + 1]].
    let mut sorted = Vec::with_capacity(ds.len());
    let mut start = vec![0];
    for (_, s) in &groups {
        sorted.extend_from_slice(s);
        start.push(sorted.len());
    }
    let mut anchors: Vec<(usize, usize)> = Vec::new(); // (group, position in group)
    for (g, (_, s)) in groups.iter().enumerate() {
        if s.len() >= 2 {
            anchors.extend((0..s.len()).map(|i| (g, i)));
        }
    }
    let mut rng = Rng::from_words(&[seed, TAG_TRIPLET, epoch]);
    rng.shuffle(&mut anchors);
    let n = sorted.len();
    Ok(anchors
        .into_iter()
        .map(|(g, i)| {
            let s = &groups[g].1;
            let pos = s[other_than(&mut rng, s.len(), i)];
            let (lo, hi) = (start[g], start[g + 1]);
            let r = rng.below((n - (hi - lo)) as u64) as usize;
            let neg = sorted[if r < lo { r } else { r + (hi - lo) }];
            [s[i], pos, neg]
        })
        .collect())
}

/// Balanced evaluation pairs `(i, j, same)` of `ds`, fixed by `seed`: `per_identity × I` same
/// pairs and as many different pairs, `I` the number of identities.
///
/// - Different pairs: each identity is the first member of `per_identity` of them, the second
///   a uniformly chosen sample of another identity. So every identity is used.
/// - Same pairs: the identities with two or more samples take turns (in identity order,
///   round-robin) giving two distinct uniformly chosen samples of theirs.
///
/// Pairs are drawn independently, so with few samples a pair may recur; the list is shuffled
/// (same and different interleaved). Errors: `per_identity == 0`, fewer than two identities,
/// or no identity with two samples.
pub fn eval_pairs(
    ds: &Dataset,
    per_identity: usize,
    seed: u64,
) -> Result<Vec<(usize, usize, bool)>, DataError> {
    if per_identity == 0 {
        return Err(
            DataError::general(format!("no evaluation pairs asked for ({})", ds.name))
                .with_help("ask for at least one pair per identity"),
        );
    }
    let groups = groups_for(ds, "evaluation pairs")?;
    let count = per_identity
        .checked_mul(groups.len())
        .filter(|&c| c <= MAX_PAIRS)
        .ok_or_else(|| {
            DataError::general(format!(
                "{per_identity} pairs per identity over the {} identities of {} is more than \
                 {MAX_PAIRS} pairs of each kind",
                groups.len(),
                ds.name
            ))
            .with_help("ask for fewer pairs per identity")
        })?;
    let mut sorted = Vec::with_capacity(ds.len());
    let mut start = vec![0];
    for (_, s) in &groups {
        sorted.extend_from_slice(s);
        start.push(sorted.len());
    }
    let n = sorted.len();
    let multi: Vec<usize> = (0..groups.len())
        .filter(|&g| groups[g].1.len() >= 2)
        .collect();
    let mut rng = Rng::from_words(&[seed, TAG_PAIRS]);
    let mut pairs = Vec::with_capacity(2 * count);
    for t in 0..count {
        let s = &groups[multi[t % multi.len()]].1;
        let i = rng.below(s.len() as u64) as usize;
        let j = other_than(&mut rng, s.len(), i);
        pairs.push((s[i], s[j], true));
    }
    for g in 0..groups.len() {
        let s = &groups[g].1;
        let (lo, hi) = (start[g], start[g + 1]);
        for _ in 0..per_identity {
            let i = s[rng.below(s.len() as u64) as usize];
            let r = rng.below((n - (hi - lo)) as u64) as usize;
            let j = sorted[if r < lo { r } else { r + (hi - lo) }];
            pairs.push((i, j, false));
        }
    }
    rng.shuffle(&mut pairs);
    Ok(pairs)
}
