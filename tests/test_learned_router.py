"""The learned router, its RouteLLM-format data loader and a check on the real data."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tierwise.learning.learned_router import LearnedRouter, feature_ids
from tierwise.learning.metrics import evaluate
from tierwise.learning.routellm import (
    LabelledSet,
    contaminated,
    find_data,
    load_benchmark,
    load_labelled,
    split,
)

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- loader


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_booleans_and_response_columns(tmp_path: Path) -> None:
    f = write(
        tmp_path / "a.csv",
        "prompt,small,big,small_response,big_response\n"
        'p1,True,True,"x, y",z\n'
        "p2,False,True,a,b\n"
        "p3,FALSE,false,c,d\n",
    )
    data = load_labelled(f)
    assert data.prompts == ("p1", "p2", "p3")
    assert data.models == ("small", "big")
    assert data.outcomes["small"].tolist() == [1.0, 0.0, 0.0]
    assert data.outcomes["big"].tolist() == [1.0, 1.0, 0.0]
    assert data.pair() == ("small", "big")
    assert data.pair(strong="small") == ("big", "small")


def test_numeric_scores_are_scaled_and_text_columns_ignored(tmp_path: Path) -> None:
    f = write(tmp_path / "s.csv", "id,prompt,judge_a,judge_b,note\nx,p1,10,0.5,hi\ny,p2,5,1,yo\n")
    data = load_labelled(f)
    assert data.models == ("judge_a", "judge_b")
    assert data.outcomes["judge_a"].tolist() == [1.0, 0.5]  # max 10 > 1: divided by 10
    assert data.outcomes["judge_b"].tolist() == [0.5, 1.0]  # within [0, 1]: kept


def test_directory_of_csvs(tmp_path: Path) -> None:
    write(tmp_path / "b.csv", "prompt,m1,m2\nq3,True,False\n")
    write(tmp_path / "a.csv", "prompt,m1,m2\nq1,True,True\nq2,False,True\n")
    data = load_labelled(tmp_path)
    assert data.prompts == ("q1", "q2", "q3")  # files by name
    assert data.sources[2].endswith("b.csv")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("question,m1\nq,True\n", r"bad\.csv: no 'prompt' column"),
        ("prompt,m1_response,note\nq,a,b\n", r"bad\.csv: no model columns"),
        ("prompt,m1\nq1,True\nq2,maybe\nq3,False\n", r"bad\.csv: row 3, column 'm1'.*True/False"),
        ("prompt,m1\nq1,-1\nq2,1\n", r"bad\.csv: row 2, column 'm1'"),
        ("", r"bad\.csv: empty file"),
    ],
)
def test_bad_files_name_file_and_column(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_labelled(write(tmp_path / "bad.csv", text))


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        load_labelled(tmp_path / "nope.csv")


def test_contamination_is_removed_by_exact_text(tmp_path: Path) -> None:
    write(
        tmp_path / "contaminated_prompts.jsonl",
        '{"train_prompt": "x", "eval_prompt": "q1"}\n{"train_prompt": "y", "eval_prompt": "q2 "}\n',
    )
    bad = contaminated(tmp_path)
    assert bad == {"q1", "q2 "}
    data = load_labelled(write(tmp_path / "d.csv", "prompt,a,b\nq1,True,True\nq2,True,False\n"))
    clean = data.without(bad)
    assert clean.prompts == ("q2",)  # "q2 " is not "q2": RouteLLM compares exact text
    assert clean.removed == 1
    write(tmp_path / "broken.jsonl", '{"eval_prompt": "a"}\n{"no": 1}\n')
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 2"):
        contaminated(tmp_path / "broken.jsonl")


def make_set(n: int) -> LabelledSet:
    prompts = tuple(f"prompt {i % (n // 2)}" for i in range(n))  # every prompt twice
    rng = np.random.default_rng(0)
    return LabelledSet(prompts, {"a": rng.integers(0, 2, n).astype(float), "b": np.ones(n)})


def test_split_is_deterministic_and_by_prompt() -> None:
    data = make_set(200)
    train, test = split(data, test_share=0.3, seed=7)
    again_train, again_test = split(data, test_share=0.3, seed=7)
    assert train.prompts == again_train.prompts and test.prompts == again_test.prompts
    assert not set(train.prompts) & set(test.prompts)
    assert len(set(test.prompts)) == 30 and len(test) == 60
    assert split(data, seed=8)[1].prompts != test.prompts


# ---------------------------------------------------------------- router

WORDS = ["alpha", "bravo", "delta", "hotel", "kilo", "lima", "oscar", "tango", "zulu"]


def synthetic(n: int, seed: int) -> tuple[list[str], dict[str, list[float]]]:
    """Token 'calculus' -> only 'big' is right; 'poem' -> only 'mid'; else all right."""
    rng = np.random.default_rng(seed)
    texts, small, mid, big = [], [], [], []
    for i in range(n):
        filler = " ".join(rng.choice(WORDS, size=6))
        kind = i % 3
        topic = ("hello", "calculus", "poem")[kind]
        texts.append(f"{filler} {topic} {filler}")
        small.append(1.0 if kind == 0 else 0.0)
        mid.append(1.0 if kind != 1 else 0.0)
        big.append(1.0 if kind != 2 else 0.0)
    return texts, {"small": small, "mid": mid, "big": big}


@pytest.fixture(scope="module")
def router() -> LearnedRouter:
    texts, outcomes = synthetic(600, 0)
    return LearnedRouter(buckets=1 << 14, epochs=60, learning_rate=0.1).fit(texts, outcomes)


CANDIDATES = [("small", 0.0), ("mid", 0.001), ("big", 0.01)]


def test_picks_the_model_the_token_calls_for(router: LearnedRouter) -> None:
    assert router.choose("kilo calculus tango", CANDIDATES, lam=1.0) == "big"
    assert router.choose("kilo poem tango", CANDIDATES, lam=1.0) == "mid"
    assert router.choose("kilo hello tango", CANDIDATES, lam=1.0) == "small"
    p = router.predict("zulu calculus lima")
    assert p["big"] > 0.8 and p["small"] < 0.2 and p["mid"] < 0.2


def test_lam_trades_quality_for_cost(router: LearnedRouter) -> None:
    assert router.choose("kilo calculus tango", CANDIDATES, lam=0.0) == "big"
    assert router.choose("kilo calculus tango", CANDIDATES, lam=1e4) == "small"


def test_unknown_candidates_get_their_prior(router: LearnedRouter) -> None:
    scores = router.scores("kilo hello", ["small", "never-seen"])
    assert scores["never-seen"] == 0.5
    router.priors["known-mean"] = 0.9
    try:
        assert router.scores("kilo", ["known-mean"])["known-mean"] == 0.9
    finally:
        del router.priors["known-mean"]


def test_predict_many_matches_predict(router: LearnedRouter) -> None:
    texts = ["kilo calculus", "poem", ""]
    many = router.predict_many(texts)
    for row, text in zip(many, texts, strict=True):
        assert row.tolist() == pytest.approx(list(router.predict(text).values()))
    ids = feature_ids("kilo calculus", buckets=router.buckets)
    assert router.predict(ids) == pytest.approx(router.predict("kilo calculus"))


@pytest.mark.parametrize("target", [0.1, 0.3, 0.6])
def test_lam_for_share_hits_the_target(router: LearnedRouter, target: float) -> None:
    pair = [("small", 0.0), ("big", 0.01)]
    lam = router.lam_for_share(target, pair)
    assert router.strong_share(lam, pair) <= target + 1e-9
    # with graded probabilities (as on real prompts) the share lands on the target
    graded = LearnedRouter.load(router.save(Path(tempfile.mkdtemp()) / "graded"))
    graded.calibration = np.random.default_rng(5).uniform(size=(1000, len(graded.keys)))
    for candidates in (pair, CANDIDATES):
        lam = graded.lam_for_share(target, candidates)
        most = graded.strong_share(0.0, candidates)  # 1/3 of rows for 3 uniform models
        assert graded.strong_share(lam, candidates) == pytest.approx(min(target, most), abs=0.01)
        if target < most:
            assert graded.strong_share(lam * 0.9, candidates) > target


def test_lam_for_share_with_many_models(router: LearnedRouter) -> None:
    lam = router.lam_for_share(0.2, CANDIDATES)
    assert router.strong_share(lam, CANDIDATES) <= 0.2
    assert router.lam_for_share(1.0, CANDIDATES) == 0.0
    with pytest.raises(ValueError, match="two candidates"):
        router.lam_for_share(0.5, [("big", 1.0)])


def test_save_load_round_trip(router: LearnedRouter, tmp_path: Path) -> None:
    path = router.save(tmp_path / "router.npz")
    loaded = LearnedRouter.load(path)
    texts = ["kilo calculus", "poem poem", "x"]
    assert (loaded.predict_many(texts) == router.predict_many(texts)).all()
    assert loaded.keys == router.keys and loaded.priors == router.priors


def test_corrupt_or_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing\.npz: no such router file"):
        LearnedRouter.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"junk\.npz: not a readable \.npz"):
        LearnedRouter.load(junk)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(ValueError, match=r"foreign\.npz: not a tierwise router"):
        LearnedRouter.load(foreign)


def test_partial_fit_moves_toward_new_evidence(router: LearnedRouter, tmp_path: Path) -> None:
    copy = LearnedRouter.load(router.save(tmp_path / "copy.npz"))
    before = copy.predict("kilo calculus tango")["small"]
    copy.partial_fit(["kilo calculus tango"] * 50, {"small": [1.0] * 50}, epochs=20)
    assert copy.predict("kilo calculus tango")["small"] > before + 0.1
    copy.partial_fit(["kilo poem"] * 10, {"new": [1.0] * 10})
    assert "new" in copy.keys


def test_nan_outcomes_are_skipped() -> None:
    texts, outcomes = synthetic(300, 2)
    outcomes["big"] = [float("nan") if i % 3 == 0 else v for i, v in enumerate(outcomes["big"])]
    model = LearnedRouter(buckets=1 << 12, epochs=40, learning_rate=0.1).fit(texts, outcomes)
    assert model.predict("kilo calculus")["big"] > 0.7


def test_bad_outcomes_are_errors() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LearnedRouter().fit(["a", "b"], {"m": [0.0, 2.0]})
    with pytest.raises(ValueError, match="1 values for 2 prompts"):
        LearnedRouter().fit(["a", "b"], {"m": [0.0]})


def test_feature_ids_are_stable_across_processes() -> None:
    text = "Natalia sold clips to 48 of her friends in April!"
    code = (
        "from tierwise.learning.learned_router import feature_ids;"
        f"print(feature_ids({text!r}).tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == str(feature_ids(text).tolist())


# ---------------------------------------------------------------- semantic features, guard

MATH = ["add {a} and {b} apples", "subtract {a} from {b} pears", "multiply {a} by {b} boxes",
        "how many eggs are left if {a} of {b} break"]  # fmt: skip


def math_set(n: int = 240) -> tuple[list[str], dict[str, list[float]]]:
    """Word sums: the weak model fails the multiplications, the strong one never."""
    prompts = [MATH[i % 4].format(a=i % 17 + 2, b=i % 29 + 3) for i in range(n)]
    weak = [0.0 if p.startswith("multiply") else 1.0 for p in prompts]
    return prompts, {"weak": weak, "strong": [1.0] * n}


def test_semantic_ids_carry_the_vector_through_a_ledger_row() -> None:
    from tierwise.learning.features import semantic_ids, semantic_vector, split_ids

    vector = np.linspace(-1.0, 1.0, 64)
    vector /= np.linalg.norm(vector)
    ids = np.concatenate([np.array([5, 7, 5]), semantic_ids(vector)])
    grams, carried = split_ids(ids)
    assert grams.tolist() == [5, 7, 5]
    decoded = semantic_vector(carried, 64)
    assert decoded is not None and np.abs(decoded - vector).max() <= 0.5 / 127 + 1e-12
    assert semantic_vector(grams, 64) is None
    with pytest.raises(ValueError, match="dimensions"):
        semantic_vector(carried, 32)


def test_feature_ids_add_the_semantic_vector_when_installed() -> None:
    from tierwise.learning.features import SEMANTIC_BASE, hashed_ids
    from tierwise.learning.semantic import StaticEmbedder, unavailable_reason

    embedder = StaticEmbedder.default()
    text = "What is the derivative of x squared?"
    ids = feature_ids(text)
    assert ids[ids < SEMANTIC_BASE].tolist() == hashed_ids(text).tolist()
    if embedder is None:
        assert unavailable_reason() and ids.max() < SEMANTIC_BASE
        pytest.skip(f"semantic features unavailable: {unavailable_reason()}")
    assert int((ids >= SEMANTIC_BASE).sum()) == embedder.dimensions
    near = embedder.embed("Differentiate the function x^2.")
    far = embedder.embed("Who wrote the Iliad?")
    here = embedder.embed(text)
    assert here @ near > here @ far


@pytest.mark.parametrize("semantic", [False, True])
def test_the_guard_keeps_the_chain_order_for_unfamiliar_prompts(semantic: bool) -> None:
    from tierwise.learning.semantic import StaticEmbedder

    if semantic and StaticEmbedder.default() is None:
        pytest.skip("semantic features unavailable")
    prompts, outcomes = math_set()
    router = LearnedRouter(semantic=semantic, epochs=60).fit(prompts, outcomes)
    assert router.semantic is semantic
    chain = [("weak", 0.0), ("strong", 0.001)]
    picked = router.decide("multiply 4 by 9 boxes", chain, lam=1.0)
    assert picked.learned and picked.choice == "strong", picked
    kept = router.decide("Quelle est la capitale du Kirghizistan ?", chain, lam=1.0)
    assert not kept.learned and kept.choice == "weak"
    assert "unlike the router's training data" in kept.why and "chain order kept" in kept.why
    _, similarity = router.familiarity(prompts)  # by design GUARD_QUANTILE of them are not
    typical = prompts[int(np.nanargmax(similarity))] if semantic else prompts[0]
    familiar = router.familiar([typical, "Quelle est la capitale du Pérou ?"])
    assert familiar.tolist() == [True, False]
    # unguarded, the same router would have made a pick for the unfamiliar prompt
    assert router.choose("Quelle est la capitale du Kirghizistan ?", chain, lam=0.0) in (
        "weak", "strong")


def test_sparse_rows_multiply_as_the_dense_matrix_does_empty_rows_included() -> None:
    from tierwise.learning.features import count_rows

    rng = np.random.default_rng(1)
    id_rows = [rng.integers(0, 50, size=int(rng.integers(0, 8))) for _ in range(40)]
    rows = count_rows(id_rows, 50)
    assert any(len(r) == 0 for r in id_rows)
    dense = np.zeros((40, 50))
    for i, ids in enumerate(id_rows):
        np.add.at(dense[i], ids, 1.0)
    weights, residuals = rng.normal(size=(50, 3)), rng.normal(size=(40, 3))
    assert np.allclose(rows.dot(weights), dense @ weights)
    assert np.allclose(rows.tdot(residuals), dense.T @ residuals)


def test_trust_falls_below_the_floors_and_shrinks_the_scores_toward_the_priors() -> None:
    from tierwise.learning.learned_router import NOVELTY_SCALE
    from tierwise.learning.train import router_scores

    prompts, outcomes = math_set()
    router = LearnedRouter(semantic=False, epochs=60).fit(prompts, outcomes)
    familiar, novel = "multiply 4 by 9 boxes", "Quelle est la capitale du Kirghizistan ?"
    coverage, _ = router.familiarity([novel])
    trust = router.trust([familiar, novel])
    deficit = router.coverage_floor - float(coverage[0])
    assert deficit > 0 and trust[0] == 1.0
    assert trust[1] == pytest.approx(1.0 / (1.0 + deficit / NOVELTY_SCALE))
    guarded = router_scores(router, [familiar, novel], "weak", "strong")
    raw = router_scores(router, [familiar, novel], "weak", "strong", guard=False)
    neutral = router.prior("strong") - router.prior("weak")
    assert guarded[0] == raw[0]
    assert guarded[1] == pytest.approx(neutral + trust[1] * (raw[1] - neutral))


def test_an_unfamiliar_prompt_moves_a_model_only_when_its_trusted_gain_clears_the_margin() -> None:
    prompts, outcomes = math_set()
    router = LearnedRouter(semantic=False, epochs=60, margin=0.02).fit(prompts, outcomes)
    chain = [("weak", 0.0), ("strong", 0.001)]
    for text in ("multiply 4 by 9 boxes of oranges", "please multiply 4 by 9 crates of oranges"):
        trust = float(router.trust([text])[0])
        p = router.predict(text)
        gain = p["strong"] - 0.001 - p["weak"]
        decision = router.decide(text, chain, lam=1.0)
        assert 0.0 < trust < 1.0 and gain > 0.02  # unfamiliar, and the heads prefer strong
        if trust * gain >= 0.02:
            assert decision.choice == "strong" and decision.learned
            assert f"unfamiliar prompt, trust {trust:.2f}" in decision.why
        else:
            assert decision.choice == "weak" and not decision.learned
            assert "chain order kept" in decision.why
    decisions = {router.decide(t, chain, lam=1.0).learned for t in (
        "multiply 4 by 9 boxes of oranges", "please multiply 4 by 9 crates of oranges")}
    assert decisions == {True, False}  # one of each: the rule is exercised both ways


def test_no_clear_gain_keeps_the_chain_order() -> None:
    prompts, outcomes = math_set()
    router = LearnedRouter(semantic=False, epochs=60, margin=0.02).fit(prompts, outcomes)
    text, chain = "multiply 3 by 4 boxes", [("weak", 0.0), ("strong", 1.0)]
    p = router.predict(text)
    gap = p["strong"] - p["weak"]
    assert gap > 0.1  # the weak model fails multiplications
    # price the gain down to 0.01, under the margin: the chain's first model stays first
    kept = router.decide(text, chain, lam=gap - 0.01)
    assert not kept.learned and kept.choice == "weak" and "not confident" in kept.why
    clear = router.decide(text, chain, lam=gap - 0.03)
    assert clear.learned and clear.choice == "strong"
    # a cost weight of 0 asks for the best predicted model, whatever the gain
    best = router.decide("add 3 and 4 apples", chain, lam=0.0)
    assert best.learned and best.choice == "strong"


def test_semantic_router_round_trips_and_learns_incrementally(tmp_path: Path) -> None:
    from tierwise.learning.semantic import StaticEmbedder

    if StaticEmbedder.default() is None:
        pytest.skip("semantic features unavailable")
    prompts, outcomes = math_set()
    router = LearnedRouter(epochs=60).fit(prompts, outcomes)
    loaded = LearnedRouter.load(router.save(tmp_path / "r.npz"))
    assert loaded.dimensions == router.dimensions > 0
    assert len(loaded.centroids) == len(router.centroids) > 0
    text = "multiply 3 by 8 boxes"
    assert loaded.predict(text) == pytest.approx(router.predict(text))
    assert loaded.familiar([text]).tolist() == [True]
    # a ledger row (ids only, the semantic ones included) teaches the router a new model
    rows = [feature_ids(p) for p in prompts[:80]]
    before = loaded.predict(text).get("local", None)
    loaded.partial_fit(rows, {"local": [0.0 if p.startswith("multiply") else 1.0
                                        for p in prompts[:80]]}, epochs=40)  # fmt: skip
    assert before is None and loaded.predict(text)["local"] < loaded.predict(
        "add 3 and 4 apples")["local"]


class ParityEmbedder:
    """A 2-d embedding of what no n-gram sees: whether the text has an even length."""

    dimensions = 2

    def embed(self, text: str) -> np.ndarray:
        return np.array([1.0, 0.0]) if len(text) % 2 == 0 else np.array([0.0, 1.0])


def test_a_router_reads_the_embedder_it_is_given() -> None:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    prompts = [f"{a} {b}{'!' * k}" for a in words for b in words for k in range(2)]
    even = [1.0 if len(p) % 2 == 0 else 0.0 for p in prompts]
    router = LearnedRouter(epochs=80, embedder=ParityEmbedder(), clusters=0)
    router.fit(prompts, {"small": [1 - e for e in even], "large": even})
    assert router.dimensions == 2 and router.semantic
    candidates = [("small", 0.0), ("large", 0.0)]
    # unseen words: only the embedder's parity tells the models apart
    assert router.choose("kappa lambda", candidates, lam=0.0) == "large"
    assert router.choose("kappa lambda!", candidates, lam=0.0) == "small"
    # semantic=False wins over a given embedder
    assert LearnedRouter(semantic=False, embedder=ParityEmbedder()).dimensions == 0


def test_mmlu_groups() -> None:
    from tierwise.learning.splits import GROUPS, group_of

    assert group_of("x/mmlu_college_physics.csv") == "STEM"
    assert group_of("mmlu_world_religions.csv") == "humanities"
    assert group_of("mmlu_econometrics.csv") == "social sciences"
    assert group_of("mmlu_virology.csv") == "other"
    assert set(GROUPS) == {"STEM", "humanities", "social sciences", "other"}
    with pytest.raises(ValueError):
        group_of("gsm8k_responses.csv")


# ---------------------------------------------------------------- real data

DATA = find_data()


@pytest.mark.skipif(DATA is None, reason="shared RouteLLM data not present")
def test_learned_router_beats_random_on_real_data() -> None:
    assert DATA is not None
    mmlu = load_benchmark("mmlu", DATA)
    assert mmlu.removed == 5
    train, test = split(mmlu, test_share=0.3, seed=0)
    train = train.take(np.arange(0, len(train), 3))  # a third: keeps the test fast
    model = LearnedRouter(buckets=1 << 16, epochs=20).fit(
        train.prompts, train.outcomes, calibrate=False
    )
    weak, strong = test.pair()
    p = model.predict_many(list(test.prompts))
    index = {k: j for j, k in enumerate(model.keys)}
    quality = evaluate(
        p[:, index[strong]] - p[:, index[weak]], test.outcomes[weak], test.outcomes[strong]
    )
    assert quality.apgr > 0.5
