"""The ``quantgate check`` loop: JSONL of ``{"case", "output"}`` in, one JSON verdict line out.

Streaming, line by line: a file of any size runs in constant memory and its verdicts appear as
they are computed. A malformed line (not UTF-8, not JSON, a bad case or assertion) is skipped and
noted; every good line is still graded, and at the end the run raises a ``QuantgateError`` naming
each bad line's file, line and field (exit 2 on the CLI; the first ``MAX_LISTED`` are listed, the
rest counted), so one pass over a large file finds every problem in it. A single bad line raises
its own error (an ``UnknownCheckError`` stays one). The trade-off: a file with bad lines still
produces verdicts for its good ones, which a caller must not mistake for a complete run; the exit
code (2, never 0 or 1) and the missing summary say it was not.

Output line: ``{"line", "id", "sample"?, "passed", "score", "critical", "verdicts": [{"type",
"passed", "score", "code", "reason", "weight", "errored"?, "metric"?}]}``.

No torch on this path: the learned refusal detector is numpy, and is loaded only if an
``is-refusal`` assertion actually runs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from quantgate.checks.builtin import default_registry
from quantgate.checks.cases import iter_check_lines, parse_check_line
from quantgate.checks.errors import CasesFileError, CheckConfigError
from quantgate.checks.registry import Registry
from quantgate.errors import QuantgateError

__all__ = ["MAX_LISTED", "CheckSummary", "run_check"]

# Bad lines named in the final error; beyond this they are only counted (a screenful is enough to act on).
MAX_LISTED = 50


@dataclass(frozen=True)
class CheckSummary:
    """Counts over a finished run. ``exit_code``: 0 when every line passed, 1 otherwise."""

    lines: int
    passed: int
    failed: int
    critical_failed: int
    errored_verdicts: int

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 else 1

    def line(self) -> str:
        crit = f", {self.critical_failed} critical" if self.critical_failed else ""
        err = f"; {self.errored_verdicts} verdict(s) could not be evaluated" if self.errored_verdicts else ""
        return f"{self.lines} output(s): {self.passed} passed, {self.failed} failed{crit}{err}"


def run_check(cases: Path | str, out: TextIO, *, registry: Registry | None = None,
              allow_python: bool = False) -> CheckSummary:
    """Grade every line of ``cases`` (a path, or ``-`` for stdin) and write verdict lines to ``out``.

    ``registry`` defaults to ``default_registry(allow_python=..., base_dir=<the file's folder>)``.
    Raises ``CasesFileError``/``CheckConfigError`` (both ``QuantgateError``) on bad input.
    """
    path = Path(cases)
    from_stdin = str(cases) == "-"
    base_dir = Path.cwd() if from_stdin else path.resolve().parent
    reg = registry if registry is not None else default_registry(allow_python=allow_python, base_dir=base_dir)
    if from_stdin:
        return _run(sys.stdin.buffer, "<stdin>", base_dir, reg, out)
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        raise CasesFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CasesFileError(f"{path}: is a directory, expected a .jsonl file") from None
    except PermissionError:
        raise CasesFileError(f"{path}: permission denied") from None
    with stream:
        return _run(stream, str(path), base_dir, reg, out)


def _run(stream: object, name: str, base_dir: Path, reg: Registry, out: TextIO) -> CheckSummary:
    lines = passed = critical_failed = errored = 0
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    write = out.write
    bad: list[QuantgateError] = []
    n_bad = 0
    problem: QuantgateError | None
    for n, where, obj, problem in iter_check_lines(stream, name):  # type: ignore[arg-type]
        if problem is None:
            try:
                case, output, sample = parse_check_line(obj, where, base_dir)
                compiled = reg.compile_case(case)
            except (CasesFileError, CheckConfigError) as e:
                problem = e
        if problem is not None:
            n_bad += 1
            if len(bad) < MAX_LISTED:
                bad.append(problem)
            continue
        result = compiled.run(output)
        record: dict[str, object] = {"line": n, "id": result.case_id}
        if sample is not None:
            record["sample"] = sample
        record.update(passed=result.passed, score=result.score, critical=result.critical,
                      verdicts=[v.to_dict() for v in result.verdicts])
        write(dumps(record))
        write("\n")
        lines += 1
        if result.passed:
            passed += 1
        elif result.critical:
            critical_failed += 1
        errored += sum(v.errored for v in result.verdicts)
    if n_bad == 1:
        raise bad[0]
    if n_bad:
        more = f"\n  ... and {n_bad - len(bad)} more" if n_bad > len(bad) else ""
        shown = "\n  ".join(str(e) for e in bad)
        raise CasesFileError(f"{name}: {n_bad} bad line(s), the other {lines} graded:\n  {shown}{more}")
    return CheckSummary(lines, passed, lines - passed, critical_failed, errored)
