"""Safe model files: one file holding a model's config and weights, loaded without running code.

A scan model file is ``torch.save`` of a dict of plain data and tensors::

    {"format": "scan-model", "format_version": 1, "config": {...}, "state_dict": {...}}

An inference-only file (``save_model(..., inference=True)``) holds the generators of one direction or
both and no discriminators, and says so: ``"format_version": 2, "inference": {"directions": [...]}``
(a scan too old to know the entry refuses the file as "written by a newer scan").

It is always read back with ``torch.load(weights_only=True)``, whose unpickler only rebuilds tensors
and plain containers: a file crafted to run code on load is refused instead of executed. Lightning
checkpoints written by :mod:`scan.training` carry the same ``config`` entry and load here too.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scan.config import SCANConfig
from scan.errors import UserError
from scan.model import DIRECTIONS, GENERATOR_NAMES, SCAN, Direction, MissingPartError, count_parameters
from scan.outputs import atomic_write_bytes

__all__ = ["CheckpointError", "save_model", "load_model", "read_checkpoint", "atomic_save", "inference_directions"]

FORMAT = "scan-model"
FORMAT_VERSION = 1
INFERENCE_FORMAT_VERSION = 2  # the first that may carry an "inference" entry


class CheckpointError(UserError, RuntimeError):
    """A file is not a loadable scan model (unsafe, corrupt, foreign or mismatched)."""


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` through :func:`scan.outputs.atomic_write_bytes`: a crash or kill mid-write leaves
    the previous file intact, never a truncated one, and a full disk is an :class:`OutputError`."""
    return atomic_write_bytes(path, lambda buffer: torch.save(obj, buffer))


def save_model(model: SCAN, path: str | os.PathLike[str], inference: bool = False,
               directions: Sequence[Direction] | None = None) -> Path:
    """Write ``model``'s config and weights to one file (atomically).

    Args:
        model: the model to save.
        path: destination, conventionally ``*.pt``.
        inference: keep only what translating needs: the generators (every stage and fusion block)
            of ``directions``, no discriminators. Such a file translates exactly as the full one does
            (the same weights) and is refused for training.
        directions: with ``inference``, the directions to keep (default: every one the model holds).

    Returns:
        The path written.

    Example:
        >>> import scan, tempfile, pathlib
        >>> model = scan.create_model("tiny")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     small = save_model(model, pathlib.Path(tmp) / "a2b.pt", inference=True, directions=["a2b"])
        ...     scan.load_model(small).directions
        ('a2b',)
    """
    if directions is not None and not inference:
        raise ValueError("directions= chooses what an inference-only file keeps: pass inference=True too")
    kept = tuple(model.directions if directions is None else directions)
    if not kept or any(d not in DIRECTIONS for d in kept):
        raise ValueError(f"directions must be some of {DIRECTIONS}, got {tuple(directions or ())}")
    for direction in kept:
        model.generator(direction)  # MissingPartError where an inference-only model lacks it
    prefixes = tuple(f"{GENERATOR_NAMES[d]}." for d in kept)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if not inference or k.startswith(prefixes)}
    if not inference and not model.trainable:
        inference = True  # an inference-only model saved as it is stays marked so
    entry: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
                             "state_dict": state}
    if inference:
        entry.update(format_version=INFERENCE_FORMAT_VERSION, inference={"directions": list(kept)})
    return atomic_save(entry, path)


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file's dict with ``weights_only=True``; never executes code from it.

    Raises:
        CheckpointError: missing, unreadable, or holding objects other than tensors and plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {'a folder, not a' if path.is_dir() else 'no such'} checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickling_detail(str(e))
        if "GLOBAL" in detail or "global" in detail:
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects other than tensors and plain data, which "
                f"could run code on load ({detail})"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail})") from None
    except Exception as e:  # zip/pickle corruption surfaces as many exception types
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a scan model (holds a {type(data).__name__}, not a dict)")
    return data


