"""Sweeps: a grid of config variants x seeds in one command, each trial an ordinary run folder
(`<point>/seed_<n>/`), and the tables that compare them: sweep.csv, sweep.md, sweep.png (docs/cli.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..config.loader import load_config, set_path
from ..config.schema import Config, flatten, to_dict, yaml_value
from ..errors import EXIT_SIGINT, EXIT_SIGTERM, ConfigError, Echo, Terminated, UsageError
from ..reporting import plots
from ..reporting.analysis import NOISE_Z, Outcome, StepStats, aggregate
from ..reporting.comparison import difference
from ..storage.files import read_metrics, read_run_json, write_metrics, write_text
from ..training.checkpoint import CHECKPOINT
from ..training.loop import METRIC_COLUMNS
from .executor import Executor, available_cpus, check_local, default_threads, import_ray, ray_session, run_trials
from .folder import outcome, plan_run, prepare_run_dir, refuse_contradiction
from .run import Trial, TrialEnd
from .steps import with_seed

NOT_VARIED = {"name": "names the run folder", "change": "describes a step", "train.seed": "use --seeds instead"}
TRIAL_COLUMNS = (  # sweep.csv's columns after the point and its varied keys
    "seed status params macs_per_image epochs best_test_acc final_test_acc min_last_test_acc final_train_acc gap "
    "verdict targets_met all_targets_met threads seconds note"
).split()


@dataclass(frozen=True)
class Vary:
    arg: str  # as given, for error messages: 'model.dropout=0,0.05'
    key: str
    texts: tuple[str, ...]


@dataclass(frozen=True)
class Point:
    """One grid point: its folder name, the varied keys' values as the config holds them, and its config."""

    name: str
    values: dict[str, object]
    cfg: Config


def split_values(text: str) -> list[str]:
    """'0,0.05' -> ['0', '0.05']; commas inside brackets belong to a value: '[0.9,1.1],[1,1]' is two values."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    return [*values, current.strip()]


def parse_vary(arg: str) -> Vary:
    key, sep, text = arg.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--vary {arg}: expected section.key=value1,value2,..., e.g. model.dropout=0,0.05")
    texts = split_values(text)
    if not all(texts):
        raise ConfigError(f"--vary {arg}: an empty value; separate the values with single commas")
    if key in NOT_VARIED:
        raise ConfigError(f"--vary {arg}: {key} cannot be varied ({NOT_VARIED[key]})")
    return Vary(arg, key, tuple(texts))


def _safe(text: str) -> str:
    """A value as a piece of a folder name: '[0.9, 1.1]' -> '0.9-1.1'."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text.strip("[]{}() ")) or "empty"


def point_names(keys: list[str], grid: list[dict[str, object]]) -> list[str]:
    """A folder name per grid point from its values, e.g. 'dropout_0.02' or 'max_lr_0.05__batch_size_64':
    deterministic, filesystem-safe and unique (a clash gets the point's number appended)."""
    short = [re.sub(r"[\[\]]", "", k.partition(".")[2] or k) for k in keys]  # model.blocks[1].out: blocks1.out
    labels = [s if short.count(s) == 1 else _safe(k) for s, k in zip(short, keys)]
    names = ["__".join(f"{label}_{_safe(yaml_value(values[k]))}" for label, k in zip(labels, keys)) for values in grid]
    clashes = Counter(names)
    return [f"{n}_v{i + 1}" if clashes[n] > 1 else n for i, n in enumerate(names)]


def _vary_error(err: ConfigError, items: list[str], args: list[str]) -> ConfigError:
    """A config error from a --vary's value, reworded to name the --vary (load_config names it as a --set)."""
    text = str(err)
    for item in items:
        if text.startswith(f"--set {item}: "):
            return ConfigError(f"--vary {' with '.join(args)}: {text[len(f'--set {item}: ') :]}")
    return err


