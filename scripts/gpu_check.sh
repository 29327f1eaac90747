#!/usr/bin/env bash
# ktgfast on a CUDA GPU, proven in one command (docs/distributed.md, "GPU check").
#
#   scripts/gpu_check.sh [REPORT_DIR]     REPORT_DIR: $1, else $OUT, else ./gpu_check
#
# On a fresh machine with an NVIDIA GPU and a CUDA build of torch, from the
# repository root or anywhere (it changes to the repository):
#   build        pip install --no-build-isolation -e . for this machine's GPUs:
#                TORCH_CUDA_ARCH_LIST from their compute capabilities (unless set),
#                CUDA_HOME from the environment, else the `cuda` folder beside
#                nvcc's prefix that holds lib64/libcudart.so (torch's own guess,
#                nvcc's prefix, lacks libcudart on some machines), else nvcc's prefix
#   extension    ktgfast._C was built with its CUDA kernels
#   cuda-tests   every CUDA test of tests/ (pytest -k cuda: the CUDA test classes
#                and functions; they skip without a GPU, here they must run)
#   train-1gpu   ktgfast train --device cuda, one epoch of DML (fused op, loader, step)
#   bench        ktgfast bench --device cuda: the op, loader and step suites
#   ddp-2gpu     with >= 2 GPUs: torchrun --nproc-per-node 2 ... --sync-bn (NCCL, DDP)
#   spread-2gpu  with >= 2 GPUs: torchrun --nproc-per-node 2 ... --placement spread
# and writes REPORT_DIR/report.md and REPORT_DIR/report.json (one log per step in
# REPORT_DIR/logs/).  Exit status: 0 when every step that ran passed, 1 when one
# failed, 2 (one line on stderr, nothing written) when no CUDA GPU is visible.
#
# Environment (all optional): PYTHON (default python3), GPU_CHECK_PIP_FLAGS
# (extra pip flags, e.g. --no-deps on a machine without a package index),
# GPU_CHECK_SKIP_BUILD=1 (keep the installed build), GPU_CHECK_FULL_BENCH=1
# (full benchmark rounds instead of --quick), GPU_CHECK_STEP_TIMEOUT (seconds
# per step, default 1800), TORCH_CUDA_ARCH_LIST, CUDA_HOME, MAX_JOBS.
set -uo pipefail

PY=${PYTHON:-python3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1

# ---------------------------------------------------------------- a GPU at all?
NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.version.cuda else -1)' 2>/dev/null)
if [[ -z "$NGPU" ]]; then
    echo "gpu_check: FAILED: '$PY' cannot import torch; install a CUDA build of PyTorch first" >&2
    exit 2
elif [[ "$NGPU" == "-1" ]]; then
    echo "gpu_check: FAILED: torch $("$PY" -c 'import torch; print(torch.__version__)') is a CPU-only build; install a CUDA build of PyTorch" >&2
    exit 2
elif [[ "$NGPU" -lt 1 ]]; then
    echo "gpu_check: FAILED: no CUDA GPU visible (torch.cuda.device_count() = 0; CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}); run it on a machine with an NVIDIA GPU" >&2
    exit 2
fi

REPORT=${1:-${OUT:-./gpu_check}}
mkdir -p "$REPORT/logs" "$REPORT/runs" || exit 1
REPORT=$(cd "$REPORT" && pwd)
CHECKS="$REPORT/checks.tsv"
: > "$CHECKS"
TIMEOUT=${GPU_CHECK_STEP_TIMEOUT:-1800}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

# record NAME STATUS SECONDS NOTE
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$CHECKS"; }

# step NAME NOTE CMD...: run CMD with a timeout, log it, record ok / failed (rc)
step() {
    local name=$1 note=$2
    shift 2
    local log="$REPORT/logs/$name.log" t0=$SECONDS rc
    echo "gpu_check: $name: $*"
    { echo "\$ $*"; echo; } > "$log"
    timeout "$TIMEOUT" "$@" >> "$log" 2>&1
    rc=$?
    if [[ $rc -eq 0 ]]; then
        record "$name" ok $((SECONDS - t0)) "$note"
    else
        [[ $rc -eq 124 ]] && note="timed out after ${TIMEOUT}s; $note"
        record "$name" "failed (exit $rc)" $((SECONDS - t0)) "$note"
        echo "gpu_check: $name FAILED (exit $rc); log: $log" >&2
    fi
    return $rc
}

