"""Fine-tuning a trained model: start from its weights (``init_from``) and choose what trains (``freeze``).

``SCANModule(init_from=PATH)`` copies a scan model file's (or a scan training checkpoint's) generators,
fusion blocks and, where the file has them, discriminators into the new module's model, read safely
(``torch.load(weights_only=True)``: no code in the file runs). The optimisers, learning-rate schedule
and image pools start fresh. The file must hold the architecture being trained (the model config but
its ``loss`` section, which is training's own); otherwise one line names the differences.

``SCANModule(freeze=[...])`` keeps parts of the model as they are, named from :data:`FREEZABLE`. Frozen
parameters are left out of every optimiser (no Adam step, no moments), never get ``requires_grad``, and
their modules run in eval mode (a spectral norm's power iteration does not move either).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from scan.checkpoint import CheckpointError, _model_parts, inference_directions, read_checkpoint
from scan.config import SCANConfig
from scan.model import SCAN
from scan.registry import create_config, list_models
from scan.stages import ResnetBlock

__all__ = ["InitFromError", "FREEZABLE", "freezable_names", "frozen_modules", "check_phases_trainable",
           "load_initial_weights"]

# The vocabulary of `freeze`: each name stands for these networks (K: a stage number, 1..N).
FREEZABLE = {
    "generators": "every stage generator and fusion block, both directions",
    "stageK": "stage K's generator in both directions and, above stage 1, its fusion blocks",
    "fusion": "every fusion block",
    "encoders": "the downsampling front of every stage generator (a ResNet's layers before its first residual "
                "block, a mobile generator's enc1-enc3), both directions",
    "discriminators": "every discriminator",
}
_DISCRIMINATORS = ("D_a.", "D_b.")
_SHOWN = 2  # keys or differences named per kind in an error line


class InitFromError(CheckpointError):
    """``init_from`` names a file that cannot start this model: missing, unreadable, or another architecture."""


def freezable_names(num_stages: int) -> list[str]:
    """The names ``freeze`` takes for a model of ``num_stages`` stages."""
    return ["generators", *(f"stage{k}" for k in range(1, num_stages + 1)), "fusion", "encoders", "discriminators"]


def _encoder(generator: nn.Module, where: str) -> list[nn.Module]:
    """The downsampling front of a stage generator of a built-in kind."""
    body = getattr(generator, "model", None)
    if isinstance(body, nn.Sequential):
        for index, layer in enumerate(body):
            if isinstance(layer, ResnetBlock):
                return list(body.children())[:index]
    fronts = [getattr(generator, name, None) for name in ("enc1", "enc2", "enc3")]
    if all(isinstance(m, nn.Module) for m in fronts):
        return fronts  # type: ignore[return-value]
    raise ValueError(f"freeze 'encoders': {where} ({type(generator).__name__}) has no encoder this name knows "
                     "(ResNet and mobile generators have); freeze whole stages (stageK) instead")


def frozen_modules(model: SCAN, names: Sequence[str]) -> list[nn.Module]:
    """The networks ``names`` stand for (see :data:`FREEZABLE`).

    Args:
        model: the model whose parts are named.
        names: e.g. ``["stage1"]``, ``["encoders", "discriminators"]``.

    Returns:
        The modules to freeze (possibly overlapping: one parameter may be in two of them).

    Raises:
        ValueError: an unknown name (the message lists the valid ones), or ``encoders`` on a
            generator kind without a known encoder.
    """
    if isinstance(names, str):  # a lone "stage1" would otherwise be read letter by letter
        names = [names]
    valid = freezable_names(model.num_stages)
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ValueError(f"freeze: unknown {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    directions = (model.G_ab, model.G_ba)
    modules: list[nn.Module] = []
    for name in names:
        if name == "generators":
            modules += directions
        elif name == "fusion":
            modules += [f for g in directions for f in g.fusions]
        elif name == "discriminators":
            modules += [*model.D_a, *model.D_b]
        elif name == "encoders":
            for g, label in zip(directions, ("G_ab", "G_ba")):
                for k, stage in enumerate(g.stages):
                    modules += _encoder(stage, f"stage {k + 1}'s generator of {label}")
        else:  # stageK
            modules += model.stage_modules(int(name[len("stage"):]))[0]
    return modules


def check_phases_trainable(phases: Iterable[int | Literal["joint"]], model: SCAN, frozen: set[int]) -> None:
    """Refuse a schedule with a phase whose generators are all frozen (its generator loss would have
    nothing to train, and the phase would only teach its discriminators).

    Args:
        phases: each phase's ``stage`` (a stage number or ``"joint"``).
        model: the model.
        frozen: ``id()`` of every frozen parameter.

    Raises:
        ValueError: naming the first such phase.
    """
    for index, stage in enumerate(phases):
        stages = range(1, model.num_stages + 1) if stage == "joint" else [int(stage)]
        params = [p for k in stages for m in model.stage_modules(k)[0] for p in m.parameters()]
        if params and all(id(p) in frozen for p in params):
            raise ValueError(f"freeze leaves phase {index} (stage {stage}) nothing to train: all its generators are "
                             "frozen; drop that phase from the schedule or freeze less")


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    """A config's fields that make the networks: all but its name and loss (training's own)."""
    return {k: v for k, v in config.items() if k not in ("name", "loss")}


def _differences(theirs: Any, ours: Any, where: str = "") -> list[str]:
    """``where X (here Y)`` for every leaf where two plain-data configs differ (X: the file's)."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        out = []
        for key in list(theirs) + [k for k in ours if k not in theirs]:
            out += _differences(theirs.get(key), ours.get(key), f"{where}.{key}" if where else str(key))
        return out
    if isinstance(theirs, list) and isinstance(ours, list):
        if len(theirs) != len(ours):
            return [f"{where} {len(theirs)} (here {len(ours)})"]
        return [d for i, (t, o) in enumerate(zip(theirs, ours)) for d in _differences(t, o, f"{where}[{i}]")]
    return [] if theirs == ours else [f"{where} {theirs!r} (here {ours!r})"]


def _listed(items: list[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def load_initial_weights(model: SCAN, path: str | os.PathLike[str]) -> list[str]:
    """Copy a trained model's weights into ``model`` (in place).

    Args:
        model: the model to start; its config names the architecture being trained.
        path: a scan model file (``model.pt``) or a scan training checkpoint (``.ckpt``).

    Returns:
        The parts left as they were: ``["discriminators"]`` where the file holds none, else ``[]``.

    Raises:
        InitFromError: the file is missing, unreadable, unsafe, no scan model or an inference-only one
            (:func:`scan.save_model` ``(inference=True)``), or its architecture
            differs from ``model``'s; one line naming the differing config fields and the first
            missing, unexpected and mis-shaped weights.
    """
    path = Path(path)
    try:
        data = read_checkpoint(path)
        config, state = _model_parts(data, path)
        kept = inference_directions(data, path)
        theirs = SCANConfig.from_dict(config)
    except CheckpointError as error:
        raise InitFromError(f"init_from: {error}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise InitFromError(f"init_from: {path}: invalid model config ({error})") from None
    if kept is not None:
        raise InitFromError(f"init_from: {path} is an inference-only model file ({'/'.join(kept)}, no "
                            "discriminators), which cannot train: start from the full model file or a checkpoint")
    expected = model.state_dict()
    # A file without discriminators (only generators kept) starts them afresh; one with some must fit.
    keep_fresh = not any(k.startswith(_DISCRIMINATORS) for k in state)
    wanted = {k: v for k, v in expected.items() if not (keep_fresh and k.startswith(_DISCRIMINATORS))}
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {_shape(v)} (here {_shape(expected[k])})" for k, v in state.items()
                if k in expected and v.shape != expected[k].shape]
    differences = _differences(_architecture(theirs.to_dict()), _architecture(model.config.to_dict()))
    if differences or missing or unexpected or reshaped:
        weights = [f"{len(found)} {what} ({_listed(found)})" for what, found in
                   (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if found]
        raise InitFromError(
            f"init_from: {path} holds another model than the one to train (--model.model): "
            f"{_listed(differences) or 'the same config'}; weights "
            f"{', '.join(weights) or 'of the same names and shapes'}. Set --model.model (and "
            f"--model.model_overrides) to the file's "
            f"({_preset_hint(theirs)}), or start from a file of this model"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=False)
    return ["discriminators"] if keep_fresh else []


def _preset_hint(config: SCANConfig) -> str:
    """What the file's model is, for ``--model.model``: its preset, maybe changed."""
    shown = "scan.load_model(FILE).config shows it"
    if config.name not in list_models():
        return shown
    if _architecture(create_config(config.name).to_dict()) == _architecture(config.to_dict()):
        return f"preset {config.name!r}"
    return f"preset {config.name!r} with changes; {shown}"


def _shape(tensor: Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"