def expand(config: Path, varies: list[Vary], overrides: list[str] = ()) -> list[Point]:
    """Every grid point's config, type-checked value by value and then as a combination."""
    keys = [v.key for v in varies]
    repeated = [k for k, n in Counter(keys).items() if n > 1]
    if repeated:
        raise ConfigError(f"--vary {repeated[0]}: given twice; list all its values in one --vary")
    choices = []  # per --vary: (item, value) for each value
    for vary in varies:
        seen: dict[str, str] = {}
        items = []
        for text in vary.texts:
            item = f"{vary.key}={text}"
            try:  # the value as the built config holds it (typed: 0 -> 0.0 for a float key), else the YAML of text
                flat = flatten(to_dict(load_config(config, [*overrides, item])))
            except ConfigError as err:
                raise _vary_error(err, [item], [vary.arg]) from None
            value = flat[vary.key] if vary.key in flat else set_path(item)[1]
            if yaml_value(value) in seen:
                raise ConfigError(f"--vary {vary.arg}: {text} is the same value as {seen[yaml_value(value)]}")
            seen[yaml_value(value)] = text
            items.append((item, value))
        choices.append(items)
    grid, cfgs = [], []
    for combination in itertools.product(*choices):
        items = [item for item, _ in combination]
        try:
            cfgs.append(load_config(config, [*overrides, *items]))
        except ConfigError as err:
            raise _vary_error(err, items, items) from None
        grid.append({key: value for key, (_, value) in zip(keys, combination)})
    names = point_names(keys, grid)
    return [Point(name, values, dataclasses.replace(cfg, name=name)) for name, values, cfg in zip(names, grid, cfgs)]


# ---------------------------------------------------------------- the tables


def trial_threads(info: dict) -> int | None:
    """The torch threads a trial trained with: run.json's `threads`, else (an older run.json) its device_name's."""
    if isinstance(info.get("threads"), int):
        return info["threads"]
    found = re.search(r", (\d+) threads?$", str(info.get("device_name", "")))
    return int(found[1]) if found else None


def write_sweep_csv(path: Path, points: list[Point], ends: dict[tuple[int, int], TrialEnd], seeds: list[int]):
    """A row per trial that ended, in grid order. min_last_test_acc: the lowest test_acc of the last
    target.consistent_epochs epochs; seconds: the run's training time (run.json), or the trial's wall time."""
    keys = list(points[0].values)
    columns = ["point", *keys, *TRIAL_COLUMNS]
    rows = []
    for (p, s), end in sorted(ends.items()):
        o, info = end.outcome, read_run_json(end.trial.run_dir / "run.json", strict=False) or {}
        values = [
            points[p].name,
            *(yaml_value(points[p].values[k]) for k in keys),
            seeds[s],
            end.status,
            o.params if o else info.get("params", ""),
            info.get("macs_per_image", ""),
            o.epochs if o else "",
            o and o.best_test_acc,
            o and o.final_test_acc,
            o and min(o.last_test_accs),
            o and o.final_train_acc,
            f"{o.gap:.4g}" if o else "",
            o.verdict if o else "",
            f"{sum(o.targets.values())}/{len(o.targets)}" if o else "",
            str(o.all_met).lower() if o else "",
            trial_threads(info) or "",
            str(info.get("seconds_total", end.seconds)),  # as written, not to 6 digits
            end.note,
        ]
        rows.append(dict(zip(columns, values)))
    write_metrics(path, rows, columns)


def _completed(ends: dict[tuple[int, int], TrialEnd], p: int, seeds: list[int]) -> dict[int, Outcome]:
    return {
        seed: e.outcome
        for s, seed in enumerate(seeds)
        if (e := ends.get((p, s))) is not None and e.status == "completed" and e.outcome is not None
    }


def _against_best(stats: StepStats, best: StepStats, is_best: bool) -> str:
    """A point's final test accuracy against the best point's: bold beyond seed noise, else within it."""
    if is_best:
        return "best"
    d = difference("test accuracy", best.final_test_acc, stats.final_test_acc)
    change = f"**{d.change}**" if d.direction else d.change
    return f"{change} ({'beyond' if d.direction else 'within'} noise ±{d.threshold:.2f})"


