"""Named presets: ``scan.create_model("scan-128-256")`` builds a model from a preset plus overrides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scan.config import (
    DiscriminatorConfig,
    FusionConfig,
    GeneratorConfig,
    LossConfig,
    SCANConfig,
    StageConfig,
    apply_overrides,
)
from scan.model import SCAN, count_parameters

__all__ = ["register_model", "list_models", "create_config", "create_model"]

_PRESETS: dict[str, Callable[[], SCANConfig]] = {}


def register_model(name: str) -> Callable[[Callable[[], SCANConfig]], Callable[[], SCANConfig]]:
    """Decorator adding a function that returns a :class:`SCANConfig` under ``name``."""

    def decorator(fn: Callable[[], SCANConfig]) -> Callable[[], SCANConfig]:
        if name in _PRESETS:
            raise ValueError(f"a preset named {name!r} is already registered")
        _PRESETS[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of every registered preset."""
    return sorted(_PRESETS)


def create_config(name: str, **overrides: Any) -> SCANConfig:
    """The config of preset ``name`` with ``overrides`` applied (dicts merge into nested configs).

    Example:
        >>> cfg = create_config("scan-128-256", loss={"gan_mode": "hinge"})
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    config = _PRESETS[name]()
    return apply_overrides(config, overrides) if overrides else config


def create_model(name: str, **overrides: Any) -> SCAN:
    """Build a :class:`SCAN` model from a preset name.

    Args:
        name: one of :func:`list_models` (``cyclegan-256``, ``scan-128-256``, ``scan-256-512``,
            ``scan-64-128-256``, ``mobile-256``, ``tiny``).
        **overrides: fields of :class:`SCANConfig` to replace, e.g. ``base_size=64`` or
            ``loss={"lambda_cycle": 5.0}``.

    Returns:
        A freshly initialised model.
    """
    config = create_config(name, **overrides)
    count_parameters(config)  # a size that cannot fit is one line, not an allocation failure
    return SCAN(config)


def _translator(n_blocks: int, ngf: int = 64, input_skip: bool = True) -> StageConfig:
    return StageConfig(generator=GeneratorConfig("resnet", ngf, n_blocks, input_skip))


def _refiner(n_blocks: int = 3, ngf: int = 32) -> StageConfig:
    # Residual: a new stage starts exactly at the stage below's result and learns a correction. In
    # benchmarks/quality.py this removed the PSNR drop of stage 2 and raised the final score in every
    # seed on both mappings (README, "What stacking buys").
    # Cheap where it runs at full resolution, where a GPU is memory-bound (issue 12): half the
    # translator's width, 3x3 first and last convolutions, the fusion block's alpha map computed at
    # half resolution. A third of the refiner's former cost; in quality.py, on one and the same stage 1,
    # it scored as the 64-wide 7x7 refiner did (README, "What stacking buys").
    generator = GeneratorConfig("refine", ngf, n_blocks, input_skip=True, residual=True, outer_kernel=3)
    return StageConfig(generator=generator, fusion=FusionConfig(scale=2))


@register_model("cyclegan-256")
def _cyclegan_256() -> SCANConfig:
    """The classic CycleGAN: one stage at 256, ResNet-9, 70x70 PatchGAN."""
    return SCANConfig(name="cyclegan-256", base_size=256, stages=[_translator(9, input_skip=False)])


@register_model("scan-128-256")
def _scan_128_256() -> SCANConfig:
    """The default SCAN: CycleGAN's 128 px recipe (ResNet-6) refined to 256 by a 3-block stage.

    The scan presets feed each stage's input to its generator's last layer (``input_skip``), which
    keeps absolute colours that instance norm discards; ``cyclegan-256`` stays the classic network.
    """
    return SCANConfig(name="scan-128-256", base_size=128, stages=[_translator(6), _refiner(3)])


@register_model("scan-256-512")
def _scan_256_512() -> SCANConfig:
    """High resolution: a full ResNet-9 translator at 256 refined to 512."""
    return SCANConfig(name="scan-256-512", base_size=256, stages=[_translator(9), _refiner(3)])


@register_model("scan-64-128-256")
def _scan_64_128_256() -> SCANConfig:
    """Three stages: the coarse translation is learned at 64 px, then refined twice."""
    return SCANConfig(name="scan-64-128-256", base_size=64, stages=[_translator(6), _refiner(3), _refiner(3)])


@register_model("mobile-256")
def _mobile_256() -> SCANConfig:
    """Real-time: one depthwise-separable generator at 256 (~1/300 of CycleGAN's compute)."""
    stage = StageConfig(generator=GeneratorConfig("mobile", ngf=16, n_blocks=4))
    return SCANConfig(name="mobile-256", base_size=256, stages=[stage])


@register_model("tiny")
def _tiny() -> SCANConfig:
    """Two stages at 32 and 64 px with a few channels: for tests and CPU smoke runs."""
    disc = DiscriminatorConfig(ndf=8, n_layers=2)
    return SCANConfig(
        name="tiny",
        base_size=32,
        stages=[
            StageConfig(GeneratorConfig("resnet", 8, 1, input_skip=True), disc),
            StageConfig(GeneratorConfig("refine", 8, 1, input_skip=True), disc, FusionConfig(hidden_channels=8)),
        ],
        loss=LossConfig(pool_size=8),
    )
