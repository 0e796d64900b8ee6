"""Typed configs of a stacked model. They are plain data: saved with every checkpoint as a dict of
str / int / float / bool / list, so that loading a model never needs to unpickle a class."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

# A config names registered kinds; the registry imports the built-in ones on its first lookup.
from scan import components

__all__ = [
    "GeneratorConfig",
    "DiscriminatorConfig",
    "FusionConfig",
    "StageConfig",
    "LossConfig",
    "SCANConfig",
    "apply_overrides",
]

# Sane bounds, checked before anything is built: a model file is data from anywhere, and a config that
# asks for ngf 200000 would otherwise allocate terabytes before any other check (README, "Errors").
MAX_WIDTH = 4096  # ngf, ndf, hidden channels
MAX_BLOCKS = 64
MAX_LAYERS = 8  # discriminator layers
MAX_STAGES = 6
MAX_CHANNELS = 16
MAX_TOP_SIZE = 8192  # as scan.errors.MAX_IMAGE_SIDE
MAX_POOL = 10000  # fakes an image pool holds in memory
MAX_LAMBDA = 1e4  # a loss weight; CycleGAN's largest is 10


def _check_range(owner: str, name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
        raise ValueError(f"{owner}.{name} must be in {low}..{high}, got {value}")


@dataclass
class GeneratorConfig:
    """One stage's generator.

    Attributes:
        kind: a registered stage kind (``scan.components.stage_kinds()``): built in are ``resnet``
            (CycleGAN's translator at stage 1, a refiner above), ``refine`` (ResNet on
            ``cat(x_k, up(y_{k-1}))``) and ``mobile`` (depthwise-separable, real-time, stage 1 only).
        ngf: width of the first layer (``width`` of the mobile generator).
        n_blocks: residual blocks.
        input_skip: feed the stage's input to the generator's last layer (ResNet kinds), so absolute
            colours survive instance norm; see :class:`scan.stages.ResnetGenerator`.
        options: settings of a kind of your own that the fields above do not cover (plain data:
            they are saved with the model).
        residual: a refining stage (ResNet kinds) outputs the previous stage's image plus a learned
            correction whose gain starts at 0, so a new stage starts exactly at the stage below's
            result instead of mixing an untrained image into it.
        outer_kernel: kernel size of the first and last convolution (ResNet kinds; CycleGAN: 7). These
            two run at the stage's full resolution: 3 makes them ~5x cheaper.
        residual_zero: what starts at zero in a residual refiner, so that it starts at the stage below:
            ``gain`` (a scalar gain on the correction, as in ReZero; under Adam a scalar moves about one
            learning rate per step, so the correction stays faint for thousands of steps) or ``head``
            (the last convolution, as ControlNet's zero convolutions; the gain starts at 1 and the
            correction grows as fast as any layer learns).
    """

    kind: str = "resnet"
    ngf: int = 64
    n_blocks: int = 9
    input_skip: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    residual: bool = False
    outer_kernel: int = 7
    residual_zero: Literal["gain", "head"] = "gain"

    def __post_init__(self) -> None:
        _check_range("GeneratorConfig", "ngf", self.ngf, 1, MAX_WIDTH)
        _check_range("GeneratorConfig", "n_blocks", self.n_blocks, 0, MAX_BLOCKS)
        if self.residual_zero not in ("gain", "head"):
            raise ValueError(f"residual_zero must be 'gain' or 'head', got {self.residual_zero!r}")
        if not isinstance(self.outer_kernel, int) or not 1 <= self.outer_kernel <= 15 or self.outer_kernel % 2 == 0:
            raise ValueError(f"outer_kernel must be an odd size from 1 to 15, got {self.outer_kernel}")
        if self.kind not in components.stage_kinds():
            raise components.UnknownComponentError(
                f"unknown stage kind {self.kind!r}; registered: {', '.join(components.stage_kinds())} (import the "
                "module that registers it first)"
            )


@dataclass
class DiscriminatorConfig:
    """One stage's PatchGAN discriminator (one per domain)."""

    ndf: int = 64
    n_layers: int = 3
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        _check_range("DiscriminatorConfig", "ndf", self.ndf, 1, MAX_WIDTH)
        _check_range("DiscriminatorConfig", "n_layers", self.n_layers, 1, MAX_LAYERS)