def sweep_markdown(
    title: str, config: Path, points: list[Point], ends: dict[tuple[int, int], TrialEnd], seeds: list[int], figure: bool
) -> str:
    """A row per grid point (mean ± sd over its completed seeds, against the best point); the point with the
    fewest parameters that holds the target on every seed; the trials' torch threads; the trials not completed."""
    keys = list(points[0].values)
    target = points[0].cfg.target
    holds = f"holding {target.test_acc}% in each of the last {target.consistent_epochs} epochs"
    stats = {p: aggregate(point.cfg, done) for p, point in enumerate(points) if (done := _completed(ends, p, seeds))}
    top = max(stats, key=lambda p: stats[p].final_test_acc.mean, default=None)
    lines = [
        f"# {title}",
        "",
        f"`{config}` with {', '.join(f'`{k}`' for k in keys)} varied: {len(points)} points x "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}). Each trial is the run "
        "folder `<point>/seed_<n>/`; `sweep.csv` has a row per trial. Accuracies are the final epoch's, as mean "
        "± sd over the completed seeds (a value alone: one seed); the gap is train - test accuracy and the verdict "
        "is each run's analysis.md's. *vs best* sets a point's final test accuracy against the best point's: in "
        f"bold beyond {NOISE_Z:g} combined standard errors, else within seed noise (docs/analysis.md).",
        "",
        f"| point | {' | '.join(keys)} | params | seeds completed | final train_acc | final test_acc | best test_acc | "
        f"final gap | verdict | holds {target.test_acc}% over the last {target.consistent_epochs} epochs | "
        "all targets | vs best |",
        "|---|" + "---:|" * len(keys) + "---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for p, point in enumerate(points):
        values = " | ".join(yaml_value(point.values[k]) for k in keys)
        if p not in stats:
            lines.append(f"| {point.name} | {values} | | 0/{len(seeds)} |" + " |" * 9)
            continue
        s = stats[p]
        lines.append(
            f"| {point.name} | {values} | {s.params:,} | {s.n}/{len(seeds)} | {s.final_train_acc.text()} | "
            f"{s.final_test_acc.text()} | {s.best_test_acc.text()} | {s.gap.text(sign=True)} | {s.verdict} | "
            f"{s.held}/{s.n} | {s.all_met}/{s.n} | {_against_best(s, stats[top], p == top)} |"
        )
    holding = [(s.params, points[p].name) for p, s in stats.items() if s.n == len(seeds) and s.held == s.n]
    missing = len(points) * len(seeds) - len(ends)
    if holding:
        params, name = min(holding)
        lines += ["", f"Fewest parameters {holds} on every seed: {name} ({params:,} params)."]
    elif not missing:
        lines += ["", f"No point {holds} on every seed."]
    infos = [read_run_json(e.trial.run_dir / "run.json", strict=False) or {} for e in ends.values()]
    if counts := sorted({n for info in infos if (n := trial_threads(info))}):
        lines += [
            "",
            f"Torch threads per trial: {', '.join(map(str, counts))} (each trial's run.json; `sweep.csv` has it "
            "per trial). A sweep's worker processes share the CPUs, so a trial may train on fewer threads than "
            "`run` does (timings differ; docs/cli.md).",
        ]
    unfinished = [e for _, e in sorted(ends.items()) if e.status != "completed"]
    not_done = [f"{e.trial.label} ({e.status}{': ' + e.note if e.note else ''})" for e in unfinished]
    if missing:
        not_done.append(f"{missing} trial(s) not run yet")
    if not_done:
        lines += ["", "Not completed: " + "; ".join(not_done)]
    if figure:
        lines += ["", "![sweep](sweep.png)"]
    return "\n".join(lines) + "\n"


