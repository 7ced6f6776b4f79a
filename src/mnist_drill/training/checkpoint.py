"""Checkpoints and weights: what a run saves after every epoch and at the end, and how it is read back. Every file is
read with PyTorch's weights-only loader (tensors, numbers, strings, containers; never pickled code), so a file from
someone else cannot run anything here; one that is not ours is named in one line."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError, first_line
from ..storage.files import save_torch
from ..training.runtime import rng_state, set_rng_state

CHECKPOINT = "checkpoint.pt"  # the last finished epoch of a run in progress
WEIGHTS = "model.pt"  # the finished model's state_dict
CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng")


def save_checkpoint(run_dir: Path, epoch: int, model: nn.Module, optimizer, scheduler, device: torch.device) -> None:
    scheduler_state = scheduler.state_dict() if scheduler is not None else None
    parts = (epoch, model.state_dict(), optimizer.state_dict(), scheduler_state, rng_state(device))
    save_torch(run_dir / CHECKPOINT, dict(zip(CHECKPOINT_KEYS, parts)))


def load_checkpoint(run_dir: Path, model: nn.Module, optimizer, scheduler, device: torch.device) -> int:
    """Restore model, optimizer, scheduler and RNG from the run's checkpoint; returns its epoch. Read onto the
    CPU whatever the device: torch.set_rng_state takes CPU tensors only, and load_state_dict moves the rest."""
    path = run_dir / CHECKPOINT
    ckpt = read_tensors(path, torch.device("cpu"))
    ours = isinstance(ckpt, dict) and set(ckpt) == set(CHECKPOINT_KEYS) and type(ckpt["epoch"]) is int
    if not ours or ckpt["epoch"] < 1:
        raise UsageError(f"{path}: not a mnist-drill checkpoint; remove it (or pass --overwrite) to start afresh")
    try:
        load_state(model, ckpt["model"], path)
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"], device)
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as err:
        raise UsageError(
            f"{path}: does not fit this config's optimizer or scheduler ({first_line(err)}); "
            "pass --overwrite to start afresh"
        ) from None
    return ckpt["epoch"]


def save_weights(run_dir: Path, model: nn.Module) -> None:
    save_torch(run_dir / WEIGHTS, model.state_dict())


def load_weights(path: Path, model: nn.Module, device: torch.device | None = None) -> nn.Module:
    """Load a state_dict file (a run's model.pt) into `model`; names the file when it does not fit."""
    state = read_tensors(path, device or torch.device("cpu"))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path}: not a state_dict of tensors (a model.pt written by mnist-drill)")
    load_state(model, state, path)
    return model


def load_state(model: nn.Module, state: dict, path: Path) -> None:
    """model.load_state_dict(state), with a one-line error that says how the tensors differ."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    differences = [
        f"{what} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    differences += [
        f"shape {k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in ours.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ][:1]
    if differences:
        raise UsageError(
            f"{path}: its weights do not fit the config's model ({'; '.join(differences)}); "
            "is it from another architecture?"
        )
    model.load_state_dict(state)


def read_tensors(path: Path, device: torch.device):
    """torch.load(weights_only=True) with every failure turned into one line naming the file."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message is a page of advice with terminal escapes; the user needs the verdict.
        raise UsageError(
            f"{path}: refused: loading it would run code or build objects that are not plain "
            "tensors and numbers (mnist-drill reads weights-only; is the file from someone else?)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise UsageError(
            f"{path}: damaged or not a PyTorch file ({first_line(err)[:100]}); "
            "remove it, or pass --overwrite to start the run afresh"
        ) from None
