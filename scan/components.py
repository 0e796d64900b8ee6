"""Registries of the parts a model is built from: stage generators, fusion blocks and GAN losses.

A new part plugs in from anywhere, without editing scan (timm's ``register_model`` style)::

    from scan.components import register_stage

    @register_stage("unet", stage="first")
    def build_unet(config: GeneratorConfig, channels: int) -> nn.Module:
        return MyUNet(channels, width=config.ngf, **config.options)

A config then names it (``GeneratorConfig(kind="unet")``), and ``scan.load_model`` rebuilds a saved
model with it once the module that registers it has been imported. Each stage generator follows
:class:`StageGenerator` and each fusion block :class:`FusionBlock`.

The built-in kinds (``scan.stages``, ``scan.fusion``, ``scan.losses``) register themselves when their
modules are imported, which the lookups below do on first use: a config names kinds without
importing any network.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from torch import Tensor, nn

if TYPE_CHECKING:
    from scan.config import FusionConfig, GeneratorConfig

__all__ = [
    "StageRole",
    "StageGenerator",
    "FusionBlock",
    "GanLossFn",
    "register_stage",
    "register_fusion",
    "register_gan_loss",
    "stage_kinds",
    "fusion_kinds",
    "gan_losses",
    "build_stage",
    "build_fusion",
    "get_gan_loss",
    "UnknownComponentError",
]

StageRole = Literal["first", "refine"]
STAGE_ROLES: tuple[StageRole, ...] = ("first", "refine")


class StageGenerator(Protocol):
    """A stage's generator, one calling convention for every stage.

    ``x`` is the stage's input image at its resolution; ``previous_up`` is the previous stage's
    output upsampled to that resolution, ``None`` at stage 1. A first-stage generator translates
    ``x``; a refining one produces a new image from both (the fusion block then mixes it in).

    Shape:
        - x, previous_up: :math:`(B, C, H, W)`
        - Output: :math:`(B, C, H, W)` in ``[-1, 1]``
    """

    def __call__(self, x: Tensor, previous_up: Tensor | None = None) -> Tensor: ...


class FusionBlock(Protocol):
    """Mixes a refining stage's new image into the previous stage's upsampled output.

    Returns ``(fused, alpha)``: ``fused = alpha * new + (1 - alpha) * previous_up`` and the weight map.

    Shape:
        - x, previous_up, new: :math:`(B, C, H, W)`
        - Output: :math:`(B, C, H, W)` and :math:`(B, 1 \\text{ or } C, H, W)`
    """

    def __call__(self, x: Tensor, previous_up: Tensor, new: Tensor) -> tuple[Tensor, Tensor]: ...


class GanLossFn(Protocol):
    """An adversarial loss of discriminator logits (``for_discriminator``: the discriminator's side)."""

    def __call__(self, logits: Tensor, target_is_real: bool, for_discriminator: bool = True) -> Tensor: ...


StageBuilder = Callable[["GeneratorConfig", int], nn.Module]
FusionBuilder = Callable[["FusionConfig", int], nn.Module]
Fn = TypeVar("Fn", bound=Callable)


class UnknownComponentError(ValueError):
    """A config names a part that no module has registered (yet)."""


@dataclass
class _StageKind:
    """A registered stage kind: one builder per role it can take, and whether it reads ``options``."""

    builders: dict[str, StageBuilder] = field(default_factory=dict)
    takes_options: dict[str, bool] = field(default_factory=dict)


_STAGES: dict[str, _StageKind] = {}
_FUSIONS: dict[str, FusionBuilder] = {}
_GAN_LOSSES: dict[str, GanLossFn] = {}

_IMPORT_HINT = "import the module that registers it before building or loading the model"

# The modules that register the built-in kinds, imported by the first lookup (they import this module
# to register, so it cannot import them at its top).
_BUILT_IN_MODULES = ("scan.stages", "scan.fusion", "scan.losses")
_built_ins_loaded = False


def _load_built_ins() -> None:
    global _built_ins_loaded
    if not _built_ins_loaded:
        _built_ins_loaded = True
        for module in _BUILT_IN_MODULES:
            importlib.import_module(module)


def register_stage(name: str, stage: StageRole, options: bool = True) -> Callable[[Fn], Fn]:
    """Register a stage generator builder ``(config: GeneratorConfig, channels) -> module``.

    Args:
        name: the kind a :class:`~scan.config.GeneratorConfig` names.
        stage: ``first`` (it translates, at stage 1) or ``refine`` (it refines, at a stage k > 1). A
            kind may register one builder for each.
        options: whether the builder reads ``config.options``; where it does not (the built-in
            kinds), options given are refused when the stage is built instead of being ignored.

    Raises:
        ValueError: ``name`` already has a builder for ``stage``.
    """
    if stage not in STAGE_ROLES:
        raise ValueError(f"stage must be one of {STAGE_ROLES}, got {stage!r}")

    def decorator(builder: Fn) -> Fn:
        kind = _STAGES.setdefault(name, _StageKind())
        if stage in kind.builders:
            raise ValueError(f"stage kind {name!r} already has a {stage!r} builder")
        kind.builders[stage] = builder
        kind.takes_options[stage] = options
        return builder

    return decorator


def _register_in(table: dict, name: str, what: str) -> Callable[[Fn], Fn]:
    def decorator(fn: Fn) -> Fn:
        if name in table:
            raise ValueError(f"a {what} named {name!r} is already registered")
        table[name] = fn
        return fn

    return decorator


def register_fusion(name: str) -> Callable[[Fn], Fn]:
    """Register a fusion block builder ``(config: FusionConfig, channels) -> module``."""
    return _register_in(_FUSIONS, name, "fusion kind")


def register_gan_loss(name: str) -> Callable[[Fn], Fn]:
    """Register an adversarial loss ``(logits, target_is_real, for_discriminator=True) -> scalar``."""
    return _register_in(_GAN_LOSSES, name, "GAN loss")


def stage_kinds(stage: StageRole | None = None) -> list[str]:
    """Registered stage kinds; only those that can take ``stage`` (``first`` / ``refine``) if given."""
    _load_built_ins()
    return sorted(name for name, kind in _STAGES.items() if stage is None or stage in kind.builders)


def fusion_kinds() -> list[str]:
    """Registered fusion block kinds."""
    _load_built_ins()
    return sorted(_FUSIONS)


def gan_losses() -> list[str]:
    """Registered GAN loss modes."""
    _load_built_ins()
    return sorted(_GAN_LOSSES)


def build_stage(config: GeneratorConfig, channels: int, stage: StageRole) -> nn.Module:
    """The generator of one stage from its config.

    Raises:
        UnknownComponentError: no such kind, or the kind cannot take ``stage``; the message lists
            the kinds that can.
        ValueError: ``options`` given to a kind registered as reading none.
    """
    _load_built_ins()
    kind = _STAGES.get(config.kind)
    if kind is None:
        raise UnknownComponentError(
            f"unknown stage kind {config.kind!r}; registered: {', '.join(stage_kinds())} ({_IMPORT_HINT})"
        )
    builder = kind.builders.get(stage)
    if builder is None:
        where = "stage 1 (which has nothing to refine)" if stage == "first" else "a refining stage (k > 1)"
        raise UnknownComponentError(
            f"stage kind {config.kind!r} cannot serve {where}; kinds that can: {', '.join(stage_kinds(stage))}"
        )
    if config.options and not kind.takes_options[stage]:
        raise ValueError(f"stage kind {config.kind!r} takes no options (they are for kinds of your own); got "
                         f"{', '.join(sorted(map(str, config.options)))}")
    return builder(config, channels)


def build_fusion(config: FusionConfig, channels: int) -> nn.Module:
    """The fusion block of a stage k > 1 from its config.

    Raises:
        UnknownComponentError: no such kind; the message lists the registered ones.
    """
    _load_built_ins()
    builder = _FUSIONS.get(config.kind)
    if builder is None:
        raise UnknownComponentError(
            f"unknown fusion kind {config.kind!r}; registered: {', '.join(fusion_kinds())} ({_IMPORT_HINT})"
        )
    return builder(config, channels)


def get_gan_loss(mode: str) -> GanLossFn:
    """The adversarial loss registered as ``mode``.

    Raises:
        UnknownComponentError: no such mode; the message lists the registered ones.
    """
    _load_built_ins()
    fn = _GAN_LOSSES.get(mode)
    if fn is None:
        raise UnknownComponentError(f"unknown gan_mode {mode!r}; registered: {', '.join(gan_losses())}")
    return fn
