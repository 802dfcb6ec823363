"""RouteLLM's router metrics, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from tierwise.learning.metrics import (
    evaluate,
    expected_random,
    oracle_scores,
    random_quality,
    random_scores,
)

# 10 prompts: weak right on 0-5, strong right on 0-3 and 6-9
WEAK = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=float)
STRONG = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1], dtype=float)


def test_qualities_and_pgr_endpoints() -> None:
    q = evaluate(np.arange(10.0), WEAK, STRONG)
    assert q.weak_quality == pytest.approx(0.6)
    assert q.strong_quality == pytest.approx(0.8)
    assert q.curve[0].strong_share == 0.0 and q.curve[0].pgr == pytest.approx(0.0)
    assert q.curve[-1].strong_share == 1.0 and q.curve[-1].pgr == pytest.approx(1.0)
    assert len(q.curve) == 11  # RouteLLM: qcut into 10 bins -> 11 thresholds
    shares = [p.strong_share for p in q.curve]
    assert shares == sorted(shares)


def test_perfect_router_scores_by_hand() -> None:
    # scores 0..9 put the 4 prompts only the strong model fixes (6-9) first
    q = evaluate(np.arange(10.0), WEAK, STRONG)
    by_share = {round(p.strong_share, 2): p.pgr for p in q.curve}
    # share 0.4: prompts 6-9 strong -> quality 1.0 -> PGR (1.0-0.6)/0.2 = 2
    assert by_share[0.4] == pytest.approx(2.0)
    assert by_share[0.1] == pytest.approx(0.5)
    assert by_share[0.6] == pytest.approx(1.0)  # adds 4, 5 where the strong is wrong
    # PGR at shares 0, 0.1, ..., 1 (prompts 5, 4 go strong at 0.5, 0.6: only weak right)
    pgr = [0, 0.5, 1, 1.5, 2, 1.5, 1, 1, 1, 1, 1]
    expected = sum((a + b) / 2 * 0.1 for a, b in zip(pgr, pgr[1:], strict=False))
    assert q.apgr == pytest.approx(expected)
    # CPT(50%): PGR 0.5 at share 0.1; CPT(80%): 0.8 between 0.1 (0.5) and 0.2 (1.0)
    assert q.cpt50 == pytest.approx(0.1)
    assert q.cpt80 == pytest.approx(0.16)
    assert q.cpt(1.0) == pytest.approx(0.2)


def test_oracle_curve() -> None:
    q = evaluate(oracle_scores(WEAK, STRONG), WEAK, STRONG)
    points = {round(p.strong_share, 2): p.pgr for p in q.curve}
    # ties collapse thresholds: share 0, the 4 fixes (0.4), then everything but the
    # 2 prompts only the weak gets right (0.8), then all (1.0)
    assert points[0.4] == pytest.approx(2.0)
    assert points[0.8] == pytest.approx(2.0)
    assert points[1.0] == pytest.approx(1.0)
    area = 0.4 * 2.0 / 2 + 0.4 * 2.0 + 0.2 * (2.0 + 1.0) / 2
    assert q.apgr == pytest.approx(area)
    assert q.cpt50 == pytest.approx(0.1)  # PGR rises linearly to 2 at 0.4


def test_reversed_router_is_worse_than_random() -> None:
    q = evaluate(-np.arange(10.0), WEAK, STRONG)
    assert q.apgr < 0.5


def test_random_is_about_the_diagonal() -> None:
    rng = np.random.default_rng(12345)  # not a seed random_quality uses
    weak = (rng.uniform(size=4000) < 0.65).astype(float)
    strong = (rng.uniform(size=4000) < 0.85).astype(float)
    q = random_quality(weak, strong, seeds=10)
    assert q.apgr == pytest.approx(0.5, abs=0.05)
    assert q.cpt50 == pytest.approx(0.5, abs=0.07)
    expected = expected_random(weak, strong)
    assert (expected.apgr, expected.cpt50, expected.cpt80) == (0.5, 0.5, 0.8)
    assert [p.pgr for p in expected.curve] == pytest.approx(
        [p.strong_share for p in expected.curve]
    )


def test_random_scores_are_seeded() -> None:
    assert (random_scores(5, 1) == random_scores(5, 1)).all()
    assert not (random_scores(5, 1) == random_scores(5, 2)).all()


def test_cpt_never_reached_is_all_strong() -> None:
    # a router that only ever loses: PGR never reaches 0.8 before 100 % strong calls
    weak = np.array([1, 0, 0, 0], dtype=float)
    strong = np.array([0, 1, 1, 1], dtype=float)
    q = evaluate(np.array([4.0, 3.0, 2.0, 1.0]), weak, strong, bins=4)
    assert q.cpt80 <= 1.0
    assert q.cpt(2.0) == 1.0


def test_equal_quality_is_an_error() -> None:
    with pytest.raises(ValueError, match="same quality"):
        evaluate([0.1, 0.2], [1, 0], [0, 1])


def test_bad_shapes_are_errors() -> None:
    with pytest.raises(ValueError, match="one length"):
        evaluate([0.1, 0.2, 0.3], [1, 0], [0, 1])
    with pytest.raises(ValueError, match="no prompts"):
        evaluate([], [], [])


def test_frontier_and_aiq_of_a_router_hand_computed() -> None:
    """Three models (A free, B $1, C $3), four prompts; the router mistakes which is hard.

    Outcomes (A, B, C): (1,1,1) (0,1,1) (0,0,1) (0,0,0); the router predicts the third
    hopeless and the fourth needing C. lam < 1/3: picks A, B, A, C -> cost 1.0, quality
    50 %; 1/3 < lam < 1: the fourth goes to A -> (0.25, 50 %); lam > 1: all A -> (0, 25 %).
    Frontier (0, .25) (.25, .5), flat to $3: AIQ = (.375 * .25 + .5 * 2.75) / 3 = 0.489583,
    below random (0.541667) although it costs less at each quality: AIQ rewards the range.
    """
    from tierwise.learning.frontier import score_models

    quality = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=float)
    predicted = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 0], [0, 0, 1]], dtype=float)
    costs = np.tile([0.0, 1.0, 3.0], (4, 1))
    names = "ABC"
    result = score_models(predicted, {m: quality[:, j] for j, m in enumerate(names)},
                          {m: costs[:, j] for j, m in enumerate(names)})  # fmt: skip
    assert [(c, q) for _, c, q in result.router.points] == [
        (1.0, 0.5), (0.25, 0.5), (0.25, 0.5), (0.0, 0.25)]
    assert result.router.hull == ((0.0, 0.25), (0.25, 0.5))
    assert abs(result.router.aiq - (0.375 * 0.25 + 0.5 * 2.75) / 3) < 1e-12
    assert abs(result.random.aiq - 1.625 / 3) < 1e-12
    assert abs(result.oracle.aiq - 0.6875) < 1e-12