def _unpickling_detail(message: str) -> str:
    """The one informative line of torch's long weights_only error."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    useful = [
        line
        for line in lines
        if not line.startswith(("Weights only load failed", "Check the documentation", "Please file an issue"))
    ]
    return useful[-1] if useful else (lines[0] if lines else "unpickling failed")


def _model_parts(data: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if data.get("format") == FORMAT:
        version = data.get("format_version", 0)
        if not isinstance(version, int):
            raise CheckpointError(f"{path}: format_version is a {type(version).__name__}, not an int")
        if version > INFERENCE_FORMAT_VERSION:
            raise CheckpointError(f"{path}: written by a newer scan (format {version})")
        config, state = data.get("config"), data.get("state_dict")
    elif isinstance(data.get("scan"), dict) and "state_dict" in data:  # a Lightning checkpoint of scan.training
        config, state = data["scan"].get("config"), data["state_dict"]
        if isinstance(state, dict):
            prefix = "model."
            state = {k[len(prefix) :]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
    else:
        raise CheckpointError(
            f"{path}: not a scan model (no 'format': '{FORMAT}' entry; keys: {sorted(map(str, data))[:6]}); "
            "a pytorch-CycleGAN generator loads with scan.stages.load_cyclegan_generator"
        )
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: no model config (its 'config' entry is {type(config).__name__}, not a dict)")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no weights (its 'state_dict' is {type(state).__name__}, not a dict)")
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: weights that are not tensors: {not_tensors[:5]}")
    return config, state


def inference_directions(data: dict[str, Any], path: Path) -> tuple[Direction, ...] | None:
    """The directions an inference-only model file holds; ``None`` for a full model or checkpoint.

    Raises:
        CheckpointError: a malformed ``inference`` entry.
    """
    entry = data.get("inference") if data.get("format") == FORMAT else None
    if entry is None:
        return None
    directions = entry.get("directions") if isinstance(entry, dict) else None
    if (not isinstance(directions, list) or not directions or len(set(directions)) != len(directions)
            or any(d not in DIRECTIONS for d in directions)):
        raise CheckpointError(f"{path}: its 'inference' entry must list some of {DIRECTIONS}, got {entry!r}")
    return tuple(d for d in DIRECTIONS if d in directions)


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
               directions: Sequence[Direction] | None = None) -> SCAN:
    """Rebuild a model saved by :func:`save_model` (or a scan training checkpoint); an inference-only
    file gives an inference-only model (:attr:`SCAN.directions`, no discriminators).

    Args:
        path: the file.
        map_location: where to put the tensors.
        directions: build only these directions' generators, an inference-only model, whatever the
            file holds (what a caller that only translates needs: no discriminators are built).

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointError: the file is unsafe, corrupt, not a scan model, its config is invalid, or its
            weights do not match its config (the message names the missing, unexpected or
            mis-shaped keys).
        MissingPartError: ``directions`` that an inference-only file does not hold.
    """
    path = Path(path)
    data = read_checkpoint(path, map_location)
    config_dict, state = _model_parts(data, path)
    inference = inference_directions(data, path)
    if directions is not None:
        if not directions or any(d not in DIRECTIONS for d in directions):
            raise ValueError(f"directions must be some of {DIRECTIONS}, got {tuple(directions)}")
        dropped = [d for d in directions if inference is not None and d not in inference]
        if dropped:
            raise MissingPartError(f"{path}: an inference-only file that holds {'/'.join(inference or ())} "
                                   f"only, not {'/'.join(dropped)}")
        inference = tuple(d for d in DIRECTIONS if d in directions)
        kept = tuple(f"{GENERATOR_NAMES[d]}." for d in inference)
        state = {k: v for k, v in state.items() if k.startswith(kept)}
    try:
        config = SCANConfig.from_dict(config_dict)
        count_parameters(config, inference)  # before anything is allocated: the file may ask for terabytes
        model = SCAN(config, inference=inference)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path}: invalid model config ({e})") from None
    expected = model.state_dict()
    wrong_shape = [
        f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if wrong_shape:
        raise CheckpointError(f"{path}: weights do not match the config: wrong shape {wrong_shape[:3]}")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not match the config: missing {result.missing_keys[:5]}"
            f"{'...' if len(result.missing_keys) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
            f"{'...' if len(result.unexpected_keys) > 5 else ''}"
        )
    return model.to(map_location).eval()
