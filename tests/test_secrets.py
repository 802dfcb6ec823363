"""A key set in the environment appears in no output, log record, repr or exception text."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import (
    CREDENTIAL_ENV,
    ConfigError,
    Credentials,
    Settings,
    load_settings,
)
from tierwise.catalog.specs import ModelSpec, Provider, Tier
from tierwise.cli.app import app
from tierwise.providers.clients import ProviderFactory, probe
from tierwise.routing.availability import probed_snapshot
from tierwise.routing.selector import Selector

KEY_VARS = sorted({name for names in CREDENTIAL_ENV.values() for name in names})
RUN_HEX = secrets.token_hex(8)
#: One canary per variable: deliberately nothing like a real provider key format.
CANARIES = {name: f"tw-canary-{RUN_HEX}-{name.lower().replace('_', '-')}" for name in KEY_VARS}
#: Every canary shares this prefix, so one substring check catches any of them.
PREFIX = f"tw-canary-{RUN_HEX}"


@pytest.fixture(autouse=True)
def canaries(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TIERWISE_CONFIG", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the probe goes direct
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(
        "tierwise.catalog.settings.platformdirs.user_config_dir",
        lambda *a, **k: str(tmp_path / "xdg"),
    )
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    yield
    _assert_clean(caplog.text, "log text")
    for record in caplog.records:
        _assert_clean(record.getMessage(), f"log record {record.name}")
        _assert_clean(repr(record.args), f"log record args {record.name}")


def _assert_clean(text: str, where: str) -> None:
    assert PREFIX not in text, f"a key leaked into {where}"


def _settings() -> Settings:
    return load_settings()


ONE_SPEC_PER_PROVIDER = {
    Provider.OLLAMA: "mistral-7b",
    Provider.GEMINI: "gemini-2.5-flash-free",
    Provider.GROQ: "groq-llama-3.3-70b",
    Provider.OPENROUTER: "gpt-4o",
    Provider.MISTRAL: "mistral-small-free",
    Provider.HUGGINGFACE: "hf-llama-3.1-8b",
}
OPENAI_SPEC = ModelSpec(
    key="openai-gpt-4o-mini",
    provider=Provider.OPENAI,
    model="gpt-4o-mini",
    tier=Tier.PAID,
    context_window=128_000,
)


def test_the_keys_are_really_loaded() -> None:
    creds = _settings().credentials
    for provider, names in CREDENTIAL_ENV.items():
        key = creds.key(provider)
        assert key is not None and key.get_secret_value() == CANARIES[names[0]]


def test_repr_and_str_of_credentials_and_settings() -> None:
    settings = _settings()
    creds = settings.credentials
    for text in (
        repr(creds),
        str(creds),
        repr(settings),
        str(settings),
        creds.model_dump_json(),
        repr(creds.model_dump()),
        repr(creds.key(Provider.GROQ)),
        str(creds.key(Provider.GROQ)),
        f"{creds.key(Provider.GROQ)}",
    ):
        _assert_clean(text, "repr/str")


@pytest.mark.parametrize("provider", sorted(ONE_SPEC_PER_PROVIDER, key=str))
def test_built_chat_models_hide_the_key(provider: Provider) -> None:
    settings = _settings()
    spec = settings.catalog.spec(ONE_SPEC_PER_PROVIDER[provider])
    assert spec.provider is provider
    model = ProviderFactory(settings).chat_model(spec)
    for text in (
        repr(model),
        str(model),
        repr(model.model_dump()),
        json.dumps(model.to_json(), default=str),
    ):
        _assert_clean(text, f"{type(model).__name__}")


def test_openai_chat_model_hides_the_key() -> None:
    model = ProviderFactory(_settings()).chat_model(OPENAI_SPEC)
    _assert_clean(repr(model), "ChatOpenAI repr")
    _assert_clean(str(model), "ChatOpenAI str")
    _assert_clean(json.dumps(model.to_json(), default=str), "ChatOpenAI to_json")


def test_probe_snapshot_and_explanations_hide_the_key() -> None:
    settings = _settings()
    availability = probe(settings)
    _assert_clean(repr(availability), "availability")
    snapshot = probed_snapshot(availability, settings.catalog.models)
    _assert_clean(repr(snapshot), "snapshot")
    explanation = Selector(settings.catalog).explain(
        "classification", "simple", Policy(mode="balanced"), snapshot
    )
    _assert_clean(repr(explanation), "explanation")


def test_missing_key_error_names_the_variable_not_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROQ_API_KEY")
    settings = _settings()
    with pytest.raises(LookupError) as info:
        ProviderFactory(settings).chat_model(settings.catalog.spec("groq-llama-3.1-8b"))
    assert "GROQ_API_KEY" in str(info.value)
    _assert_clean(str(info.value), "LookupError")


CLI_COMMANDS = [
    ["models"],
    ["models", "--json"],
    ["route", "classification", "--complexity", "simple", "--policy", "free_first"],
    ["route", "classification", "--complexity", "simple", "--policy", "free_first", "--json"],
    ["route", "rewriting", "-x", "complex", "-p", "quality_first", "--json"],
    ["doctor"],
    ["route", "classification", "--policy", "local_only", "--max-tier", "paid"],  # an error
]


@pytest.mark.parametrize("args", CLI_COMMANDS, ids=lambda a: " ".join(a))
def test_cli_output_hides_the_keys(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout or result.stderr
    _assert_clean(result.stdout, "stdout")
    _assert_clean(result.stderr, "stderr")
    if "--json" in args:
        json.loads(result.stdout)


# --------------------------------------------------------------------------- pasted keys

PASTED = CANARIES["GROQ_API_KEY"]

PASTED_KEY_CONFIGS = {
    "as-a-pin": f'[policy.operations.classification]\npin = "{PASTED}"\n',
    "as-a-timeout": f'[providers.groq]\ntimeout = "{PASTED}"\n',
    "as-a-context-window": f'[models.gpt-4o]\ncontext_window = "{PASTED}"\n',
    "as-a-provider-name": f'[providers."{PASTED}"]\nbase_url = "http://x"\n',
    "as-a-policy-mode": f'[policy]\nmode = "{PASTED}"\n',
    "as-a-chain-member": f'[chains.classification]\nfree = ["{PASTED}"]\n',
    "unquoted": f"[providers.groq]\napi_key = {PASTED}\n",
}


@pytest.mark.parametrize("case", sorted(PASTED_KEY_CONFIGS))
def test_config_error_redacts_a_pasted_key(tmp_path: Path, case: str) -> None:
    path = tmp_path / "tierwise.toml"
    path.write_text(PASTED_KEY_CONFIGS[case])
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    err = info.value
    for text in (str(err), repr(err), err.source, err.key, err.problem, err.hint):
        _assert_clean(text, f"ConfigError ({case})")
    assert str(path) in str(err)

    result = CliRunner().invoke(app, ["doctor", "--config", str(path)])
    assert result.exit_code != 0
    assert str(path) in result.stderr
    _assert_clean(result.stderr + result.stdout, f"CLI error ({case})")


def test_redacted_value_is_marked() -> None:
    path = Path("tierwise.toml")
    path.write_text(f'[providers.groq]\ntimeout = "{PASTED}"\n')
    with pytest.raises(ConfigError, match=r"providers\.groq\.timeout: invalid value '\*\*\*'"):
        load_settings(path)


# --------------------------------------------------------------------------- redact()


def test_redact_replaces_every_set_key() -> None:
    creds = Credentials(_env_file=None)
    loaded = creds.secrets()
    # GOOGLE_API_KEY is only an alias: GEMINI_API_KEY is the key in use
    assert set(loaded) == {CANARIES[names[0]] for names in CREDENTIAL_ENV.values()}
    text = " | ".join(f"{name}={value}" for name, value in CANARIES.items() if value in loaded)
    redacted = creds.redact(text)
    _assert_clean(redacted, "redact()")
    assert redacted.count("***") == len(loaded)
    assert "GROQ_API_KEY=***" in redacted


def test_redact_with_the_google_alias_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    creds = Credentials(_env_file=None)
    google = CANARIES["GOOGLE_API_KEY"]
    assert creds.key(Provider.GEMINI).get_secret_value() == google  # type: ignore[union-attr]
    assert creds.redact(f"key={google}") == "key=***"


def test_redact_without_keys_is_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_VARS:
        monkeypatch.delenv(name)
    creds = Credentials(_env_file=None)
    assert creds.secrets() == ()
    assert creds.redact("plain text") == "plain text"


# ------------------------------------------------- callbacks and tracers (issue 14)

CALLBACK_PROVIDERS = {
    "openrouter": "openrouter",
    "groq": "groq",
    "gemini": "gemini",
    "mistral": "mistral",
    "huggingface": "huggingface",
    "openai": "openai",
}


class _Recorder:
    """A callback handler that keeps the text of every event, errors with their traceback."""

    def __init__(self) -> None:
        from langchain_core.callbacks import BaseCallbackHandler

        texts: list[str] = []
        self.texts = texts
        self.errors = 0

        def keep(*args: object, **kwargs: object) -> None:
            import traceback

            for value in (*args, *kwargs.values()):
                texts.append(repr(value))
                if isinstance(value, BaseException):
                    texts.append(str(value))
                    texts.append("".join(traceback.format_exception(value)))

        recorder = self

        class Handler(BaseCallbackHandler):
            def on_chat_model_start(self, *args: object, **kwargs: object) -> None:
                keep(*args, **kwargs)

            def on_llm_end(self, *args: object, **kwargs: object) -> None:
                keep(*args, **kwargs)

            def on_llm_error(self, *args: object, **kwargs: object) -> None:
                recorder.errors += 1
                keep(*args, **kwargs)

            def on_chain_error(self, *args: object, **kwargs: object) -> None:
                keep(*args, **kwargs)

        self.handler = Handler()


@pytest.mark.parametrize("provider", sorted(CALLBACK_PROVIDERS))
@pytest.mark.parametrize("driver", ["invoke", "stream"])
def test_callbacks_never_see_a_key_the_provider_echoed(
    simulator: object, provider: str, driver: str
) -> None:
    """A provider's error body quotes the key; tracers record on_llm_error: 0 canaries."""
    import dataclasses

    from tierwise.catalog.specs import Catalog, TaskType
    from tierwise.routing.router import ModelRouter
    from tierwise.routing.snapshot import Snapshot
    from tierwise.testing import Fault, Simulator

    assert isinstance(simulator, Simulator)
    models = {
        "primary": {"provider": provider, "model": f"{provider}-canary-primary", "tier": "free",
                    "context_window": 8192},
        "fallback": {"provider": "ollama", "model": "canary-fallback:1b", "tier": "local",
                     "context_window": 8192},
    }
    catalog = Catalog.from_mapping({
        "models": models,
        "chains": {op.value: {"free": ["primary"], "local": ["fallback"]} for op in TaskType},
    })
    settings = simulator.settings(dataclasses.replace(simulator.settings(), catalog=catalog))
    settings = settings.with_providers({}, Credentials.model_validate(CANARIES))
    key = settings.credentials.key(Provider(provider))
    assert key is not None and key.get_secret_value().startswith(PREFIX)
    echoed = key.get_secret_value()
    spec = catalog.spec("primary")
    simulator.script(
        spec,
        Fault.http_error(401, f"Incorrect API key provided: {echoed}. You can find yours at"),
        Fault.http_error(500, f"upstream failed for key={echoed} ({echoed})"),
    )
    recorder = _Recorder()
    router = ModelRouter(
        settings, policy=Policy(mode="free_first", max_tier="free"),
        snapshot=Snapshot.everything(catalog), ledger=None,
    )
    config = {"callbacks": [recorder.handler]}
    for _ in range(2):  # the 401 first (provider disabled after it), then the 500
        router.health.enable_provider(provider)
        try:
            if driver == "stream":
                list(router.stream("rewriting", "hello", config=config))
            else:
                router.invoke("rewriting", "hello", config=config)
        except Exception as exc:  # noqa: BLE001 - NoModelAvailable: only one model in the chain
            _assert_clean(str(exc), "NoModelAvailable")
    assert recorder.errors == 2
    assert recorder.texts
    for text in recorder.texts:
        _assert_clean(text, f"a callback event ({provider}, {driver})")


