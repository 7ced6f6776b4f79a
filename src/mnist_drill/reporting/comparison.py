"""A step against the step before it: each difference a gain, a loss or within seed noise (the rule in
docs/analysis.md), the step's `expect:` items checked, and one sentence that says what the change did."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config.schema import Config
from ..reporting.analysis import NOISE_Z, Outcome, Stat, StepStats, aggregate, features

NOISE = "within seed noise"


@dataclass(frozen=True)
class Difference:
    noun: str  # what is compared, e.g. "test accuracy"
    before: float  # mean
    after: float
    threshold: float  # NOISE_Z × the combined standard error, points
    direction: int  # +1 up (or wider, for a size), -1 down (narrower), 0 within seed noise
    label: str  # gain | loss | within seed noise

    @property
    def values(self) -> str:
        """'99.10 → 99.40'; the gap's signed, '+0.30 → -0.10'."""
        digits = "+.2f" if self.noun == "gap" else ".2f"
        return f"{self.before:{digits}} → {self.after:{digits}}"

    @property
    def change(self) -> str:
        """'+0.30'; the gap's is of its size, 'size -0.20'."""
        if self.noun == "gap":
            return f"size {abs(self.after) - abs(self.before):+.2f}"
        return f"{self.after - self.before:+.2f}"


def difference(noun: str, before: Stat, after: Stat, size: bool = False) -> Difference:
    """Label after - before by the noise rule; with size=True, compare |mean| and call narrower the gain."""
    threshold = NOISE_Z * math.hypot(before.se, after.se)
    change = abs(after.mean) - abs(before.mean) if size else after.mean - before.mean
    direction = 0 if abs(change) <= threshold else (1 if change > 0 else -1)
    label = NOISE if direction == 0 else ("gain" if (direction > 0) != size else "loss")
    return Difference(noun, before.mean, after.mean, threshold, direction, label)


@dataclass(frozen=True)
class Check:
    item: str  # an `expect:` item
    status: str  # met | not met | within noise
    sentence: str  # the numbers, and what they say about the expectation


@dataclass(frozen=True)
class Comparison:
    before_name: str
    after_name: str
    before: StepStats
    after: StepStats
    train: Difference  # best train accuracy
    test: Difference  # best test accuracy
    gap: Difference  # final train - test gap, judged by its size
    checks: tuple[Check, ...]  # one per `expect:` item of the later step
    sentence: str  # what the change did, in the drill's words


def _check(item: str, cfg: Config, before: StepStats, after: StepStats, diffs: dict[str, Difference]) -> Check:
    n, t = after.n, cfg.target
    if item == "params under budget":
        ok, numbers = after.params < t.max_params, f"{after.params:,} params, target fewer than {t.max_params:,}"
    elif item.startswith("params"):
        ok = after.params < before.params if item == "params fall" else after.params > before.params
        numbers = f"params {before.params:,} → {after.params:,}"
    elif item == "target reached":
        ok = after.reached == n
        numbers = f"first reached {t.test_acc}%: {first_target_text(after)}"
    elif item == "targets met":
        ok = after.all_met == n
        numbers = f"every target met on {after.all_met} of {n} seeds"
    else:
        metric, verb = item.split(" ")
        d = diffs[metric]
        numbers = f"{d.noun} {d.values} ({d.change}, noise ±{d.threshold:.2f})"
        if verb == "holds":
            ok = d.direction >= 0
        elif d.direction == 0:
            return Check(
                item,
                "within noise",
                f"{numbers}: no change beyond seed noise, so the numbers do not show "
                f"the expected effect (nor rule out one within ±{d.threshold:.2f})",
            )
        else:
            ok = d.direction == (1 if verb in ("rises", "widens") else -1)
    if ok:
        return Check(item, "met", numbers)
    return Check(item, "not met", f"{numbers}: the numbers disagree with the expectation")


def gap_moved(before: float, after: float) -> str:
    """What a change in the gap's size (train - test, beyond noise) did, as a verb phrase whose words fit its sign: a
    negative gap is test accuracy ahead of train (usual with dropout and augmentation), and its growing is no
    'widening' of an over-fit."""
    values = f"(gap {before:+.2f} → {after:+.2f})"
    b, a = round(before, 2), round(after, 2)  # the signs as printed: +0.00 is no lead either way
    if a < 0 < b or b < 0 < a:
        return f"let {'test accuracy overtake train' if a < 0 else 'train accuracy overtake test'} {values}"
    if a < 0 or b < 0:
        if abs(a) < abs(b):
            return f"shrank test accuracy's lead over train {values}"
        return f"let test accuracy run {'ahead' if b == 0 else 'further ahead'} of train {values}"
    return f"{'widened' if abs(a) > abs(b) else 'narrowed'} the gap {before:+.2f} → {after:+.2f}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _cause(before_cfg: Config, cfg: Config, before: StepStats, after: StepStats) -> str:
    """What kind of change this is, for the reading: capacity | regularisation | smaller | other."""
    had, has = features(before_cfg), features(cfg)
    if has.dropout > had.dropout or (cfg.augment.enabled and not before_cfg.augment.enabled):
        return "regularisation"
    if after.params > before.params or (has.bn and not had.bn):
        return "capacity"
    return "smaller" if after.params < before.params else "other"


