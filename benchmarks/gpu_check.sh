#!/usr/bin/env bash
# The GPU figures in one command, on a machine with CUDA: the `gpu` test tier, `mnist-drill bench` of the
# final step, and the final step trained for its 15 epochs, timed from the shell (start-up included).
# Everything lands in one JSON (default benchmarks/gpu_check_<gpu>.json) with the commands that made it.
# It stops at 8 minutes (its parts get what is left of them).
#
#   bash benchmarks/gpu_check.sh [OUT.json]
#
# MNIST: $MNIST_DRILL_DATA, else ../shared/data/mnist, else data/mnist. It runs from the checkout
# (PYTHONPATH=src), so a machine whose python has torch needs no install; $PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -z "${MNIST_DRILL_DATA:-}" ]; then
    for d in ../shared/data/mnist data/mnist; do [ -d "$d" ] && export MNIST_DRILL_DATA="$PWD/$d" && break; done
fi
"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check: CUDA is not available here")'
# A GPU machine with no registry: the missing dependencies come as wheels in .whl/ (git-ignored; made
# with `pip download torchsummary -d .whl` where a registry is reachable).
if ! "$python" -c 'import torchsummary' 2>/dev/null && [ -d .whl ]; then
    "$python" -m pip install -q --no-index --find-links .whl torchsummary
fi
gpu="$("$python" -c 'import torch; print(torch.cuda.get_device_name(0).replace(" ", "_"))')"
out="${1:-benchmarks/gpu_check_${gpu}.json}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
deadline=$(( SECONDS + 480 ))
left() { echo $(( deadline - SECONDS > 10 ? deadline - SECONDS : 10 )); }

echo "== gpu test tier"
tier_cmd="python -m pytest -m gpu -q -p no:cacheprovider"
set +e
timeout "$(left)" "$python" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$work/tier.log"
tier_rc=${PIPESTATUS[0]}
set -e

echo "== bench"
bench_cmd="mnist-drill bench configs/step7_lr_scheduler.yaml --device cuda --repeats 3 --json $work/bench.json"
timeout "$(left)" "$python" -m mnist_drill bench configs/step7_lr_scheduler.yaml --device cuda --repeats 3 \
    --json "$work/bench.json"

echo "== the final step, 15 epochs, timed from the shell"
run_cmd="mnist-drill run configs/step7_lr_scheduler.yaml --device cuda --out $work/runs"
start=$("$python" -c 'import time; print(time.time())')
timeout "$(left)" "$python" -m mnist_drill run configs/step7_lr_scheduler.yaml --device cuda --out "$work/runs"
end=$("$python" -c 'import time; print(time.time())')

"$python" - "$work" "$out" "$tier_rc" "$start" "$end" "$tier_cmd" "$bench_cmd" "$run_cmd" <<'PY'
import csv, json, subprocess, sys
from pathlib import Path

work, out, tier_rc, start, end, *commands = sys.argv[1:]
work = Path(work)
run = next((work / "runs").glob("step7_lr_scheduler*/run.json")).parent
with open(run / "metrics.csv", newline="") as f:
    rows = list(csv.DictReader(f))
info = json.loads((run / "run.json").read_text())
tail = (work / "tier.log").read_text().strip().splitlines()
figures = {
    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "device_name": info.get("device_name"),
    "torch": info.get("torch"),
    "commands": dict(zip(("gpu_tier", "bench", "final_step"), commands)),
    "gpu_tier": {"exit_code": int(tier_rc), "summary": tail[-1] if tail else ""},
    "bench": json.loads((work / "bench.json").read_text()),
    "final_step": {
        "wall_seconds": round(float(end) - float(start), 2),  # the shell's clock: start-up and data included
        "seconds_total": info.get("seconds_total"),  # what run.json says: setup to the last write
        "seconds_per_epoch": info.get("seconds_per_epoch"),
        "epochs": len(rows),
        "final_test_acc": float(rows[-1]["test_acc"]),
        "best_test_acc": max(float(r["test_acc"]) for r in rows),
        "status": info.get("status"),
    },
}
Path(out).write_text(json.dumps(figures, indent=2) + "\n")
print(f"wrote {out}: tier rc {tier_rc}, final step {figures['final_step']['wall_seconds']} s wall, "
      f"final test_acc {figures['final_step']['final_test_acc']:.2f} %")
PY
exit "$tier_rc"
