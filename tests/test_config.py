"""User configuration: tierwise.toml overrides, discovery order, clear errors, credentials."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tierwise.catalog.policy import PolicyMode
from tierwise.catalog.settings import (
    CREDENTIAL_ENV,
    ConfigError,
    Credentials,
    ProviderConfig,
    Settings,
    find_config_file,
    load_settings,
)
from tierwise.catalog.specs import Provider, TaskType, Tier, load_default_catalog

KEY_VARS = sorted({name for names in CREDENTIAL_ENV.values() for name in names})


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No config file, no keys, no ~/.env and no user config dir from the developer's machine."""
    for name in [*KEY_VARS, "OLLAMA_HOST", "TIERWISE_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    user_dir = tmp_path / "user-config"
    monkeypatch.setattr(
        "tierwise.catalog.settings.platformdirs.user_config_dir", lambda *a, **k: str(user_dir)
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str) -> Settings:
    return load_settings(_write(tmp_path / "tierwise.toml", text), credentials=_no_creds())


def _no_creds() -> Credentials:
    return Credentials(_env_file=None)


# --------------------------------------------------------------------------- defaults


def test_defaults_without_a_file(isolated: Path) -> None:
    settings = load_settings(credentials=_no_creds())
    assert settings.source is None
    assert settings.policy.mode is PolicyMode.FREE_FIRST
    assert settings.policy.cap is Tier.FREE
    default = load_default_catalog()
    assert set(settings.catalog.models) == set(default.models)
    assert settings.timeout(Provider.GEMINI) > 0
    assert settings.base_url(Provider.OPENROUTER) == "https://openrouter.ai/api/v1"
    assert settings.base_url(Provider.OLLAMA) == "http://127.0.0.1:11434"


# --------------------------------------------------------------------------- overrides


def test_add_a_model_and_use_it_in_a_chain(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        """
        [models.my-qwen]
        provider = "ollama"
        model = "qwen2.5:7b"
        tier = "local"
        context_window = 32768
        scores = { classification = 7 }

        [chains.classification]
        local = ["my-qwen", "starling-lm-7b-alpha"]
        """,
    )
    spec = settings.catalog.spec("my-qwen")
    assert spec.provider is Provider.OLLAMA and spec.tier is Tier.LOCAL
    assert spec.score(TaskType.CLASSIFICATION) == 7
    local = [s.key for s in settings.catalog.chain(TaskType.CLASSIFICATION, Tier.LOCAL)]
    assert local == ["my-qwen", "starling-lm-7b-alpha"]


def test_change_a_price_keeps_the_other_price_fields(tmp_path: Path) -> None:
    default = load_default_catalog().spec("gpt-4o").price
    settings = _load(
        tmp_path,
        """
        [models.gpt-4o.price]
        input_per_mtok = 2.0
        """,
    )
    price = settings.catalog.spec("gpt-4o").price
    assert price.input_per_mtok == 2.0
    assert price.output_per_mtok == default.output_per_mtok
    assert price.as_of == default.as_of
    # everything else about the model is untouched
    assert settings.catalog.spec("gpt-4o").model == "openai/gpt-4o"


def test_change_limits(tmp_path: Path) -> None:
    default = load_default_catalog().spec("gemini-2.5-flash-free").limits
    settings = _load(
        tmp_path,
        """
        [models."gemini-2.5-flash-free"]
        limits = { rpm = 5 }
        """,
    )
    limits = settings.catalog.spec("gemini-2.5-flash-free").limits
    assert limits.rpm == 5
    assert limits.rpd == default.rpd and limits.tpm == default.tpm


def test_replace_one_tier_of_a_chain_keeps_the_others(tmp_path: Path) -> None:
    default = load_default_catalog()
    settings = _load(
        tmp_path,
        """
        [chains.rewriting]
        paid = ["claude-sonnet-4"]
        """,
    )
    cat = settings.catalog
    assert [s.key for s in cat.chain(TaskType.REWRITING, Tier.PAID)] == ["claude-sonnet-4"]
    for tier in (Tier.LOCAL, Tier.FREE):
        assert cat.chain(TaskType.REWRITING, tier) == default.chain(TaskType.REWRITING, tier)
    for op in TaskType:
        if op is not TaskType.REWRITING:
            for tier in Tier:
                assert cat.chain(op, tier) == default.chain(op, tier)


def test_provider_base_url_and_timeout(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        """
        [providers.groq]
        base_url = "http://127.0.0.1:8123"
        timeout = 2.5

        [providers.ollama]
        base_url = "http://127.0.0.1:8124"
        """,
    )
    assert settings.base_url(Provider.GROQ) == "http://127.0.0.1:8123"
    assert settings.timeout(Provider.GROQ) == 2.5
    assert settings.base_url(Provider.OLLAMA) == "http://127.0.0.1:8124"
    assert settings.timeout(Provider.GEMINI) == 60.0  # untouched default
    assert settings.providers[Provider.GROQ] == ProviderConfig(
        base_url="http://127.0.0.1:8123", timeout=2.5
    )


def test_default_policy(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        """
        [policy]
        mode = "balanced"
        max_tier = "free"
        max_cost_per_call = 0.01

        [policy.operations.classification]
        pin = "gemini-2.5-flash-free"

        [policy.operations.rewriting]
        forbid_tiers = ["paid", "local"]
        max_tier = "free"
        """,
    )
    policy = settings.policy
    assert policy.mode is PolicyMode.BALANCED
    assert policy.cap is Tier.FREE
    assert policy.max_cost_per_call == 0.01
    pin = policy.override(TaskType.CLASSIFICATION)
    assert pin is not None and pin.pin == "gemini-2.5-flash-free"
    rewriting = policy.override(TaskType.REWRITING)
    assert rewriting is not None
    assert rewriting.forbid_tiers == frozenset({Tier.PAID, Tier.LOCAL})
    assert rewriting.max_tier is Tier.FREE


def test_policy_mode_default_cap(tmp_path: Path) -> None:
    settings = _load(tmp_path, '[policy]\nmode = "quality_first"\n')
    assert settings.policy.cap is Tier.PAID


def test_ollama_host_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "http://10.0.0.5:11434")
    assert load_settings().base_url(Provider.OLLAMA) == "http://10.0.0.5:11434"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("127.0.0.1:9999", "http://127.0.0.1:9999"),
        ("https://ollama.example.com/", "https://ollama.example.com"),
    ],
)
def test_ollama_host_without_scheme_is_a_url(
    monkeypatch: pytest.MonkeyPatch, host: str, url: str
) -> None:
    # Ollama itself accepts OLLAMA_HOST=host[:port]; the probe needs a URL.
    monkeypatch.setenv("OLLAMA_HOST", host)
    assert load_settings().base_url(Provider.OLLAMA) == url