def _reading(train: int, test: int, gap: int, cause: str) -> str:
    """The drill's reading of which way train accuracy, test accuracy and the gap's size moved (+1, -1, 0)."""
    if train > 0:
        fit = "more capacity" if cause == "capacity" else "a better fit of the training set"
        if gap > 0:
            return f"{fit}, more over-fitting"
        return f"{fit}, and the test set gains from it" if test > 0 else f"{fit}, not (yet) seen on the test set"
    if train < 0:  # each pair: (the reading of a regularisation, of any other change)
        if test < 0:
            pair = ("too much regularisation: both sets fit worse", "less capacity: the model now fits both sets worse")
        elif test > 0:
            pair = ("harder training, better generalisation", "a looser fit, better generalisation")
        elif gap < 0:
            pair = (
                "regularisation at work: a harder fit and a smaller gap at no measurable test cost",
                "less capacity to memorise: a smaller gap at no measurable test cost",
            )
        else:
            pair = (
                "harder training data, at no measurable test cost",
                "less capacity to fit the training set, at no measurable test cost",
            )
        return pair[cause != "regularisation"]
    if test:
        return "better generalisation at the same fit" if test > 0 else "worse generalisation at the same fit"
    if gap:
        return "a smaller gap at the same accuracies" if gap < 0 else "a wider gap at the same accuracies"
    if cause == "smaller":
        return "the same accuracy for fewer parameters"
    return "on these seeds the change does not measurably matter"


def _target_news(before_name: str, before: StepStats, after: StepStats, target_acc: float) -> str:
    """A second sentence when the step meets every target, or reaches the target accuracy, more often than the
    step before."""

    def share(count: int, stats: StepStats) -> str:
        return "" if stats.n == 1 else f" on {count} of {stats.n} seeds"

    if after.all_met and after.all_met / after.n > before.all_met / before.n:
        return f" It meets every target{share(after.all_met, after)}; {before_name} did" + (
            " not." if not before.all_met else f"{share(before.all_met, before)}."
        )
    if after.reached and after.reached / after.n > before.reached / before.n:
        return (
            f" Its test accuracy reaches {target_acc}%{share(after.reached, after)} "
            f"({first_target_text(after)}; {before_name}: {first_target_text(before)})."
        )
    return ""


def compare_steps(
    before_cfg: Config,
    before_outcomes: dict[int, Outcome],
    cfg: Config,
    outcomes: dict[int, Outcome],
    subject: str | None = None,
    before_name: str | None = None,
) -> Comparison:
    """The step (cfg, outcomes: seed -> Outcome) against the one before it. The sentence names the steps by
    their config names unless `subject` / `before_name` say otherwise (compare labels runs by folder)."""
    before, after = aggregate(before_cfg, before_outcomes), aggregate(cfg, outcomes)
    before_name, after_name = before_name or before_cfg.name, subject or cfg.name
    train = difference("train accuracy", before.best_train_acc, after.best_train_acc)
    test = difference("test accuracy", before.best_test_acc, after.best_test_acc)
    gap = difference("gap", before.gap, after.gap, size=True)
    checks = tuple(
        _check(item, cfg, before, after, {"train_acc": train, "test_acc": test, "gap": gap}) for item in cfg.expect
    )
    did, kept = [], []
    if after.params < before.params:
        did.append(f"cut the parameters {before.params:,} → {after.params:,}")
    elif after.params > before.params:
        did.append(f"added {after.params - before.params:,} parameters ({before.params:,} → {after.params:,})")
    for d in (train, test, gap):
        if d.direction == 0:
            kept.append(f"{'the gap' if d.noun == 'gap' else d.noun} ({d.values})")
        elif d.noun == "gap":
            did.append(gap_moved(d.before, d.after))
        else:
            did.append(f"{'raised' if d.direction > 0 else 'lowered'} {d.noun} {d.values}")
    if did:
        text = _join(did) + (f", while {_join(kept)} stayed within seed noise" if kept else "")
    else:
        text = f"left {_join(kept)} within seed noise"
    reading = _reading(train.direction, test.direction, gap.direction, _cause(before_cfg, cfg, before, after))
    news = _target_news(before_name, before, after, cfg.target.test_acc)
    sentence = f"{after_name} {text}: {reading}.{news}"
    return Comparison(before_name, after_name, before, after, train, test, gap, checks, sentence)


def first_target_text(stats: StepStats) -> str:
    """'epoch 10', '10.3 ± 0.6 (3 of 3 seeds)' or 'never'."""
    s: Stat | None = stats.first_target_epoch
    if s is None:
        return "never"
    if stats.n == 1 or s.n == 1:  # one seed reached it: its epoch is a whole number
        return f"epoch {s.mean:.0f}" + ("" if stats.n == 1 else f" ({stats.reached} of {stats.n} seeds)")
    return f"epoch {s.text(1)} ({stats.reached} of {stats.n} seeds)"
