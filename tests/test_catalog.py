"""The packaged model catalog: it loads, it is complete, tiers mean what they say."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from tierwise.catalog.specs import (
    Catalog,
    ModelSpec,
    Provider,
    TaskType,
    Tier,
    default_catalog_data,
    load_default_catalog,
)

FREE_PROVIDERS = {
    Provider.GEMINI,
    Provider.GROQ,
    Provider.OPENROUTER,
    Provider.MISTRAL,
    Provider.HUGGINGFACE,
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_default_catalog()


def test_packaged_catalog_loads(catalog: Catalog) -> None:
    assert isinstance(catalog, Catalog)
    assert len(catalog.models) >= 20
    assert set(catalog.chains) == set(TaskType)
    assert len(TaskType) == 9
    for key, spec in catalog.models.items():
        assert spec.key == key
        assert spec.model
        assert spec.context_window > 0
        assert 0 <= spec.speed <= 10
        for score in spec.scores.values():
            assert 0 <= score <= 10


@pytest.mark.parametrize("operation", list(TaskType))
@pytest.mark.parametrize("tier", list(Tier))
def test_every_operation_has_every_tier(catalog: Catalog, operation: TaskType, tier: Tier) -> None:
    chain = catalog.chain(operation, tier)
    assert chain, f"{operation} has no {tier} model"
    assert all(spec.tier is tier for spec in chain)
    assert len({spec.key for spec in chain}) == len(chain), "duplicate model in a chain"


def test_free_tier_costs_nothing_and_is_a_real_free_plan(catalog: Catalog) -> None:
    free = [spec for spec in catalog if spec.tier is Tier.FREE]
    assert free
    for spec in free:
        assert spec.price.input_per_mtok == 0 and spec.price.output_per_mtok == 0, spec.key
        assert spec.provider in FREE_PROVIDERS, spec.key
        if spec.provider is Provider.OPENROUTER:
            assert spec.model.endswith(":free"), spec.key


def test_paid_tier_has_dated_positive_prices(catalog: Catalog) -> None:
    paid = [spec for spec in catalog if spec.tier is Tier.PAID]
    assert paid
    for spec in paid:
        assert spec.price.input_per_mtok > 0, spec.key
        assert spec.price.output_per_mtok > 0, spec.key
        assert isinstance(spec.price.as_of, date), spec.key
        assert spec.price.cost(1_000_000, 0) == spec.price.input_per_mtok


def test_seed_free_models_that_are_not_free_are_paid(catalog: Catalog) -> None:
    assert catalog.spec("claude-3-haiku").tier is Tier.PAID
    assert catalog.spec("gpt-3.5-turbo").tier is Tier.PAID


def test_local_tier_is_local(catalog: Catalog) -> None:
    for spec in catalog:
        if spec.tier is Tier.LOCAL:
            assert spec.provider in {Provider.OLLAMA, Provider.EMBEDDED}, spec.key
            assert spec.price.input_per_mtok == spec.price.output_per_mtok == 0


def test_embedded_entry(catalog: Catalog) -> None:
    assert catalog.embedded is not None
    spec = catalog.spec(catalog.embedded)
    assert spec.tier is Tier.LOCAL
    assert spec.provider is Provider.EMBEDDED
    assert spec.price.input_per_mtok == 0 and spec.price.output_per_mtok == 0
    assert "smollm2" in spec.model.lower()


def test_chain_entries_have_the_right_tier(catalog: Catalog) -> None:
    for op, chain in catalog.chains.items():
        for tier in Tier:
            for key in chain.tier(tier):
                assert catalog.spec(key).tier is tier, f"{op}.{tier}: {key}"


def test_spec_lookup_names_known_models(catalog: Catalog) -> None:
    with pytest.raises(KeyError, match="unknown model 'nope'.*gpt-4o"):
        catalog.spec("nope")


def test_specs_are_hashable_and_catalog_identity_hashed(catalog: Catalog) -> None:
    spec = catalog.spec("gpt-4o")
    assert hash(spec) == hash("gpt-4o")
    assert {catalog: 1}[catalog] == 1
    assert catalog != load_default_catalog()  # identity equality: a cache key per instance


# --------------------------------------------------------------------------- invalid catalogs


def _data() -> dict[str, Any]:
    return copy.deepcopy(default_catalog_data())


def _reject(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Catalog.from_mapping(data)


def test_unknown_model_in_chain_is_rejected() -> None:
    data = _data()
    data["chains"]["classification"]["free"] = ["no-such-model"]
    _reject(data, r"chains\.classification\.free: unknown model 'no-such-model'")


def test_wrong_tier_in_chain_is_rejected() -> None:
    data = _data()
    data["chains"]["rewriting"]["free"] = ["claude-3-haiku"]
    _reject(data, r"chains\.rewriting\.free: 'claude-3-haiku' is a paid model")


def test_unknown_tier_in_chain_is_rejected() -> None:
    data = _data()
    data["chains"]["rewriting"]["cheap"] = ["claude-3-haiku"]
    _reject(data, "Extra inputs are not permitted")


def test_missing_operation_chain_is_rejected() -> None:
    data = _data()
    del data["chains"]["classification"]
    _reject(data, "no chain for operation.*classification")


def test_negative_price_is_rejected() -> None:
    data = _data()
    data["models"]["gpt-4o"]["price"]["input_per_mtok"] = -1.0
    _reject(data, "greater than or equal to 0")


@pytest.mark.parametrize("score", [-0.5, 10.5, 11])
def test_score_out_of_range_is_rejected(score: float) -> None:
    data = _data()
    data["models"]["gpt-4o"]["scores"]["decomposition"] = score
    _reject(data, "scores.decomposition")


@pytest.mark.parametrize("speed", [-1, 10.1])
def test_speed_out_of_range_is_rejected(speed: float) -> None:
    data = _data()
    data["models"]["gpt-4o"]["speed"] = speed
    _reject(data, "speed")


@pytest.mark.parametrize("tier", ["free", "local"])
def test_priced_non_paid_model_is_rejected(tier: str) -> None:
    data = _data()
    key = "gemini-2.5-flash-free" if tier == "free" else "mistral-7b"
    data["models"][key]["price"] = {"input_per_mtok": 0.1, "output_per_mtok": 0.0}
    _reject(data, f"a {tier} model cannot have a price")


def test_unknown_field_in_model_is_rejected() -> None:
    data = _data()
    data["models"]["gpt-4o"]["colour"] = "blue"
    _reject(data, "Extra inputs are not permitted")


def test_embedded_must_name_an_embedded_entry() -> None:
    data = _data()
    data["embedded"] = "gpt-4o"
    _reject(data, "not an embedded entry")


def test_spec_rejects_zero_context_window() -> None:
    with pytest.raises(ValidationError):
        ModelSpec(key="x", provider=Provider.OLLAMA, model="m", tier=Tier.LOCAL, context_window=0)
