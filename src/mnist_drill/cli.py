"""Command line: run, run-all, bench, summary, show, diff, eval, predict.

Errors a user can cause end in one line on stderr and exit code 2; an interrupted run exits 130
(Ctrl-C) or 143 (SIGTERM) after saving what it finished; a failed or diverged step exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
from pathlib import Path
from typing import Optional

from . import __version__, analysis, plots
from .config import DESCRIPTIVE_KEYS, Config, flatten, load_config, to_dict, to_yaml
from .data import ENV_VAR, load_mnist
from .errors import EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, ConfigError, DrillError, Terminated, UsageError, report
from .model import build_model
from .outputs import write_json, write_text
from .runner import finished_run, run_seeds, run_step
from .summary import summary_text


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of the usage block plus the error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _common(p: argparse.ArgumentParser, training: bool, writes: bool = True) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.dropout=0.05 (repeatable)")
    if not training:
        return
    p.add_argument("--epochs", type=int, help="number of epochs (train.epochs)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="training device (train.device)")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--data-dir", help=f"folder with the four MNIST IDX files (default: ${ENV_VAR}, then data/mnist; "
                                      "downloaded there when missing)")
    if not writes:
        return
    p.add_argument("--out", default="results", help="results folder (default: results/)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run of the same step")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mnist-drill", description="A staged CNN design drill on MNIST.")
    parser.add_argument("--version", action="version", version=f"mnist-drill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser("run", help="train one step")
    p.add_argument("config", help="a step config, e.g. configs/step3_dropout.yaml")
    p.add_argument("--seeds", help="train once per seed, e.g. 1,2,3, and tabulate mean and spread")
    _common(p, training=True)

    p = sub.add_parser("run-all", help="train every configs/step*.yaml in order and write progression.md")
    p.add_argument("--configs", default="configs", help="folder of step*.yaml files (default: configs/)")
    _common(p, training=True)

    p = sub.add_parser("bench", help="time an epoch of mnist-drill's pipeline against the classic DataLoader loop")
    p.add_argument("config")
    p.add_argument("--repeats", type=int, default=2, help="interleaved timed epochs per pipeline (default 2)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    _common(p, training=True, writes=False)

    p = sub.add_parser("summary", help="the model layer by layer (shapes, params, receptive field); no data")
    p.add_argument("config")
    _common(p, training=False)

    p = sub.add_parser("show", help="the resolved config as YAML")
    p.add_argument("config")
    _common(p, training=False)

    p = sub.add_parser("diff", help="what one step's resolved config changes from another's")
    p.add_argument("old")
    p.add_argument("new")
    _common(p, training=False)

    p = sub.add_parser("eval", help="score a run's model.pt on the MNIST test set, per digit too")
    p.add_argument("run_dir", help="a run folder with config.yaml and model.pt, e.g. results/step7_lr_scheduler")
    p.add_argument("--data-dir", help=f"folder with the MNIST IDX files (default: ${ENV_VAR}, then data/mnist)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: the run's train.device)")
    p.add_argument("--out", help="folder for eval.json and confusion.png (default: runs/eval/<run folder name>/)")

    p = sub.add_parser("predict", help="the digit in each image file (PNG, JPEG, ...), by a run's model.pt")
    p.add_argument("run_dir", help="a run folder with config.yaml and model.pt, e.g. results/step7_lr_scheduler")
    p.add_argument("images", nargs="+", help="image files, one digit each, any size, dark-on-light or light-on-dark")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: the run's train.device)")
    return parser


def _overrides(args) -> list[str]:
    extra = [f"train.{k}={getattr(args, k)}" for k in ("epochs", "device", "seed") if getattr(args, k, None) is not None]
    return [*args.overrides, *extra]


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text}: expected integers separated by commas, e.g. 1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"--seeds {text}: expected distinct non-negative integers, e.g. 1,2,3")
    return seeds


def cmd_run(args) -> int:
    cfg = load_config(args.config, _overrides(args))
    step_dir = Path(args.out) / cfg.name
    if args.seeds:
        results = run_seeds(cfg, _parse_seeds(args.seeds), step_dir, args.data_dir,
                            overwrite=args.overwrite, resume=args.resume)
        print(f"wrote {step_dir / 'analysis.md'}")
        return max(r.exit_code for r in results)
    result = run_step(cfg, step_dir, args.data_dir, overwrite=args.overwrite, resume=args.resume)
    print(f"wrote {result.run_dir}/")
    return result.exit_code


def step_configs(folder: Path) -> list[Path]:
    """configs/step<N>_*.yaml ordered by N."""
    found = [(int(m.group(1)), p) for p in folder.glob("step*.yaml") if (m := re.match(r"step(\d+)", p.name))]
    if not found:
        raise UsageError(f"{folder}: no step*.yaml configs here (pass --configs DIR)")
    return [p for _, p in sorted(found)]


def cmd_run_all(args) -> int:
    out = Path(args.out)
    entries, exit_code = [], 0
    for path in step_configs(Path(args.configs)):
        print(f"== {path}")
        try:
            cfg = load_config(path, _overrides(args))
        except ConfigError as err:
            print(f"mnist-drill: error: {err}", file=sys.stderr)
            entries.append((Config(name=path.stem), None, "config error"))
            exit_code = EXIT_FAILED
            continue
        run_dir = out / cfg.name
        try:
            reused = finished_run(cfg, run_dir) if args.resume else None
            if reused is not None:
                print(f"{cfg.name}: already complete in {run_dir}")
                entries.append((cfg, reused, "completed"))
                continue
            result = run_step(cfg, run_dir, args.data_dir, overwrite=args.overwrite,
                              resume=args.resume and (run_dir / "checkpoint.pt").is_file())
        except (ConfigError, UsageError) as err:
            print(f"mnist-drill: error: {err}", file=sys.stderr)
            entries.append((cfg, None, "failed"))
            exit_code = EXIT_FAILED
            continue
        entries.append((cfg, result.outcome, result.status))
        if result.status == "interrupted":
            exit_code = result.exit_code
            break
        exit_code = exit_code or result.exit_code
    write_progression(out, entries)
    return exit_code


def write_progression(out: Path, entries: list) -> None:
    write_text(out / "progression.md", analysis.progression_markdown(entries))
    done = [(cfg, o) for cfg, o, _ in entries if o is not None]
    if done:
        plots.progression([c.name for c, _ in done], [o.params for _, o in done],
                          [o.best_test_acc for _, o in done], out / "progression.png", done[-1][0].target.test_acc)
    print(f"wrote {out / 'progression.md'}")


def cmd_summary(args) -> int:
    cfg = load_config(args.config, args.overrides)
    model, layers = build_model(cfg.model)
    print(summary_text(cfg, model, layers))
    return 0


def cmd_show(args) -> int:
    print(to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def _block_text(block) -> str:
    """A block as its YAML flow mapping, keeping only fields that differ from the defaults."""
    fields = {f.name: getattr(block, f.name) for f in dataclasses.fields(block)}
    defaults = {f.name: f.default for f in dataclasses.fields(block) if f.default is not dataclasses.MISSING}
    shown = {k: v for k, v in fields.items() if k not in defaults or defaults[k] != v}
    return "{" + ", ".join([f"type: {block.TYPE}", *(f"{k}: {v}" for k, v in shown.items())]) + "}"


def config_changes(old: Config, new: Config) -> list[str]:
    """One line per changed setting; blocks are compared position by position."""
    flat_old, flat_new = flatten(to_dict(old)), flatten(to_dict(new))
    lines = [f"{k}: {flat_old.get(k, '<absent>')!r} -> {flat_new.get(k, '<absent>')!r}"
             for k in dict.fromkeys([*flat_old, *flat_new])
             if not k.startswith(("model.blocks", *DESCRIPTIVE_KEYS)) and flat_old.get(k, "<absent>") != flat_new.get(k, "<absent>")]
    a, b = old.model.blocks, new.model.blocks
    for i in range(max(len(a), len(b))):
        before = _block_text(a[i]) if i < len(a) else "<absent>"
        after = _block_text(b[i]) if i < len(b) else "<absent>"
        if before != after:
            lines.append(f"model.blocks[{i}]: {before} -> {after}")
    return lines


def cmd_diff(args) -> int:
    old, new = load_config(args.old, args.overrides), load_config(args.new, args.overrides)
    print(f"--- {args.old} ({old.name})\n+++ {args.new} ({new.name}): {new.change or '(no change note)'}")
    print("\n".join(config_changes(old, new)) or "(no change)")
    return 0


def cmd_bench(args) -> int:
    from .bench import report, run_bench
    from .data import resolve_dir

    cfg = load_config(args.config, _overrides(args))
    if args.repeats < 1:
        raise UsageError(f"--repeats {args.repeats}: must be >= 1")
    data_dir = resolve_dir(args.data_dir, cfg.data.dir)
    load_mnist(data_dir)  # verify (or download) the files before any timing
    result = run_bench(cfg, data_dir, args.repeats)
    print(report(result))
    if args.json:
        write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    return 0


def cmd_eval(args) -> int:
    from .inference import run_eval

    return run_eval(Path(args.run_dir), args.data_dir, args.device, args.out)


def cmd_predict(args) -> int:
    from .inference import run_predict

    return run_predict(Path(args.run_dir), [Path(p) for p in args.images], args.device)


COMMANDS = {"run": cmd_run, "run-all": cmd_run_all, "bench": cmd_bench, "summary": cmd_summary, "show": cmd_show,
            "diff": cmd_diff, "eval": cmd_eval, "predict": cmd_predict}


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_terminated)  # so SIGTERM unwinds like Ctrl-C: files stay whole
    try:
        return COMMANDS[args.command](args)
    except DrillError as err:
        return report(err)
    except KeyboardInterrupt:
        print("mnist-drill: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print("mnist-drill: terminated", file=sys.stderr)
        return EXIT_SIGTERM
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
