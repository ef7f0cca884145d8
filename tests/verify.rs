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
