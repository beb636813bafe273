#!/usr/bin/env bash
# Everything quantgate checks and measures only on a CUDA GPU, in one run, each stage bounded in
# time so that a slow stage cannot starve the next: the GPU tests (tests/gpu), the offline gate on
# fp8 and int4 variants of the reference model against bf16, and decode speed per scheme
# (bench/decode.py --device cuda, eager at batch 1 and 8, then compiled at batch 1 for a few).
# Results land in OUTDIR: gpu.txt (machine), gpu-tests.xml (JUnit with measured properties),
# decode-*.json, compare-*.json, and one log per stage.
#
# Usage: bench/gpu.sh OUTDIR     (PYTHON=... to pick the interpreter; default python3; the stages'
# limits in seconds: GPU_TESTS_S, COMPARE_S, DECODE_EAGER_S, DECODE_COMPILE_S; the schemes timed:
# DECODE_SCHEMES, COMPILE_SCHEMES; GPU_TAR=FILE packs OUTDIR into FILE after every stage, so what
# was measured survives a kill)
set -u
out=${1:?usage: bench/gpu.sh OUTDIR}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
stage() {  # stage NAME SECONDS CMD...: run CMD under a time limit, log to OUTDIR/NAME.log, report
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  echo "stage $name: exit $rc in $((SECONDS - t0)) s (limit $limit)" | tee -a "$out/stages.txt"
  tail -n 4 "$out/$name.log"
  if [ -n "${GPU_TAR:-}" ]; then tar czf "$GPU_TAR" -C "$out" .; fi
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$py" -c "import torch, torchao, transformers as t; print('torch', torch.__version__, 'torchao',
torchao.__version__, 'transformers', t.__version__, torch.cuda.get_device_name(0),
'capability', torch.cuda.get_device_capability(0))"; } >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

stage gpu-tests "${GPU_TESTS_S:-200}" "$py" -m pytest tests/gpu -q -p no:cacheprovider -rA \
  --junitxml="$out/gpu-tests.xml"
ref=quantgate/reference/weights
golden=quantgate/reference/golden/golden.jsonl
v=$(mktemp -d)
for s in bf16 fp8dq int4wo-g64; do
  timeout 60 "$py" -m quantgate quantize "$ref" --scheme "$s" --device cuda --out "$v/$s" >>"$out/quantize.log" 2>&1
done
tail -n 3 "$out/quantize.log"
stage compare-fp8dq "${COMPARE_S:-120}" "$py" -m quantgate compare "$v/bf16" "$v/fp8dq" --golden "$golden" \
  --device cuda --store "$v/runs.sqlite" --json "$out/compare-fp8dq.json"
stage compare-int4 "${COMPARE_S:-120}" "$py" -m quantgate compare "$v/bf16" "$v/int4wo-g64" --golden "$golden" \
  --device cuda --store "$v/runs.sqlite" --json "$out/compare-int4wo-g64.json"
stage decode-eager "${DECODE_EAGER_S:-150}" "$py" bench/decode.py --device cuda --model random \
  --schemes "${DECODE_SCHEMES:-bf16,int8wo,int4wo-g128,int8dq,fp8wo,fp8dq}" --modes eager --batch-sizes 1,8 \
  --repeats 3 --json "$out/decode-eager.json" --markdown
stage decode-compile "${DECODE_COMPILE_S:-150}" "$py" bench/decode.py --device cuda --model random \
  --schemes "${COMPILE_SCHEMES:-bf16,int4wo-g128,fp8dq}" --modes compile --batch-sizes 1 --repeats 3 \
  --json "$out/decode-compile.json" --markdown
cat "$out/stages.txt"
