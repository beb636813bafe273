"""Gateway overhead: added latency over calling the upstream directly, max requests/s, CPU ms per request.

    python bench/gateway.py                       # quantgate only
    python bench/gateway.py --litellm             # also LiteLLM's proxy (installed into bench/.litellm-venv)

One run, one machine: a fast stub upstream (bench/fake_upstream.py) in its own process, the gateway
(`quantgate serve`, the whole pipeline on: auth, rate limits, budget reservation, token counting,
admission, routing with a canary, validation of a JSON answer, metering, metrics, event log) in
another, and an aiohttp load generator in this one. Latency is measured at concurrency 16 against
the upstream directly and through the gateway, in alternating rounds so drift on a noisy machine
hits both; "added" is the difference of the percentiles. Throughput is the best requests/s at
concurrency 64. CPU per request is the gateway process's user+system time over the requests it
served (from /proc), the fair figure when generator, gateway and upstream share two cores.
Results go to bench/results/gateway.json and print as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, free_port, machine_info, start_process, wait_http  # noqa: E402
from quantgate.loadtest import run_sweep  # noqa: E402

BODY = {"messages": [{"role": "user", "content": "What is 6 times 7? Answer in one short sentence."}],
        "max_tokens": 16, "user": "bench-user"}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantgate_config(upstream: str, port: int, events: Path) -> str:
    return f"""
server: {{host: 127.0.0.1, port: {port}}}
variants:
  - {{name: int4, engine: upstream, url: "{upstream}/v1", model: bench, max_concurrency: 256,
     price: {{prompt_per_mtok: 0.05, completion_per_mtok: 0.1}}}}
  - {{name: bf16, engine: upstream, url: "{upstream}/v1", model: bench, max_concurrency: 256,
     price: {{prompt_per_mtok: 0.2, completion_per_mtok: 0.4}}}}
ladder: [int4, bf16]
tenants:
  - {{name: bench, keys: [sk-bench], rate: {{requests_per_min: 100000000, tokens_per_min: 1000000000}},
     budget: {{amount: 1000000, period: day}}}}
routes:
  - name: default
    model: assistant
    rules: [{{header: x-quantgate-risk, equals: high, floor: bf16}}]
    canary: {{variant: bf16, weight: 0.1, sticky: user}}
    validate: {{assert: [{{type: not-contains, value: "As an AI"}}]}}
