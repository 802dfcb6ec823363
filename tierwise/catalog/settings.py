"""Settings: credentials from the environment and ``~/.env``, the rest from ``tierwise.toml``.

``load_settings()`` merges the packaged catalog with the user's ``tierwise.toml`` (found via
``TIERWISE_CONFIG``, then the working directory, then the user config dir) and turns any
validation problem into one :class:`ConfigError` that names the file, the key path, the bad
value and what is allowed. Keys are ``SecretStr`` and never appear in ``repr()``.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tierwise.catalog.policy import Policy
from tierwise.catalog.secrets import redact_credential_like
from tierwise.catalog.specs import Catalog, Provider, default_catalog_data
from tierwise.catalog.state import StateConfig, redact_url

__all__ = [
    "CREDENTIAL_FIELD",
    "ConfigError",
    "Credentials",
    "ProviderConfig",
    "Settings",
    "find_config_file",
    "load_settings",
]

CONFIG_ENV = "TIERWISE_CONFIG"
CONFIG_NAME = "tierwise.toml"
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"

#: Where each provider is reached when the config does not say otherwise
#: (``None``: the SDK's own default).
DEFAULT_BASE_URLS: Mapping[Provider, str | None] = {
    Provider.OPENROUTER: "https://openrouter.ai/api/v1",
    Provider.MISTRAL: "https://api.mistral.ai/v1",
    Provider.HUGGINGFACE: "https://router.huggingface.co/v1",
    Provider.OPENAI: None,
    Provider.GEMINI: None,
    Provider.GROQ: None,
    Provider.OLLAMA: None,
    Provider.EMBEDDED: None,
}

#: Seconds before a silent server counts as a timeout. Local models load weights on first
#: use, so they get longer.
DEFAULT_TIMEOUTS: Mapping[Provider, float] = {
    **dict.fromkeys(Provider, 60.0),
    Provider.OLLAMA: 120.0,
}

#: The environment variable(s) that hold each provider's key, first one wins.
CREDENTIAL_ENV: Mapping[Provider, tuple[str, ...]] = {
    Provider.GEMINI: ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    Provider.GROQ: ("GROQ_API_KEY",),
    Provider.OPENROUTER: ("OPENROUTER_API_KEY",),
    Provider.MISTRAL: ("MISTRAL_API_KEY",),
    Provider.HUGGINGFACE: ("HF_TOKEN",),
    Provider.OPENAI: ("OPENAI_API_KEY",),
}


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message says where and what is allowed."""

    def __init__(self, source: str, key: str, problem: str, hint: str = "") -> None:
        """Build the one-line message ``<source>: <key>: <problem>``."""
        self.source, self.key, self.problem, self.hint = source, key, problem, hint
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")

    def redacted(self, redact: Callable[[str], str]) -> ConfigError:
        """This error with ``redact`` applied to every part (a key pasted as a value).

        Beyond the configured keys, whatever looks like a credential is removed from the
        key path, problem and hint (a key pasted anywhere in the file, configured or not);
        the source is a file path and keeps its name.
        """

        def scrub(text: str) -> str:
            return redact_credential_like(redact(text))

        return ConfigError(
            redact(self.source), scrub(self.key), scrub(self.problem), scrub(self.hint)
        )


class Credentials(BaseSettings):
    """API keys and the Ollama host, from the environment and ``~/.env`` (environment wins)."""

    model_config = SettingsConfigDict(
        env_file=Path.home() / ".env",  # load_settings() passes the current ~/.env
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,
    )

    gemini_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )
    groq_api_key: SecretStr | None = Field(None, validation_alias="GROQ_API_KEY")
    openrouter_api_key: SecretStr | None = Field(None, validation_alias="OPENROUTER_API_KEY")
    mistral_api_key: SecretStr | None = Field(None, validation_alias="MISTRAL_API_KEY")
    hf_token: SecretStr | None = Field(None, validation_alias="HF_TOKEN")
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    ollama_host: str | None = Field(None, validation_alias="OLLAMA_HOST")
    #: Override ``[state]`` of ``tierwise.toml`` (see :mod:`tierwise.catalog.state`).
    redis_url: str | None = Field(None, validation_alias="TIERWISE_REDIS_URL")
    postgres_url: str | None = Field(None, validation_alias="TIERWISE_POSTGRES_URL")

    def key(self, provider: Provider) -> SecretStr | None:
        """The key for ``provider``; ``None`` when unset or the provider needs none."""
        name = CREDENTIAL_FIELD.get(provider)
        value: SecretStr | None = getattr(self, name) if name else None
        return value

    def secrets(self) -> tuple[str, ...]:
        """Every key that is set, in clear — only for scrubbing text before it is shown."""
        return tuple(
            s.get_secret_value()
            for name in CREDENTIAL_FIELD.values()
            if (s := getattr(self, name)) is not None and s.get_secret_value()
        )

    def redact(self, text: str) -> str:
        """``text`` with every configured key replaced by ``***`` (for output and logs)."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text


#: The :class:`Credentials` field holding each hosted provider's key.
CREDENTIAL_FIELD: Mapping[Provider, str] = {
    Provider.GEMINI: "gemini_api_key",
    Provider.GROQ: "groq_api_key",
    Provider.OPENROUTER: "openrouter_api_key",
    Provider.MISTRAL: "mistral_api_key",
    Provider.HUGGINGFACE: "hf_token",
    Provider.OPENAI: "openai_api_key",
}


class ProviderConfig(BaseModel):
    """Where and how patiently one provider is called."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str | None = Field(None, description="Endpoint; a gateway or the simulator.")
    timeout: float | None = Field(None, gt=0, description="Seconds before a timeout.")


