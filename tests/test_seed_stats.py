"Seed-level statistics (issue #32): does each test keep its level when seeds vary as much as ours do?"
import math
import numpy as np, pytest
from scipy.stats import ttest_rel
from lth_nbdev.stats import (mcnemar, seed_contrast, random_effects_contrast, min_detectable_effect, holm, claim_verdict,
                             simulate_null_experiments)

N_EXPERIMENTS, N_SEEDS, ALPHA = 2000, 10, 0.05

@pytest.fixture(scope='module')
def null_pvalues():
    "p-values of three tests on 2,000 simulated 10-seed experiments with no true difference (seeded: the same every run)"
    p_t, p_re, p_pooled, sd, accuracy, disagree = [], [], [], [], [], []
    for A, B in simulate_null_experiments(N_EXPERIMENTS, n_seeds=N_SEEDS, seed=32):
        acc_a, acc_b = A.mean(2), B.mean(2)                      # experiments x seeds
        p_t += list(ttest_rel(acc_a, acc_b, axis=1).pvalue)      # the paired t over seeds, a whole batch at once
        sd += list(100 * (acc_a - acc_b).std(1, ddof=1))
        # the random-effects test is fast enough (~1 ms an experiment) to run on all 2,000 experiments
        p_re += [random_effects_contrast(a, b)['p_value'] for a, b in zip(A, B)]
        p_pooled += [mcnemar(a.ravel(), b.ravel())['p_value'] for a, b in zip(A, B)]
        accuracy.append(A.mean()); disagree.append((A != B).mean())
    # the batch t test is `seed_contrast`'s: check it on the last batch
    for a, b, p in zip(acc_a[:5], acc_b[:5], p_t[-len(acc_a):]): assert math.isclose(seed_contrast(a, b)['p_value'], p, rel_tol=1e-9)
    return dict(t=np.array(p_t), random_effects=np.array(p_re), pooled_mcnemar=np.array(p_pooled),
                sd=np.median(sd), accuracy=np.mean(accuracy), disagree=np.mean(disagree))

def test_simulated_design_is_like_ours(null_pvalues):
    "The simulated experiments look like the 64 px runs: accuracy ~0.68, arms disagree on ~20% of images, per-seed sd ~3 points"
    assert 0.66 < null_pvalues['accuracy'] < 0.70
    assert 0.17 < null_pvalues['disagree'] < 0.24
    assert 2.5 < null_pvalues['sd'] < 3.5

def test_seed_level_tests_keep_their_level(null_pvalues):
    "Under no true difference, the paired t and the random-effects test reject in at most 6% of 2,000 experiments"
    for test in ('t', 'random_effects'):
        rate = (null_pvalues[test] < ALPHA).mean()
        assert rate <= 0.06, f"{test}: {rate:.1%} false positives"
        assert rate >= 0.03, f"{test}: {rate:.1%} false positives, too conservative to be right"

def test_pooled_mcnemar_fails_the_same_check(null_pvalues):
    "McNemar pooled over all seeds' images treats image-runs as independent: it rejects far more often than 6%"
    rate = (null_pvalues['pooled_mcnemar'] < ALPHA).mean()
    assert rate > 0.3, f"pooled McNemar: {rate:.1%} false positives"

def test_min_detectable_effect_has_the_promised_power():
    "A true effect of `min_detectable_effect` is found by the paired t in about 80% of experiments"
    rng = np.random.default_rng(0)
    for n, sd in ((3, 2.0), (5, 3.0), (10, 4.0)):
        effect = min_detectable_effect(sd, n)
        diffs = rng.normal(effect, sd, (20_000, n))
        rate = (ttest_rel(diffs, np.zeros_like(diffs), axis=1).pvalue < ALPHA).mean()
        assert abs(rate - 0.8) < 0.015, (n, sd, rate)

def test_seed_contrast_power_at_claimed_matches_simulation():
    rng = np.random.default_rng(1)
    c = seed_contrast([0.70, 0.73, 0.68, 0.71, 0.66], [0.69, 0.70, 0.69, 0.66, 0.67], claimed=3.0)
    diffs = rng.normal(3.0, c['sd_diff'], (20_000, 5))
    rate = (ttest_rel(diffs, np.zeros_like(diffs), axis=1).pvalue < ALPHA).mean()
    assert abs(rate - c['power_at_claimed']) < 0.015

def _holm_by_definition(p):
    "Holm's adjusted p_i: the largest, over the p-values no larger than p_i (in sorted order), of (m - rank + 1) p, capped at 1"
    m, order = len(p), np.argsort(p, kind='stable')
    rank = np.empty(m, int); rank[order] = np.arange(m)
    return np.array([min(1, max((m - rank[j]) * p[j] for j in range(m) if rank[j] <= rank[i])) for i in range(m)])