@dataclass
class FusionConfig:
    """The fusion block joining a stage k > 1 to the stage below.

    Attributes:
        kind: a registered fusion kind (``scan.components.fusion_kinds()``): built in are ``adaptive``
            (learned alpha map) and ``fixed`` (constant ``alpha``, for ablations).
        hidden_channels: width of the adaptive block's hidden layers.
        per_channel: one alpha per colour channel.
        initial_alpha: alpha of a fresh ``adaptive`` block; low, so that a new stage starts from the
            trained coarse result and learns where to add detail.
        alpha: the constant of the ``fixed`` kind.
        scale: the ``adaptive`` block computes its alpha map from its inputs downsampled by this
            factor and upsamples it back: 2 costs a quarter of 1 at the stage's full resolution,
            where the block is memory-bound; an alpha map varies slowly anyway.
    """

    kind: str = "adaptive"
    hidden_channels: int = 32
    per_channel: bool = False
    initial_alpha: float = 0.1
    alpha: float = 0.5
    scale: int = 1

    def __post_init__(self) -> None:
        _check_range("FusionConfig", "hidden_channels", self.hidden_channels, 1, MAX_WIDTH)
        if self.scale not in (1, 2, 4):
            raise ValueError(f"FusionConfig.scale must be 1, 2 or 4, got {self.scale}")
        if self.kind not in components.fusion_kinds():
            raise components.UnknownComponentError(
                f"unknown fusion kind {self.kind!r}; registered: {', '.join(components.fusion_kinds())} (import the "
                "module that registers it first)"
            )