admission: {{queue_size: 4096}}
events: {{path: "{events}"}}
"""


def _measure(url: str, model: str, key: str | None, requests: int) -> dict[str, Any]:
    """One latency round at concurrency 16; rounds alternate between targets in ``main``."""
    [r] = run_sweep(url, model, [BODY], [16], requests, api_key=key)
    if r.errors or r.shed:
        raise RuntimeError(f"{url}: {r.errors} errors, {r.shed} shed: {r.error_sample}")
    return {"p50_ms": r.latency_p50_ms, "p99_ms": r.latency_p99_ms}


def _throughput(url: str, model: str, key: str | None, pid: int, requests: int) -> dict[str, Any]:
    cpu0 = _cpu_seconds(pid)
    [r] = run_sweep(url, model, [BODY], [64], requests, api_key=key)
    cpu = _cpu_seconds(pid) - cpu0
    return {"requests_per_s": r.requests_per_s, "ok": r.ok, "errors": r.errors + r.shed,
            "cpu_ms_per_request": 1000 * cpu / max(1, r.ok), "p50_ms": r.latency_p50_ms, "p99_ms": r.latency_p99_ms}


def _litellm(upstream: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    venv = REPO / "bench" / ".litellm-venv"
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        print("installing litellm[proxy] into bench/.litellm-venv (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], check=True)
    cfg = workdir / "litellm.yaml"
    cfg.write_text(f"model_list:\n  - model_name: assistant\n    litellm_params:\n      model: openai/bench\n"
                   f"      api_base: {upstream}/v1\n      api_key: none\n")
    port = free_port()
    # No master key, as a new user starts it locally; recent versions refuse that without this flag.
    env = {**os.environ, "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}
    proc = start_process([str(exe), "--config", str(cfg), "--port", str(port), "--num_workers", "1"], env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=120)
    except RuntimeError:
        proc.kill()
        print("litellm did not start:", (proc.stderr.read() if proc.stderr else b"")[-400:].decode(errors="replace"))
        return None
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="alternating latency rounds")
    p.add_argument("--requests", type=int, default=2000, help="requests per latency round")
    p.add_argument("--throughput-requests", type=int, default=10000)
    p.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy")
    a = p.parse_args()

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        up_port = free_port()
        procs.append(start_process([sys.executable, str(REPO / "bench" / "fake_upstream.py"), "--port", str(up_port)]))
        upstream = f"http://127.0.0.1:{up_port}"
        wait_http(upstream + "/v1/models")
        gw_port = free_port()
        (work / "gw.yaml").write_text(_quantgate_config(upstream, gw_port, work / "events.sqlite"))
        gw = start_process([sys.executable, "-m", "quantgate.cli", "serve", "--config", str(work / "gw.yaml")])
        procs.append(gw)
        gateway = f"http://127.0.0.1:{gw_port}"
        try:
            wait_http(gateway + "/healthz")
            run_sweep(gateway, "assistant", [BODY], [16], 500, api_key="sk-bench")  # warm-up
            direct_rounds, gw_rounds = [], []
            for _ in range(a.rounds):
                direct_rounds.append(_measure(upstream, "bench", None, a.requests))
                gw_rounds.append(_measure(gateway, "assistant", "sk-bench", a.requests))
            med = lambda rows, k: sorted(r[k] for r in rows)[len(rows) // 2]  # noqa: E731
            result: dict[str, Any] = {
                "machine": machine_info(), "date": time.strftime("%Y-%m-%d"),
                "command": "python bench/gateway.py" + (" --litellm" if a.litellm else ""),
                "direct": {"p50_ms": med(direct_rounds, "p50_ms"), "p99_ms": med(direct_rounds, "p99_ms")},
                "quantgate": {"p50_ms": med(gw_rounds, "p50_ms"), "p99_ms": med(gw_rounds, "p99_ms"),
                              **{f"max_{k}": v for k, v in _throughput(gateway, "assistant", "sk-bench", gw.pid,
                                                                      a.throughput_requests).items()}},
            }
            q = result["quantgate"]
            q["added_p50_ms"] = q["p50_ms"] - result["direct"]["p50_ms"]
            q["added_p99_ms"] = q["p99_ms"] - result["direct"]["p99_ms"]
            if a.litellm:
                started = _litellm(upstream, work)
                if started is not None:
                    lproc, lurl = started
                    procs.append(lproc)
                    run_sweep(lurl, "assistant", [BODY], [16], 200)
                    lrounds = [_measure(lurl, "assistant", None, min(a.requests, 1000)) for _ in range(a.rounds)]
                    lit = {"p50_ms": med(lrounds, "p50_ms"), "p99_ms": med(lrounds, "p99_ms")}
                    lit |= {f"max_{k}": v for k, v in _throughput(lurl, "assistant", None, lproc.pid, 3000).items()}
                    lit["added_p50_ms"] = lit["p50_ms"] - result["direct"]["p50_ms"]
                    lit["added_p99_ms"] = lit["p99_ms"] - result["direct"]["p99_ms"]
                    result["litellm"] = lit
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [("direct", result["direct"])] + [(k, result[k]) for k in ("quantgate", "litellm") if k in result]
    print(f"{'target':<10} {'p50 ms':>8} {'p99 ms':>8} {'+p50':>7} {'+p99':>7} {'max req/s':>10} {'cpu ms/req':>10}")
    for name, r in rows:
        print(f"{name:<10} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r.get('added_p50_ms', 0):>7.2f} "
              f"{r.get('added_p99_ms', 0):>7.2f} {r.get('max_requests_per_s', float('nan')):>10.0f} "
              f"{r.get('max_cpu_ms_per_request', float('nan')):>10.2f}")


if __name__ == "__main__":
    main()
