"""CDC and patience (owl.train.stopping) on problems whose answer is known independently."""

from __future__ import annotations

import numpy as np
import pytest

from owl.train.stopping import CDCRule, Patience, cdc_stop_step, cosine_distance, instance_of

STEPS, LR = 3000, 0.05


def _problem(seed: int, d: int = 300, n: int = 120, k: int = 10, eps: float = 0.01):
    """Over-parametrised least squares (d=300 > n=120) with label noise (sd 0.5).

    The signal lives in k strong feature directions (variance 1); the other d - k directions have
    variance eps and carry only noise. Gradient descent fits the signal within ~1/LR steps and the
    noise along the weak directions only after ~1/(LR * eps): the population risk of the
    full-data fit has a known minimum in between (the oracle stop, computed here exactly from
    the covariance, independently of the code under test).
    """
    rng = np.random.default_rng(seed)
    scales = np.r_[np.ones(k), np.full(d - k, np.sqrt(eps))]
    x = rng.normal(size=(n, d)) * scales
    w_star = np.r_[rng.normal(size=k), np.zeros(d - k)]
    y = x @ w_star + 0.5 * rng.normal(size=n)
    return rng, x, y, w_star, scales**2


def _run(seed: int, halves: bool = True) -> tuple[list[float], np.ndarray]:
    """(CDC distances of two seeded instances, population risk of the full-data fit) per step."""
    rng, x, y, w_star, var = _problem(seed)
    n, d = x.shape
    order = rng.permutation(n)
    parts = [order[: n // 2], order[n // 2 :]] if halves else [np.arange(n)] * 2
    w = [rng.normal(size=d) / np.sqrt(d) for _ in range(2)]  # two random seeds
    full = np.zeros(d)
    distances, risk = [], []
    for _ in range(STEPS):
        for i in range(2):
            xi, yi = x[parts[i]], y[parts[i]]
            w[i] = w[i] - LR * xi.T @ (xi @ w[i] - yi) / len(yi)
        full = full - LR * x.T @ (x @ full - y) / n
        distances.append(float(cosine_distance({"w": w[0]}, {"w": w[1]})))
        risk.append(float(((full - w_star) ** 2 * var).sum()))
    return distances, np.asarray(risk)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cdc_stops_near_the_known_optimum_of_noisy_least_squares(seed):
    distances, risk = _run(seed)
    oracle = int(np.argmin(risk)) + 1
    pick, stopped = cdc_stop_step(distances, CDCRule(patience=50, tol=0.02, smoothing=0.0))
    # The stated window: between 0.4x and 1.5x the oracle step, with a population risk at most
    # twice the oracle's and less than half of training to the end (which over-fits the noise).
    assert 0.4 * oracle <= pick <= 1.5 * oracle, (pick, oracle)
    assert risk[pick - 1] <= 2.0 * risk.min()
    assert risk[pick - 1] <= 0.5 * risk[-1]
    assert pick < stopped < STEPS  # it stopped early, patience steps after the pick


def test_same_examples_give_a_distance_that_only_shrinks():
    """Why each instance gets its own half: on the same data both fit the same noise."""
    distances, _ = _run(0, halves=False)
    assert np.all(np.diff(distances) <= 1e-12)
    pick, stopped = cdc_stop_step(distances, CDCRule(patience=50, tol=0.02, smoothing=0.0))
    assert pick == stopped == STEPS


def test_cosine_distance_matches_numpy_over_a_tree():
    rng = np.random.default_rng(0)
    a = {"k": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    b = {"k": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    va = np.r_[a["b"], a["k"].ravel()]
    vb = np.r_[b["b"], b["k"].ravel()]
    want = 1 - va @ vb / np.linalg.norm(va) / np.linalg.norm(vb)
    assert float(cosine_distance(a, b)) == pytest.approx(want, rel=1e-5)
    assert float(cosine_distance(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_distance({"x": np.zeros(3)}, {"x": np.ones(3)})) == 1.0


def test_rule_smooths_picks_the_minimum_and_waits_patience():
    curve = [5, 4, 3, 2, 1, 1.01, 2, 2, 2, 0.5]
    pick, stop = cdc_stop_step(curve, CDCRule(patience=3, tol=0.05, smoothing=0.0))
    assert (pick, stop) == (5, 9)  # 1.01 is within tol; 2, 2, 2 are three steps above
    ema = CDCRule(patience=100, smoothing=0.5)
    for i, d in enumerate([4.0, 2.0, 2.0], start=1):
        ema.update(i, d)
    assert ema.ema == pytest.approx(0.5 * (0.5 * 4 + 0.5 * 2) + 0.5 * 2)
    assert not CDCRule(patience=1, min_steps=10).update(3, 1.0)


def test_rule_state_round_trip_continues_exactly():
    curve = list(np.abs(np.sin(np.linspace(0, 6, 80))) + np.linspace(0, 1, 80))
    whole = CDCRule(patience=5)
    whole_out = [whole.update(i, d) for i, d in enumerate(curve, 1)]
    first = CDCRule(patience=5)
    out = [first.update(i, d) for i, d in enumerate(curve[:37], 1)]
    second = CDCRule.from_state(first.state_dict())
    out += [second.update(i, d) for i, d in enumerate(curve[37:], 38)]
    assert out == whole_out and second.state_dict() == whole.state_dict()


def test_patience_on_a_validation_loss_and_on_ap():
    loss = Patience(patience=2)
    assert [loss.update(s, v) for s, v in enumerate([3, 2, 2.5, 2.1], 1)] == [
        False,
        False,
        False,
        True,
    ]
    assert loss.best_step == 2
    ap = Patience(patience=1, mode="max", min_delta=0.01)
    assert not ap.update(1, 0.5) and ap.update(2, 0.505) and ap.best_step == 1
    assert not any(Patience(patience=0).update(s, 9.0) for s in range(5))


def test_instances_split_examples_in_two_fixed_halves():
    keys = [f"img{i}.png" for i in range(400)]
    split = [instance_of(k, seed=0) for k in keys]
    assert split == [instance_of(k, seed=0) for k in keys]  # fixed
    assert 160 < sum(split) < 240  # roughly half
    assert split != [instance_of(k, seed=1) for k in keys]  # the seed changes it
