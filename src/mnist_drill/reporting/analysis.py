"""What a step's runs say, read the way the drill reads them (docs/analysis.md states the rules): targets, verdict,
advice that fits the step, and the seeds of a step aggregated into mean ± sd with a binomial noise floor."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..config.blocks import has_fc, with_model_defaults
from ..config.schema import Config

GAP_TOLERANCE = 0.3  # percentage points of train-minus-test accuracy still called healthy
NOISE_Z = 2.0  # a difference beyond this many combined standard errors is a gain or a loss
MNIST_TRAIN_IMAGES, MNIST_TEST_IMAGES = 60_000, 10_000  # what train_acc / test_acc are measured on by default
HEADROOM_FOR_CAPACITY = 0.05  # of target.max_params: less headroom than this is no room to add capacity


@dataclass(frozen=True)
class Outcome:
    params: int
    epochs: int
    best_train_acc: float
    best_test_acc: float
    best_test_epoch: int
    final_train_acc: float
    final_test_acc: float
    gap: float  # final train_acc - test_acc, percentage points
    verdict: str  # over-fitting | under-fitting | healthy
    first_target_epoch: int | None
    consistent: bool  # test_acc >= target in each of the last N epochs
    last_test_accs: tuple[float, ...]  # test_acc in each of those last N epochs, oldest first
    targets: dict[str, bool]  # target name -> met

    @property
    def all_met(self) -> bool:
        return all(self.targets.values())


def verdict(train_acc: float, test_acc: float, target_acc: float, target_held: bool = False) -> str:
    """A run that holds the target fits well enough, however low its train accuracy reads: dropout and augmentation
    make the training batches harder than the test set. So a run that meets every target is never told to add
    capacity."""
    if round(train_acc - test_acc, 6) > GAP_TOLERANCE:  # 99.9 - 99.6 is 0.30000000000001 in floats
        return "over-fitting"
    if train_acc < target_acc and not target_held:
        return "under-fitting"
    return "healthy"


def assess(rows: list[dict], cfg: Config, params: int, has_fc: bool) -> Outcome:
    """Read a finished (or partial) run's metrics rows against the config's target."""
    t = cfg.target
    last = rows[-1]
    best = max(rows, key=lambda r: (r["test_acc"], -r["epoch"]))
    reached = [r["epoch"] for r in rows if r["test_acc"] >= t.test_acc]
    tail = rows[-t.consistent_epochs :]
    consistent = len(tail) == t.consistent_epochs and all(r["test_acc"] >= t.test_acc for r in tail)
    targets = {
        f"test_acc >= {t.test_acc}% in each of the last {t.consistent_epochs} epochs": consistent,
        f"params < {t.max_params:,}": params < t.max_params,
        f"epochs <= {t.max_epochs}": len(rows) <= t.max_epochs,
    }
    if t.no_fc:
        targets["no fully connected layer"] = not has_fc
    return Outcome(
        params=params,
        epochs=len(rows),
        best_train_acc=max(r["train_acc"] for r in rows),
        best_test_acc=best["test_acc"],
        best_test_epoch=best["epoch"],
        final_train_acc=last["train_acc"],
        final_test_acc=last["test_acc"],
        gap=last["train_acc"] - last["test_acc"],
        verdict=verdict(last["train_acc"], last["test_acc"], t.test_acc, consistent),
        first_target_epoch=reached[0] if reached else None,
        consistent=consistent,
        last_test_accs=tuple(r["test_acc"] for r in tail),
        targets=targets,
    )


# ---------------------------------------------------------------- seeds: mean ± sd with a noise floor


def binomial_se(acc: float, images: int) -> float:
    """Standard error, in points, of an accuracy (percent) measured on `images` images."""
    p = min(max(acc / 100, 0.0), 1.0)
    return 100 * math.sqrt(p * (1 - p) / images)


@dataclass(frozen=True)
class Stat:
    """One number of a step over its seeds."""

    mean: float
    sd: float  # standard deviation over the seeds; 0 with one seed
    n: int  # seeds
    floor: float  # binomial standard error of one measurement (0: exact, e.g. an epoch number)

    @property
    def se(self) -> float:
        """Standard error of the mean: the spread (sd, at least the floor) over sqrt(seeds)."""
        return max(self.sd, self.floor) / math.sqrt(self.n)

    def text(self, digits: int = 2, sign: bool = False) -> str:
        value = f"{self.mean:+.{digits}f}" if sign else f"{self.mean:.{digits}f}"
        return value if self.n == 1 else f"{value} ± {self.sd:.{digits}f}"


def stat(values: list[float], floor: float = 0.0) -> Stat:
    return Stat(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values), floor)


@dataclass(frozen=True)
class StepStats:
    """A step's Outcomes over its seeds."""

    seeds: tuple[int, ...]
    params: int
    best_train_acc: Stat
    best_test_acc: Stat
    final_train_acc: Stat
    final_test_acc: Stat
    gap: Stat  # final train - test accuracy
    first_target_epoch: Stat | None  # over the seeds that reached the target; None when none did
    reached: int  # seeds whose test accuracy reached the target in some epoch
    held: int  # seeds that hold it over the last consistent_epochs epochs
    all_met: int  # seeds that meet every target
    verdict: str  # of the mean final accuracies, the target held only if every seed holds it

    @property
    def n(self) -> int:
        return len(self.seeds)


