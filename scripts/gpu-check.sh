#!/usr/bin/env bash
# One command for a machine with a GPU: the cuda tier of the tests, then the GPU benchmarks, and a short
# report of both (the device, its driver, PyTorch; each test's result; each figure):
#
#     scripts/gpu-check.sh OUT_DIR
#
# writes OUT_DIR/report.md, with each step's full output beside it. Where .whl/ holds wheels (made by
# scripts/gpu-wheels.sh, for a machine without network), they are installed first, into a temporary
# folder put on PYTHONPATH. Each step has a time limit, so that the whole check ends within 10 minutes,
# and a step that fails or runs out of time is reported as such while the next ones still run. Without
# CUDA the script runs as well: the cuda tier is skipped with its reason, the GPU benchmarks are not run.
# Exits with 1 if a step failed.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: scripts/gpu-check.sh OUT_DIR" >&2
    exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
python=python3
[[ -x .venv/bin/python ]] && python=.venv/bin/python
export PYTHONUNBUFFERED=1 WANDB_SILENT=true
report=$out/report.md
failed=0

if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d)
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || exit
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi

# step NAME LOG LIMIT_S COMMAND...: run COMMAND with a time limit, its output in OUT_DIR/LOG; its result in the report.
step() {
    local name=$1 log=$2 limit=$3
    shift 3
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$log" 2>&1
    local code=$?
    local result="exit $code"
    [[ $code -eq 124 ]] && result="stopped after its limit of $limit s"
    [[ $code -ne 0 ]] && failed=1
    printf '\n## %s\n`%s` (%s, %d s; output: %s)\n\n' "$name" "$*" "$result" $((SECONDS - start)) "$log" >>"$report"
}

{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M') UTC"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo 'unknown (no .git here)')"
    echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
    "$python" -c "import platform, torch
print(f'- Python {platform.python_version()}, PyTorch {torch.__version__} (CUDA {torch.version.cuda}); '
      f'CUDA available: {torch.cuda.is_available()}; {torch.get_num_threads()} CPU threads')"
} >"$report"
cuda=$("$python" -c "import torch; print(int(torch.cuda.is_available()))")

# COLUMNS: wide enough for pytest to print each skipped test's reason in full.
step "Tests: the cuda tier" tests.log 180 \
    env COLUMNS=250 "$python" -m pytest -m cuda tests/test_cuda.py -v -rfE -p no:cacheprovider
# Each test's result (or why it was skipped), the reason of each failure, and the counts.
{
    grep -E '::.* (PASSED|FAILED|ERROR|SKIPPED)' "$out/tests.log" | sed 's/ *\[ *[0-9]*%\]$//'
    grep -E '^(FAILED|ERROR) ' "$out/tests.log"
    tail -n 1 "$out/tests.log" | sed 's/=//g; s/^ *//; s/ *$//'
} | sed 's/^/    /' >>"$report"

if [[ $cuda == 1 ]]; then
    step "An epoch: fit() against the minimal loop" training.log 60 \
        "$python" benchmarks/training.py --device cuda --repeats 5
    sed 's/^/    /' "$out/training.log" >>"$report"
    # dm.download=false: without network, a download could wait for its connection to time out.
    step "The default run, start-up included (the headline figure)" first_run.log 70 \
        "$python" benchmarks/first_run.py --repeats 2 dm.download=false
    sed 's/^/    /' "$out/first_run.log" >>"$report"
    step "Against the limit: variants of an epoch" gpu.log 200 "$python" benchmarks/gpu.py
    sed 's/^/    /' "$out/gpu.log" >>"$report"
    step "An epoch in bfloat16 autocast: fit() against the minimal loop" training_bf16.log 30 \
        "$python" benchmarks/training.py --device cuda --mixed-precision --repeats 3 --models fcn
    sed 's/^/    /' "$out/training_bf16.log" >>"$report"
else
    printf '\n## GPU benchmarks\nNot run: CUDA is not available on this machine.\n' >>"$report"
fi

cat "$report"
exit $failed