@dataclass
class StageConfig:
    """One stage: its generator (per direction), discriminator (per domain) and fusion block."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)


@dataclass
class LossConfig:
    """CycleGAN's objective, applied at every stage on that stage's resolution.

    Attributes:
        gan_mode: a registered GAN loss (``scan.components.gan_losses()``): built in are ``lsgan``
            (least squares), ``vanilla`` (BCE) and ``hinge``.
        lambda_cycle: weight of the cycle L1 loss (CycleGAN's lambda_A = lambda_B).
        lambda_identity: weight of the identity loss, as a fraction of ``lambda_cycle``.
        pool_size: fakes kept per image pool for the discriminator (0 disables the pool).
        lambda_coarse: weight of the coarse-consistency loss of a stage k > 1: the L1 distance between
            its output, downsampled to stage k - 1's resolution, and stage k - 1's output. It keeps a
            refining stage from redrawing what the stage below (which saw the whole image at a size
            where global changes are small) already got right, and leaves it the detail to add.
        refiner_cycle: where a refining stage's cycle loss is measured: ``full`` (at its own
            resolution, like every stage) or ``coarse`` (both images taken down to the stage below's
            resolution first): the refiner's detail then answers to its discriminator and the identity
            loss alone, not to reconstructing the photo's own fine texture through the other direction.
    """

    gan_mode: str = "lsgan"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    lambda_coarse: float = 0.0
    refiner_cycle: Literal["full", "coarse"] = "full"

    def __post_init__(self) -> None:
        _check_range("LossConfig", "pool_size", self.pool_size, 0, MAX_POOL)
        for name in ("lambda_cycle", "lambda_identity", "lambda_coarse"):
            value = getattr(self, name)  # (a value of the wrong type is the type check's to name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 <= value <= MAX_LAMBDA:
                raise ValueError(f"LossConfig.{name} must be in 0..{MAX_LAMBDA:g}, got {value}")
        if self.refiner_cycle not in ("full", "coarse"):
            raise ValueError(f"refiner_cycle must be 'full' or 'coarse', got {self.refiner_cycle!r}")
        components.get_gan_loss(self.gan_mode)  # an unknown mode fails here, listing the registered ones


@dataclass
class SCANConfig:
    """A whole stacked model: both directions, N stages at ``base_size * 2**k``.

    Attributes:
        name: preset name it was built from (informational).
        base_size: training resolution of stage 1.
        channels: image channels of both domains.
        stages: stage configs, coarse to fine; stage 1's generator is never ``refine``.
        loss: the objective.
    """

    name: str = "custom"
    base_size: int = 128
    channels: int = 3
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        self.stages = [s if isinstance(s, StageConfig) else _from_dict(StageConfig, s) for s in self.stages]
        if isinstance(self.loss, dict):
            self.loss = _from_dict(LossConfig, self.loss)
        if not self.stages:
            raise ValueError("SCANConfig needs at least one stage")
        for k, stage in enumerate(self.stages):
            role: components.StageRole = "first" if k == 0 else "refine"
            if stage.generator.kind not in components.stage_kinds(role):
                where = "stage 1 has nothing to refine" if k == 0 else f"stage {k + 1} refines"
                raise components.UnknownComponentError(
                    f"{where}: its generator kind {stage.generator.kind!r} cannot serve it; kinds that can: "
                    f"{', '.join(components.stage_kinds(role))}"
                )
        if self.stages[0].generator.residual:
            raise ValueError("stage 1's generator cannot be residual: only a refining stage has a previous image "
                             "to correct")
        if self.base_size < 8 or self.base_size % 8:
            raise ValueError(f"base_size must be a positive multiple of 8, got {self.base_size}")
        _check_range("SCANConfig", "channels", self.channels, 1, MAX_CHANNELS)
        if len(self.stages) > MAX_STAGES:
            raise ValueError(f"SCANConfig has {len(self.stages)} stages; at most {MAX_STAGES}")
        if self.top_size > MAX_TOP_SIZE:
            raise ValueError(f"SCANConfig's top stage would train at {self.top_size} px (base_size {self.base_size}, "
                             f"{len(self.stages)} stages); at most {MAX_TOP_SIZE}")

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def sizes(self) -> list[int]:
        """Training resolution of every stage, coarse to fine."""
        return [self.base_size * 2**k for k in range(self.num_stages)]

    @property
    def top_size(self) -> int:
        return self.sizes[-1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SCANConfig:
        return _from_dict(cls, data)


T = TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} expects a dict, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}; valid: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        sub = {"generator": GeneratorConfig, "discriminator": DiscriminatorConfig, "fusion": FusionConfig}.get(f.name)
        if sub is not None and isinstance(value, dict):
            value = _from_dict(sub, value)
        _check_field_type(cls, f.name, value)
        kwargs[f.name] = value
    return cls(**kwargs)


class FieldTypeError(TypeError, ValueError):
    """A config field given a value of the wrong type (a ``ValueError`` too: it is the user's input)."""


def _check_field_type(cls: type, name: str, value: Any) -> None:
    """Plain-data fields (read from files) must have their annotated type: a ``"64"`` where an int
    belongs would otherwise fail deep inside a network, or not at all."""
    hint = get_type_hints(cls)[name]
    if get_origin(hint) is Literal:
        if value not in get_args(hint):
            raise ValueError(f"{cls.__name__}.{name} must be one of {list(get_args(hint))}, got {value!r}")
        return
    expected = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}.get(hint)
    if get_origin(hint) in (list, dict):
        expected = (get_origin(hint),)
    ok = expected is None or (isinstance(value, expected) and not (hint in (int, float) and isinstance(value, bool)))
    if not ok:
        raise FieldTypeError(f"{cls.__name__}.{name} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def apply_overrides(config: T, overrides: dict[str, Any]) -> T:
    """A copy of a config dataclass with fields replaced; dict values merge into nested configs.

    A list of dicts for ``stages`` merges stage by stage (``None`` keeps a stage as it is).

    Raises:
        ValueError: a key is not a field; the message lists the valid ones.
    """
    names = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in names:
            raise ValueError(f"{type(config).__name__} has no field {key!r}; valid: {sorted(names)}")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = apply_overrides(current, value)
        elif not dataclasses.is_dataclass(current) and key != "stages":
            _check_field_type(type(config), key, value)  # a "x" for a number fails here, not at the first step
        elif key == "stages" and isinstance(value, list) and all(isinstance(v, (dict, type(None))) for v in value):
            if len(value) != len(current):
                raise ValueError(
                    f"a 'stages' override of dicts merges stage by stage: give {len(current)} entries "
                    f"(None keeps a stage), got {len(value)}; pass StageConfig objects to change the count"
                )
            value = [c if v is None else apply_overrides(c, v) for c, v in zip(current, value)]
        changes[key] = value
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]