def test_with_providers_overrides_endpoints() -> None:
    settings = load_settings(credentials=_no_creds())
    other = settings.with_providers(
        {Provider.GEMINI: ProviderConfig(base_url="http://127.0.0.1:1")},
        Credentials(_env_file=None, GEMINI_API_KEY="k"),
    )
    assert other.base_url(Provider.GEMINI) == "http://127.0.0.1:1"
    assert settings.base_url(Provider.GEMINI) is None
    assert other.credentials.key(Provider.GEMINI) is not None


# --------------------------------------------------------------------------- discovery


def test_discovery_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_config_file() is None
    user = _write(isolated / "user-config" / "tierwise.toml", '[policy]\nmode = "balanced"\n')
    assert find_config_file() == user
    assert load_settings().policy.mode is PolicyMode.BALANCED

    cwd = _write(isolated / "work" / "tierwise.toml", '[policy]\nmode = "quality_first"\n')
    assert find_config_file() == Path.cwd() / "tierwise.toml"
    assert find_config_file().samefile(cwd)  # type: ignore[union-attr]
    assert load_settings().policy.mode is PolicyMode.QUALITY_FIRST

    explicit = _write(isolated / "elsewhere.toml", '[policy]\nmode = "local_only"\n')
    monkeypatch.setenv("TIERWISE_CONFIG", str(explicit))
    assert find_config_file() == explicit
    settings = load_settings()
    assert settings.policy.mode is PolicyMode.LOCAL_ONLY
    assert settings.source == explicit

    # an explicit path beats discovery
    assert load_settings(user).policy.mode is PolicyMode.BALANCED


def test_find_config_file_accepts_an_env_mapping(isolated: Path) -> None:
    path = _write(isolated / "x.toml", "")
    assert find_config_file({"TIERWISE_CONFIG": str(path)}) == path
    assert find_config_file({}) is None


def test_missing_file_via_env(monkeypatch: pytest.MonkeyPatch, isolated: Path) -> None:
    missing = isolated / "nope" / "tierwise.toml"
    monkeypatch.setenv("TIERWISE_CONFIG", str(missing))
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "TIERWISE_CONFIG" in message
    assert str(missing) in message
    assert "no such file" in message


def test_missing_explicit_path(isolated: Path) -> None:
    missing = isolated / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing)
    assert str(missing) in str(info.value)
    assert "cannot read" in str(info.value)


def test_empty_file_is_fine(tmp_path: Path) -> None:
    settings = _load(tmp_path, "")
    assert settings.source == tmp_path / "tierwise.toml"


# --------------------------------------------------------------------------- bad config

