"""Try variants of a step config over several seeds in parallel and tabulate how each holds up.

    python scripts/sweep.py configs/step7_lr_scheduler.yaml variants.json --seeds 1,2,3 --jobs 8 --out /tmp/sweep

variants.json maps a variant name to a list of `--set` strings. Each (variant, seed) is one
`mnist-drill run` in its own process; the table reports params, the worst of the last 3 epochs'
test_acc per seed, and the mean final test_acc.
"""

import argparse
import concurrent.futures as cf
import csv
import json
import subprocess
import sys
from pathlib import Path


def one(config, name, sets, seed, out, extra):
    cmd = [sys.executable, "-m", "mnist_drill", "run", config, "--seed", str(seed), "--out", str(out / name),
           "--set", f"name=seed_{seed}", *extra]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return name, seed, None, proc.stderr.strip().splitlines()[-1:]
    rows = list(csv.DictReader(open(out / name / f"seed_{seed}" / "metrics.csv")))
    params = json.load(open(out / name / f"seed_{seed}" / "run.json"))["params"]
    return name, seed, params, [float(r["test_acc"]) for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("variants")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--out", default="/tmp/sweep")
    args, extra = ap.parse_known_args()
    variants = json.load(open(args.variants))
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    results = {}
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(one, args.config, n, s, seed, out, extra) for n, s in variants.items() for seed in seeds]
        for f in cf.as_completed(futures):
            name, seed, params, accs = f.result()
            results.setdefault(name, {})[seed] = (params, accs)
            print(name, seed, params, accs[-3:] if params else accs, flush=True)
    print("\n| variant | params | worst of last 3 per seed | mean final | mean best |")
    for name in variants:
        r = results.get(name, {})
        ok = [v for v in r.values() if v[0]]
        if not ok:
            print(f"| {name} | failed | | | |")
            continue
        worst = [min(a[-3:]) for _, a in ok]
        print(f"| {name} | {ok[0][0]} | {', '.join(f'{w:.2f}' for w in worst)} | "
              f"{sum(a[-1] for _, a in ok) / len(ok):.3f} | {sum(max(a) for _, a in ok) / len(ok):.3f} |")


if __name__ == "__main__":
    main()