skip() { record "$1" skipped 0 "$2"; echo "gpu_check: $1 skipped: $2"; }

# ------------------------------------------------------------ CUDA toolkit, archs
if [[ -z "${CUDA_HOME:-}" ]]; then
    NVCC=$(command -v nvcc || true)
    if [[ -n "$NVCC" ]]; then
        PREFIX=$(dirname "$(dirname "$NVCC")")
        for root in "$PREFIX/cuda" "$(dirname "$(dirname "$(readlink -f "$NVCC")")")" "$PREFIX"; do
            if [[ -e "$root/lib64/libcudart.so" ]]; then export CUDA_HOME=$root; break; fi
        done
    fi
fi
if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    TORCH_CUDA_ARCH_LIST=$("$PY" -c '
import torch
caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
print(";".join(f"{a}.{b}" for a, b in caps))')
    export TORCH_CUDA_ARCH_LIST
fi

"$PY" - "$REPORT/machine.json" <<'EOF'
import json, os, platform, shutil, subprocess, sys

import torch

def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None

gpus = []
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    gpus.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                 "memory_gib": round(p.total_memory / 2**30, 1)})
info = {"host": platform.node(), "python": sys.version.split()[0], "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "gpus": gpus,
        "driver": run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"),
        "nvcc": shutil.which("nvcc"), "nvcc_version": (run("nvcc", "--version") or "").splitlines()[-1:],
        "CUDA_HOME": os.environ.get("CUDA_HOME"), "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST"),
        "cpus": os.cpu_count(), "git": run("git", "rev-parse", "HEAD")}
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(f"gpu_check: {len(gpus)} GPU(s): " + ", ".join(f"{g['name']} (sm {g['capability']})" for g in gpus)
      + f"; CUDA_HOME={info['CUDA_HOME']}; TORCH_CUDA_ARCH_LIST={info['TORCH_CUDA_ARCH_LIST']}")
EOF

# ------------------------------------------------------------------------ build
if [[ "${GPU_CHECK_SKIP_BUILD:-0}" == 1 ]]; then
    skip build "GPU_CHECK_SKIP_BUILD=1: the installed build is used"
else
    # shellcheck disable=SC2086  # GPU_CHECK_PIP_FLAGS is a list of flags
    step build "CUDA_HOME=${CUDA_HOME:-unset: torch guesses}, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST" \
        "$PY" -m pip install --no-build-isolation -v ${GPU_CHECK_PIP_FLAGS:-} -e .
fi
step extension "ktgfast._C.build_info()" "$PY" -c '
import json
from ktgfast import _C
info = _C.build_info()
print(json.dumps(info, indent=2, default=str))
assert info["with_cuda"], "ktgfast._C was built without its CUDA kernels (see logs/build.log)"'
BUILT=$?

# ------------------------------------------------------------------------ tests
if [[ $BUILT -eq 0 ]]; then
    step cuda-tests "pytest -k cuda tests (junit: cuda_tests.xml)" \
        "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda --junitxml="$REPORT/cuda_tests.xml" tests
else
    skip cuda-tests "the extension has no CUDA kernels"
fi

# ------------------------------------------------------------------ train smoke
TRAIN=(-m ktgfast train --graph dml --graph-arg model=cnn_small --data synthetic --val-size 0.1
       --epochs 1 --batch-size 64 --device cuda --tensorboard false --progress-bar false)
step train-1gpu "one epoch of DML (2x cnn_small) on synthetic data" \
    "$PY" "${TRAIN[@]}" --out "$REPORT/runs/train-1gpu" --overwrite

# ------------------------------------------------------------------- benchmarks
if "$PY" -m ktgfast bench --help 2>/dev/null | grep -q -- '--device'; then
    SUITES=()
    for s in gated_edge_loss attention_crop pcgrad loaders train_step; do
        "$PY" -m ktgfast bench --list 2>/dev/null | grep -q "^$s " && SUITES+=("$s")
    done
    QUICK=(--quick)
    [[ "${GPU_CHECK_FULL_BENCH:-0}" == 1 ]] && QUICK=()
    step bench "suites ${SUITES[*]} ${QUICK[*]} (JSON in bench/)" \
        "$PY" -m ktgfast bench --device cuda "${QUICK[@]}" --markdown --json-dir "$REPORT/bench" "${SUITES[@]}"
