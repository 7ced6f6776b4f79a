"""The command line: the parser, one small function per command, and the exit codes (errors.py).
Each command hands its work to the module that owns it; this file only reads options and chooses what to print."""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
from pathlib import Path

from . import __version__, bench
from .config.blocks import with_model_defaults
from .config.loader import find_config, load_config, unused_settings
from .config.schema import config_changes, to_yaml
from .errors import EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, DrillError, Terminated, UsageError, report
from .inference import classify, evaluate_run, load_run, prepare_digit, read_image
from .nn.model import build_model
from .nn.summary import summary_text
from .reporting import plots
from .runs.listing import expand_runs, list_runs, runs_table
from .runs.steps import compare_runs, exit_code, run_steps
from .runs.sweep import run_sweep
from .storage.files import DEFAULT_OUT, write_json
from .training.data import LOOKUP_ORDER, resolve_dir


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of the usage block plus the error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


DEVICES = ["auto", "cpu", "cuda"]
REFERENCE = Path("results/drill")  # the committed reference drill, what `compare --reference` adds
RUN_DIR_HELP = "a run folder with config.yaml and model.pt, e.g. results/drill/step7_lr_scheduler/seed_1"
# The options several commands share, as each command's --help lists them.
OPTIONS = {
    "--set": dict(
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.dropout=0.05 or --set model.blocks[2].out=12 (repeatable)",
    ),
    "--epochs": dict(type=int, help="number of epochs (train.epochs)"),
    "--device": dict(choices=DEVICES, help="training device (train.device)"),
    "--seed": dict(type=int, help="random seed (train.seed)"),
    "--data-dir": dict(
        help=f"folder with the four MNIST IDX files (default: {LOOKUP_ORDER}; downloaded there when missing)"
    ),
    "--out": dict(default=DEFAULT_OUT, help=f"folder for the run folders (default: {DEFAULT_OUT}/)"),
    "--overwrite": dict(action="store_true", help="replace what the folder holds (run, run-all: with --exact)"),
    "--resume": dict(
        action="store_true",
        help="continue an interrupted run from its last checkpoint (run, run-all: the newest unfinished attempt); "
        "reuse one that finished",
    ),
    "--workers": dict(
        type=int,
        default=1,
        help="with --seeds: train this many seeds at once, each in its own process (default 1: one after "
        "another in this process)",
    ),
    "--exact": dict(
        action="store_true",
        help="write to --out DIR/<step>/ itself instead of a new attempt_<n>/ (curated evidence, as results/ is "
        "made); a run there is refused unless --resume or --overwrite",
    ),
}
TRAINING = ["--set", "--epochs", "--device", "--seed", "--data-dir", "--out", "--overwrite", "--resume"]


