//! Face verification's host side (`netc::verify`): metrics against scikit-learn's stored values
//! and brute force, samplers, mining.

use netc::data::rng::Rng;
use netc::verify::{Score, ScoreKind, best_threshold, roc_auc};

/// AUC by definition: over all (same, different) pairs, 1 when the same pair scores higher,
/// 1/2 on a tie.
fn auc_brute(scores: &[f64], same: &[bool]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (i, &si) in same.iter().enumerate() {
        for (j, &sj) in same.iter().enumerate() {
            if si && !sj {
                den += 1.0;
                num += if scores[i] > scores[j] {
                    1.0
                } else if scores[i] == scores[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    num / den
}

fn accuracy(scores: &[f64], same: &[bool], kind: ScoreKind, t: f64) -> f64 {
    let ok = scores
        .iter()
        .zip(same)
        .filter(|&(&s, &y)| kind.is_same(s, t) == y)
        .count();
    ok as f64 / scores.len() as f64
}

/// Random scores with `levels` distinct values (0 = continuous) and random labels with both
/// classes present.
fn random_case(rng: &mut Rng, n: usize, levels: u64) -> (Vec<f64>, Vec<bool>) {
    loop {
        let same: Vec<bool> = (0..n).map(|_| rng.below(2) == 1).collect();
        let scores: Vec<f64> = same
            .iter()
            .map(|&s| {
                let base = if levels == 0 {
                    rng.uniform_in(-2.0, 2.0)
                } else {
                    rng.below(levels) as f64
                };
                base + if s { 0.5 } else { 0.0 }
            })
            .collect();
        if same.iter().any(|&s| s) && same.iter().any(|&s| !s) {
            return (scores, same);
        }
    }
}

#[test]
fn auc_and_best_accuracy_match_sklearn() {
    let text = std::fs::read_to_string("tests/data/verify/sklearn_metrics.json").unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 10);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let scores: Vec<f64> = c["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let same: Vec<bool> = c["same"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        let auc = roc_auc(&scores, &same).unwrap();
        let want = c["auc"].as_f64().unwrap();
        assert!(
            (auc - want).abs() < 1e-12,
            "{name}: auc {auc} vs sklearn {want}"
        );
        let t = best_threshold(&scores, &same).unwrap();
        let want = c["best_accuracy"].as_f64().unwrap();
        assert!(
            (t.accuracy - want).abs() < 1e-12,
            "{name}: best accuracy {} vs sklearn {want}",
            t.accuracy
        );
        let at = accuracy(&scores, &same, ScoreKind::Similarity, t.threshold);
        assert_eq!(
            at, t.accuracy,
            "{name}: the threshold gives another accuracy"
        );
    }
}

#[test]
fn auc_and_best_threshold_match_brute_force() {
    let mut rng = Rng::new(16);
    for trial in 0..300 {
        let n = 2 + rng.below(40) as usize;
        let levels = [0, 1, 2, 3, 7][trial % 5];
        let (scores, same) = random_case(&mut rng, n, levels);
        let auc = roc_auc(&scores, &same).unwrap();
        let want = auc_brute(&scores, &same);
        assert!((auc - want).abs() < 1e-12, "trial {trial}: {auc} vs {want}");

        // Every decision `score >= t` is `score >= v` for a score v, or "all different".
        let mut values = scores.clone();
        values.sort_by(f64::total_cmp);
        values.dedup();
        let mut cands: Vec<f64> = values.clone();
        cands.push(f64::INFINITY);
        let accs: Vec<f64> = cands
            .iter()
            .map(|&v| accuracy(&scores, &same, ScoreKind::Similarity, v))
            .collect();
        let best = accs.iter().cloned().fold(0.0, f64::max);
        let t = best_threshold(&scores, &same).unwrap();
        assert_eq!(t.accuracy, best, "trial {trial}");
        assert!(t.threshold.is_finite());
        assert_eq!(
            accuracy(&scores, &same, ScoreKind::Similarity, t.threshold),
            best
        );
        // Ties go to the smallest threshold: the first best candidate's decision set.
        let first = accs.iter().position(|&a| a == best).unwrap();
        let below = if first == 0 {
            f64::NEG_INFINITY
        } else {
            cands[first - 1]
        };
        assert!(
            below < t.threshold && t.threshold <= cands[first],
            "trial {trial}: threshold {} not in ({below}, {}]",
            t.threshold,
            cands[first]
        );
        // A midpoint between adjacent distinct scores, or the smallest score.
        if first > 0 && first < values.len() {
            assert_eq!(t.threshold, (values[first - 1] + values[first]) / 2.0);
        }

        // The order of the pairs does not matter.
        let mut perm: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut perm);
        let ps: Vec<f64> = perm.iter().map(|&i| scores[i]).collect();
        let py: Vec<bool> = perm.iter().map(|&i| same[i]).collect();
        assert_eq!(best_threshold(&ps, &py).unwrap(), t);
        assert_eq!(roc_auc(&ps, &py).unwrap(), auc);
    }
}

#[test]
fn distances_give_a_distance_threshold() {
    let mut rng = Rng::new(3);
    for trial in 0..100 {
        let (sim, same) = random_case(&mut rng, 30, [0, 3][trial % 2]);
        // Distances: small for same pairs.
        let dist: Vec<f64> = sim.iter().map(|s| 5.0 - s).collect();
        let score = Score::Distance(dist.clone());
        let t = score.best_threshold(&same).unwrap();
        assert_eq!(
            accuracy(&dist, &same, ScoreKind::Distance, t.threshold),
            t.accuracy
        );
        let neg: Vec<f64> = dist.iter().map(|d| -d).collect();
        let s = best_threshold(&neg, &same).unwrap();
        assert_eq!(t.accuracy, s.accuracy);
        assert_eq!(t.threshold, -s.threshold);
        assert_eq!(score.roc_auc(&same).unwrap(), roc_auc(&neg, &same).unwrap());
        let sim_score = Score::Similarity(sim.clone());
        assert_eq!(
            sim_score.roc_auc(&same).unwrap(),
            roc_auc(&sim, &same).unwrap()
        );
    }
    // A perfect distance: same pairs near, different far.
    let d = Score::Distance(vec![0.1, 0.2, 1.0, 1.2]);
    let same = [true, true, false, false];
    assert_eq!(d.roc_auc(&same).unwrap(), 1.0);
    let t = d.best_threshold(&same).unwrap();
    assert_eq!(t.accuracy, 1.0);
    assert!((t.threshold - 0.6).abs() < 1e-12, "{}", t.threshold);
    assert!(ScoreKind::Distance.is_same(0.2, t.threshold));
    assert!(!ScoreKind::Distance.is_same(1.0, t.threshold));
}

#[test]
fn metric_errors_say_what_is_wrong() {
    let e = roc_auc(&[0.1, 0.2], &[true, true]).unwrap_err();
    assert!(
        e.contains("all same") && e.contains("both same and different"),
        "{e}"
    );
    let e = best_threshold(&[0.1, 0.2], &[false, false]).unwrap_err();
    assert!(e.contains("all different"), "{e}");
    let e = roc_auc(&[0.1], &[true, false]).unwrap_err();
    assert!(e.contains("1 scores but 2"), "{e}");
    let e = best_threshold(&[0.1, f64::NAN], &[true, false]).unwrap_err();
    assert!(e.contains("pair 1") && e.contains("NaN"), "{e}");
    let e = roc_auc(&[], &[]).unwrap_err();
    assert!(e.contains("both"), "{e}");
}

// ---- samplers ----

use netc::data::{Dataset, Pixels, Split};
use netc::verify::{
    IdentitySplit, PkSampler, eval_pairs, open_set, random_triplets, split_identities,
};
use std::collections::{BTreeMap, BTreeSet};

/// A dataset of one-pixel samples whose pixel is the sample's index (mod 256), with the given
/// labels.
fn labelled(name: &str, labels: &[i64]) -> Dataset {
    Dataset {
        name: name.to_string(),
        sample_shape: vec![1, 1, 1],
        pixels: Pixels::U8((0..labels.len()).map(|i| i as u8).collect()),
        labels: labels.to_vec(),
        classes: labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0),
        class_names: vec![],
        fields: vec![],
        objects: vec![],
    }
}

/// `counts[id]` samples of each identity, interleaved.
fn with_counts(counts: &[usize]) -> Dataset {
    let mut labels = Vec::new();
    let max = counts.iter().copied().max().unwrap_or(0);
    for r in 0..max {
        for (id, &c) in counts.iter().enumerate() {
            if r < c {
                labels.push(id as i64);
            }
        }
    }
    labelled("synthetic", &labels)
}

#[test]
fn identity_split_parses_and_prints() {
    let s = IdentitySplit::parse("0-6/7-9").unwrap();
    assert_eq!(s.train, (0..7).collect::<Vec<_>>());
    assert_eq!(s.eval, vec![7, 8, 9]);
    assert_eq!(s.to_string(), "0-6/7-9");
    let s = IdentitySplit::parse(" 4-5, 0,2 ,2 / 1,3 ").unwrap();
    assert_eq!(s.train, vec![0, 2, 4, 5]);
    assert_eq!(s.eval, vec![1, 3]);
    assert_eq!(s.to_string(), "0,2,4-5/1,3");
    assert_eq!(
        IdentitySplit::default_for(10).unwrap().to_string(),
        "0-6/7-9"
    );
    assert_eq!(
        IdentitySplit::default_for(4).unwrap().to_string(),
        "0-1/2-3"
    );
    assert_eq!(
        IdentitySplit::default_for(100).unwrap().to_string(),
        "0-69/70-99"
    );
    let e = IdentitySplit::default_for(3).unwrap_err();
    assert!(
        e.contains("3 identities") && e.contains("at least four"),
        "{e}"
    );

    for (text, want) in [
        ("0-6", "has no `/`"),
        ("0-6/7-9/10", "more than one `/`"),
        ("/7-9", "training identities are empty"),
        ("0-6/ ", "evaluation identities are empty"),
        ("6-0/7", "runs backwards; write `0-6`"),
        ("0-6/6-9", "identity 6 is both"),
        (
            "a/1",
            "`a` in the training identities is not an identity number",
        ),
        ("0-/1", "`0-` in the training identities"),
        ("0/-1", "`-1` in the evaluation identities"),
        (
            "0/99999999",
            "identity 99999999 in the evaluation identities is too large",
        ),
        ("0,,1/2", "`` in the training"),
    ] {
        let e = IdentitySplit::parse(text).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
}

#[test]
fn identities_split_a_dataset() {
    let ds = with_counts(&[3, 2, 4, 1]);
    let (a, b) = split_identities(&ds, &IdentitySplit::parse("0,3/1-2").unwrap()).unwrap();
    assert_eq!(a.labels.iter().filter(|&&l| l == 0).count(), 3);
    assert!(a.labels.iter().all(|&l| l == 0 || l == 3));
    assert_eq!(a.len(), 4);
    assert_eq!(b.len(), 6);
    assert!(b.labels.iter().all(|&l| l == 1 || l == 2));
    assert_eq!(a.name, "synthetic identities 0,3");
    // Samples keep their pixels (the pixel is the original index).
    let Pixels::U8(p) = &b.pixels else { panic!() };
    for (k, &px) in p.iter().enumerate() {
        assert_eq!(ds.labels[px as usize], b.labels[k]);
    }

    let e = split_identities(&ds, &IdentitySplit::parse("0/5-7").unwrap()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("identities 5-7 asked for but synthetic has no samples of them")
            && text.contains("choose among the identities it has: 0-3"),
        "{text}"
    );
}

#[test]
fn open_set_evaluates_on_unseen_identities_from_both_halves() {
    let split = Split {
        train: labelled("tr", &[0, 1, 2, 3, 0, 1, 2, 3, 3]),
        test: labelled("te", &[0, 3, 2]),
    };
    let (train, eval) = open_set(&split, &IdentitySplit::parse("0-1/2-3").unwrap()).unwrap();
    assert_eq!(train.labels, vec![0, 1, 0, 1]);
    assert_eq!(eval.labels, vec![2, 3, 2, 3, 3, 3, 2]);
    assert_eq!(eval.name, "tr + te identities 2-3");
    let e = open_set(&split, &IdentitySplit::parse("0-1/2-4").unwrap()).unwrap_err();
    assert!(e.to_string().contains("identity 4 asked for"), "{e}");
    // The bundled data with the default protocol.
    let split = netc::data::bundled().unwrap();
    let ids = IdentitySplit::default_for(split.train.classes).unwrap();
    let (train, eval) = open_set(&split, &ids).unwrap();
    assert!(train.labels.iter().all(|&l| (0..7).contains(&l)));
    assert!(eval.labels.iter().all(|&l| (7..10).contains(&l)));
    let in_eval = |d: &Dataset| d.labels.iter().filter(|&&l| l >= 7).count();
    assert_eq!(eval.len(), in_eval(&split.train) + in_eval(&split.test));
    assert_eq!(train.len(), split.train.len() - in_eval(&split.train));
}

#[test]
fn pk_batches_hold_p_identities_of_k_samples() {
    // Identity 4 has fewer samples than K; identity 5 one sample (skipped).
    let ds = with_counts(&[9, 6, 7, 12, 3, 1, 8]);
    let (p, k) = (3, 4);
    let s = PkSampler::new(&ds, p, k, 11).unwrap();
    assert_eq!(s.skipped(), &[5]);
    assert_eq!(s.batches_per_epoch(), (9 + 6 + 7 + 12 + 3 + 8) / 12);
    let e0 = s.epoch(0);
    assert_eq!(e0, s.epoch(0), "deterministic");
    assert_ne!(e0, s.epoch(1), "epochs differ");
    assert_ne!(
        e0,
        PkSampler::new(&ds, p, k, 12).unwrap().epoch(0),
        "seeds differ"
    );
    let mut dealt: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for epoch in 0..20 {
        let mut turns = BTreeMap::new();
        for b in s.epoch(epoch) {
            assert_eq!(b.len(), p * k);
            let ids: Vec<i64> = b.chunks(k).map(|c| ds.labels[c[0]]).collect();
            let distinct: BTreeSet<i64> = ids.iter().copied().collect();
            assert_eq!(distinct.len(), p, "{ids:?}");
            assert!(!distinct.contains(&5));
            for c in b.chunks(k) {
                let id = ds.labels[c[0]];
                assert!(c.iter().all(|&i| ds.labels[i] == id));
                let uniq: BTreeSet<usize> = c.iter().copied().collect();
                let n = ds.labels.iter().filter(|&&l| l == id).count();
                assert_eq!(uniq.len(), k.min(n), "identity {id}: {c:?}");
                *turns.entry(id).or_insert(0) += 1;
                if epoch == 0 {
                    dealt.entry(id).or_default().extend(c);
                }
            }
        }
        // Within an epoch, every identity takes its turn before any takes a second.
        let counts: Vec<usize> = turns.values().copied().collect();
        assert_eq!(counts.len(), 6, "{turns:?}");
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "{turns:?}"
        );
    }
    // Within an epoch, an identity's samples are all dealt before any repeats.
    for (id, d) in dealt {
        let n = ds.labels.iter().filter(|&&l| l == id).count();
        for w in d.chunks(n) {
            let uniq: BTreeSet<usize> = w.iter().copied().collect();
            assert_eq!(uniq.len(), w.len(), "identity {id}: {d:?}");
        }
    }

    assert_eq!(PkSampler::shape_for(32, 7), (7, 4));
    assert_eq!(PkSampler::shape_for(32, 100), (8, 4));
    assert_eq!(PkSampler::shape_for(64, 7), (7, 9));
    assert_eq!(PkSampler::shape_for(6, 7), (2, 3));
    assert_eq!(PkSampler::shape_for(1, 7), (2, 2));
}

#[test]
fn pk_sampler_errors_name_the_data_and_the_fix() {
    let ds = with_counts(&[5, 5, 1]);
    let e = PkSampler::new(&ds, 3, 2, 0).unwrap_err().to_string();
    assert!(
        e.contains("takes 3 identities, but synthetic has 2 identities with two or more")
            && e.contains("at most 2 identities per batch"),
        "{e}"
    );
    let e = PkSampler::new(&ds, 1, 2, 0).unwrap_err().to_string();
    assert!(e.contains("has no negatives (synthetic)"), "{e}");
    let e = PkSampler::new(&ds, 2, 1, 0).unwrap_err().to_string();
    assert!(e.contains("has no positives"), "{e}");
    let one = with_counts(&[4]);
    let e = PkSampler::new(&one, 2, 2, 0).unwrap_err().to_string();
    assert!(
        e.contains("triplets need at least two identities")
            && e.contains("every sample of synthetic is identity 0"),
        "{e}"
    );
    let singles = with_counts(&[1, 1, 1]);
    let e = random_triplets(&singles, 0, 0).unwrap_err().to_string();
    assert!(e.contains("an identity with at least two samples"), "{e}");
    let e = eval_pairs(&singles, 3, 0).unwrap_err().to_string();
    assert!(
        e.contains("evaluation pairs need an identity with at least two"),
        "{e}"
    );
    let e = eval_pairs(&one, 3, 0).unwrap_err().to_string();
    assert!(
        e.contains("evaluation pairs need at least two identities"),
        "{e}"
    );
    let e = eval_pairs(&ds, 0, 0).unwrap_err().to_string();
    assert!(e.contains("no evaluation pairs"), "{e}");
    let e = eval_pairs(&ds, usize::MAX, 0).unwrap_err().to_string();
    assert!(e.contains("ask for fewer pairs"), "{e}");
    let empty = with_counts(&[]);
    let e = random_triplets(&empty, 0, 0).unwrap_err().to_string();
    assert!(e.contains("synthetic is empty"), "{e}");
}

#[test]
fn random_triplets_anchor_every_sample_once() {
    let ds = with_counts(&[4, 1, 6, 2, 30]);
    let t = random_triplets(&ds, 5, 0).unwrap();
    assert_eq!(t, random_triplets(&ds, 5, 0).unwrap());
    assert_ne!(t, random_triplets(&ds, 5, 1).unwrap());
    let mut anchors: Vec<usize> = t.iter().map(|x| x[0]).collect();
    anchors.sort();
    let want: Vec<usize> = (0..ds.len()).filter(|&i| ds.labels[i] != 1).collect();
    assert_eq!(
        anchors, want,
        "every sample of an identity with a positive, once"
    );
    // Negatives over many epochs: each other sample about equally often.
    let mut neg_count = vec![0usize; ds.len()];
    for epoch in 0..400 {
        for [a, p, n] in random_triplets(&ds, 5, epoch).unwrap() {
            assert_ne!(a, p);
            assert_eq!(ds.labels[a], ds.labels[p]);
            assert_ne!(ds.labels[a], ds.labels[n]);
            if ds.labels[a] == 4 {
                neg_count[n] += 1;
            }
        }
    }
    // Anchors of identity 4 (30 of them × 400 epochs) pick among the 13 other samples.
    let others: Vec<usize> = (0..ds.len()).filter(|&i| ds.labels[i] != 4).collect();
    for &i in &others {
        let expect = 30.0 * 400.0 / 13.0;
        let c = neg_count[i] as f64;
        assert!(
            (c - expect).abs() < 0.15 * expect,
            "sample {i}: {c} vs {expect}"
        );
    }
}

#[test]
fn eval_pairs_are_balanced_and_use_every_identity() {
    let ds = with_counts(&[5, 1, 3, 8, 2]);
    let pairs = eval_pairs(&ds, 4, 9).unwrap();
    assert_eq!(pairs, eval_pairs(&ds, 4, 9).unwrap());
    assert_ne!(pairs, eval_pairs(&ds, 4, 10).unwrap());
    let same = pairs.iter().filter(|p| p.2).count();
    assert_eq!(same, 4 * 5);
    assert_eq!(pairs.len(), 2 * same);
    let mut used = BTreeSet::new();
    let mut same_by_id: BTreeMap<i64, usize> = BTreeMap::new();
    for &(i, j, s) in &pairs {
        assert_ne!(i, j);
        assert_eq!(ds.labels[i] == ds.labels[j], s);
        used.insert(ds.labels[i]);
        used.insert(ds.labels[j]);
        if s {
            *same_by_id.entry(ds.labels[i]).or_insert(0) += 1;
        }
    }
    assert_eq!(used, (0..5).collect::<BTreeSet<i64>>());
    // Identities with two or more samples share the same pairs round-robin (20 over 4).
    assert_eq!(
        same_by_id.values().copied().collect::<Vec<_>>(),
        vec![5, 5, 5, 5]
    );
    // Interleaved, not all same pairs first.
    assert!(pairs[..same].iter().any(|p| !p.2));
}

// ---- mining ----

use netc::verify::{Mining, mine, pairwise_distance};

/// ‖a − b + 1e-6‖₂ written out, as PyTorch's pairwise_distance.
fn dist(e: &[f32], dim: usize, a: usize, b: usize) -> f64 {
    (0..dim)
        .map(|k| {
            let d = e[a * dim + k] as f64 - e[b * dim + k] as f64 + 1e-6;
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

/// Mining by brute force: sort the candidates by (key, index) and take the first.
fn mine_brute(e: &[f32], ids: &[i64], semi: bool, margin: f64) -> Vec<[usize; 3]> {
    let n = ids.len();
    let dim = e.len() / n;
    let mut out = vec![];
    for a in 0..n {
        let mut pos: Vec<(f64, usize)> = (0..n)
            .filter(|&p| p != a && ids[p] == ids[a])
            .map(|p| (-dist(e, dim, a, p), p))
            .collect();
        if pos.is_empty() {
            continue;
        }
        pos.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let (dp, p) = (-pos[0].0, pos[0].1);
        let mut neg: Vec<(f64, usize)> = (0..n)
            .filter(|&x| ids[x] != ids[a])
            .map(|x| (dist(e, dim, a, x), x))
            .collect();
        neg.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let band: Vec<&(f64, usize)> = neg
            .iter()
            .filter(|(d, _)| dp < *d && *d < dp + margin)
            .collect();
        let q = if semi && !band.is_empty() {
            band[0].1
        } else {
            neg[0].1
        };
        out.push([a, p, q]);
    }
    out
}

#[test]
fn mining_matches_brute_force() {
    let mut rng = Rng::new(17);
    let mut semi_band_used = 0;
    for trial in 0..300 {
        let n = 2 + rng.below(24) as usize;
        let dim = 1 + rng.below(5) as usize;
        let k = 2 + rng.below(4) as i64;
        let ids: Vec<i64> = (0..n).map(|_| rng.below(k as u64) as i64).collect();
        if ids.iter().all(|&i| i == ids[0]) {
            continue;
        }
        // A coarse grid in half the trials, so distances tie.
        let e: Vec<f32> = (0..n * dim)
            .map(|_| {
                if trial % 2 == 0 {
                    rng.below(3) as f32
                } else {
                    rng.uniform_in(-1.0, 1.0) as f32
                }
            })
            .collect();
        let margin = [0.2, 0.5, 1.0][trial % 3];
        let bh = mine(&e, &ids, Mining::BatchHard, margin, 0).unwrap();
        assert_eq!(bh, mine_brute(&e, &ids, false, margin), "trial {trial}");
        let sh = mine(&e, &ids, Mining::SemiHard, margin, 0).unwrap();
        assert_eq!(sh, mine_brute(&e, &ids, true, margin), "trial {trial}");
        semi_band_used += sh.iter().zip(&bh).filter(|(s, b)| s[2] != b[2]).count();
        // Random: valid triplets for the same anchors, fixed by the seed.
        let r = mine(&e, &ids, Mining::Random, margin, trial as u64).unwrap();
        assert_eq!(
            r,
            mine(&e, &ids, Mining::Random, margin, trial as u64).unwrap()
        );
        assert_eq!(r.len(), bh.len());
        for (t, b) in r.iter().zip(&bh) {
            assert_eq!(t[0], b[0]);
            assert!(t[0] != t[1] && ids[t[0]] == ids[t[1]] && ids[t[0]] != ids[t[2]]);
        }
        for t in &bh {
            assert!(
                (pairwise_distance(&e[t[0] * dim..][..dim], &e[t[1] * dim..][..dim])
                    - dist(&e, dim, t[0], t[1]))
                .abs()
                    < 1e-15
            );
        }
    }
    assert!(
        semi_band_used > 50,
        "semi-hard differed from batch-hard {semi_band_used} times"
    );
}

#[test]
fn mining_by_hand() {
    // 1-D embeddings: identity 0 at 0.0, 0.1, 0.5; identity 1 at 0.55, 0.9; identity 2 at 0.3.
    let e = [0.0f32, 0.1, 0.5, 0.55, 0.9, 0.3];
    let ids = [0, 0, 0, 1, 1, 2];
    let bh = mine(&e, &ids, Mining::BatchHard, 0.2, 0).unwrap();
    // Anchor 0: hardest positive 2 (0.5), hardest negative 5 (0.3). Sample 5 has no positive.
    assert_eq!(
        bh,
        vec![[0, 2, 5], [1, 2, 5], [2, 0, 3], [3, 4, 2], [4, 3, 2]]
    );
    let sh = mine(&e, &ids, Mining::SemiHard, 0.2, 0).unwrap();
    // The positives are as above; the negative is the closest in (d(a,p), d(a,p) + 0.2).
    // Anchor 0: d(a,p) = 0.5, band (0.5, 0.7): sample 3 (0.55). Anchor 1: d(a,p) = 0.4,
    // band (0.4, 0.6): sample 3 (0.45). Anchor 2: d(a,p) = 0.5, no negative in the band
    // (0.05, 0.2, 0.4): the hardest, 3. Anchor 3: d(a,p) = 0.35, band (0.35, 0.55): sample 1
    // (0.45; sample 0 is at 0.55 + 1e-6, outside). Anchor 4: d(a,p) = 0.35: sample 2 (0.4).
    assert_eq!(
        sh,
        vec![[0, 2, 3], [1, 2, 3], [2, 0, 3], [3, 4, 1], [4, 3, 2]]
    );
    assert_eq!("batch-hard".parse::<Mining>().unwrap(), Mining::BatchHard);
    assert_eq!("Semi_Hard".parse::<Mining>().unwrap(), Mining::SemiHard);
    assert_eq!("random".parse::<Mining>().unwrap(), Mining::Random);
    assert_eq!(Mining::default(), Mining::BatchHard);
    assert_eq!(Mining::SemiHard.to_string(), "semi-hard");
    let e = "hard".parse::<Mining>().unwrap_err();
    assert!(
        e.contains("unknown triplet mining `hard`; expected one of batch-hard, semi-hard, random"),
        "{e}"
    );
}

#[test]
fn mining_errors() {
    let e = mine(&[0.0; 4], &[0, 0], Mining::BatchHard, 0.2, 0).unwrap_err();
    assert!(e.contains("every sample of the batch is identity 0"), "{e}");
    let e = mine(&[0.0; 5], &[0, 1], Mining::BatchHard, 0.2, 0).unwrap_err();
    assert!(e.contains("5 embedding values for 2 samples"), "{e}");
    let e = mine(&[], &[], Mining::BatchHard, 0.2, 0).unwrap_err();
    assert!(e.contains("empty batch"), "{e}");
    let e = mine(
        &[0.0, 1.0, f32::NAN, 0.0],
        &[0, 1],
        Mining::SemiHard,
        0.2,
        0,
    )
    .unwrap_err();
    assert!(e.contains("sample 1 of the batch holds NaN"), "{e}");
    let e = mine(&[0.0, 1.0], &[0, 1], Mining::SemiHard, -1.0, 0).unwrap_err();
    assert!(e.contains("margin is -1"), "{e}");
    // No anchor with a positive: no triplets, no error.
    assert!(
        mine(&[0.0, 1.0], &[0, 1], Mining::BatchHard, 0.2, 0)
            .unwrap()
            .is_empty()
    );
}

// ---- the embedding of a verification model ----

use netc::layer_graph::Op;
use netc::verify::{embedding_node, score_kind};

fn spec_graph(path: &str, sets: &[&str]) -> netc::layer_graph::LayerGraph {
    netc::load_file(path, &netc::Options::with_sets(sets).unwrap())
        .unwrap_or_else(|e| panic!("{e}"))
        .graph
}

fn str_graph(src: &str) -> netc::layer_graph::LayerGraph {
    netc::load_str("t.net", src, &netc::Options::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .graph
}

/// The graph inputs a node depends on, by name.
fn depends_on(g: &netc::layer_graph::LayerGraph, n: usize) -> Vec<String> {
    let mut seen = vec![false; g.nodes.len()];
    let mut stack = vec![n];
    while let Some(x) = stack.pop() {
        if !std::mem::replace(&mut seen[x], true) {
            stack.extend(&g.nodes[x].inputs);
        }
    }
    g.inputs
        .iter()
        .filter(|i| seen[i.node])
        .map(|i| i.name.clone())
        .collect()
}

#[test]
fn embedding_of_triplet_and_siamese() {
    for sets in [&[][..], &["channels=3", "size=40", "embedding=16"][..]] {
        let g = spec_graph("specs/triplet.net", sets);
        let e = embedding_node(&g).unwrap();
        let loss = g
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::TripletLoss { .. }))
            .unwrap();
        assert_eq!(e, loss.inputs[0]);
        assert_eq!(depends_on(&g, e), ["anchor"]);
        assert_eq!(score_kind(&g).unwrap(), ScoreKind::Distance);

        let g = spec_graph("specs/siamese.net", sets);
        let e = embedding_node(&g).unwrap();
        let n = &g.nodes[e];
        assert!(matches!(n.op, Op::L2Normalize { .. }), "{:?}", n.op);
        assert_eq!(n.path, "embed.10");
        assert_eq!(depends_on(&g, e), ["x1"]);
        // The first application: the first l2_normalize of the graph.
        let first = g
            .nodes
            .iter()
            .position(|n| matches!(n.op, Op::L2Normalize { .. }))
            .unwrap();
        assert_eq!(e, first);
        assert_eq!(score_kind(&g).unwrap(), ScoreKind::Similarity);
    }
}

#[test]
fn embedding_of_other_verification_models() {
    // A contrastive loss in the train section, on two outputs.
    let g = str_graph(
        "block f() { flatten; fc: dense(3) }\n\
         model c {\n input a: [1, 2, 2]\n input b: [1, 2, 2]\n e = shared f()\n\
         ea = e(a)\n eb = e(b)\n output ea, eb\n train { loss: contrastive(margin=1) }\n}",
    );
    let e = embedding_node(&g).unwrap();
    assert_eq!(e, g.outputs[0].1);
    assert_eq!(score_kind(&g).unwrap(), ScoreKind::Distance);
    // A distance computed in the body from a shared module: a distance model.
    let g = str_graph(
        "block f() { flatten; fc: dense(3) }\n\
         model d {\n input a: [1, 2, 2]\n input b: [1, 2, 2]\n e = shared f()\n\
         d = sub(e(a), e(b))\n output d\n}",
    );
    let e = embedding_node(&g).unwrap();
    assert_eq!(g.nodes[e].path, "e.fc");
    assert_eq!(depends_on(&g, e), ["a"]);
    assert_eq!(score_kind(&g).unwrap(), ScoreKind::Distance);
}

#[test]
fn models_that_are_not_verification_models() {
    let g = spec_graph("specs/lenet5.net", &[]);
    let e = embedding_node(&g).unwrap_err();
    assert!(
        e.contains("model `lenet5` is not a verification model: it has one input, `image`")
            && e.contains("shared module"),
        "{e}"
    );
    // Two inputs through different layers.
    let g = str_graph(
        "model two {\n input a: [4]\n input b: [4]\n fa = a |> dense(3)\n\
         fb = b |> dense(3)\n out = add(fa, fb)\n output out\n}",
    );
    let e = embedding_node(&g).unwrap_err();
    assert!(
        e.contains("which are not one shared module applied to two inputs"),
        "{e}"
    );
    // Two inputs that never meet.
    let g = str_graph(
        "model apart {\n input a: [4]\n input b: [4]\n fa = a |> dense(3)\n\
         fb = b |> dense(3)\n output fa, fb\n}",
    );
    let e = embedding_node(&g).unwrap_err();
    assert!(
        e.contains("its first input `a` never meets another input"),
        "{e}"
    );
    // A contrastive loss whose first output mixes the inputs.
    let g = str_graph(
        "block f() { fc: dense(3) }\n\
         model m {\n input a: [3]\n input b: [3]\n e = shared f()\n\
         ea = add(e(a), b)\n eb = e(b)\n output ea, eb\n train { loss: contrastive(margin=1) }\n}",
    );
    let e = embedding_node(&g).unwrap_err();
    assert!(
        e.contains("its first output `ea` should be the embedding"),
        "{e}"
    );
}

// ---- netc embed / netc verify ----

use netc::io::weights::Weights;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn netc_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("netc runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh directory under the target's temp dir.
fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("verify-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two different 28×28 gray images.
fn images(dir: &Path) -> (PathBuf, PathBuf) {
    let a = dir.join("a.png");
    let b = dir.join("b.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 3) % 256) as u8]))
        .save(&a)
        .unwrap();
    image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([if (x / 4 + y / 4) % 2 == 0 { 230 } else { 20 }])
    })
    .save(&b)
    .unwrap();
    (a, b)
}

/// Initial weights of a spec saved to `dir/w.safetensors`; with `threshold`, a checkpoint that
/// stores it.
fn weights_file(spec: &str, dir: &Path, threshold: Option<f64>) -> (netc::Spec, Weights, PathBuf) {
    let s = netc::load_file(spec, &netc::Options::default()).unwrap();
    let w = Weights::init(&s.graph, 5);
    let path = dir.join(if threshold.is_some() {
        "ck.safetensors"
    } else {
        "w.safetensors"
    });
    let mut meta = std::collections::HashMap::new();
    if let Some(t) = threshold {
        let p = netc::train::checkpoint::Progress {
            threshold: Some(t),
            ..Default::default()
        };
        meta.insert(
            "netc.progress".to_string(),
            serde_json::to_string(&p).unwrap(),
        );
    }
    w.save_with(&path, &s.graph, vec![], meta).unwrap();
    (s, w, path)
}

/// The reference interpreter's outputs of `lg` on named `[1, ...]` inputs.
fn oracle(lg: &netc::layer_graph::LayerGraph, w: &Weights, inputs: &[(&str, &Path)]) -> Vec<f32> {
    let xs: Vec<(String, ndarray::ArrayD<f32>)> = inputs
        .iter()
        .map(|(name, p)| {
            let info = lg.inputs.iter().find(|i| i.name == *name).unwrap();
            let x = netc::io::image::load_image(p, info).unwrap();
            (name.to_string(), x.insert_axis(ndarray::Axis(0)))
        })
        .collect();
    let refs: Vec<(&str, ndarray::ArrayD<f32>)> =
        xs.iter().map(|(n, x)| (n.as_str(), x.clone())).collect();
    let prims = netc::lower::lower(lg, 1);
    let out = netc::reference::run::<f32>(&prims, &netc::model::params_f32(w), &refs).unwrap();
    out[0].iter().copied().collect()
}

#[test]
fn embed_writes_the_embeddings_of_the_first_input() {
    let dir = tmp("embed");
    let (a, b) = images(&dir);
    let (s, w, wpath) = weights_file("specs/triplet.net", &dir, None);
    let out = dir.join("emb.npy");
    let o = netc_cli(&[
        "embed",
        "specs/triplet.net",
        "--weights",
        wpath.to_str().unwrap(),
        "--input",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        a.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("3 embeddings of 64 values, of input `anchor`"),
        "{}",
        text(&o.stdout)
    );
    let e = netc::io::npy::read_f32(&out).unwrap();
    assert_eq!(e.shape(), [3, 64]);
    let rows: Vec<Vec<f32>> = e
        .outer_iter()
        .map(|r| r.iter().copied().collect())
        .collect();
    assert_eq!(rows[0], rows[2]);
    assert_ne!(rows[0], rows[1]);
    // The embedding as the oracle computes it on the cut graph.
    let node = embedding_node(&s.graph).unwrap();
    let lg = netc::cut::prefix(&s.graph, &[("embedding".into(), node)]).unwrap();
    for (row, img) in [(&rows[0], &a), (&rows[1], &b)] {
        let want = oracle(&lg, &w, &[("anchor", img)]);
        let err = row
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-5, "max error {err}");
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "l2-normalized: {norm}");
    }
    // More images than one batch, and a siamese model: its embedding has 64 values too.
    let many: Vec<String> = (0..70)
        .map(|i| if i % 3 == 0 { &b } else { &a })
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let (_, _, spath) = weights_file("specs/siamese.net", &dir, None);
    let mut args = vec![
        "embed",
        "specs/siamese.net",
        "--weights",
        spath.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--input",
    ];
    args.extend(many.iter().map(|s| s.as_str()));
    let o = netc_cli(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = netc::io::npy::read_f32(&out).unwrap();
    assert_eq!(e.shape(), [70, 64]);
    let rows: Vec<Vec<f32>> = e
        .outer_iter()
        .map(|r| r.iter().copied().collect())
        .collect();
    assert_eq!(
        rows[0], rows[66],
        "the same image in the first and the padded last batch"
    );
    assert_eq!(rows[1], rows[68]);
    assert_ne!(rows[0], rows[1]);
}

#[test]
fn verify_a_distance_model() {
    let dir = tmp("verify-distance");
    let (a, b) = images(&dir);
    let (s, w, wpath) = weights_file("specs/triplet.net", &dir, None);
    let (wp, ap, bp) = (
        wpath.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    );
    // The same image twice: distance ~0 (1e-6 per component), same at any positive threshold.
    let o = netc_cli(&[
        "verify",
        "specs/triplet.net",
        ap,
        ap,
        "--weights",
        wp,
        "--threshold",
        "0.001",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.starts_with("distance: 0.000008 (threshold 0.001 from --threshold"),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some("same"));
    // Two images: the distance of their embeddings, as the oracle gives them.
    let node = embedding_node(&s.graph).unwrap();
    let lg = netc::cut::prefix(&s.graph, &[("embedding".into(), node)]).unwrap();
    let (ea, eb) = (
        oracle(&lg, &w, &[("anchor", &a)]),
        oracle(&lg, &w, &[("anchor", &b)]),
    );
    let d = pairwise_distance(&ea, &eb);
    assert!(d > 0.01, "{d}");
    for (t, want) in [(d / 2.0, "different"), (d * 2.0, "same")] {
        let ts = t.to_string();
        let o = netc_cli(&[
            "verify",
            "specs/triplet.net",
            ap,
            bp,
            "--weights",
            wp,
            "--threshold",
            &ts,
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let out = text(&o.stdout);
        let got: f64 = out
            .strip_prefix("distance: ")
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((got - d).abs() < 1e-5, "{got} vs {d}");
        assert_eq!(out.lines().last(), Some(want), "{out}");
    }
    // No threshold: a usage error that says what to pass.
    let o = netc_cli(&["verify", "specs/triplet.net", ap, bp, "--weights", wp]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("stores no decision threshold")
            && err.contains("pass --threshold T: pairs whose embeddings are at most T apart"),
        "{err}"
    );
    // The threshold stored in a checkpoint.
    let (_, _, ck) = weights_file("specs/triplet.net", &dir, Some(d * 2.0));
    let o = netc_cli(&[
        "verify",
        "specs/triplet.net",
        ap,
        bp,
        "--weights",
        ck.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("from the checkpoint"), "{out}");
    assert_eq!(out.lines().last(), Some("same"));
}

#[test]
fn verify_a_learned_similarity() {
    let dir = tmp("verify-similarity");
    let (a, b) = images(&dir);
    let (s, w, wpath) = weights_file("specs/siamese.net", &dir, None);
    let (wp, ap, bp) = (
        wpath.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    );
    for (x, y) in [(&a, &b), (&a, &a)] {
        let logit = oracle(&s.graph, &w, &[("x1", x), ("x2", y)])[0] as f64;
        let want = 1.0 / (1.0 + (-logit).exp());
        let o = netc_cli(&[
            "verify",
            "specs/siamese.net",
            x.to_str().unwrap(),
            y.to_str().unwrap(),
            "--weights",
            wp,
            "--threshold",
            &want.to_string(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let out = text(&o.stdout);
        let got: f64 = out
            .strip_prefix("similarity: ")
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!(out.contains("same when ≥"), "{out}");
    }
    let o = netc_cli(&[
        "verify",
        "specs/siamese.net",
        ap,
        bp,
        "--weights",
        wp,
        "--threshold",
        "1.5",
    ]);
    assert_eq!(text(&o.stdout).lines().last(), Some("different"));
    let o = netc_cli(&[
        "verify",
        "specs/siamese.net",
        ap,
        bp,
        "--weights",
        wp,
        "--threshold",
        "-0.5",
    ]);
    assert_eq!(text(&o.stdout).lines().last(), Some("same"));
    let o = netc_cli(&["verify", "specs/siamese.net", ap, bp, "--weights", wp]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("similarity (0 to 1) is at least T"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn embed_and_verify_errors() {
    let dir = tmp("verify-errors");
    let (a, b) = images(&dir);
    let (_, _, wpath) = weights_file("specs/triplet.net", &dir, None);
    let (wp, ap, bp) = (
        wpath.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    );
    let out = dir.join("e.npy");
    // Not a verification model.
    let o = netc_cli(&[
        "embed",
        "specs/lenet5.net",
        "--weights",
        wp,
        "--input",
        ap,
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("model `lenet5` is not a verification model"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.exists());
    // An array of the wrong shape.
    let bad = dir.join("bad.npy");
    netc::io::npy::write_f32(&bad, &ndarray::ArrayD::zeros(ndarray::IxDyn(&[3, 28, 28]))).unwrap();
    let o = netc_cli(&[
        "verify",
        "specs/triplet.net",
        ap,
        bad.to_str().unwrap(),
        "--weights",
        wp,
        "--threshold",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("does not fit the model's input `anchor` [1, 28, 28]"),
        "{}",
        text(&o.stderr)
    );
    // A batch of two where one image is expected.
    let two = dir.join("two.npy");
    netc::io::npy::write_f32(
        &two,
        &ndarray::ArrayD::zeros(ndarray::IxDyn(&[2, 1, 28, 28])),
    )
    .unwrap();
    let o = netc_cli(&[
        "verify",
        "specs/triplet.net",
        ap,
        two.to_str().unwrap(),
        "--weights",
        wp,
        "--threshold",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("holds 2 images; verify compares one image with another"),
        "{}",
        text(&o.stderr)
    );
    // Weights of another model.
    let (_, _, lenet_w) = weights_file("specs/lenet5.net", &dir, None);
    let o = netc_cli(&[
        "verify",
        "specs/triplet.net",
        ap,
        bp,
        "--weights",
        lenet_w.to_str().unwrap(),
        "--threshold",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("error: ") && !err.contains("error: error:"),
        "{err}"
    );
    assert!(
        err.contains("the weights do not fit model `triplet`"),
        "{err}"
    );
    // Usage: one image, no weights, a threshold that is not a number.
    assert_eq!(
        netc_cli(&["verify", "specs/triplet.net", ap, "--weights", wp])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        netc_cli(&["verify", "specs/triplet.net", ap, bp])
            .status
            .code(),
        Some(2)
    );
    let o = netc_cli(&[
        "verify",
        "specs/triplet.net",
        ap,
        bp,
        "--weights",
        wp,
        "--threshold",
        "nan",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("not a finite number"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn pairs_of_embeddings_evaluate_as_distances() {
    use netc::verify::{evaluate, pair_distances};
    // Rows: identity 0 near (0, 0), identity 1 near (1, 0); pairs of each kind.
    let emb = [0.0f32, 0.0, 0.1, 0.0, 1.0, 0.0, 0.9, 0.1];
    let pairs = [
        (0, 1, true),
        (2, 3, true),
        (0, 2, false),
        (1, 3, false),
        (0, 3, false),
    ];
    let (score, same) = pair_distances(&emb, 2, &pairs).unwrap();
    assert_eq!(same, [true, true, false, false, false]);
    let Score::Distance(d) = &score else { panic!() };
    for (k, &(i, j, _)) in pairs.iter().enumerate() {
        assert_eq!(d[k], dist(&emb, 2, i, j));
    }
    let v = evaluate(&score, &same).unwrap();
    assert_eq!((v.accuracy, v.auc), (1.0, 1.0));
    assert!(d[1] < v.threshold && v.threshold < d[3], "{v:?} {d:?}");
    assert_eq!(v.threshold, score.best_threshold(&same).unwrap().threshold);
    let e = pair_distances(&emb, 3, &pairs).unwrap_err();
    assert!(
        e.contains("8 embedding values do not divide into rows of 3"),
        "{e}"
    );
    let e = pair_distances(&emb, 2, &[(0, 4, true)]).unwrap_err();
    assert!(
        e.contains("pair 0 is (0, 4) but there are 4 embeddings"),
        "{e}"
    );
}

#[test]
fn every_embedding_and_the_head_after_them() {
    use netc::verify::embedding_nodes;
    let g = spec_graph("specs/triplet.net", &[]);
    let e = embedding_nodes(&g).unwrap();
    let loss = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::TripletLoss { .. }))
        .unwrap();
    assert_eq!(e, loss.inputs);
    let deps: Vec<Vec<String>> = e.iter().map(|&n| depends_on(&g, n)).collect();
    assert_eq!(deps, [["anchor"], ["positive"], ["negative"]]);

    let g = spec_graph("specs/siamese.net", &[]);
    let e = embedding_nodes(&g).unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0], embedding_node(&g).unwrap());
    assert_eq!(depends_on(&g, e[1]), ["x2"]);
    assert_eq!(g.nodes[e[1]].path, "embed.10");
    // Cut after both embeddings: the head alone, on two embedding inputs.
    let head = netc::cut::suffix(&g, &[("e1".into(), e[0]), ("e2".into(), e[1])]).unwrap();
    let inputs: Vec<(&str, &Vec<usize>)> = head
        .inputs
        .iter()
        .map(|i| (i.name.as_str(), &i.shape))
        .collect();
    assert_eq!(inputs, [("e1", &vec![64]), ("e2", &vec![64])]);
    let used: Vec<&str> = head
        .nodes
        .iter()
        .flat_map(|n| &n.params)
        .map(|&p| head.params[p].path.as_str())
        .collect();
    assert_eq!(used, ["logit.weight", "logit.bias"]);

    let g = str_graph(
        "block f() { flatten; fc: dense(3) }\n\
         model c {\n input a: [1, 2, 2]\n input b: [1, 2, 2]\n e = shared f()\n\
         ea = e(a)\n eb = e(b)\n output ea, eb\n train { loss: contrastive(margin=1) }\n}",
    );
    let e = embedding_nodes(&g).unwrap();
    assert_eq!(e, [g.outputs[0].1, g.outputs[1].1]);
}
