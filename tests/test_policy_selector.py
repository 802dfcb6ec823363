"""Policy and selector: every mode x complexity x availability follows the routing rules."""

from __future__ import annotations

import itertools
import json

import pytest
from pydantic import ValidationError

from tierwise.catalog.policy import OperationOverride, Policy, PolicyMode, tier_order
from tierwise.catalog.specs import (
    Catalog,
    Complexity,
    ModelSpec,
    Provider,
    TaskType,
    Tier,
    load_default_catalog,
)
from tierwise.routing.selector import Explanation, Selector
from tierwise.routing.snapshot import Snapshot

CATALOG: Catalog = load_default_catalog()
EMBEDDED = CATALOG.embedded
assert EMBEDDED is not None
SELECTOR = Selector(CATALOG)
L, F, P = Tier.LOCAL, Tier.FREE, Tier.PAID


def _models_of(*providers: Provider) -> frozenset[str]:
    return frozenset(k for k, s in CATALOG.models.items() if s.provider in providers)


#: Which models can be called: keys present, embedded installed, Ollama reachable.
AVAILABILITY: dict[str, frozenset[str]] = {
    "embedded-only": _models_of(Provider.EMBEDDED),
    "free-keys": _models_of(
        Provider.EMBEDDED, Provider.GEMINI, Provider.GROQ, Provider.MISTRAL, Provider.HUGGINGFACE
    ),
    "paid-key": _models_of(Provider.EMBEDDED, Provider.OPENROUTER),
    "everything": frozenset(CATALOG.models),
    "nothing": frozenset(),
}

#: Models that failed recently: the primary of several chains, and the embedded model.
COOLING: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "some": frozenset(
        {"gemini-2.5-flash-free", "groq-llama-3.3-70b", "gpt-4o", "mistral-7b", EMBEDDED}
    ),
}

OVERRIDDEN = TaskType.CLASSIFICATION
OVERRIDES: list[OperationOverride | None] = [
    None,
    OperationOverride(max_tier=L),
    OperationOverride(max_tier=F),
    OperationOverride(forbid_tiers=frozenset({L})),
    OperationOverride(forbid_tiers=frozenset({F, P})),
    OperationOverride(forbid_tiers=frozenset({L}), max_tier=F),
]


def _policies(mode: PolicyMode) -> list[Policy]:
    # None means the mode's default cap, so that explicit value is not repeated
    default = Policy(mode=mode).cap
    caps: list[Tier | None] = [None]
    if mode is not PolicyMode.LOCAL_ONLY:
        caps += [t for t in Tier if t is not default]
    policies = []
    for cap, override in itertools.product(caps, OVERRIDES):
        operations = {} if override is None else {OVERRIDDEN: override}
        policies.append(Policy(mode=mode, max_tier=cap, operations=operations))
    return policies


def _expected_tiers(op: TaskType, complexity: Complexity, policy: Policy) -> tuple[Tier, ...]:
    """The rules, written out independently of ``Policy.allowed_tiers``."""
    if policy.max_tier is not None:
        cap = policy.max_tier
    else:  # pragma: no cover - validation always sets it
        cap = {PolicyMode.LOCAL_ONLY: L, PolicyMode.FREE_FIRST: F}.get(policy.mode, P)
    order = [L, F, P].index
    override = policy.operations.get(op)
    allowed = []
    for tier in tier_order(policy.mode, complexity):
        if order(tier) > order(cap):
            continue
        if override is not None:
            if tier in override.forbid_tiers:
                continue
            if override.max_tier is not None and order(tier) > order(override.max_tier):
                continue
        allowed.append(tier)
    return tuple(allowed)


def _expected_chain(op: TaskType, tiers: tuple[Tier, ...], snapshot: Snapshot) -> tuple[str, ...]:
    usable = snapshot.available - snapshot.cooling
    keys: list[str] = []
    for tier in tiers:
        keys.extend(k for k in CATALOG.chains[op].tier(tier) if k in usable and k not in keys)
    if L in tiers and EMBEDDED in usable and EMBEDDED not in keys:
        keys.append(EMBEDDED)
    return tuple(keys)