def aggregate(cfg: Config, outcomes: dict[int, Outcome]) -> StepStats:
    """Mean ± sd over seeds; each accuracy's noise floor is the binomial error on the images it is measured on."""
    runs = list(outcomes.values())
    train_n = cfg.data.train_subset or MNIST_TRAIN_IMAGES
    test_n = cfg.data.test_subset or MNIST_TEST_IMAGES

    def acc(field: str, images: int) -> Stat:
        values = [getattr(o, field) for o in runs]
        return stat(values, binomial_se(statistics.mean(values), images))

    final_train, final_test = acc("final_train_acc", train_n), acc("final_test_acc", test_n)
    gap_floor = math.hypot(final_train.floor, final_test.floor)
    reached = [o.first_target_epoch for o in runs if o.first_target_epoch is not None]
    held = sum(o.consistent for o in runs)
    return StepStats(
        seeds=tuple(outcomes),
        params=runs[0].params,
        best_train_acc=acc("best_train_acc", train_n),
        best_test_acc=acc("best_test_acc", test_n),
        final_train_acc=final_train,
        final_test_acc=final_test,
        gap=stat([o.gap for o in runs], gap_floor),
        first_target_epoch=stat(reached) if reached else None,
        reached=len(reached),
        held=held,
        all_met=sum(o.all_met for o in runs),
        verdict=verdict(final_train.mean, final_test.mean, cfg.target.test_acc, held == len(runs)),
    )


# ---------------------------------------------------------------- advice that fits the step


@dataclass(frozen=True)
class Features:
    """What a step's blocks already have, so advice does not prescribe it again."""

    dropout: float  # the largest dropout rate of any block; 0: none
    bn: bool
    gap: bool
    fc: bool  # a fully connected layer


def features(cfg: Config) -> Features:
    blocks = [with_model_defaults(b, cfg.model) for b in cfg.model.blocks]
    return Features(
        dropout=max((getattr(b, "dropout", None) or 0.0 for b in blocks), default=0.0),
        bn=any(getattr(b, "bn", False) for b in blocks),
        gap=any(b.TYPE == "gap" for b in blocks),
        fc=has_fc(cfg.model),
    )


def verdict_reason(stats: StepStats, target_acc: float) -> str:
    """Why the verdict is what it is, with the numbers that decided it."""
    train, test, gap = stats.final_train_acc.mean, stats.final_test_acc.mean, stats.gap.mean
    if stats.verdict == "over-fitting":
        return (
            f"the final train accuracy {train:.2f} is {gap:.2f} points above the test accuracy {test:.2f} "
            f"(tolerance {GAP_TOLERANCE})"
        )
    if stats.verdict == "under-fitting":
        return (
            f"the final train accuracy {train:.2f} is below the {target_acc}% target and the test accuracy "
            f"does not hold it"
        )
    if train < target_acc:
        return (
            f"the test accuracy holds the {target_acc}% target, so a train accuracy of {train:.2f} is "
            f"training on harder batches, not a lack of capacity"
        )
    return f"train {train:.2f} and test {test:.2f} agree within {GAP_TOLERANCE} points and the training data is fitted"