#: Keys tierwise was never told about: only their shape can give them away.
UNKNOWN_KEYS = {
    "openai-project": f"sk-proj-{secrets.token_urlsafe(32)}",
    "groq": f"gsk_{secrets.token_hex(24)}",
    "gemini": f"AIzaSy{secrets.token_urlsafe(24)}",
    "hex": f"{secrets.token_hex(2)}7a{secrets.token_hex(18)}",
    "short-hex": f"k9{secrets.token_hex(10)}",
}
UNKNOWN_KEY_PLACES = {
    "pin": '[policy.operations.classification]\npin = "{key}"\n',
    "timeout": '[providers.groq]\ntimeout = "{key}"\n',
    "policy-mode": '[policy]\nmode = "{key}"\n',
    "models-tier": '[models.gpt-4o]\ntier = "{key}"\n',
    "chain-member": '[chains.classification]\nfree = ["{key}"]\n',
    "provider-name": '[providers."{key}"]\nbase_url = "http://x"\n',
    "model-name": '[models."{key}"]\nprovider = "groq"\n',
    "context-window": '[models.gpt-4o]\ncontext_window = "{key}"\n',
    "top-level": '{key} = 1\n',
}


@pytest.mark.parametrize("place", sorted(UNKNOWN_KEY_PLACES))
@pytest.mark.parametrize("shape", sorted(UNKNOWN_KEYS))
def test_config_errors_never_echo_a_credential_looking_value(
    tmp_path: Path, place: str, shape: str
) -> None:
    """Issue 14: a key *not* configured anywhere, pasted anywhere: 0 occurrences."""
    key = UNKNOWN_KEYS[shape]
    path = tmp_path / "tierwise.toml"
    path.write_text(UNKNOWN_KEY_PLACES[place].format(key=key))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    err = info.value
    for text in (str(err), repr(err), err.key, err.problem, err.hint):
        assert key not in text, f"{shape} key echoed by the config error ({place}): {text}"
    assert str(path) in str(err)