BAD_CONFIGS = {
    "unknown-top-level-key": (
        'colour = "blue"\n',
        ["colour", "unknown key", "policy", "providers", "models", "chains"],
    ),
    "unknown-key-in-model": (
        "[models.gpt-4o]\nfavourite = true\n",
        ["models.gpt-4o.favourite", "unknown key", "context_window", "price"],
    ),
    "unknown-key-in-policy": (
        "[policy]\nbudget = 3\n",
        ["policy.budget", "unknown key", "mode", "max_tier", "max_cost_per_call"],
    ),
    "unknown-key-in-operation-override": (
        '[policy.operations.classification]\npinned = "gpt-4o"\n',
        ["policy.operations.classification.pinned", "unknown key", "pin", "forbid_tiers"],
    ),
    "unknown-key-in-provider": (
        '[providers.groq]\nurl = "http://x"\n',
        ["providers.groq.url", "unknown key", "base_url", "timeout"],
    ),
    "wrong-type": (
        '[models.gpt-4o]\ncontext_window = "big"\n',
        ["models.gpt-4o.context_window", "'big'", "integer"],
    ),
    "wrong-type-timeout": (
        '[providers.gemini]\ntimeout = "soon"\n',
        ["providers.gemini.timeout", "'soon'", "number"],
    ),
    "unknown-provider-in-model": (
        '[models.x]\nprovider = "anthropic"\nmodel = "m"\ntier = "paid"\ncontext_window = 1\n',
        ["models.x.provider", "'anthropic'", "'gemini'", "'openrouter'", "'ollama'"],
    ),
    "unknown-provider-section": (
        '[providers.anthropic]\nbase_url = "http://x"\n',
        ["providers.anthropic", "'anthropic'", "'gemini'", "'groq'"],
    ),
    "unknown-tier": (
        '[models.x]\nprovider = "ollama"\nmodel = "m"\ntier = "cheap"\ncontext_window = 1\n',
        ["models.x.tier", "'cheap'", "'local'", "'free'", "'paid'"],
    ),
    "negative-price": (
        "[models.gpt-4o.price]\ninput_per_mtok = -1.5\n",
        ["models.gpt-4o.price.input_per_mtok", "-1.5", "greater than or equal to 0"],
    ),
    "priced-free-model": (
        '[models."gemini-2.5-flash-free".price]\ninput_per_mtok = 0.3\n',
        ["models.gemini-2.5-flash-free", "0.3", "cannot have a price", "paid"],
    ),
    "score-out-of-range": (
        "[models.gpt-4o.scores]\nclassification = 12\n",
        ["models.gpt-4o.scores.classification", "12", "less than or equal to 10"],
    ),
    "unknown-operation-in-chains": (
        '[chains.summarise]\nfree = ["gemini-2.5-flash-free"]\n',
        ["chains.summarise", "'summarise'", "'classification'", "'rewriting'"],
    ),
    "unknown-model-in-chain": (
        '[chains.classification]\nfree = ["gpt-5-free"]\n',
        ["chains.classification.free", "'gpt-5-free'", "gemini-2.5-flash-free"],
    ),
    "wrong-tier-in-chain": (
        '[chains.classification]\nfree = ["gpt-4o"]\n',
        ["chains.classification.free", "'gpt-4o'", "paid", "gemini-2.5-flash-free"],
    ),
    "unknown-tier-in-chain": (
        '[chains.classification]\ncheap = ["gpt-4o"]\n',
        ["chains.classification.cheap", "unknown key", "local", "free", "paid"],
    ),
    "unknown-policy-mode": (
        '[policy]\nmode = "cheapest"\n',
        ["policy.mode", "'cheapest'", "'local_only'", "'free_first'", "'balanced'"],
    ),
    "unknown-max-tier": (
        '[policy]\nmax_tier = "gold"\n',
        ["policy.max_tier", "'gold'", "'local'", "'free'", "'paid'"],
    ),
    "local-only-with-paid-cap": (
        '[policy]\nmode = "local_only"\nmax_tier = "paid"\n',
        ["policy", "local_only", "'paid'", "'local'"],
    ),
    "unknown-operation-in-policy": (
        '[policy.operations.summarise]\npin = "gpt-4o"\n',
        ["policy.operations.summarise", "'summarise'", "'classification'"],
    ),
    "forbid-unknown-tier": (
        '[policy.operations.classification]\nforbid_tiers = ["gold"]\n',
        ["policy.operations.classification.forbid_tiers", "'gold'", "'paid'"],
    ),
    "pin-unknown-model": (
        '[policy.operations.classification]\npin = "gpt-7"\n',
        ["policy.operations.classification.pin", "'gpt-7'", "gpt-4o", "smollm2-135m"],
    ),
    "negative-cost-cap": (
        "[policy]\nmax_cost_per_call = -1\n",
        ["policy.max_cost_per_call", "-1", "greater than or equal to 0"],
    ),
    "new-model-missing-field": (
        '[models.x]\nprovider = "ollama"\ntier = "local"\ncontext_window = 1\n',
        ["models.x.model", "missing"],
    ),
    "invalid-toml": (
        '[policy\nmode = "balanced"\n',
        ["not valid TOML", "line 1"],
    ),
    "models-not-a-table": (
        "models = 3\n",
        ["models", "3"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_gives_one_clear_error(tmp_path: Path, case: str) -> None:
    text, expected = BAD_CONFIGS[case]
    path = _write(tmp_path / "conf" / f"{case}.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, credentials=_no_creds())
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # one readable line, not a pydantic dump
    assert "\n" not in message.strip() or case == "invalid-toml"
    assert "validation error for" not in message
    assert "For further information visit" not in message
    assert "errors.pydantic.dev" not in message
    assert "type=" not in message
    # raised from None: no pydantic exception is chained for the traceback to show
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert info.value.source == str(path)


def test_config_error_parts() -> None:
    err = ConfigError("f.toml", "policy.mode", "invalid value 'x'")
    assert str(err) == "f.toml: policy.mode: invalid value 'x'"
    assert (err.source, err.key, err.problem) == ("f.toml", "policy.mode", "invalid value 'x'")
    assert isinstance(err, ValueError)
    assert str(ConfigError("f.toml", "", "not valid TOML")) == "f.toml: not valid TOML"


def test_config_error_redacts_a_pasted_key(tmp_path: Path) -> None:
    secret = "tw-canary-" + "5f" * 12
    path = _write(tmp_path / "t.toml", f'[policy.operations.classification]\npin = "{secret}"\n')
    creds = Credentials(_env_file=None, GROQ_API_KEY=secret)
    with pytest.raises(ConfigError) as info:
        load_settings(path, credentials=creds)
    assert secret not in str(info.value)
    assert "***" in str(info.value)
    assert "policy.operations.classification.pin" in str(info.value)


# --------------------------------------------------------------------------- credentials


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_VARS:
        monkeypatch.setenv(name, f"value-of-{name}")
    creds = Credentials(_env_file=None)
    for provider, names in CREDENTIAL_ENV.items():
        key = creds.key(provider)
        assert key is not None
        assert key.get_secret_value() == f"value-of-{names[0]}"  # first name wins
    assert creds.key(Provider.OLLAMA) is None
    assert creds.key(Provider.EMBEDDED) is None


def test_env_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dotenv = _write(
        tmp_path / "dot.env",
        """
        GROQ_API_KEY=from-dotenv-groq
        MISTRAL_API_KEY=from-dotenv-mistral
        OLLAMA_HOST=http://10.1.1.1:11434
        UNRELATED=ignored
        """,
    )
    monkeypatch.setenv("GROQ_API_KEY", "from-env-groq")
    creds = Credentials(_env_file=dotenv)
    assert creds.key(Provider.GROQ).get_secret_value() == "from-env-groq"  # type: ignore[union-attr]
    assert (
        creds.key(Provider.MISTRAL).get_secret_value()  # type: ignore[union-attr]
        == "from-dotenv-mistral"
    )
    assert creds.ollama_host == "http://10.1.1.1:11434"


def test_empty_env_var_does_not_hide_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dotenv = _write(tmp_path / "dot.env", "HF_TOKEN=from-dotenv\n")
    monkeypatch.setenv("HF_TOKEN", "")
    creds = Credentials(_env_file=dotenv)
    assert creds.key(Provider.HUGGINGFACE).get_secret_value() == "from-dotenv"  # type: ignore[union-attr]


def test_google_api_key_is_an_alias(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    assert Credentials(_env_file=None).key(Provider.GEMINI).get_secret_value() == "google-key"  # type: ignore[union-attr]
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")
    assert Credentials(_env_file=None).key(Provider.GEMINI).get_secret_value() == "gemini-key"  # type: ignore[union-attr]
    # the environment still beats ~/.env when the two use different aliases
    dotenv = _write(tmp_path / "dot.env", "GEMINI_API_KEY=from-dotenv\n")
    monkeypatch.delenv("GEMINI_API_KEY")
    creds = Credentials(_env_file=dotenv)
    assert creds.key(Provider.GEMINI).get_secret_value() == "google-key"  # type: ignore[union-attr]


def test_load_settings_reads_dotenv_from_the_current_home(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = isolated / "other-home"
    _write(home / ".env", "OPENROUTER_API_KEY=from-home-dotenv\n")
    monkeypatch.setenv("HOME", str(home))
    key = load_settings().credentials.key(Provider.OPENROUTER)
    assert key is not None and key.get_secret_value() == "from-home-dotenv"


def test_no_keys_means_none(isolated: Path) -> None:
    creds = load_settings().credentials
    assert all(creds.key(p) is None for p in Provider)
    assert creds.secrets() == ()
    assert creds.redact("nothing to hide") == "nothing to hide"
