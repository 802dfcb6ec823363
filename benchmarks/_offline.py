"""Keep the benchmark process off the network: loopback only, LiteLLM offline, no telemetry.

Every peer is pointed at the simulator on 127.0.0.1 with a dummy key; these are the belts
and braces around that. :func:`guard_network` installs an audit hook that refuses any
socket connection or name lookup that is not loopback, so a mistake (a client falling
back to a real provider's URL, a library fetching a price list) fails loudly instead of
reaching a real host. :func:`offline_litellm` sets LiteLLM's offline switches *before* it
is imported and clears its callbacks.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from types import ModuleType
from typing import Any

from tierwise.testing.env import NO_PROXY, variables_to_clear

__all__ = ["REFUSED", "guard_network", "have_litellm", "offline_environment", "offline_litellm"]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})
_GUARDED = False
#: Hosts the guard refused, in order (reported at the end of a run: should stay empty).
REFUSED: list[str] = []

#: Set before LiteLLM is imported: its bundled price map and tokenizers, nothing fetched.
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_LOCAL_BLOG_POSTS": "true",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "true",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None or not isinstance(host, str):
        return True  # AF_UNIX paths, socketpair: not the network
    return host in _LOOPBACK_NAMES or host.startswith("127.") or host.startswith("/")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        address = args[1]
        host = address[0] if isinstance(address, tuple) and address else None
    elif event == "socket.getaddrinfo":
        host = args[0]
    else:
        return
    if not _loopback(host):
        REFUSED.append(str(host))
        raise PermissionError(
            f"benchmarks: refused a connection to {host!r}: only the simulator on 127.0.0.1 "
            "may be reached"
        )


def guard_network() -> None:
    """Refuse every non-loopback connection and name lookup in this process (for good)."""
    global _GUARDED
    if not _GUARDED:
        sys.addaudithook(_audit)
        _GUARDED = True


def offline_environment() -> None:
    """Clear provider keys, endpoints, proxies and tracing; set LiteLLM's offline switches."""
    for name in variables_to_clear(os.environ):
        del os.environ[name]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = NO_PROXY
    os.environ.update(LITELLM_ENV)


def have_litellm() -> bool:
    """The ``bench`` extra's LiteLLM is installed."""
    return importlib.util.find_spec("litellm") is not None


def offline_litellm() -> ModuleType:
    """``litellm``, imported offline, with no callbacks, telemetry or debug banners."""
    os.environ.update(LITELLM_ENV)
    import litellm

    litellm.telemetry = False  # opt-in in this version already; off whatever the default
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.callbacks = []
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # abandoned capped calls complain
    return litellm
