"""scikit-learn reference values for netc's verification metrics (tests/data/verify/sklearn_metrics.json).

For each case: the scores (higher = more likely the same identity), the same/different labels,
scikit-learn's `roc_auc_score`, and the best accuracy of the rule `score >= t` over every
threshold of `roc_curve(..., drop_intermediate=False)` (netc's `best_threshold` must reach the
same accuracy). Cases include heavy ties, where the AUC's tie handling matters.

Run with a Python that has numpy and scikit-learn (floats are written with repr, exactly):
    python scripts/make_verify_reference.py tests/data/verify/sklearn_metrics.json
"""
import json
import sys

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def case(name, scores, same):
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    fpr, tpr, _ = roc_curve(same, scores, drop_intermediate=False)
    p, n = same.sum(), (~same).sum()
    acc = ((tpr * p + (1 - fpr) * n) / len(same)).max()
    return {
        "name": name,
        "scores": [float(s) for s in scores],
        "same": [bool(s) for s in same],
        "auc": float(roc_auc_score(same, scores)),
        "best_accuracy": float(acc),
    }


rng = np.random.default_rng(16)
cases = [
    case("tiny", [0.1, 0.4, 0.35, 0.8], [False, False, True, True]),
    case("perfect", [0.9, 0.8, 0.1, 0.2], [True, True, False, False]),
    case("reversed", [0.1, 0.2, 0.9, 0.8], [True, True, False, False]),
    case("all_tied", [0.5] * 6, [True, False, True, False, False, True]),
    case("ties_across_classes", [1, 1, 2, 2, 2, 3, 0, 1], [True, False, True, True, False, True, False, False]),
    case("negative_scores", [-3.5, -0.25, -1.0, -2.0, -0.5], [False, True, True, False, True]),
]
for k, (n, levels) in enumerate([(50, None), (200, None), (300, 4), (1000, 12), (997, None)]):
    same = rng.random(n) < 0.5
    if levels is None:
        scores = rng.normal(size=n) + 0.8 * same
    else:
        scores = rng.integers(0, levels, size=n) + (rng.random(n) < 0.3 * same)
    cases.append(case(f"random_{k}_n{n}" + ("" if levels is None else f"_ties{levels}"), scores, same))

with open(sys.argv[1], "w") as f:
    json.dump(cases, f)
    f.write("\n")