class _Context:
    """Assertion message, rendered only when an assertion fails (repr is costly)."""

    def __init__(self, *parts: object) -> None:
        self.parts = parts

    def __str__(self) -> str:
        return " | ".join(repr(p) for p in self.parts)


def _check(
    op: TaskType, complexity: Complexity, policy: Policy, snapshot: Snapshot, ex: Explanation
) -> None:
    tiers = _expected_tiers(op, complexity, policy)
    chain = ex.candidates
    keys = tuple(s.key for s in chain)
    context = _Context(op, complexity, policy, snapshot)
    assert ex.tiers == tiers, context

    # never crosses the policy
    assert all(s.tier in tiers for s in chain), context
    # only usable models
    assert all(s.key in snapshot.available for s in chain), context
    assert not any(s.key in snapshot.cooling for s in chain), context
    assert len(set(keys)) == len(keys), context
    # tiers in the mode's order, catalog order within a tier, embedded last
    assert keys == _expected_chain(op, tiers, snapshot), context
    non_embedded = [s for s in chain if s.key != EMBEDDED]
    ranks = [tiers.index(s.tier) for s in non_embedded]
    assert ranks == sorted(ranks), context
    for tier in tiers:
        in_tier = [s.key for s in non_embedded if s.tier is tier]
        catalog_order = [k for k in CATALOG.chains[op].tier(tier) if k in in_tier]
        assert in_tier == catalog_order, context
    if L in tiers and EMBEDDED in snapshot.available and EMBEDDED not in snapshot.cooling:
        assert keys[-1] == EMBEDDED, context
    else:
        assert EMBEDDED not in keys, context

    # mode-specific rules
    if policy.mode is PolicyMode.LOCAL_ONLY:
        assert all(s.tier is L for s in chain), context
    if policy.mode is PolicyMode.FREE_FIRST and policy.cap is not P:
        assert all(s.tier is not P for s in chain), context
    if keys:
        # the primary candidate comes from the first tier that has a usable chain model
        first = next((t for t in tiers if any(s.tier is t for s in non_embedded)), None)
        if first is None:
            assert keys == (EMBEDDED,), context
        else:
            assert chain[0].tier is first, context

    # explanations: every decision has a reason; every chain model is accounted for
    assert all(p.reason for p in ex.chosen), context
    assert all(e.reason for e in ex.excluded), context
    chosen = {p.spec.key for p in ex.chosen}
    excluded = {e.spec.key: e.reason for e in ex.excluded}
    assert not chosen & set(excluded), context
    for tier in Tier:
        for key in CATALOG.chains[op].tier(tier):
            assert key in chosen or key in excluded, f"{key} unexplained: {context}"
            if tier not in tiers:
                reason = excluded[key]
                assert str(tier) in reason, context
                assert any(w in reason for w in ("cap", "forbidden", "not used by")), reason
                override = policy.operations.get(op)
                forbidden = override is not None and tier in override.forbid_tiers
                if not forbidden and tier.rank > policy.cap.rank:
                    assert "cap" in reason and str(policy.cap) in reason, reason
            elif key not in snapshot.available:
                assert "not available" in excluded[key], context
            elif key in snapshot.cooling:
                assert "cooling" in excluded[key], context


@pytest.mark.parametrize("cooling", sorted(COOLING))
@pytest.mark.parametrize("availability", sorted(AVAILABILITY))
@pytest.mark.parametrize("complexity", list(Complexity))
@pytest.mark.parametrize("mode", list(PolicyMode))
def test_rules_hold_for_every_combination(
    mode: PolicyMode, complexity: Complexity, availability: str, cooling: str
) -> None:
    snapshot = Snapshot(available=AVAILABILITY[availability], cooling=COOLING[cooling])
    for policy in _policies(mode):
        # overrides only touch OVERRIDDEN: the other operations need the plain policies only
        ops = list(TaskType) if not policy.operations else [OVERRIDDEN, TaskType.REWRITING]
        for op in ops:
            explanation = SELECTOR.explain(op, complexity, policy, snapshot)
            _check(op, complexity, policy, snapshot, explanation)
            assert SELECTOR.candidates(op, complexity, policy, snapshot) is explanation.candidates