else
    skip bench "this checkout's ktgfast bench has no --device flag: the GPU benchmarks did not run"
fi

# --------------------------------------------------------------- two GPUs
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc-per-node 2)
if [[ "$NGPU" -ge 2 ]]; then
    step ddp-2gpu "data parallel, NCCL, SyncBatchNorm, 2 ranks" \
        "${TORCHRUN[@]}" "${TRAIN[@]}" --sync-bn --out "$REPORT/runs/ddp-2gpu" --overwrite
    if "$PY" -m ktgfast train --help 2>/dev/null | grep -q -- '--placement'; then
        step spread-2gpu "node parallel: one node per rank" \
            "${TORCHRUN[@]}" "${TRAIN[@]}" --placement spread --out "$REPORT/runs/spread-2gpu" --overwrite
    else
        skip spread-2gpu "this checkout's ktgfast train has no --placement flag"
    fi
else
    skip ddp-2gpu "needs 2 GPUs, $NGPU visible"
    skip spread-2gpu "needs 2 GPUs, $NGPU visible"
fi

# ----------------------------------------------------------------------- report
"$PY" - "$REPORT" <<'EOF'
import json, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

report = Path(sys.argv[1])
machine = json.loads((report / "machine.json").read_text())
checks = []
for line in (report / "checks.tsv").read_text().splitlines():
    name, status, seconds, note = line.split("\t", 3)
    checks.append({"name": name, "status": status, "seconds": int(seconds), "note": note,
                   "log": f"logs/{name}.log" if (report / "logs" / f"{name}.log").exists() else None})
tests = None
if (report / "cuda_tests.xml").exists():
    root = ET.parse(report / "cuda_tests.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    tests["passed"] = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
    for c in checks:  # CUDA tests that all skip prove nothing
        if c["name"] == "cuda-tests" and c["status"] == "ok" and tests["passed"] == 0:
            c["status"], c["note"] = "failed (no test ran)", "every selected test skipped; " + c["note"]
failed = [c["name"] for c in checks if c["status"].startswith("failed")]
result = {"ok": not failed, "failed": failed, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
          "machine": machine, "checks": checks, "cuda_tests": tests}
(report / "report.json").write_text(json.dumps(result, indent=2))

def tail(path, n=40):
    lines = (report / path).read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])

gpus = ", ".join(f"{g['name']} (sm {g['capability']}, {g['memory_gib']} GiB)" for g in machine["gpus"])
md = [f"# ktgfast GPU check: {'PASSED' if not failed else 'FAILED: ' + ', '.join(failed)}", "",
      f"{result['time']} on {machine['host']}: {gpus}; driver {machine['driver']}; torch {machine['torch']} "
      f"(CUDA {machine['torch_cuda']}); CUDA_HOME {machine['CUDA_HOME']}; TORCH_CUDA_ARCH_LIST "
      f"{machine['TORCH_CUDA_ARCH_LIST']}; git {machine['git']}", "",
      "| check | status | seconds | note |", "|---|---|---:|---|"]
md += [f"| {c['name']} | {c['status']} | {c['seconds']} | {c['note']} |" for c in checks]
if tests:
    md += ["", f"CUDA tests: {tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors, "
               f"{tests['skipped']} skipped (of {tests['tests']})."]
bench = report / "logs" / "bench.log"
if bench.exists():
    md += ["", "## Benchmarks", "", tail("logs/bench.log", 200)]
for c in checks:
    if c["status"].startswith("failed") and c["log"]:
        md += ["", f"## {c['name']}: the end of its log", "", "```", tail(c["log"]), "```"]
(report / "report.md").write_text("\n".join(md) + "\n")
print(f"gpu_check: {'PASSED' if not failed else 'FAILED: ' + ', '.join(failed)}; "
      f"report: {report / 'report.md'} and report.json")
sys.exit(1 if failed else 0)
EOF