@dataclass
class SweepPlan:
    """A sweep's grid and, per (point, seed) index, the trial to train or how it ended (reused trials as
    completed). `run_sweep` returns it once its trials ended."""

    config: Path
    sweep_dir: Path
    points: list[Point]
    seeds: list[int]
    to_train: dict[tuple[int, int], Trial]
    done: dict[tuple[int, int], TrialEnd]  # filled as trials end

    def record(self, end: TrialEnd) -> None:
        self.done[next(slot for slot, t in self.to_train.items() if t is end.trial)] = end
        self.write_tables()

    def write_tables(self) -> None:
        figure = [
            plots.SweepPoint(
                point.values, done[0].params, [o.final_test_acc for o in done], sum(o.consistent for o in done)
            )
            for p, point in enumerate(self.points)
            if (done := list(_completed(self.done, p, self.seeds).values()))
        ]
        if figure:
            plots.sweep(figure, self.sweep_dir / "sweep.png", self.points[0].cfg.target.test_acc)
        write_sweep_csv(self.sweep_dir / "sweep.csv", self.points, self.done, self.seeds)
        md = sweep_markdown(self.sweep_dir.name, self.config, self.points, self.done, self.seeds, bool(figure))
        write_text(self.sweep_dir / "sweep.md", md)

    @property
    def ends(self) -> list[TrialEnd]:  # in grid order
        return [self.done[slot] for slot in sorted(self.done)]

    @property
    def trials(self) -> int:  # how many the grid has
        return len(self.points) * len(self.seeds)

    @property
    def failed(self) -> list[TrialEnd]:
        return [e for e in self.ends if e.status in ("failed", "diverged")]

    @property
    def stopped(self) -> int:  # EXIT_SIGINT / EXIT_SIGTERM when a trial was interrupted, else 0
        stops = [e.exit_code for e in self.ends if e.status == "interrupted"]
        return next((code for code in stops if code in (EXIT_SIGINT, EXIT_SIGTERM)), 0)


def _trial(sweep_dir: Path, point: Point, seed: int) -> Trial:
    return Trial(f"{point.name}/seed_{seed}", with_seed(point.cfg, seed), sweep_dir / point.name / f"seed_{seed}")


def sweep_markdown_from_files(
    sweep_dir: Path, config: Path, vary_args: list[str], overrides: list[str], seeds: list[int]
) -> str:
    """The sweep.md that `sweep --resume` writes for the sweep in `sweep_dir`, from its trial folders' files alone;
    the arguments are the sweep command's."""
    points, ends = expand(config, [parse_vary(a) for a in vary_args], overrides), {}
    for (p, point), (s, seed) in itertools.product(enumerate(points), enumerate(seeds)):
        trial = _trial(sweep_dir, point, seed)
        info = read_run_json(trial.run_dir / "run.json", strict=False)
        if info is not None:
            rows = read_metrics(trial.run_dir / "metrics.csv", METRIC_COLUMNS)
            result = outcome(trial.cfg, rows) if rows else None
            ends[(p, s)] = TrialEnd(trial, info.get("status", "failed"), 0, info.get("note", ""), 0.0, result)
    return sweep_markdown(sweep_dir.name, config, points, ends, seeds, (sweep_dir / "sweep.png").is_file())


# ---------------------------------------------------------------- the sweep


def _unfinished_without_epochs(run_dir: Path) -> bool:
    """A trial folder that was started but finished no epoch (stopped or killed early): nothing in it to keep."""
    return (
        run_dir.is_dir()
        and any(run_dir.iterdir())
        and not (run_dir / CHECKPOINT).is_file()
        and (read_run_json(run_dir / "run.json", strict=False) or {}).get("status") != "completed"
    )


def _check_options(name: str, workers: int | None, threads: int | None, executor: Executor, address: str | None):
    if "/" in name or name in ("", ".", ".."):
        raise UsageError(f"--name {name}: must be a plain folder name")
    for option, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and value < 1:
            raise UsageError(f"{option} {value}: must be >= 1")
    if executor == "ray":
        if workers is not None:
            raise UsageError("--workers is for --executor local; Ray places each trial on --threads CPUs")
        import_ray()
    elif address is not None:
        raise UsageError("--address is for --executor ray")