@pytest.mark.parametrize("mode", list(PolicyMode))
@pytest.mark.parametrize("complexity", list(Complexity))
def test_nothing_available_gives_an_empty_chain(mode: PolicyMode, complexity: Complexity) -> None:
    snapshot = Snapshot(available=frozenset())
    for op in TaskType:
        explanation = SELECTOR.explain(op, complexity, Policy(mode=mode), snapshot)
        assert explanation.candidates == ()
        assert explanation.excluded  # and it says why


@pytest.mark.parametrize("complexity", list(Complexity))
def test_embedded_alone_answers_whenever_local_is_allowed(complexity: Complexity) -> None:
    snapshot = Snapshot(available=AVAILABILITY["embedded-only"])
    for mode, op in itertools.product(PolicyMode, TaskType):
        chain = SELECTOR.candidates(op, complexity, Policy(mode=mode), snapshot)
        assert [s.key for s in chain] == [EMBEDDED]


# --------------------------------------------------------------------------- policy


def test_tier_order_follows_the_seed_rule() -> None:
    for complexity in Complexity:
        assert tier_order(PolicyMode.LOCAL_ONLY, complexity) == (L,)
        assert tier_order(PolicyMode.FREE_FIRST, complexity)[0] is F
        assert tier_order(PolicyMode.QUALITY_FIRST, complexity)[0] is P
    assert tier_order(PolicyMode.BALANCED, Complexity.SIMPLE)[0] is F
    assert tier_order(PolicyMode.BALANCED, Complexity.COMPLEX)[0] is P
    for mode, complexity in itertools.product(PolicyMode, Complexity):
        order = tier_order(mode, complexity)
        assert len(set(order)) == len(order)
        if mode is not PolicyMode.LOCAL_ONLY:
            assert set(order) == set(Tier)


@pytest.mark.parametrize(
    ("mode", "cap"),
    [
        (PolicyMode.LOCAL_ONLY, L),
        (PolicyMode.FREE_FIRST, F),
        (PolicyMode.BALANCED, P),
        (PolicyMode.QUALITY_FIRST, P),
    ],
)
def test_default_caps(mode: PolicyMode, cap: Tier) -> None:
    assert Policy(mode=mode).cap is cap
    assert Policy(mode=mode).max_tier is cap


def test_default_policy_is_free_first() -> None:
    assert Policy().mode is PolicyMode.FREE_FIRST
    assert Policy().cap is F


@pytest.mark.parametrize("cap", [F, P])
def test_local_only_rejects_a_higher_cap(cap: Tier) -> None:
    with pytest.raises(ValidationError, match="local_only"):
        Policy(mode=PolicyMode.LOCAL_ONLY, max_tier=cap)