class _ConfigFile(BaseModel):
    """The top level of ``tierwise.toml`` (models and chains are checked by the catalog)."""

    model_config = ConfigDict(extra="forbid")

    policy: Policy = Policy()
    providers: dict[Provider, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    chains: dict[str, dict[str, Any]] = Field(default_factory=dict)
    state: StateConfig = StateConfig()


@dataclass(frozen=True)
class Settings:
    """Everything tierwise needs to route: catalog, default policy, endpoints, credentials."""

    catalog: Catalog
    policy: Policy
    credentials: Credentials
    providers: Mapping[Provider, ProviderConfig] = field(default_factory=dict)
    source: Path | None = None
    #: The ledger file routers built on these settings record into when given no ledger
    #: (``None``: ``$TIERWISE_LEDGER`` or the user data dir). The simulator's settings name
    #: a temporary one, so simulated calls never reach the user's ``tierwise stats``.
    ledger: Path | None = None
    #: Where state shared between processes lives (Redis, PostgreSQL); empty: this process.
    state: StateConfig = field(default_factory=StateConfig)

    def base_url(self, provider: Provider) -> str | None:
        """The configured endpoint of ``provider`` (Ollama: ``OLLAMA_HOST`` or default)."""
        configured = self.providers.get(provider)
        if configured is not None and configured.base_url:
            return configured.base_url
        if provider is Provider.OLLAMA:
            return _ollama_url(self.credentials.ollama_host or DEFAULT_OLLAMA_HOST)
        return DEFAULT_BASE_URLS[provider]

    def timeout(self, provider: Provider) -> float:
        """Seconds before a call to ``provider`` counts as a timeout."""
        configured = self.providers.get(provider)
        if configured is not None and configured.timeout is not None:
            return configured.timeout
        return DEFAULT_TIMEOUTS[provider]

    def with_providers(
        self, providers: Mapping[Provider, ProviderConfig], credentials: Credentials
    ) -> Settings:
        """A copy pointing at other endpoints with other keys (the simulator uses this)."""
        return replace(self, providers={**self.providers, **providers}, credentials=credentials)


def _ollama_url(host: str) -> str:
    """``OLLAMA_HOST`` as a URL: Ollama accepts ``host[:port]`` without a scheme.

    Example:
        >>> _ollama_url("0.0.0.0")
        'http://0.0.0.0:11434'
        >>> _ollama_url("gpu-box:8080")
        'http://gpu-box:8080'
        >>> _ollama_url("https://ollama.example.com")
        'https://ollama.example.com'
        >>> _ollama_url("[::1]/ollama")
        'http://[::1]:11434/ollama'
    """
    host = host.strip().rstrip("/")
    if "://" in host:
        return host
    hostport, slash, path = host.partition("/")
    if ":" not in hostport.rpartition("]")[2]:  # no port (an IPv6 address is bracketed)
        hostport = f"{hostport}:11434"
    if hostport.startswith(":"):  # ":port" means this machine
        hostport = f"127.0.0.1{hostport}"
    return f"http://{hostport}{slash}{path}"


def find_config_file(env: Mapping[str, str] | None = None) -> Path | None:
    """``$TIERWISE_CONFIG``, else ``./tierwise.toml``, else the user config dir's, else None."""
    env = os.environ if env is None else env
    explicit = env.get(CONFIG_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"${CONFIG_ENV}", "", f"no such file: {path}")
        return path
    for candidate in (
        Path.cwd() / CONFIG_NAME,
        Path(platformdirs.user_config_dir("tierwise")) / CONFIG_NAME,
    ):
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    path: str | Path | None = None, *, credentials: Credentials | None = None
) -> Settings:
    """Load the packaged catalog plus the user's config file (``path`` or the one found).

    Raises:
        ConfigError: the file is unreadable, not TOML, or holds an invalid key or value.
    """
    if credentials is None:
        # ~/.env is resolved now, not when this module was imported (HOME may change).
        credentials = Credentials(_env_file=user_env_file())
    try:
        return _load_settings(path, credentials)
    except ConfigError as exc:
        # A key pasted into the file as a value must not be echoed by the error.
        raise exc.redacted(credentials.redact) from None


