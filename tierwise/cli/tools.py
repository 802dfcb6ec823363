"""The tools ``tierwise run --tools`` names: ``module.path:ATTR`` or ``path/to/file.py:ATTR``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from tierwise.cli.common import RunFailed

__all__ = ["load_tools"]


def load_tools(spec: str) -> list[Any]:
    """The tools named by ``module.path:attr`` or ``path/to/file.py:attr``.

    ``attr`` (dotted for a nested attribute) must be a list or tuple of LangChain tools,
    functions or OpenAI tool dicts. Raises :class:`RunFailed` with a readable reason.
    """
    where, sep, attr = spec.rpartition(":")
    hint = "pass --tools module.path:ATTR or path/to/file.py:ATTR naming a list of tools"
    if not sep or not where or not attr:
        raise RunFailed(f"--tools {spec!r} names no attribute", hint)
    module = _import_tools(where, hint)
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise RunFailed(f"{where} has no attribute {attr!r}", hint)
        value = getattr(value, part)
    if not isinstance(value, list | tuple):
        raise RunFailed(f"{spec} is a {type(value).__name__}, not a list of tools", hint)
    if not value:
        raise RunFailed(f"{spec} is an empty list", hint)
    from langchain_core.tools import BaseTool

    for item in value:
        openai_dict = isinstance(item, Mapping) and (
            "function" in item or {"name", "parameters"} <= set(item)
        )
        function = callable(item) and not isinstance(item, type)
        if not (openai_dict or function or isinstance(item, BaseTool)):
            raise RunFailed(
                f"{spec} holds {item!r}, which is not a tool",
                "items must be LangChain tools, functions or OpenAI tool dicts",
            )
    return list(value)


def _import_tools(where: str, hint: str) -> ModuleType:
    path = Path(where).expanduser()
    if where.endswith(".py") or os.sep in where or "/" in where:
        if not path.is_file():
            raise RunFailed(f"no tools file {where}", hint)
        name = "tierwise_user_tools_" + uuid.uuid5(uuid.NAMESPACE_URL, str(path.resolve())).hex
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise RunFailed(f"cannot load {where} as Python", hint)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure of user code is reported
            sys.modules.pop(name, None)
            raise RunFailed(f"cannot import {where}: {type(exc).__name__}: {exc}", hint) from None
        return module
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # the console script does not put the working directory on the path
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(where)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported
        raise RunFailed(f"cannot import {where}: {type(exc).__name__}: {exc}", hint) from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