def _add(p: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        p.add_argument(name, **OPTIONS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mnist-drill", description="A staged CNN design drill on MNIST.")
    parser.add_argument("--version", action="version", version=f"mnist-drill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser("run", help="train one step")
    p.add_argument("config", help="a step config or a step's name, e.g. configs/step3_dropout.yaml or step3")
    p.add_argument("--seeds", help="train once per seed, e.g. 1,2,3, and tabulate mean and spread")
    _add(p, "--workers", "--exact", *TRAINING)
    p = sub.add_parser("run-all", help="train every configs/step*.yaml in order and write progression.md")
    p.add_argument("--configs", default="configs", help="folder of step*.yaml files (default: configs/)")
    p.add_argument("--seeds", help="train every step once per seed, e.g. 1,2,3")
    _add(p, "--workers", "--exact", *TRAINING)

    p = sub.add_parser("sweep", help="train a grid of config variants x seeds, in parallel, and tabulate them")
    p.add_argument("config", help="the config the variants start from, e.g. configs/step3_dropout.yaml or step3")
    p.add_argument(
        "--vary",
        action="append",
        required=True,
        metavar="KEY=V1,V2,...",
        help="values to try for one key, e.g. --vary model.dropout=0,0.05 or "
        "--vary model.blocks[1].out=8,12 (repeatable: the sweep is the product)",
    )
    p.add_argument("--seeds", help="train every point once per seed, e.g. 1,2,3 (default: the config's train.seed)")
    p.add_argument("--name", help="the sweep's folder under --out (default: sweep_<config name>)")
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local worker processes (default) or tasks on a Ray cluster (pip install 'mnist-drill[ray]')",
    )
    p.add_argument("--workers", type=int, help="local worker processes (default: one per CPU, at most one per trial)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per trial (default: $OMP_NUM_THREADS, else the CPUs "
        "shared out among the workers; on Ray, 1)",
    )
    p.add_argument(
        "--address",
        help="with --executor ray: the cluster, e.g. auto or ray://host:10001 (default: start a local Ray instance)",
    )
    _add(p, *TRAINING)

    p = sub.add_parser("runs", help="every run in a folder, newest first: status, accuracy, what differs")
    p.add_argument("dir", nargs="?", default=DEFAULT_OUT, help=f"the folder to list (default: {DEFAULT_OUT}/)")
    p.add_argument("--step", help="only the runs of this step, e.g. step3 or step3_dropout")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only the runs whose config has this value, e.g. --where model.dropout=0.05 (repeatable)",
    )
    p.add_argument("--configs", default="configs", help="the step configs that runs are compared with")

    p = sub.add_parser("compare", help="runs side by side: the config keys that differ, results, curves overlaid")
    p.add_argument(
        "runs",
        nargs="+",
        help="run folders (or step folders of seed_<n>/ runs), or a step's name for all its attempts in --runs",
    )
    p.add_argument(
        "--runs", dest="runs_dir", default=DEFAULT_OUT, help=f"where step names are looked up ({DEFAULT_OUT}/)"
    )
    p.add_argument(
        "--reference", action="store_true", help=f"add each named step's committed reference run ({REFERENCE}/<step>)"
    )
    out = f"{DEFAULT_OUT}/compare"
    p.add_argument("--out", default=out, help=f"folder for compare.md and compare.png (default: {out}/)")
    p = sub.add_parser("bench", help="time an epoch of mnist-drill's pipeline against the classic DataLoader loop")
    p.add_argument("config")
    p.add_argument("--repeats", type=int, default=2, help="interleaved timed epochs per pipeline (default 2)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    _add(p, "--set", "--device", "--seed", "--data-dir")

    for name, positionals, text in (
        ("summary", ["config"], "the model layer by layer (shapes, params, receptive field); no data"),
        ("show", ["config"], "the resolved config as YAML (inherited block values filled in)"),
        ("diff", ["old", "new"], "what one step's resolved config changes from another's"),
    ):
        p = sub.add_parser(name, help=text)
        for positional in positionals:
            p.add_argument(positional)
        _add(p, "--set")

    p = sub.add_parser("eval", help="score a run's model.pt on the MNIST test set, per digit too")
    p.add_argument("run_dir", help=RUN_DIR_HELP)
    p.add_argument("--data-dir", help=f"folder with the MNIST IDX files (default: {LOOKUP_ORDER})")
    p.add_argument("--device", choices=DEVICES, help="device (default: the run's train.device)")
    p.add_argument("--out", help="folder for eval.json and confusion.png (default: runs/eval/<run folder name>/)")
    p.add_argument("--full", action="store_true", help="score all 10,000 test images, not the run's data.test_subset")
    p = sub.add_parser("predict", help="the digit in each image file (PNG, JPEG, ...), by a run's model.pt")
    p.add_argument("run_dir", help=RUN_DIR_HELP)
    p.add_argument("images", nargs="+", help="image files, one digit each, any size, dark-on-light or light-on-dark")
    p.add_argument("--device", choices=DEVICES, help="device (default: the run's train.device)")
    return parser


def _overrides(args) -> list[str]:
    train = [f"train.{k}={v}" for k in ("epochs", "device", "seed") if (v := getattr(args, k, None)) is not None]
    return [*args.overrides, *train]


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text}: expected integers separated by commas, e.g. 1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"--seeds {text}: expected distinct non-negative integers, e.g. 1,2,3")
    return seeds


def step_configs(folder: Path) -> list[Path]:
    """configs/step<N>_*.yaml ordered by N."""
    found = [(int(m.group(1)), p) for p in folder.glob("step*.yaml") if (m := re.match(r"step(\d+)", p.name))]
    if not found:
        raise UsageError(f"{folder}: no step*.yaml configs here (pass --configs DIR)")
    return [p for _, p in sorted(found)]


def _run(args, sources: list[Path], progression: bool) -> int:
    if args.exact and args.out == DEFAULT_OUT:
        raise UsageError(f"--exact writes into a folder of your choice: pass --out DIR ({DEFAULT_OUT}/ holds attempts)")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be >= 1")
    reports = run_steps(
        sources,
        Path(args.out),
        args.data_dir,
        overrides=_overrides(args),
        seeds=parse_seeds(args.seeds),
        progression=progression,
        **{option: getattr(args, option) for option in ("overwrite", "resume", "workers", "exact")},
    )
    if reports and reports[0].dir is not None:  # one step: its folder; run-all: the folder of the steps
        print(f"wrote {reports[0].dir.parent if progression else reports[0].dir}/")
    return exit_code(reports)


def cmd_run(args) -> int:
    return _run(args, [find_config(args.config)], progression=False)


def cmd_run_all(args) -> int:
    return _run(args, step_configs(Path(args.configs)), progression=True)


def cmd_runs(args) -> None:
    lines = list_runs(Path(args.dir), Path(args.configs), args.step, tuple(args.where))
    print(runs_table(lines) if lines else f"no runs in {args.dir}/" + (" match" if args.step or args.where else ""))


def cmd_compare(args) -> None:
    runs = expand_runs(args.runs, Path(args.runs_dir), REFERENCE if args.reference else None)
    print(compare_runs(runs, Path(args.out)))
    print(f"wrote {Path(args.out) / 'compare.md'} and compare.png")


