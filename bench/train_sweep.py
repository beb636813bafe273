"""Train several reference-model recipes side by side and grade each on the golden set.

    python bench/train_sweep.py --out /tmp/sweep --device cuda --parallel 6 \\
        --run base="" --run steps4x="--steps 10400" --run l7="--num-layers 7 --steps 10400"

Each ``--run NAME=ARGS`` is one ``python -m quantgate.reference.train --out OUT/NAME ARGS`` (ARGS are
that CLI's overrides; ``--device`` is added), then ``quantgate eval OUT/NAME --golden ...`` on the
CPU (fp32, the way the committed model is gated). Up to ``--parallel`` runs train at once; a run
that passes ``--train-timeout`` is killed and reported. ``OUT/summary.json`` and ``OUT/summary.md``
are rewritten after every run, so what finished survives a kill of the whole sweep.

Why: a recipe change moves the golden result by less than seed-to-seed noise (23 cases between
seeds 0 and 1, docs/reference-model.md), and each CPU training run costs 30-60 minutes, so the
questions "is this change real?" and "how much would more compute buy?" need many runs at once.
A GPU gives them in minutes; its weights are not the CPU run's, so a sweep decides what to try on
the CPU, not what to commit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "quantgate" / "reference" / "golden" / "golden.jsonl"
HELDOUT = re.compile(r"step (\d+) held-out assistant loss ([\d.]+) token accuracy ([\d.]+)%")
TRAIN_DONE = re.compile(r"saved .* after (\d+)s")


@dataclass
class RunResult:
    name: str
    args: str
    status: str = "pending"  # pending | trained | graded | train-failed | train-timeout | eval-failed
    train_s: float | None = None
    eval_s: float | None = None
    heldout_accuracy: dict[int, float] = field(default_factory=dict)  # step -> held-out token accuracy %
    golden: dict[str, int] = field(default_factory=dict)  # kind -> cases passed (first sample)
    golden_total: int | None = None
    golden_cases: int | None = None


def parse_run(text: str) -> tuple[str, str]:
    name, sep, args = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise argparse.ArgumentTypeError(f"--run {text!r}: expected NAME=ARGS, NAME of letters, digits, '_', '.', '-'")
    return name, args


def golden_by_kind(store: Path) -> tuple[dict[str, int], int]:
    """Cases passed per behaviour (the id's prefix) on each case's first sample, and the number of cases."""
    with sqlite3.connect(store) as db:
        rows = db.execute("select substr(case_id, 1, instr(case_id, '-') - 1), sum(passed), count(*) "
                          "from cases where sample = 0 group by 1").fetchall()
    return {kind: int(passed) for kind, passed, _ in rows}, sum(int(n) for *_, n in rows)


class Sweep:
    def __init__(self, out: Path, device: str, golden: Path, train_timeout: float, eval_threads: int) -> None:
        self.out, self.device, self.golden = out, device, golden
        self.train_timeout, self.eval_threads = train_timeout, eval_threads
        self.results: dict[str, RunResult] = {}
        self.lock = threading.Lock()

    def run(self, name: str, args: str) -> None:
        result = self.results[name]
        log = self.out / f"{name}.log"
        cmd = [sys.executable, "-m", "quantgate.reference.train", "--out", str(self.out / name),
               "--device", self.device, *shlex.split(args)]
        t0 = time.time()
        with log.open("w") as fh:
            try:
                rc = subprocess.run(cmd, check=False, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                    timeout=self.train_timeout).returncode
            except subprocess.TimeoutExpired:
                rc = None
        text = log.read_text()
        result.heldout_accuracy = {int(m[1]): float(m[3]) for m in HELDOUT.finditer(text)}
        done = TRAIN_DONE.search(text)
        result.train_s = float(done[1]) if done else round(time.time() - t0, 1)
        result.status = "train-timeout" if rc is None else "trained" if rc == 0 else "train-failed"
        self.write()
        if rc != 0:
            return
        store = self.out / f"{name}.sqlite"
        env = {**os.environ, "OMP_NUM_THREADS": str(self.eval_threads)}
        t1 = time.time()
        with (self.out / f"{name}.eval.log").open("w") as fh:
            rc = subprocess.run([sys.executable, "-m", "quantgate", "eval", str(self.out / name), "--golden",
                                 str(self.golden), "--store", str(store)], check=False, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=env).returncode
        result.eval_s = round(time.time() - t1, 1)
        if rc != 0:
            result.status = "eval-failed"
        else:
            result.golden, result.golden_cases = golden_by_kind(store)
            result.golden_total = sum(result.golden.values())
            result.status = "graded"
        self.write()

    def write(self) -> None:
        with self.lock:
            rows = [asdict(r) for r in self.results.values()]
            (self.out / "summary.json").write_text(json.dumps({"device": self.device, "runs": rows}, indent=2) + "\n")
            (self.out / "summary.md").write_text(self.markdown())

    def markdown(self) -> str:
        kinds = sorted({k for r in self.results.values() for k in r.golden})
        steps = sorted({s for r in self.results.values() for s in r.heldout_accuracy})[-3:]
        head = ["run", "args", "status", "train s", "golden", *kinds, *(f"acc@{s}" for s in steps)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.results.values():
            cells = [r.name, f"`{r.args}`" if r.args else "(defaults)", r.status,
                     f"{r.train_s:.0f}" if r.train_s is not None else "",
                     f"{r.golden_total}/{r.golden_cases}" if r.golden_total is not None else "",
                     *(str(r.golden.get(k, "")) for k in kinds),
                     *(f"{r.heldout_accuracy[s]:.1f}" if s in r.heldout_accuracy else "" for s in steps)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--run", type=parse_run, action="append", required=True, metavar="NAME=ARGS")
    p.add_argument("--device", default="cpu", help="where the trainings run (cpu, cuda, cuda:N); grading is on the CPU")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--train-timeout", type=float, default=3600.0, help="seconds one training may take")
    p.add_argument("--eval-threads", type=int, default=2, help="torch threads per golden evaluation")
    p.add_argument("--golden", type=Path, default=GOLDEN)
    a = p.parse_args(argv)
    names = [n for n, _ in a.run]
    if len(set(names)) != len(names):
        p.error(f"--run names must be unique, got {names}")
    a.out.mkdir(parents=True, exist_ok=True)
    sweep = Sweep(a.out, a.device, a.golden, a.train_timeout, a.eval_threads)
    sweep.results = {n: RunResult(n, args) for n, args in a.run}
    sweep.write()
    with ThreadPoolExecutor(max_workers=a.parallel) as pool:
        for future in [pool.submit(sweep.run, n, args) for n, args in a.run]:
            future.result()
    print(sweep.markdown(), end="")
    return 0 if all(r.status == "graded" for r in sweep.results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
