"""How a package declares its public names once: ``from module import Name as Name`` lines.

A package ``__init__`` lists its public names as explicit re-exports, and takes
``__all__`` from those same lines (:func:`declared`), so the names are never kept in a
second list. The top-level package writes its lines under ``if TYPE_CHECKING:`` and
imports each name on first use (:func:`lazy`), so ``import tierwise`` and the CLI do not
pull in LangChain and the provider SDKs until something needs them.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["declared", "lazy"]


def declared(init_file: str, *, type_checking: bool = False) -> dict[str, str]:
    """Name -> module of the ``from module import Name as Name`` lines of ``init_file``.

    Only the package's own top-level lines count (with ``type_checking``, those inside its
    ``if TYPE_CHECKING:`` block); ``__all__`` is the sorted keys.
    """
    tree = ast.parse(Path(init_file).read_text("utf-8"))
    body: list[ast.stmt] = tree.body
    if type_checking:
        body = [
            line
            for node in tree.body
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for line in node.body
        ]
    return {
        alias.name: node.module
        for node in body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
        if alias.asname == alias.name
    }


def lazy(
    namespace: dict[str, Any],
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` importing the declared names on use."""
    exports: Mapping[str, str] = declared(namespace["__file__"], type_checking=True)
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's own name
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807 - the module hook's own name
        return sorted({*namespace, *exports})

    return sorted(exports), __getattr__, __dir__