def test_policy_rejects_unknown_fields_and_negative_cost_cap() -> None:
    with pytest.raises(ValidationError):
        Policy(budget=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Policy(max_cost_per_call=-0.01)


def test_policy_is_frozen_hashable_and_json_serialisable() -> None:
    policy = Policy(
        mode="balanced",
        max_tier="paid",
        max_cost_per_call=0.02,
        operations={
            "classification": {"pin": "gemini-2.5-flash-free"},
            "rewriting": {"forbid_tiers": ["local"], "max_tier": "free"},
        },
    )
    with pytest.raises(ValidationError):
        policy.mode = PolicyMode.LOCAL_ONLY  # type: ignore[misc]
    data = json.loads(policy.model_dump_json())
    again = Policy.model_validate(data)
    assert again == policy
    assert hash(again) == hash(policy)
    assert {policy: 1}[again] == 1


def test_equal_policies_hash_equally_whatever_the_override_order() -> None:
    a = OperationOverride(pin="mistral-7b")
    b = OperationOverride(max_tier=F)
    one = Policy(operations={TaskType.CLASSIFICATION: a, TaskType.REWRITING: b})
    two = Policy(operations={TaskType.REWRITING: b, TaskType.CLASSIFICATION: a})
    assert one == two
    assert hash(one) == hash(two)
    assert len({one, two}) == 1


def test_allowed_tiers_applies_cap_and_overrides() -> None:
    policy = Policy(
        mode="quality_first",
        operations={
            "rewriting": OperationOverride(forbid_tiers=frozenset({P})),
            "decomposition": OperationOverride(max_tier=L),
        },
    )
    assert policy.allowed_tiers(TaskType.CLASSIFICATION, Complexity.SIMPLE) == (P, F, L)
    assert policy.allowed_tiers(TaskType.REWRITING, Complexity.SIMPLE) == (F, L)
    assert policy.allowed_tiers(TaskType.DECOMPOSITION, Complexity.SIMPLE) == (L,)
    capped = Policy(mode="balanced", max_tier="free")
    assert capped.allowed_tiers(TaskType.CLASSIFICATION, Complexity.COMPLEX) == (F, L)


# --------------------------------------------------------------------------- selector details

EVERYTHING = Snapshot.everything(CATALOG)


def _keys(chain: tuple[ModelSpec, ...]) -> list[str]:
    return [s.key for s in chain]


def test_documented_example_chain() -> None:
    chain = SELECTOR.candidates("classification", "simple", Policy(), EVERYTHING)
    assert _keys(chain) == [
        "gemini-2.5-flash-free",
        "groq-llama-3.1-8b",
        "hf-llama-3.1-8b",
        "starling-lm-7b-alpha",
        EMBEDDED,
    ]


def test_balanced_complex_goes_paid_first() -> None:
    chain = SELECTOR.candidates(
        TaskType.DECOMPOSITION, Complexity.COMPLEX, Policy(mode="balanced"), EVERYTHING
    )
    assert _keys(chain) == [
        "gpt-3.5-turbo",
        "gpt-4o",
        "openrouter-deepseek-chat-free",
        "groq-llama-3.3-70b",
        "phi4-mini",
        EMBEDDED,
    ]


def test_free_first_pays_only_when_the_cap_allows() -> None:
    free_first = SELECTOR.candidates("decomposition", "complex", Policy(), EVERYTHING)
    assert all(s.tier is not P for s in free_first)
    raised = SELECTOR.candidates("decomposition", "complex", Policy(max_tier="paid"), EVERYTHING)
    assert [s.tier for s in raised] == [F, F, L, P, P, L]


@pytest.mark.parametrize("mode", list(PolicyMode))
def test_pin_yields_only_the_pinned_model(mode: PolicyMode) -> None:
    pinned = "mistral-7b"  # local: allowed by every mode
    policy = Policy(mode=mode, operations={OVERRIDDEN: OperationOverride(pin=pinned)})
    for complexity in Complexity:
        ex = SELECTOR.explain(OVERRIDDEN, complexity, policy, EVERYTHING)
        assert _keys(ex.candidates) == [pinned]
        assert "pinned" in ex.chosen[0].reason
    # other operations are not affected by the pin
    other = SELECTOR.candidates(TaskType.REWRITING, "simple", policy, EVERYTHING)
    assert pinned not in _keys(other) and len(other) > 1


def test_pin_to_a_disallowed_tier_yields_nothing() -> None:
    policy = Policy(mode="free_first", operations={OVERRIDDEN: OperationOverride(pin="gpt-4o")})
    ex = SELECTOR.explain(OVERRIDDEN, "simple", policy, EVERYTHING)
    assert ex.candidates == ()
    assert [e.spec.key for e in ex.excluded] == ["gpt-4o"]
    assert "not allowed" in ex.excluded[0].reason and "paid" in ex.excluded[0].reason

    forbidden = Policy(
        mode="quality_first",
        operations={OVERRIDDEN: OperationOverride(pin="gpt-4o", forbid_tiers=frozenset({P}))},
    )
    assert SELECTOR.candidates(OVERRIDDEN, "simple", forbidden, EVERYTHING) == ()


def test_pin_to_an_unavailable_model_yields_nothing_with_the_reason() -> None:
    policy = Policy(operations={OVERRIDDEN: OperationOverride(pin="gemini-2.5-flash-free")})
    snapshot = Snapshot(
        available=frozenset({EMBEDDED}),
        reasons={"gemini-2.5-flash-free": "gemini: no key (GEMINI_API_KEY is not set)"},
    )
    ex = SELECTOR.explain(OVERRIDDEN, "simple", policy, snapshot)
    assert ex.candidates == ()
    assert ex.excluded[0].reason == "gemini: no key (GEMINI_API_KEY is not set)"


def test_pin_to_an_unknown_model_names_the_known_ones() -> None:
    policy = Policy(operations={OVERRIDDEN: OperationOverride(pin="gpt-7")})
    with pytest.raises(KeyError, match="gpt-7"):
        SELECTOR.candidates(OVERRIDDEN, "simple", policy, EVERYTHING)


def test_needs_tools_drops_models_without_tools() -> None:
    policy = Policy(mode="balanced")
    for op, complexity in itertools.product(TaskType, Complexity):
        ex = SELECTOR.explain(op, complexity, policy, EVERYTHING, needs_tools=True)
        assert all(s.tools for s in ex.candidates)
        plain = SELECTOR.candidates(op, complexity, policy, EVERYTHING)
        assert _keys(ex.candidates) == [s.key for s in plain if s.tools]
        for exclusion in ex.excluded:
            if not exclusion.spec.tools and exclusion.spec.tier in ex.tiers:
                assert exclusion.reason == "no tool calling"
    # the embedded model calls tools by constrained decoding: the last resort for them too
    assert EMBEDDED == _keys(
        SELECTOR.candidates("classification", "simple", policy, EVERYTHING, needs_tools=True)
    )[-1]


def test_context_window_exclusion() -> None:
    ex = SELECTOR.explain(
        "classification",
        "simple",
        Policy(max_tier="paid"),
        EVERYTHING,
        prompt_tokens=10_000,
        max_output_tokens=1_000,
    )
    chosen = _keys(ex.candidates)
    assert "starling-lm-7b-alpha" not in chosen  # 8k window
    assert EMBEDDED not in chosen  # 8k window
    assert "gemini-2.5-flash-free" in chosen
    reasons = {e.spec.key: e.reason for e in ex.excluded}
    assert "8192-token window" in reasons["starling-lm-7b-alpha"]
    assert "8192-token window" in reasons[EMBEDDED]
    assert all(s.context_window >= 11_000 for s in ex.candidates)


def test_cost_cap_exclusion() -> None:
    policy = Policy(mode="quality_first", max_cost_per_call=0.01)
    ex = SELECTOR.explain(
        "decomposition",
        "complex",
        policy,
        EVERYTHING,
        prompt_tokens=2_000,
        max_output_tokens=1_000,
    )
    # gpt-4o: (2000 * 2.5 + 1000 * 10) / 1e6 = 0.015 > 0.01; gpt-3.5: 0.0025 <= 0.01
    chosen = _keys(ex.candidates)
    assert chosen[0] == "gpt-3.5-turbo"
    assert "gpt-4o" not in chosen
    reasons = {e.spec.key: e.reason for e in ex.excluded}
    assert "cap" in reasons["gpt-4o"] and "0.015" in reasons["gpt-4o"]
    for spec in ex.candidates:
        assert spec.price.cost(2_000, 1_000) <= 0.01
    assert {"openrouter-deepseek-chat-free", "phi4-mini", EMBEDDED} <= set(chosen)


def test_zero_cost_cap_keeps_only_free_and_local() -> None:
    policy = Policy(mode="quality_first", max_cost_per_call=0)
    chain = SELECTOR.candidates(
        "rewriting", "complex", policy, EVERYTHING, prompt_tokens=100, max_output_tokens=100
    )
    assert chain and all(s.tier is not P for s in chain)


def test_memoised_answers_are_the_same_object() -> None:
    selector = Selector(CATALOG)
    policy = Policy(mode="balanced")
    snapshot = Snapshot(available=AVAILABILITY["free-keys"])
    first = selector.explain("rewriting", "moderate", policy, snapshot)
    assert selector.explain("rewriting", "moderate", policy, snapshot) is first
    # equal (not identical) arguments hit the cache too; strings are accepted
    assert (
        selector.explain(
            TaskType.REWRITING,
            Complexity.MODERATE,
            Policy(mode="balanced"),
            Snapshot(available=AVAILABILITY["free-keys"]),
        )
        is first
    )
    chain = selector.candidates("rewriting", "moderate", policy, snapshot)
    assert selector.candidates("rewriting", "moderate", policy, snapshot) is chain
    assert chain is first.candidates
    # a different snapshot is a different answer
    cooled = snapshot.cooled(frozenset({"mistral-small-free"}), {"mistral-small-free": "429s"})
    other = selector.explain("rewriting", "moderate", policy, cooled)
    assert other is not first
    assert "mistral-small-free" not in _keys(other.candidates)
    assert {e.spec.key: e.reason for e in other.excluded}["mistral-small-free"] == "429s"


def test_snapshot_reasons_are_not_part_of_equality() -> None:
    a = Snapshot(available=frozenset({"x"}), reasons={"y": "no key"})
    b = Snapshot(available=frozenset({"x"}))
    assert a == b and hash(a) == hash(b)
    assert Snapshot.everything(CATALOG).available == frozenset(CATALOG.models)


def test_invalid_operation_or_complexity_is_rejected() -> None:
    with pytest.raises(ValueError):
        SELECTOR.candidates("summarise", "simple", Policy(), EVERYTHING)
    with pytest.raises(ValueError):
        SELECTOR.candidates("classification", "trivial", Policy(), EVERYTHING)


def test_reasons_describe_the_position() -> None:
    ex = SELECTOR.explain("classification", "simple", Policy(), EVERYTHING)
    reasons = [p.reason for p in ex.chosen]
    assert reasons[0].startswith("primary tier (free)")
    assert "first of the classification free chain" in reasons[0]
    assert "rubric 8/10" in reasons[0]
    assert reasons[1].startswith("primary tier (free)") and "choice 2" in reasons[1]
    assert reasons[3].startswith("fallback tier 2 (local)")
    assert reasons[-1].startswith("last resort")
    refusal = {e.spec.key: e.reason for e in ex.excluded}["gemini-2.5-flash-paid"]
    assert refusal == "paid tier is above the policy's cap (free)"


def test_forbidden_and_per_operation_cap_reasons() -> None:
    policy = Policy(
        mode="balanced",
        operations={
            "classification": OperationOverride(forbid_tiers=frozenset({L})),
            "rewriting": OperationOverride(max_tier=F),
        },
    )
    ex = SELECTOR.explain("classification", "simple", policy, EVERYTHING)
    assert {e.spec.key: e.reason for e in ex.excluded}["starling-lm-7b-alpha"] == (
        "local tier forbidden for classification"
    )
    assert EMBEDDED not in _keys(ex.candidates)
    ex = SELECTOR.explain("rewriting", "simple", policy, EVERYTHING)
    assert {e.spec.key: e.reason for e in ex.excluded}["claude-opus-4"] == (
        "paid tier is above rewriting's cap (free)"
    )
    local_only = SELECTOR.explain("rewriting", "simple", Policy(mode="local_only"), EVERYTHING)
    assert {e.spec.key: e.reason for e in local_only.excluded}["claude-opus-4"] == (
        "paid tier is above the policy's cap (local)"
    )
