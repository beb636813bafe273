"""The command line: happy paths in-process, and every bad-input path as one line with exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from quantgate.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert fragment in err
    assert "Traceback" not in err
    assert len(lines) <= 1 or "Usage" in err  # typer's usage errors print a short box


def test_quantize_inspect_generate(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v"
    code, stdout, _ = run(["quantize", str(tiny_model_dir), "--scheme", "int8wo", "--out", str(out),
                           "--override", "lm_head=none"], capsys)
    assert code == 0 and "wrote" in stdout and (out / "manifest.json").is_file()
    code, stdout, _ = run(["inspect", str(out), "--json"], capsys)
    info = json.loads(stdout)
    assert code == 0 and info["kind"] == "variant" and info["layers"]["lm_head"]["scheme"] == "none"
    code, stdout, _ = run(["inspect", str(out)], capsys)
    assert code == 0 and "int8wo" in stdout and "model.layers.0.mlp.down_proj" in stdout
    code, stdout, _ = run(["inspect", str(tiny_model_dir), "--json"], capsys)
    assert json.loads(stdout)["kind"] == "model"
    code, stdout, _ = run(["generate", "--model", str(out), "-p", "hello", "-p", "hi there",
                           "--max-tokens", "4", "--json"], capsys)
    answers = [json.loads(line) for line in stdout.splitlines()]
    assert code == 0 and [a["prompt"] for a in answers] == ["hello", "hi there"]
    assert all(a["usage"]["completion_tokens"] == 4 for a in answers)
    code, stdout, _ = run(["generate", "--model", str(out), "-p", "hello", "--max-tokens", "4", "--stream"], capsys)
    assert code == 0
    code, stdout, _ = run(["schemes"], capsys)
    assert "int4wo-g128" in stdout
    assert "int8 weight-only decode with fp32 activations on this CPU: " in stdout
    if "quantgate kernel" in stdout:
        assert "compiled graphs call it through its " in stdout
    assert "int4 weight-only decode on this CPU: " in stdout
    assert "fp32 linears of an eager engine on this CPU: " in stdout
    assert "bf16 linears of an eager engine on this CPU: " in stdout


def test_unknown_scheme(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["quantize", str(tiny_model_dir), "--scheme", "int9", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "error: unknown scheme 'int9'")


def test_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["quantize", str(tmp_path / "nope"), "--scheme", "int8wo", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "no such directory")
    code, _, err = run(["generate", "--model", str(tmp_path / "nope"), "-p", "x"], capsys)
    assert_one_line_error(code, err, "no such directory")
    code, _, err = run(["inspect", str(tmp_path / "nope")], capsys)
    assert_one_line_error(code, err, "no such directory")


def test_fp8_on_cpu(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["quantize", str(tiny_model_dir), "--scheme", "fp8dq", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "needs fp8 matmul support")


@pytest.mark.parametrize("command", ["generate", "eval", "compare", "quantize"])
def test_a_device_this_machine_lacks(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     command: str) -> None:
    golden = tmp_path / "g.jsonl"
    golden.write_text(json.dumps({"id": "a", "prompt": "hi", "assert": [{"type": "contains", "value": "x"}]}) + "\n")
    argv = {
        "generate": ["generate", "--model", str(tiny_model_dir), "--prompt", "hi"],
        "eval": ["eval", str(tiny_model_dir), "--golden", str(golden), "--store", str(tmp_path / "r.sqlite")],
        "compare": ["compare", str(tiny_model_dir), str(tiny_model_dir), "--golden", str(golden),
                    "--store", str(tmp_path / "r.sqlite")],
        "quantize": ["quantize", str(tiny_model_dir), "--scheme", "int8wo", "--out", str(tmp_path / "o")],
    }[command]
    code, _, err = run([*argv, "--device", "tpu"], capsys)
    assert_one_line_error(code, err, "device 'tpu': expected cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        code, _, err = run([*argv, "--device", "cuda"], capsys)
        assert_one_line_error(code, err, "device 'cuda': no CUDA GPU is available to this process")


def test_corrupt_manifest(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v"
    assert run(["quantize", str(tiny_model_dir), "--scheme", "int8wo", "--out", str(out)], capsys)[0] == 0
    (out / "manifest.json").write_text("{oops")
    for argv in (["inspect", str(out)], ["generate", "--model", str(out), "-p", "x"]):
        code, _, err = run(argv, capsys)
        assert_one_line_error(code, err, "corrupt manifest")


def test_pickle_file(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, target)
    from safetensors.torch import load_file

    torch.save(load_file(str(target / "model.safetensors")), target / "pytorch_model.bin")
    (target / "model.safetensors").unlink()
    code, _, err = run(["quantize", str(target), "--scheme", "int8wo", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "pickle checkpoints can run arbitrary code")
    code, _, _ = run(["quantize", str(target), "--scheme", "int8wo", "--out", str(tmp_path / "o"),
                      "--allow-pickle"], capsys)
    assert code == 0


def test_bad_override_and_tools_file(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["quantize", str(tiny_model_dir), "--scheme", "int8wo", "--out", str(tmp_path / "o"),
                        "--override", "lm_head"], capsys)
    assert_one_line_error(code, err, "bad override 'lm_head'")
    bad = tmp_path / "tools.json"
    bad.write_text("[{\n")
    code, _, err = run(["generate", "--model", str(tiny_model_dir), "-p", "x", "--tools", str(bad)], capsys)
    assert_one_line_error(code, err, "tools.json: line 2: not valid JSON")


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["quantize", "--frobnicate"], capsys)
    assert code == 2 and "Traceback" not in err


def test_console_script_help_runs_without_torch() -> None:
    probe = ("import sys; from quantgate.cli import app; "
             "assert 'torch' not in sys.modules, 'torch imported by --help path'")
    subprocess.run([sys.executable, "-c", probe], check=True)
    done = subprocess.run([sys.executable, "-m", "quantgate.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "quantize" in done.stdout


def _golden_file(tmp_path: Path, n: int = 30) -> Path:
    lines = [json.dumps({"id": f"j{i}", "prompt": f"json {i}", "assert": [{"type": "is-json"}],
                         "critical": i == 0}) for i in range(n)]
    f = tmp_path / "golden.jsonl"
    f.write_text("\n".join(lines))
    return f


def _json_server(broken_every: int):  # type: ignore[no-untyped-def]
    from tests.fakes.upstream import FakeUpstream, Reply, completion

    def reply(body: dict) -> Reply:  # type: ignore[type-arg]
        i = int(body["messages"][-1]["content"].split()[1])
        bad = broken_every and i % broken_every == 0
        return Reply(body=completion('{"i": %d,}' % i if bad else '{"i": %d}' % i))
    return FakeUpstream(reply)


def test_eval_then_compare_exit_codes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    golden = _golden_file(tmp_path)
    store = tmp_path / "runs.sqlite"
    with _json_server(0) as good, _json_server(2) as bad:
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        code, _, err = run(["eval", good.url, "--golden", str(golden), "--store", str(store),
                            "--export", str(blocker / "run.jsonl")], capsys)
        assert_one_line_error(code, err, "--export")  # refused before a single case is answered
        assert not good.requests
        code, out, _ = run(["eval", good.url, "--golden", str(golden), "--store", str(store),
                            "--export", str(tmp_path / "runs" / "run.jsonl")], capsys)
        assert code == 0 and "30/30 cases passed" in out
        run_id = out.split()[1].rstrip(":")
        assert len((tmp_path / "runs" / "run.jsonl").read_text().splitlines()) == 31
        code, out, _ = run(["compare", f"run:{run_id}", bad.url, "--golden", str(golden), "--store", str(store),
                            "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"),
                            "--markdown", str(tmp_path / "r.md"), "--html", str(tmp_path / "r.html")], capsys)
        assert code == 1
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["gate"]["verdict"] == "fail" and report["behaviour"]["critical_regressions"] == ["j0"]
        import xml.etree.ElementTree as ET

        ET.fromstring((tmp_path / "r.xml").read_text())
        assert "FAIL" in (tmp_path / "r.md").read_text() and "<svg" in (tmp_path / "r.html").read_text()
        code, out, _ = run(["compare", good.url, good.url, "--golden", str(golden), "--store", str(store)], capsys)
        assert code == 0  # 30 cases: the gate warns (wide interval) and warnings exit 0


def test_eval_json_summary_counts_passes_per_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [json.dumps({"id": f"j{i}", "prompt": f"json {i}", "assert": [{"type": "is-json"}],
                         "tags": ["kind:even" if i % 2 == 0 else "kind:odd", "all"]}) for i in range(12)]
    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(lines))
    with _json_server(3) as server:  # answers 0, 3, 6, 9 are broken JSON
        code, out, err = run(["eval", server.url, "--golden", str(golden), "--store", str(tmp_path / "s.sqlite"),
                              "--json", "-"], capsys)
        assert code == 0 and "8/12 cases passed" in err and "kind:odd" in err
        summary = json.loads(out)  # stdout holds the summary alone
        assert summary["passed"] == 8 and summary["cases"] == 12 and summary["pass_rate"] == pytest.approx(8 / 12)
        assert summary["by_tag"]["kind:even"] == {"passed": 4, "cases": 6, "pass_rate": pytest.approx(4 / 6)}
        assert summary["by_tag"]["kind:odd"]["passed"] == 4 and summary["by_tag"]["all"]["cases"] == 12
        code, out, _ = run(["eval", server.url, "--golden", str(golden), "--store", str(tmp_path / "s.sqlite"),
                            "--json", str(tmp_path / "out" / "summary.json")], capsys)
        assert code == 0 and "8/12 cases passed" in out
        assert json.loads((tmp_path / "out" / "summary.json").read_text())["run"] == out.split("run ")[1].split(":")[0]


def test_eval_of_a_local_model_lists_and_probes_its_near_ties(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from tests.conftest import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "flat")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():  # tiny tied embeddings: every next-token distribution is nearly flat
        model.get_input_embeddings().weight.mul_(0.01)
    model.save_pretrained(model_dir)
    lines = [json.dumps({"id": f"c{i}", "prompt": f"case {i}", "critical": i < 2,
                         "assert": [{"type": "not-contains", "value": "never"}]}) for i in range(4)]
    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(lines))
    argv = ["eval", str(model_dir), "--golden", str(golden), "--store", str(tmp_path / "s.sqlite"),
            "--max-tokens", "4", "--json", "-"]
    code, out, err = run(argv, capsys)
    ties = json.loads(out)["near_ties"]
    # Every answer holds a near tie.
    assert code == 0 and sorted(t["case_id"] for t in ties) == ["c0", "c1", "c2", "c3"]
    assert all(t["margin"] < 0.1 for t in ties) and [t["margin"] for t in ties] == sorted(t["margin"] for t in ties)
    assert all(t["critical"] == (t["case_id"] in ("c0", "c1")) and t["baseline_passed"] for t in ties)
    probed = {t["case_id"] for t in ties if "if_tipped" in t}
    assert probed == {"c0", "c1"}  # the critical ones
    assert all(t["if_tipped"]["passed"] for t in ties if "if_tipped" in t)  # nothing the model writes says "never"
    assert "near ties (own token < 0.1 nats ahead): 4 cases (2 critical: c" in err
    code, out, err = run([*argv, "--no-near-ties"], capsys)
    assert code == 0 and "near_ties" not in json.loads(out) and "near ties" not in err


def test_compare_bad_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    golden = _golden_file(tmp_path)
    bad_golden = tmp_path / "bad.jsonl"
    bad_golden.write_text('{"id": "a", "prompt": "x", "assert": [{"type": "is-jsonn"}]}\n{oops\n')
    code, _, err = run(["compare", "a", "b", "--golden", str(bad_golden), "--store", str(tmp_path / "s.sqlite")], capsys)
    assert code == 2 and "bad.jsonl:1" in err and "bad.jsonl:2: not valid JSON" in err and "Traceback" not in err
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - {metric: pass_rat, max_drop: 0.1}\n")
    code, _, err = run(["compare", "a", "b", "--golden", str(golden), "--policy", str(policy)], capsys)
    assert_one_line_error(code, err, "rules[0].metric: 'pass_rat' is not one of")
    code, _, err = run(["compare", "run:nope", "run:nope", "--golden", str(golden), "--store", str(tmp_path / "s.sqlite")], capsys)
    assert_one_line_error(code, err, "no run 'nope'")


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases.jsonl"
    case = {"id": "c", "assert": [{"type": "is-json"}]}
    cases.write_text(json.dumps({"case": case, "output": '{"a": 1}'}) + "\n" +
                     json.dumps({"case": case, "output": "{'a': 1}"}) + "\n")
    code, out, _ = run(["check", "--cases", str(cases)], capsys)
    verdicts = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [v["passed"] for v in verdicts] == [True, False]
    code, _, _ = run(["check", "--cases", str(cases), "--out", str(tmp_path / "new" / "verdicts.jsonl")], capsys)
    assert code == 1 and len((tmp_path / "new" / "verdicts.jsonl").read_text().splitlines()) == 2
    code, _, err = run(["check", "--cases", str(cases), "--out", str(cases / "x.jsonl")], capsys)
    assert_one_line_error(code, err, f"--out {cases / 'x.jsonl'}: cannot create its folder")
    code, _, err = run(["check", "--cases", str(cases), "--out", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "is a directory, expected a file path")
    cases.write_text('{"case": {"id": "c", "assert": [{"type": "nope"}]}, "output": "x"}\n')
    code, _, err = run(["check", "--cases", str(cases)], capsys)
    assert_one_line_error(code, err, "cases.jsonl:1")


def test_quantize_says_what_it_linearized_and_what_stays_float(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import build_tiny_arch_model

    gpt2 = build_tiny_arch_model(tmp_path / "gpt2", "gpt2")
    code, stdout, _ = run(["quantize", str(gpt2), "--scheme", "int8wo", "--out", str(tmp_path / "g")], capsys)
    assert code == 0 and "9 int8wo" in stdout and "8 Conv1D module(s) stored as nn.Linear" in stdout
    assert "probe logits SNR" in stdout and "warning" not in stdout
    mixtral = build_tiny_arch_model(tmp_path / "mixtral", "mixtral")
    code, stdout, _ = run(["quantize", str(mixtral), "--scheme", "int8wo", "--out", str(tmp_path / "m")], capsys)
    assert code == 0 and "25 int8wo" in stdout and "warning" not in stdout
    assert "2 MixtralExperts module(s) stored as one nn.Linear per expert" in " ".join(stdout.split())
    gpt_oss = build_tiny_arch_model(tmp_path / "gpt-oss", "gpt_oss")  # its experts' layout stays float
    code, stdout, _ = run(["quantize", str(gpt_oss), "--scheme", "int8wo", "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and "warning:" in stdout and "experts.gate_up_proj" in " ".join(stdout.split())
    code, stdout, _ = run(["inspect", str(tmp_path / "o")], capsys)
    assert code == 0 and "float outside linear layers: model.layers.*.mlp.experts.gate_up_proj" in stdout