def cmd_sweep(args) -> int | None:
    as_given = ("name", "data_dir", "workers", "threads", "executor", "address", "overwrite", "resume")
    result = run_sweep(
        find_config(args.config),
        args.vary,
        Path(args.out),
        overrides=_overrides(args),
        seeds=parse_seeds(args.seeds),
        **{option: getattr(args, option) for option in as_given},  # run_sweep's keywords, named as the options
    )
    if result.stopped:
        return result.stopped
    if result.failed:
        names = ", ".join(f"{e.trial.label} ({e.status})" for e in result.failed)
        print(
            f"mnist-drill: error: {len(result.failed)} of {result.trials} trials did not complete (why: the note "
            f"column of {result.sweep_dir / 'sweep.csv'}): {names}",
            file=sys.stderr,
        )
        return EXIT_FAILED


def cmd_summary(args) -> None:
    cfg = load_config(find_config(args.config), args.overrides)
    print(summary_text(cfg, *build_model(cfg.model)))


def cmd_show(args) -> None:
    cfg = load_config(find_config(args.config), args.overrides)
    blocks = tuple(with_model_defaults(b, cfg.model) for b in cfg.model.blocks)  # what `bn: null` resolves to
    resolved = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, blocks=blocks))
    print(to_yaml(resolved), end="")
    for line in unused_settings(cfg):
        print(f"# note: {line}")


def cmd_diff(args) -> None:
    old, new = load_config(find_config(args.old), args.overrides), load_config(find_config(args.new), args.overrides)
    print(f"--- {args.old} ({old.name})\n+++ {args.new} ({new.name}): {new.change or '(no change note)'}")
    print("\n".join(config_changes(old, new)) or "(no change)")


def cmd_bench(args) -> None:
    cfg = load_config(find_config(args.config), _overrides(args))
    if args.repeats < 1:
        raise UsageError(f"--repeats {args.repeats}: must be >= 1")
    result = bench.run_bench(cfg, resolve_dir(args.data_dir, cfg.data.dir), args.repeats)
    print(bench.report(result))
    if args.json:
        write_json(Path(args.json), result)
        print(f"wrote {args.json}")


def cmd_eval(args) -> None:
    result = evaluate_run(Path(args.run_dir), args.data_dir, args.device, args.full)
    title, which = f"{result['config']}: {result['images']:,} test images", "the full test set"
    if result["test_set"] != "full":
        which = f"the first {result['images']:,}, data.test_subset as in training; --full scores them all"
    print(f"{title} ({which}) on {result['device']}")
    print(f"test_acc {result['test_acc']:.2f} %  test_loss {result['test_loss']:.4f}")
    print("digit  images  correct   acc %")
    for c in result["per_class"]:
        print(f"{c['digit']:>5}  {c['images']:>6}  {c['correct']:>7}  {c['acc']:6.2f}")
    cells = [(count, true, pred) for true, row in enumerate(result["confusion"]) for pred, count in enumerate(row)]
    mistakes = sorted(((c, t, p) for c, t, p in cells if c and t != p), reverse=True)
    if mistakes:
        print("most confused (true->predicted): " + ", ".join(f"{t}->{p} x{c}" for c, t, p in mistakes[:5]))
    run = Path(args.run_dir).resolve()
    name = f"{run.parent.name}_{run.name}" if run.name.startswith("seed_") else run.name  # step7_..._seed_1
    folder = Path(args.out or Path(DEFAULT_OUT, "eval", name))
    write_json(folder / "eval.json", result)  # a failed write: StorageError (atomic_path), exit 74
    plots.confusion_matrix(result["confusion"], folder / "confusion.png", title)
    print(f"wrote {folder / 'eval.json'} and {folder / 'confusion.png'}")


def cmd_predict(args) -> int:
    """One line per image; one that cannot be read gets a `path: error: ...` line on stderr, the others an answer."""
    cfg, model, device = load_run(Path(args.run_dir), args.device)
    failed = 0
    for path in map(Path, args.images):
        try:
            probs = classify(model, cfg, device, prepare_digit(read_image(path))[None])[0]
        except UsageError as err:
            print(f"{path}: error: {err}", file=sys.stderr)
            failed += 1
            continue
        p, d = probs.topk(2)
        print(f"{path}: digit {d[0].item()} (p={p[0].item():.2f}; next {d[1].item()}, p={p[1].item():.2f})")
    return EXIT_USAGE if failed else 0


# Each cmd_<name> above is the command <name>, with a hyphen for the underscore (cmd_run_all: run-all); one that
# returns None succeeded.
COMMANDS = {name[4:].replace("_", "-"): fn for name, fn in list(globals().items()) if name.startswith("cmd_")}


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_terminated)  # so SIGTERM unwinds like Ctrl-C: files stay whole
    try:
        return COMMANDS[args.command](args) or 0
    except DrillError as err:
        return report(err)
    except (KeyboardInterrupt, Terminated) as err:
        sigterm = isinstance(err, Terminated)
        print(f"mnist-drill: {'terminated' if sigterm else 'interrupted'}", file=sys.stderr)
        return EXIT_SIGTERM if sigterm else EXIT_SIGINT
    except BrokenPipeError:
        return 1