def run_sweep(
    config: Path,
    vary_args: list[str],
    out: Path,
    *,
    name: str | None = None,
    overrides: list[str] = (),
    seeds: list[int] | None = None,
    data_dir: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    executor: Executor = "local",
    address: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    echo: Echo = print,
) -> SweepPlan:
    """Train every (grid point, seed) into `out/<name>/<point>/seed_<n>/` and write the sweep's tables. A user's
    mistake raises before anything is written; a failed trial is recorded and the others go on."""
    name = name or f"sweep_{Path(config).stem}"
    _check_options(name, workers, threads, executor, address)
    refuse_contradiction(overwrite, resume)
    points = expand(config, [parse_vary(a) for a in vary_args], overrides)
    seeds = seeds or [points[0].cfg.train.seed]  # train.seed is never varied
    plan = SweepPlan(config, out / name, points, seeds, {}, {})
    if not resume and not overwrite and plan.sweep_dir.is_dir() and any(plan.sweep_dir.iterdir()):
        raise UsageError(
            f"{plan.sweep_dir}: already holds a sweep; pass --resume to finish it, --overwrite to replace "
            "it, or --name/--out to write elsewhere"
        )
    # Per trial folder: train, resume, reuse or refuse (folder.plan_run), still writing nothing; with --resume a
    # trial stopped before its first epoch trains afresh.
    for (p, point), (s, seed) in itertools.product(enumerate(points), enumerate(seeds)):
        trial = _trial(plan.sweep_dir, point, seed)
        if resume and _unfinished_without_epochs(trial.run_dir):
            plan.to_train[(p, s)] = dataclasses.replace(trial, overwrite=True)
            continue
        how, done = plan_run(trial.cfg, trial.run_dir, overwrite=False, resume=resume)
        if how == "reuse":
            plan.done[(p, s)] = TrialEnd(trial, "completed", 0, "", 0.0, done)
        else:
            plan.to_train[(p, s)] = dataclasses.replace(trial, resume=how == "resume")
    trials = list(plan.to_train.values())
    if executor == "ray":
        where = f"as Ray tasks of {threads or 1} CPU(s)"
    else:  # a local sweep checks its devices and data first
        check_local(data_dir, [t.cfg for t in trials])
        workers = max(1, min(workers or available_cpus(), len(trials)))  # never more workers than trials
        threads = threads or (default_threads(workers) if workers > 1 else None)
        if workers > 1:
            where = f"{workers} worker processes x {threads} torch thread(s)"
        else:
            where = "in this process" + (f", {threads} torch thread(s)" if threads else "")
    # Ray is connected before anything is written: a cluster that is not there is one line
    with ray_session(address) if executor == "ray" else contextlib.nullcontext():
        if resume:
            plan.sweep_dir.mkdir(parents=True, exist_ok=True)
        else:
            prepare_run_dir(plan.sweep_dir, overwrite, resume=False)  # --overwrite: the earlier sweep goes now
        echo(
            f"sweep {name}: {len(plan.points)} point(s) x {len(plan.seeds)} seed(s) = {plan.trials} trials"
            + (f", {len(plan.done)} already complete" if plan.done else "")
            + f"; {len(trials)} to train {where}"
        )
        plan.write_tables()  # the reused trials, if any
        try:
            run_trials(
                trials,
                data_dir,
                workers=workers or 1,
                threads=threads,
                executor=executor,
                address=address,
                keep_going=True,
                echo=echo,
                on_end=plan.record,
            )
        except (KeyboardInterrupt, Terminated):
            echo(
                f"the sweep was stopped; the finished trials are in {plan.sweep_dir / 'sweep.csv'}; run the same "
                "command with --resume to finish it"
            )
            raise
    if plan.stopped:
        echo("the sweep was stopped; run the same command with --resume to finish it")
    png = ", sweep.png" if (plan.sweep_dir / "sweep.png").exists() else ""
    echo(f"wrote {plan.sweep_dir / 'sweep.csv'}, sweep.md{png}")
    return plan