def test_holm_matches_its_definition():
    rng = np.random.default_rng(2)
    for m in (1, 2, 5, 12):
        for _ in range(50):
            p = rng.random(m) ** 3
            adj = holm(p)
            np.testing.assert_allclose(adj, _holm_by_definition(p))
            assert np.all(adj >= p) and np.all(adj <= 1)
            assert np.all(np.diff(adj[np.argsort(p, kind='stable')]) >= 0)       # the order of the raw p-values is kept

def test_holm_controls_the_family_wise_error():
    "5 true null hypotheses, 20,000 families: Holm rejects any of them in at most alpha of the families"
    p = np.random.default_rng(3).random((20_000, 5))
    fwer = np.mean([(holm(row) < ALPHA).any() for row in p])
    assert fwer <= ALPHA + 0.005

@pytest.mark.parametrize('call, message', [
    (lambda: seed_contrast([0.7, 0.8], [70, 80]), 'acc_b must hold accuracies as fractions'),
    (lambda: seed_contrast([0.7, float('nan')], [0.7, 0.8]), 'acc_a must hold accuracies'),
    (lambda: seed_contrast([[0.7, 0.8]], [[0.7, 0.8]]), 'acc_a must hold one accuracy per seed'),
    (lambda: seed_contrast(['a', 'b'], [0.7, 0.8]), 'acc_a must be a sequence'),
    (lambda: seed_contrast([0.7, 0.8], [0.7, 0.8], alpha=1.5), 'alpha must be in (0, 1)'),
    (lambda: seed_contrast([0.7, 0.8], [0.7, 0.8], claimed=float('inf')), 'claimed must be a finite number'),
    (lambda: min_detectable_effect(-2, 5), 'sd must be'),
    (lambda: min_detectable_effect(2, -1), 'n_seeds must be'),
    (lambda: min_detectable_effect(2, 5, power=1), 'power must be'),
    (lambda: random_effects_contrast([[1, 0]], [[1, 0, 1]]), 'same seeds and images'),
    (lambda: random_effects_contrast([[1, 2]], [[1, 0]]), 'correct_a must hold bools or 0/1'),
    (lambda: random_effects_contrast([[1], [0]], [[1], [1]]), '2 images or more'),
    (lambda: random_effects_contrast([[1, 0], [1, 0]], [[1, 0], [1, 0]], alpha=0), 'alpha must be'),
    (lambda: holm([0.2, -0.1]), 'pvalues must be in [0, 1]'),
    (lambda: holm('abc'), 'pvalues must be a sequence'),
    (lambda: claim_verdict('A beats B', 0, 1., 0., 2., 0.1, 5), 'claimed must be a nonzero'),
    (lambda: claim_verdict('', 2., 1., 0., 2., 0.1, 5), 'claim must be'),
    (lambda: claim_verdict('A beats B', 2., 1., 3., 2., 0.1, 5), 'ci_low'),
    (lambda: claim_verdict('A beats B', 2., 1., 0., 2., 2., 5), 'p_holm must be'),
    (lambda: next(simulate_null_experiments(10, n_seeds=0)), 'n_seeds must be'),
    (lambda: next(simulate_null_experiments(10, run_sd=-1)), 'run_sd must be'),
])
def test_bad_input_names_the_parameter(call, message):
    with pytest.raises(ValueError, match=None) as e: call()
    assert message in str(e.value), str(e.value)

def test_degenerate_cases():
    one = seed_contrast([0.7], [0.6])
    assert math.isclose(one['mean_diff'], 10) and math.isnan(one['p_value']) and math.isnan(one['mde']) and one['note']
    assert seed_contrast([], [])['n_seeds'] == 0
    flat = seed_contrast([0.72, 0.75], [0.70, 0.73])                   # +2 points in both seeds, up to rounding
    assert flat['sd_diff'] == 0 and flat['p_value'] == 0 and flat['mde'] == 0 and 'degenerate' in flat['note']
    same = random_effects_contrast([[1, 0, 1], [0, 1, 1]], [[1, 0, 1], [0, 1, 1]])
    assert same['p_value'] == 1 and same['se'] == 0 and 'degenerate' in same['note']
    word, sentence = claim_verdict('A beats B', 2., 1., float('nan'), float('nan'), float('nan'), 1)
    assert word == 'inconclusive' and 'no interval' in sentence and 'detects' not in sentence
