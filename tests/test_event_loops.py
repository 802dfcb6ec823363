"""Clients stay usable across event loops (a second ``asyncio.run`` is not an outage)."""

import asyncio

import pytest

from tierwise.catalog.specs import load_default_catalog
from tierwise.providers.clients import ProviderFactory
from tierwise.testing import Simulator

CATALOG = load_default_catalog()
ONE_PER_PROVIDER = {
    spec.provider: spec for spec in CATALOG if spec.provider.value not in ("embedded",)
}


@pytest.mark.parametrize("spec", ONE_PER_PROVIDER.values(), ids=lambda s: s.provider.value)
def test_client_answers_from_two_event_loops(simulator: Simulator, spec) -> None:
    factory = ProviderFactory(simulator.settings())

    async def ask() -> str:
        reply = await factory.chat_model(spec).ainvoke("hi")
        return str(reply.content)

    assert asyncio.run(ask())
    assert asyncio.run(ask())
    assert factory.chat_model(spec).invoke("hi").content
    assert len(simulator.requests_for(model=spec.model)) == 3
