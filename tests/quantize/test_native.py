"""Building the C kernels and their torch ops (quantgate.quantize.native): the failure paths say why."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from quantgate.quantize.native import compile_library, find_compiler, implement_op, library_path


def test_library_paths_are_named_by_their_key(tmp_path: Path) -> None:
    a, b = library_path("k", b"source one", tmp_path), library_path("k", b"source two", tmp_path)
    assert a != b and a.parent == tmp_path and a.name.startswith("k-") and a.suffix == ".so"
    assert library_path("k", b"source one", tmp_path) == a


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_a_failed_build_says_why_and_leaves_nothing_behind(tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int f(void) { return missing_name; }\n")
    target = tmp_path / "out" / "broken.so"
    why = compile_library(["cc", "-shared", "-fPIC", str(source)], target)
    assert why.startswith("cc failed: ") and "missing_name" in why
    assert not target.exists() and not list(target.parent.iterdir())  # no temporary file left


def test_a_missing_compiler_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "no-such-cc-quantgate")
    assert find_compiler(None, "CC", "cc", "C") == (None, "no C compiler 'no-such-cc-quantgate' on PATH")


class _Ops:
    """Stands in for a torch.library.Library: records what is registered."""

    def __init__(self) -> None:
        self.registered: list[tuple[str, Any, str]] = []

    def impl(self, name: str, fn: Any, key: str) -> None:
        self.registered.append((name, fn, key))


def test_without_the_kernel_or_its_cpp_build_the_python_implementation_is_registered(tmp_path: Path) -> None:
    def fallback() -> None:
        return None

    def never() -> tuple[Path | None, str]:
        raise AssertionError("no C++ build is tried when the C kernel cannot run")

    ops = _Ops()
    assert implement_op("op", "no C compiler 'cc' on PATH", never, ops, fallback) == "python: no C compiler 'cc' on PATH"
    assert ops.registered == [("op", fallback, "CPU")]
    ops = _Ops()
    assert implement_op("op", "", lambda: (None, "c++ failed: boom"), ops, fallback) == "python: c++ failed: boom"
    assert ops.registered == [("op", fallback, "CPU")]
    missing = tmp_path / "missing.so"
    ops = _Ops()
    result = implement_op("op", "", lambda: (missing, ""), ops, fallback)
    assert result.startswith(f"python: loading {missing} failed") and ops.registered == [("op", fallback, "CPU")]