def advice(cfg: Config, stats: StepStats) -> list[str]:
    """What to try next, given the verdict and what the step already has; the budget tips whatever the verdict."""
    f, t, headroom = features(cfg), cfg.target, cfg.target.max_params - stats.params
    augmented, scheduler = cfg.augment.enabled, cfg.scheduler.name
    if stats.all_met == stats.n:
        one = stats.n == 1
        tips = [
            (True, f"Every target is met{'' if one else ' on every seed'}: nothing needs fixing."),
            (one, "Check that it holds on other seeds (`--seeds 1,2,3`) before calling the step done."),
            (
                stats.verdict == "over-fitting",
                "The gap is above tolerance: a little more regularisation would make it robust.",
            ),
        ]
        return [tip for applies, tip in tips if applies]
    over, under = stats.verdict == "over-fitting", stats.verdict == "under-fitting"
    unheld = stats.verdict == "healthy" and stats.held < stats.n
    room = headroom >= HEADROOM_FOR_CAPACITY * t.max_params
    cut = (
        "fewer channels where the maps are large"
        if f.gap
        else "GAP and a 1x1 head instead of a large output kernel or a fully connected layer"
    )
    tips = [
        (over and f.dropout, f"Dropout ({f.dropout:g}) is already on: raise it a little, or regularise another way."),
        (over and not f.dropout, "Add a small dropout (0.01-0.05) after every conv."),
        (
            over and augmented,
            "Augmentation is already on: a little stronger (e.g. a few more degrees) is the next lever.",
        ),
        (
            over and not augmented,
            "Add augmentation (a random rotation of 5-7°): harder training data, no extra parameters.",
        ),
        (under and not f.bn, "Add BatchNorm after every conv: more effective capacity for a few parameters."),
        (
            under and room,
            f"Add capacity: {headroom:,} parameters of headroom under the budget could go into "
            f"channels after the transition{' or a layer after GAP' if f.gap else ''}.",
        ),
        (
            under and 0 < headroom and not room,
            f"Only {headroom:,} parameters of headroom: capacity has to come from elsewhere "
            f"(BN, where the max-pool sits, the learning rate), not from more channels.",
        ),
        (under and f.dropout, f"Dropout ({f.dropout:g}) takes capacity from a small model: lower or remove it."),
        (
            under and augmented,
            "Train accuracy is measured on augmented batches, so it reads low: judge the test accuracy.",
        ),
        (under and scheduler == "none", "An LR schedule (one-cycle) trains further in the same number of epochs."),
        (
            under and cfg.train.epochs < t.max_epochs,
            f"Train for up to {t.max_epochs} epochs (this step runs {cfg.train.epochs}).",
        ),
        (unheld and not augmented, "Add augmentation (a random rotation of 5-7°) to push the test accuracy."),
        (
            unheld and scheduler == "none",
            "Add an LR schedule (one-cycle or step) so the last epochs settle on the target.",
        ),
        (
            unheld and scheduler != "none",
            "The schedule is on: look at its end LR and peak, or spend the parameter headroom.",
        ),
        (
            headroom <= 0,
            f"{stats.params:,} parameters, {-headroom:,} above the target of fewer than {t.max_params:,}: "
            f"cut them ({cut}).",
        ),
        (f.fc and t.no_fc, "The fully connected layer breaks the no-FC target: GAP and a 1x1 head replace it."),
        (
            cfg.train.epochs > t.max_epochs,
            f"Train for at most {t.max_epochs} epochs (this step runs {cfg.train.epochs}).",
        ),
    ]
    return [tip for applies, tip in tips if applies]