def user_env_file() -> Path:
    """The dotenv file credentials are read from: ``~/.env``, resolved at call time."""
    return Path.home() / ".env"


def _load_settings(path: str | Path | None, credentials: Credentials) -> Settings:
    config_path = Path(path) if path is not None else find_config_file()
    data: dict[str, Any] = {}
    source = str(config_path) if config_path else "<defaults>"
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(source, "", f"not UTF-8 text (byte {exc.start}): save it as "
                              "UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    try:
        parsed = _ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise _config_error(source, exc, _ConfigFile) from None
    catalog = _merged_catalog(source, parsed)
    _check_policy_models(source, parsed.policy, catalog)
    try:
        state = parsed.state.merged(credentials.redis_url, credentials.postgres_url)
    except ValidationError as exc:
        raise _config_error("environment", exc, StateConfig) from None
    return Settings(
        state=state,
        catalog=catalog,
        policy=parsed.policy,
        credentials=credentials,
        providers=parsed.providers,
        source=config_path,
    )


def _merged_catalog(source: str, parsed: _ConfigFile) -> Catalog:
    """The packaged catalog with the file's model additions/changes and chain replacements."""
    base = default_catalog_data()
    models: dict[str, dict[str, Any]] = base.setdefault("models", {})
    for key, fields in parsed.models.items():
        merged = dict(models.get(key, {}))
        for name, value in fields.items():
            if isinstance(value, dict) and isinstance(merged.get(name), dict):
                merged[name] = {**merged[name], **value}
            else:
                merged[name] = value
        models[key] = merged
    chains: dict[str, dict[str, Any]] = base.setdefault("chains", {})
    for op, tiers in parsed.chains.items():
        chains[op] = {**chains.get(op, {}), **tiers}
    try:
        return Catalog.from_mapping(base)
    except ValidationError as exc:
        raise _config_error(source, exc, Catalog) from None


def _check_policy_models(source: str, policy: Policy, catalog: Catalog) -> None:
    """Every model a policy names (pins, A/B arms, ensemble members) is in the catalog."""
    for op, override in policy.operations.items():
        named: list[tuple[str, str]] = []
        if override.pin is not None:
            named.append(("pin", override.pin))
        if override.ab is not None:
            named += [("ab.a", override.ab.a), ("ab.b", override.ab.b)]
        if override.ensemble is not None:
            named += [(f"ensemble.models[{i}]", m) for i, m in enumerate(override.ensemble.models)]
        for key, model in named:
            if model not in catalog.models:
                raise ConfigError(
                    source,
                    f"policy.operations.{op}.{key}",
                    f"unknown model {model!r}; allowed: {', '.join(sorted(catalog.models))}",
                )


def _config_error(source: str, exc: ValidationError, root: type[BaseModel]) -> ConfigError:
    """The first validation error as a :class:`ConfigError` with key path and allowed values."""
    err = exc.errors(include_url=False)[0]
    loc = [str(part) for part in err["loc"] if part != "[key]"]
    key = ".".join(loc)
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, str) and (root is StateConfig or loc[:1] == ["state"]):
        value = redact_url(value)  # a service URL may carry a password
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(root, err["loc"][:-1])
        problem = f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
    elif err["type"] in ("enum", "literal_error"):
        problem = f"invalid value {value!r}; allowed: {err.get('ctx', {}).get('expected', '')}"
    elif err["type"] == "missing":
        problem = "required key is missing"
    elif isinstance(value, (str, int, float, bool)) and err["loc"]:
        problem = f"invalid value {value!r}: {message}"
    else:
        problem = message
    return ConfigError(source, key, problem)


def _allowed_keys(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names accepted at ``loc`` below ``root`` (walking models and mappings)."""
    annotation: Any = root
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(str(part))
            if info is None:
                return []
            annotation = info.annotation
        elif typing.get_origin(annotation) in (dict, Mapping, typing.Mapping):
            annotation = typing.get_args(annotation)[1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    if typing.get_origin(annotation) in (dict, Mapping, typing.Mapping):
        key_type = typing.get_args(annotation)[0]
        if isinstance(key_type, type) and issubclass(key_type, Enum):
            return [m.value for m in key_type]
    return []


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation
