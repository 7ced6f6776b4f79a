"""The markdown written for a run (analysis.md), a step on several seeds, run-all (progression.md) and
`compare`: the drill's Target / Results / Analysis, each step measured against the one before it and seed noise."""

from __future__ import annotations

import contextlib
import re

from ..config.schema import DESCRIPTIVE_KEYS, EXPECTATIONS, Config, config_changes, flatten, to_dict
from ..reporting.analysis import NOISE_Z, Outcome, advice, aggregate, verdict_reason
from ..reporting.comparison import Comparison, compare_steps, first_target_text
from ..reporting.diagnostics import DIAGNOSTIC_NAMES, diagnose

Previous = tuple[Config, dict[int, Outcome]] | None
STATUS = {"met": "met", "not met": "**not met**", "within noise": "*within noise*"}  # of an `expect:` check
NOT_A_CHANGE = ("train.seed", "train.device", "data.dir")  # which seed and where a run trains, not what it trains
NOISE_NOTE = (
    f"A difference is a gain or a loss only beyond {NOISE_Z:g} combined standard errors of the two means "
    "(each step's spread over its seeds, at least the binomial error of an accuracy on its test or "
    "training images); anything smaller is within seed noise."
)


def _yes(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _changes(old: Config, new: Config) -> list[str]:
    """config_changes without the keys that say which seed and where a run trains (NOT_A_CHANGE)."""
    return [line for line in config_changes(old, new, arrow="→") if not line.startswith(NOT_A_CHANGE)]


_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")  # 0.02 in "dropout 0.02 after every conv"; not 24x24


def _values_not_run(text: str, ran: list[str]) -> str:
    """The decimal values `change:` names that none of the changed settings took (an edited file whose text
    was not), e.g. '0.02' when model.dropout ran at 0.13; '' when they agree or there is nothing to check."""
    named = {float(n) for n in _DECIMAL.findall(text)}
    took = set()
    for line in ran:
        with contextlib.suppress(ValueError):
            took.add(float(line.rsplit("→", 1)[-1]))
    return ", ".join(f"{n:g}" for n in sorted(named - took)) if named and took and not named & took else ""


def _code(lines: list[str]) -> str:
    return ", ".join(f"`{line}`" for line in lines)


def change_lines(cfg: Config, previous: Previous, written: Config | None = None) -> list[str]:
    """The change from the step before, computed from the configs that ran, with the config's `change:` text beside
    it; flagged when the run is not its step's file (`written`) as written at a key that change is about."""
    said = f"its `change:` says: {cfg.change}" if cfg.change else "its config has no `change:` text"
    if previous is None:
        lines = [f"Change from the step before: not computed (no run of the step before in this folder); {said}."]
        touched = None  # every key the run sets over its file may be what `change:` is about
    else:
        ran = _changes(previous[0], cfg)
        what = _code(ran) if ran else "none (the two configs train alike)"
        lines = [f"Change from the step before ({previous[0].name}), as run: {what}; {said}."]
        touched = {line.split(": ", 1)[0] for line in ran}
        if unsaid := _values_not_run(cfg.change, ran):
            lines.append(f"**`change:` may not describe this run**: it names {unsaid}, which no changed setting has.")
    if written is not None and (overridden := _changes(written, cfg)):
        if touched is None or touched & {line.split(": ", 1)[0] for line in overridden}:
            lines.append(
                f"**`change:` may not describe this run**: it sets {_code(overridden)} over its step's file, "
                "which `change:` describes."
            )
        else:
            lines.append(f"Set over its step's file: {_code(overridden)}; `change:` still describes the change.")
    return lines + [""]


def _header(cfg: Config, title: str, previous: Previous, written: Config | None, status: str, note: str) -> list[str]:
    t = cfg.target
    lines = [f"# {title}", "", *change_lines(cfg, previous, written), "## Target", ""]
    if cfg.reason:
        lines += [cfg.reason, ""]
    lines += [
        f"- test accuracy >= {t.test_acc}% in each of the last {t.consistent_epochs} epochs",
        f"- fewer than {t.max_params:,} parameters",
        f"- at most {t.max_epochs} epochs",
    ]
    if t.no_fc:
        lines.append("- no fully connected layer")
    if cfg.expect:
        against = f" ({previous[0].name})" if previous else " (not checked: no run of it in this folder)"
        lines += ["", f"Expected against the step before{against}:", ""]
        lines += [f"- {item}: {EXPECTATIONS[item]}" for item in cfg.expect]
    lines.append("")
    return lines + ([f"**Run {status}**: {note}", ""] if status != "completed" else [])


def _difference_cell(d) -> str:
    return f"{d.change}: {d.label} (noise ±{d.threshold:.2f})"


def comparison_lines(c: Comparison, target_acc: float, checks: bool = True, unchecked: str = "") -> list[str]:
    """The sentence, the before/after table and (for a step's own `expect:`) each expectation checked, or, with
    `unchecked`, why they are not."""
    b, a = c.before, c.after
    lines = [
        c.sentence,
        "",
        f"| | {c.before_name} | {c.after_name} | difference |",
        "|---|---:|---:|---|",
        f"| params | {b.params:,} | {a.params:,} | {a.params - b.params:+,} |",
        f"| best train_acc | {b.best_train_acc.text()} | {a.best_train_acc.text()} | {_difference_cell(c.train)} |",
        f"| best test_acc | {b.best_test_acc.text()} | {a.best_test_acc.text()} | {_difference_cell(c.test)} |",
        f"| final gap | {b.gap.text(sign=True)} | {a.gap.text(sign=True)} | {_difference_cell(c.gap)} |",
        f"| first reached {target_acc}% | {first_target_text(b)} | {first_target_text(a)} | |",
        f"| verdict | {b.verdict} | {a.verdict} | |",
        "",
    ]
    if checks and unchecked and c.checks:
        lines += [f"Expectations (`expect:`) not checked: {unchecked}.", ""]
    elif checks and c.checks:
        lines += ["Expectations (`expect:`):", ""]
        lines += [f"- {check.item}: {STATUS[check.status]}: {check.sentence}" for check in c.checks]
        lines.append("")
    return lines + [NOISE_NOTE, ""]


def _analysis(
    cfg: Config,
    outcomes: dict[int, Outcome],
    rows: dict[int, list[dict]],
    status: str,
    previous: Previous,
    planned: int,
) -> list[str]:
    """Verdict and advice, what the curves say, and the step before; a diverged run gets none of them, a run shorter
    than `planned` a provisional verdict and its expectations unchecked."""
    if status == "diverged":  # the gap of a diverged run says nothing about fitting
        return ["- Verdict: **diverged**: the loss became NaN or infinite; lower the learning rate.", ""]
    fewest = min(o.epochs for o in outcomes.values())
    short = f"{fewest} of {planned} epochs" if fewest < planned else ""  # a seed ran fewer than planned
    stats = aggregate(cfg, outcomes)
    reason = verdict_reason(stats, cfg.target.test_acc)
    if short:
        lines = [
            f"- Verdict after {short}, provisional: **{stats.verdict}**: {reason}; the run is too short for a final "
            "verdict.",
            "- Next: let it train every planned epoch (`--resume` continues a stopped run), then read it again.",
        ]
    else:
        lines = [f"- Verdict: **{stats.verdict}**: {reason}.", "- Next:", *(f"  - {tip}" for tip in advice(cfg, stats))]
    lines.append("")
    if rows:
        # Each diagnostic once, with the seeds it fired on and the first such seed's sentence.
        fired: dict[str, list] = {}
        for seed, seed_rows in rows.items():
            for d in diagnose(seed_rows, cfg, planned):
                fired.setdefault(d.name, []).append((seed, d))
        lines += ["### What the curves say", ""]
        if not fired:
            lines.append("- Nothing stands out: the test accuracy neither still rises, nor bounces, nor turns over.")
        for name in sorted(fired, key=DIAGNOSTIC_NAMES.index):
            hits = fired[name]
            if len(rows) == 1:
                where = ""
            elif len(hits) == 1:
                where = f" (seed {hits[0][0]} of {len(rows)})"
            else:
                where = (
                    f" (seeds {', '.join(str(seed) for seed, _ in hits)} of {len(rows)}; seed {hits[0][0]}'s numbers)"
                )
            lines.append(f"- **{name}**{where}: {hits[0][1].sentence}")
        lines.append("")
    if previous:
        unchecked = f"this run has {short}, so it does not show what the change does" if short else ""
        lines += [f"### Against the step before: {previous[0].name}", ""]
        lines += comparison_lines(compare_steps(*previous, cfg, outcomes), cfg.target.test_acc, unchecked=unchecked)
    return lines


def run_markdown(
    cfg: Config,
    outcome: Outcome | None,
    rows: list[dict],
    status: str,
    note: str = "",
    misclassified: bool = False,
    previous: Previous = None,
    written: Config | None = None,
) -> str:
    """analysis.md of one run: `rows` are its metrics rows, `previous` the step before (Config, seed -> Outcome),
    `written` its step's config file as written (before --set, --epochs), when known."""
    lines = _header(cfg, cfg.name, previous, written, status, note)
    planned = (written or cfg).train.epochs
    if outcome is None:
        lines += ["No epoch finished, so there are no results to analyse.", ""]
        return "\n".join(lines)
    o, t = outcome, cfg.target
    lines += [
        "## Results",
        "",
        f"- Parameters: {o.params:,}",
        f"- Epochs run: {o.epochs} of {planned}",
        f"- Best train accuracy: {o.best_train_acc:.2f}%",
        f"- Best test accuracy: {o.best_test_acc:.2f}% (epoch {o.best_test_epoch})",
        f"- Final train / test accuracy: {o.final_train_acc:.2f}% / {o.final_test_acc:.2f}% (gap {o.gap:+.2f} points)",
    ]
    if o.first_target_epoch is None:
        lines.append(f"- The test accuracy never reached {t.test_acc}%.")
    else:
        held = "and held it" if o.consistent else "but did not hold it"
        lines.append(
            f"- The test accuracy first reached {t.test_acc}% in epoch {o.first_target_epoch}, "
            f"{held} over the last {t.consistent_epochs} epochs."
        )
    lines += [f"- {name}: {_yes(ok)}" for name, ok in o.targets.items()]
    lines += [f"- All targets: {_yes(o.all_met)}", "", "## Analysis", ""]
    lines += _analysis(cfg, {cfg.train.seed: o}, {cfg.train.seed: rows} if rows else {}, status, previous, planned)
    if misclassified:
        lines += ["## Misclassified test images", "", "![misclassified](misclassified.png)", ""]
    lines += ["![curves](curves.png)", ""]
    return "\n".join(lines)


def step_markdown(
    cfg: Config,
    outcomes: dict[int, Outcome],
    rows: dict[int, list[dict]] | None = None,
    previous: Previous = None,
    status: str = "completed",
    written: Config | None = None,
) -> str:
    """The step's analysis.md over several seeds: per-seed table, mean ± sd, verdict, curves, the step before."""
    t = cfg.target
    lines = _header(cfg, f"{cfg.name}: {len(outcomes)} seeds", previous, written, status, "")
    planned = (written or cfg).train.epochs
    stats = aggregate(cfg, outcomes)
    lines += [
        "## Results",
        "",
        "| seed | params | final test_acc | best test_acc (epoch) | final train_acc | verdict | "
        f"test_acc, last {t.consistent_epochs} epochs | holds {t.test_acc}% over them | all targets |",
        "|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for seed, o in outcomes.items():
        lines.append(
            f"| {seed} | {o.params:,} | {o.final_test_acc:.2f} | {o.best_test_acc:.2f} ({o.best_test_epoch}) "
            f"| {o.final_train_acc:.2f} | {o.verdict} | {' / '.join(f'{a:.2f}' for a in o.last_test_accs)} "
            f"| {_yes(o.consistent)} | {_yes(o.all_met)} |"
        )
    lines += [
        f"| mean ± sd | | {stats.final_test_acc.mean:.2f} ± {stats.final_test_acc.sd:.2f} | "
        f"{stats.best_test_acc.mean:.2f} ± {stats.best_test_acc.sd:.2f} | | | | | |",
        "",
        f"All seeds meet every target: {_yes(stats.all_met == stats.n)}",
        "",
        f"| over {stats.n} seeds | mean ± sd |",
        "|---|---:|",
        f"| best train_acc | {stats.best_train_acc.mean:.2f} ± {stats.best_train_acc.sd:.2f} |",
        f"| final train_acc | {stats.final_train_acc.mean:.2f} ± {stats.final_train_acc.sd:.2f} |",
        f"| final gap | {stats.gap.mean:+.2f} ± {stats.gap.sd:.2f} |",
        f"| first reached {t.test_acc}% | {first_target_text(stats)} |",
        "",
        "## Analysis",
        "",
    ]
    lines += _analysis(cfg, outcomes, rows or {}, status, previous, planned)
    lines += ["Each seed's own analysis, curves and misclassified images are in `seed_<n>/`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- run-all and compare


def _vs_cell(c: Comparison) -> str:
    """Differences against the step before; bold where they exceed seed noise."""
    cells = [(f"{name} {d.change}", d.direction) for name, d in (("train", c.train), ("test", c.test), ("gap", c.gap))]
    return ", ".join(f"**{cell}**" if beyond_noise else cell for cell, beyond_noise in cells)


def _targets_cell(outcomes: dict[int, Outcome]) -> str:
    """'3/4' targets met by one seed, '2/3 seeds' meeting every target with several; ✔ when all are met."""
    runs = list(outcomes.values())
    if len(runs) == 1:
        met = f"{sum(runs[0].targets.values())}/{len(runs[0].targets)}"
    else:
        met = f"{sum(o.all_met for o in runs)}/{len(runs)} seeds"
    return met + (" ✔" if all(o.all_met for o in runs) else "")


def progression_markdown(entries: list[tuple[Config, dict[int, Outcome] | None, str]]) -> str:
    """progression.md for run-all. Each entry: (config, {seed: Outcome} or None, status)."""
    lines = [
        "# Progression",
        "",
        "| step | change | params | best train_acc | best test_acc | final gap | verdict | targets met | "
        "vs step before |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    notes, before = [], None  # before: the previous step's (config, seed -> Outcome) when it is comparable
    for i, (cfg, outcomes, status) in enumerate(entries):
        notes += [f"### {cfg.name}", ""] + ([f"Why: {cfg.reason}", ""] if cfg.reason else [])
        if not outcomes:
            lines.append(f"| {cfg.name} | {cfg.change} | | | | | {status} | | |")
            notes += [f"No results ({status}).", ""]
            before = None
            continue
        s = aggregate(cfg, outcomes)
        verdict_text = {"completed": s.verdict, "diverged": "diverged"}.get(status, f"{s.verdict} ({status})")
        c = compare_steps(*before, cfg, outcomes) if before and status != "diverged" else None
        lines.append(
            f"| {cfg.name} | {cfg.change} | {s.params:,} | {s.best_train_acc.text()} | "
            f"{s.best_test_acc.text()} | {s.gap.text(sign=True)} | {verdict_text} | "
            f"{_targets_cell(outcomes)} | {_vs_cell(c) if c else ''} |"
        )
        if status == "diverged":
            notes += ["The run diverged, so there is nothing to compare.", ""]
        elif c is None:
            notes += [
                "The step before has no results to compare with." if i else "The first step: nothing to compare with.",
                "",
            ]
        else:
            notes += [f"What it did: {c.sentence}", ""]
            notes += [f"- {check.item}: {STATUS[check.status]}: {check.sentence}" for check in c.checks]
            notes += [""] if c.checks else []
        before = None if status == "diverged" else (cfg, outcomes)
    lines += [
        "",
        "Bold in *vs step before*: beyond seed noise. " + NOISE_NOTE,
        "",
        "![progression](progression.png)",
        "",
        "## What each step did",
        "",
        *notes,
    ]
    return "\n".join(lines)


_ABSENT = object()  # a key only some of the compared configs have (a longer block list)


def _value(value) -> str:
    if value is _ABSENT:
        return "—"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def compare_markdown(runs: list[tuple[str, Config, dict[int, Outcome]]]) -> str:
    """`mnist-drill compare`: the config keys that differ between the runs (descriptive keys aside), their
    results side by side, and each later run against the first. runs: (label, config, seed -> Outcome)."""
    labels = [label for label, _, _ in runs]
    flat = [
        {k: v for k, v in flatten(to_dict(cfg)).items() if k.split(".")[0] not in DESCRIPTIVE_KEYS}
        for _, cfg, _ in runs
    ]
    keys = [k for k in dict.fromkeys(k for f in flat for k in f) if len({repr(f.get(k, _ABSENT)) for f in flat}) > 1]
    lines = [f"# Compare: {', '.join(labels)}", "", "## Config keys that differ", ""]
    if keys:
        lines += [f"| key | {' | '.join(labels)} |", "|---|" + "---|" * len(runs)]
        lines += [f"| {k} | " + " | ".join(_value(f.get(k, _ABSENT)) for f in flat) + " |" for k in keys]
    else:
        lines.append("None: the runs train the same config.")
    target = runs[0][1].target.test_acc
    stats = [aggregate(cfg, outcomes) for _, cfg, outcomes in runs]
    rows = {
        "seeds": [", ".join(str(seed) for seed in s.seeds) for s in stats],
        "params": [f"{s.params:,}" for s in stats],
        "best train_acc": [s.best_train_acc.text() for s in stats],
        "best test_acc": [s.best_test_acc.text() for s in stats],
        "final test_acc": [s.final_test_acc.text() for s in stats],
        "final gap": [s.gap.text(sign=True) for s in stats],
        f"first reached {target}%": [first_target_text(s) for s in stats],
        "verdict": [s.verdict for s in stats],
        "all targets met": [f"{s.all_met}/{s.n} seeds" for s in stats],
    }
    lines += ["", "## Results", "", f"| | {' | '.join(labels)} |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    first_label, first_cfg, first_outcomes = runs[0]
    for label, cfg, outcomes in runs[1:]:
        c = compare_steps(first_cfg, first_outcomes, cfg, outcomes, subject=label, before_name=first_label)
        lines += ["", f"## {label} against {first_label}", "", *comparison_lines(c, target, checks=False)]
    return "\n".join(lines) + "\n"
