"""Which llama.cpp build is installed, and the one command that installs a portable one.

pip builds llama-cpp-python from source. Left to its defaults, llama.cpp compiles for the
building CPU (``-march=native``, and on CPUs with AMX the AMX kernels), and that library
dies with SIGILL wherever the OS or a VM does not enable every one of those instructions
(CI runners and containers on AMX hosts do exactly that). The README's commands therefore
build with `PORTABLE_CMAKE_ARGS`: no native tuning, AVX2/FMA/F16C kernels, which every
x86-64 CPU of the last decade runs.

pip caches the wheel it built keyed by the source package, not by ``CMAKE_ARGS``, so a
crashing wheel built earlier would be reused by a later install. `REINSTALL_COMMAND`
rebuilds without the cache; the test suite (`amx_instruction_count`) and ``tierwise
doctor`` (a real one-token generation, out of process) say when it is needed.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

__all__ = [
    "PORTABLE_CMAKE_ARGS",
    "REINSTALL_COMMAND",
    "amx_instruction_count",
    "cpu_library",
]

PORTABLE_CMAKE_ARGS: Final = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
)
"""llama.cpp build flags of the README's install commands: portable to any AVX2 CPU."""

REINSTALL_COMMAND: Final = (
    f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall --no-deps '
    '--no-cache-dir "llama-cpp-python>=0.3.36,<0.4"'
)
"""Rebuild llama-cpp-python portably, bypassing a cached wheel built with other flags."""

_AMX: Final = re.compile(r"\b(tileloadd\w*|tdpb\w+|ldtilecfg|sttilecfg|tilestored|tilezero)\b")


def cpu_library() -> Path | None:
    """Return the installed ``llama_cpp/lib/libggml-cpu.so``, or ``None`` when absent.

    Located with `importlib.util.find_spec`, which does not load the library (loading a
    bad build is harmless; running it is not, but there is no reason to pay for either).
    """
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        lib = Path(location) / "lib"
        found = sorted(lib.glob("libggml-cpu.so*")) + sorted(lib.glob("libggml-cpu*.dylib"))
        if found:
            return found[0]
    return None


def amx_instruction_count(library: Path) -> int | None:
    """Count the AMX instructions in ``library``'s code, or ``None`` without ``objdump``.

    A portable build has none; a native build made on an AMX CPU has hundreds, and
    traps with SIGILL on any machine that does not enable AMX for the process.
    """
    objdump = shutil.which("objdump")
    if objdump is None:
        return None
    listing = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in listing.splitlines() if _AMX.search(line))
