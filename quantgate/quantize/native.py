"""Building quantgate's C kernels and their C++ torch ops on the user's machine, on first use.

The kernels (``kernels/*.c``) are built with the system compiler for the CPU they run on rather than
shipped as wheels: one source serves AVX2 and AVX-512, and a C compiler is already what
``torch.compile``'s CPU backend needs. The price is a few seconds once per source, flags and torch
version, and a fallback to torch's own arithmetic where no compiler is found.

Libraries are cached under ``$XDG_CACHE_HOME/quantgate/kernels`` (default ``~/.cache``), named by the
hash of their sources and flags (and torch's version, for an op), so a change builds anew and
concurrent builds do not collide (each writes a temporary file and renames it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["build_torch_op", "cache_dir", "compile_library", "find_compiler", "implement_op", "library_path"]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "quantgate" / "kernels"


def library_path(name: str, key: bytes, cache: Path | None = None) -> Path:
    """Where the library ``name`` built from ``key`` (its sources and flags) is cached."""
    return (cache or cache_dir()) / f"{name}-{hashlib.sha256(key).hexdigest()[:16]}.so"


def find_compiler(given: str | None, variable: str, default: str, language: str) -> tuple[str | None, str]:
    """The compiler's path (``given``, else ``$variable``, else ``default``), or None and why not."""
    name = given or os.environ.get(variable, default)
    found = shutil.which(name)
    return found, "" if found else f"no {language} compiler {name!r} on PATH"


def compile_library(command: list[str], target: Path) -> str:
    """Run ``command -o <temporary file>`` and move the result to ``target``, unless it is there; why it
    failed, or ""."""
    if target.exists():
        return ""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([*command, "-o", tmp], capture_output=True, text=True, check=False, timeout=300)
        if done.returncode != 0:
            return f"{command[0]} failed: {done.stderr.strip()[:300]}"
        os.replace(tmp, target)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"building {target.name} failed: {e}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ""


def build_torch_op(name: str, source: Path, kernel: Path, flags: tuple[str, ...], compiler: str | None = None,
                   cache: Path | None = None) -> tuple[Path | None, str]:
    """Build (or find in ``cache``) a C++ op implementation ``source``, which includes the C ``kernel`` beside
    it, against the installed torch: (the library, or None and why not). Load it with
    ``torch.ops.load_library``."""
    import torch

    found, why = find_compiler(compiler, "CXX", "c++", "C++")
    if found is None:
        return None, why
    root = Path(torch.__file__).parent
    flags = (*flags, "-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
    # the library is tied to this torch's headers and ABI as much as to the sources
    key = source.read_bytes() + kernel.read_bytes() + " ".join(flags).encode() + torch.__version__.encode()
    target = library_path(name, key, cache)
    includes = ["-I", str(root / "include"), "-I", str(root / "include/torch/csrc/api/include"),
                "-I", str(kernel.parent)]
    libraries = ["-L", str(root / "lib"), "-lc10", "-ltorch_cpu"]
    why = compile_library([found, *flags, *includes, str(source), *libraries], target)
    return (None, why) if why else (target, "")


def implement_op(name: str, why_not: str, build_op: Callable[[], tuple[Path | None, str]], ops: Any,
                 fallback: Callable[..., Any]) -> str:
    """Give the op ``quantgate::name`` its CPU implementation: the C++ library ``build_op`` makes, unless
    ``why_not`` (the C kernel cannot run here) or the build or load fails, in which case ``fallback`` is
    registered on ``ops`` (a ``torch.library.Library``). ``"c++"``, or ``"python: <why>"``."""
    import torch

    if not why_not:
        path, why_not = build_op()
        if path is not None:
            try:
                torch.ops.load_library(str(path))
                return "c++"
            except (OSError, RuntimeError) as e:
                why_not = f"loading {path} failed: {e}"
    ops.impl(name, fallback, "CPU")
    return f"python: {why_not}"
