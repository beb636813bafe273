"""Golden sets: load a JSONL or YAML file of cases, compile every assertion, report all errors at once.

A golden set is a list of cases (``quantgate.checks.cases.parse_case`` says what a case holds). A
file is either JSONL, one case object per line, or YAML, a list of cases (or ``{cases: [...]}``).
Loading collects every problem in the file before failing: a malformed line, an unknown field, an
assertion whose value does not compile, a duplicated id, each as ``file:line: field: message``,
so one run of ``quantgate eval`` shows the whole list to fix, never a traceback. YAML positions
come from the composed node tree, so a YAML error points at the case's own line too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantgate.checks.cases import parse_case
from quantgate.checks.errors import CheckConfigError
from quantgate.checks.registry import CompiledCase, Registry
from quantgate.checks.types import Case
from quantgate.errors import QuantgateError

__all__ = ["GoldenSet", "GoldenSetError", "load_golden"]


class GoldenSetError(QuantgateError):
    """A golden set with problems; ``problems`` lists each as ``file:line: field: message``."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{path}: {len(problems)} problem(s):\n  {shown}{more}")


@dataclass
class GoldenSet:
    path: Path
    sha256: str
    cases: list[Case]
    compiled: dict[str, CompiledCase]

    def __len__(self) -> int:
        return len(self.cases)


def _raw_cases(path: Path, text: str, problems: list[str]) -> list[tuple[int, Any]]:
    """(line, raw case) pairs; syntax problems are appended to ``problems``."""
    if path.suffix in (".yaml", ".yml"):
        return _yaml_cases(path, text, problems)
    out: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name}:{number}: not valid JSON ({exc.msg} at column {exc.colno})")
        except RecursionError:
            problems.append(f"{path.name}:{number}: not valid JSON (nested too deeply)")
    return out


def _yaml_cases(path: Path, text: str, problems: list[str]) -> list[tuple[int, Any]]:
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except RecursionError:
        problems.append(f"{path.name}: not valid YAML (nested too deeply)")
        return []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problems.append(f"{path.name}{line}: not valid YAML ({getattr(exc, 'problem', exc)})")
        return []
    items = node
    if isinstance(data, dict) and "cases" in data and isinstance(node, yaml.MappingNode):
        data = data["cases"]
        items = next(v for k, v in node.value if k.value == "cases")
    if not isinstance(data, list) or not isinstance(items, yaml.SequenceNode):
        problems.append(f"{path.name}:1: expected a list of cases (or a mapping with 'cases')")
        return []
    return [(item.start_mark.line + 1, raw) for item, raw in zip(items.value, data)]


def _answerable(case: Case) -> str | None:
    """What stops a model from answering ``case`` (``quantgate check`` grades given outputs and needs neither)."""
    if not case.messages and case.prompt is None:
        return "case: needs 'messages' or 'prompt': a golden case is answered by the model under test"
    max_tokens = (case.metadata or {}).get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        return f"case.metadata.max_tokens: expected an integer >= 1, got {json.dumps(max_tokens)[:40]}"
    return None


def load_golden(path: str | Path, registry: Registry) -> GoldenSet:
    """Parse and compile every case of ``path``; raise ``GoldenSetError`` listing all problems."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise QuantgateError(f"{p}: no such golden set file") from None
    except IsADirectoryError:
        raise QuantgateError(f"{p}: is a directory, expected a .jsonl or .yaml golden set") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise QuantgateError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    problems: list[str] = []
    cases: list[Case] = []
    compiled: dict[str, CompiledCase] = {}
    seen: dict[str, str] = {}
    for line, raw in _raw_cases(p, text, problems):
        where = f"{p.name}:{line}"
        try:
            case = parse_case(raw, where, base_dir=p.parent)
            program = registry.compile_case(case)
        except CheckConfigError as exc:
            problems.append(str(exc))
            continue
        problem = _answerable(case)
        if problem is not None:
            problems.append(f"{where}: {problem}")
            continue
        if case.id in seen:
            problems.append(f"{where}: case.id: duplicate id {case.id!r} (first at {seen[case.id]})")
            continue
        seen[case.id] = where
        cases.append(case)
        compiled[case.id] = program
    if not cases and not problems:
        problems.append(f"{p.name}: no cases")
    if problems:
        raise GoldenSetError(p, problems)
    return GoldenSet(p, hashlib.sha256(data).hexdigest(), cases, compiled)
