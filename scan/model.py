"""The SCAN model: both translation directions, a discriminator pair per stage, and the losses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scan.config import SCANConfig
from scan.errors import UserError
from scan.generator import StackedGenerator, StackOutput, downsample
from scan.imageops import as_model_input
from scan.losses import gan_loss
from scan.stages import PatchDiscriminator, init_weights

__all__ = ["SCAN", "GeneratorStep", "Direction", "DIRECTIONS", "Augment", "MissingPartError", "ModelTooLargeError",
           "count_parameters", "MAX_PARAMETERS", "GENERATOR_NAMES"]

DIRECTIONS = ("a2b", "b2a")
Direction = str
GENERATOR_NAMES = {"a2b": "G_ab", "b2a": "G_ba"}  # each direction's generator, as named in state dicts
# What the discriminators see instead of an image, e.g. scan.diffaugment.DiffAugment: a differentiable map
# of a batch in [-1, 1] to a batch of the same shape.
Augment = Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


# The most parameters a model may have: 4 GB of float32 weights, before any activation. The largest
# preset has 116 M (scan-256-512's, with discriminators).
MAX_PARAMETERS = 1_000_000_000


class ModelTooLargeError(UserError, ValueError):
    """A config (from a model file, say) that asks for more than :data:`MAX_PARAMETERS`."""


def count_parameters(config: SCANConfig, inference: tuple[Direction, ...] | None = None) -> int:
    """The parameters of the model ``config`` describes, counted on PyTorch's meta device (nothing is
    allocated), checked against :data:`MAX_PARAMETERS` before anything real is built.

    Raises:
        ModelTooLargeError: more than :data:`MAX_PARAMETERS`.
    """
    with torch.device("meta"):
        count = sum(p.numel() for p in SCAN(config, inference).parameters())
    if count > MAX_PARAMETERS:
        raise ModelTooLargeError(f"the model's config asks for {count / 1e6:,.0f} M parameters ({4 * count / 1e9:,.1f} "
                                 f"GB of weights); at most {MAX_PARAMETERS / 1e6:,.0f} M")
    return count


class MissingPartError(UserError, ValueError):
    """An inference-only model asked for what it does not hold: a dropped direction, or training."""


@dataclass
class GeneratorStep:
    """Everything one generator update of stage k computed.

    Attributes:
        loss: the total generator loss to backpropagate.
        terms: every loss term (detached), named as logged: ``G_ab_gan``, ``cycle_a``, ``idt_a``, ...
        fake_a, fake_b: translations at stage k's resolution (feed them to the image pools).
        rec_a, rec_b: reconstructions through the whole stack of the opposite direction.
        stack_ab, stack_ba: every stage's output and alpha map of the two translations, for logging.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    fake_a: Tensor
    fake_b: Tensor
    rec_a: Tensor
    rec_b: Tensor
    stack_ab: StackOutput
    stack_ba: StackOutput


class SCAN(nn.Module):
    """Stacked Cycle-Consistent Adversarial Networks (Li et al., ECCV 2018).

    ``G_ab`` translates A->B and ``G_ba`` B->A, each a :class:`~scan.generator.StackedGenerator`;
    ``D_a[k]`` and ``D_b[k]`` judge domain A and B at stage k + 1's resolution. Stage k is trained
    with ``L_gan + lambda_cycle * L_cycle + lambda_cycle * lambda_identity * L_idt`` computed at its
    own resolution, the cycle going through the whole stack of each direction.

    Args:
        config: the model's config (see :func:`scan.create_model` for presets).
        inference: ``None`` (the default) builds everything training needs. A tuple of directions
            builds an inference-only model: those directions' generators (stages and fusion blocks)
            and no discriminators, as :func:`scan.save_model` ``(inference=True)`` files hold. It
            translates exactly as the full model does and refuses to train.
    """

    G_ab: StackedGenerator
    G_ba: StackedGenerator

    def __init__(self, config: SCANConfig, inference: tuple[Direction, ...] | None = None) -> None:
        super().__init__()
        self.config = config
        if inference is not None and (not inference or set(inference) - set(DIRECTIONS)):
            raise ValueError(f"inference must name some of {DIRECTIONS}, got {inference!r}")
        # The directions this model holds; the discriminators only where it can train.
        self.directions: tuple[Direction, ...] = tuple(d for d in DIRECTIONS if inference is None or d in inference)
        self.trainable = inference is None
        for direction in self.directions:
            setattr(self, GENERATOR_NAMES[direction], StackedGenerator(config))
        stages = range(config.num_stages) if self.trainable else range(0)
        self.D_a = nn.ModuleList(self._discriminator(k) for k in stages)
        self.D_b = nn.ModuleList(self._discriminator(k) for k in stages)
        init_weights(self)

    def require_training_parts(self) -> None:
        """Raise :class:`MissingPartError` on an inference-only model (what training calls first)."""
        if not self.trainable:
            raise MissingPartError(
                f"this is an inference-only model ({'/'.join(self.directions)}, no discriminators): it "
                "translates but cannot train; train or fine-tune from the full model file or a checkpoint")

    def _discriminator(self, k: int) -> PatchDiscriminator:
        d = self.config.stages[k].discriminator
        return PatchDiscriminator(self.config.channels, d.ndf, d.n_layers, d.spectral_norm)

    @property
    def num_stages(self) -> int:
        return self.config.num_stages

    def _check_stage(self, stage: int) -> None:
        if not 1 <= stage <= self.num_stages:
            raise ValueError(f"stage must be in 1..{self.num_stages}, got {stage}")

    def networks(self) -> list[nn.Module]:
        """Both directions' stage generators and fusion blocks, and every discriminator: what
        ``torch.compile`` compiles one by one."""
        held = [self.generator(d) for d in self.directions]
        return [*(n for g in held for n in g.networks()), *self.D_a, *self.D_b]

    def generator(self, direction: Direction) -> StackedGenerator:
        """``G_ab`` for ``"a2b"``, ``G_ba`` for ``"b2a"``.

        Raises:
            ValueError: an unknown direction.
            MissingPartError: an inference-only model that does not hold ``direction``.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if direction not in self.directions:
            raise MissingPartError(f"this inference-only model holds {'/'.join(self.directions)} only, not "
                                   f"{direction}")
        return self.G_ab if direction == "a2b" else self.G_ba

    def translate(self, x: Tensor, direction: Direction = "a2b", upto: int | None = None) -> StackOutput:
        """Run one direction's stack; see :class:`StackedGenerator`.

        Args:
            x: floats in ``[-1, 1]`` or ``uint8`` in ``[0, 255]``, :math:`(B, C, H, W)` or one image
                :math:`(C, H, W)`; checked by :func:`scan.imageops.as_model_input`.
            direction: ``a2b`` or ``b2a``.
            upto: run stages ``1..upto`` only (default: all).

        Returns:
            Every stage's output (floats in ``[-1, 1]``) and alpha map.
        """
        generator = self.generator(direction)
        return generator(as_model_input(x, self.config.channels).to(next(generator.parameters()).device), upto=upto)

    def stage_modules(self, stage: int) -> tuple[list[nn.Module], list[nn.Module]]:
        """The generator-side modules (both generators' stage and fusion block) and the
        discriminators that are trained while ``stage`` is the active one."""
        self.require_training_parts()
        self._check_stage(stage)
        k = stage - 1
        gens: list[nn.Module] = [self.G_ab.stages[k], self.G_ba.stages[k]]
        if k > 0:
            gens += [self.G_ab.fusions[k - 1], self.G_ba.fusions[k - 1]]
        return gens, [self.D_a[k], self.D_b[k]]

    def stage_input(self, x: Tensor, stage: int) -> Tensor:
        """Downsample a top-resolution batch to ``stage``'s resolution."""
        self._check_stage(stage)
        return downsample(x, 2 ** (self.num_stages - stage))

    def generator_step(
        self, real_a: Tensor, real_b: Tensor, stage: int, augment: Augment | None = None
    ) -> GeneratorStep:
        """Generator losses of ``stage`` on images at that stage's resolution.

        Args:
            real_a: batch of domain A in ``[-1, 1]``, at ``stage``'s resolution.
            real_b: batch of domain B, same size.
            stage: 1-based stage index; stages 1..stage run, stage ``stage`` is judged.
            augment: applied to the fakes before the discriminators judge them (DiffAugment, see
                :mod:`scan.diffaugment`); differentiable, so the generators learn through it. Pass
                the same one to :meth:`discriminator_step`.

        Returns:
            A :class:`GeneratorStep`; only ``loss`` carries a graph.
        """
        self.require_training_parts()
        self._check_stage(stage)
        cfg = self.config.loss
        k = stage - 1
        judge = augment or _identity
        stack_ab = self.G_ab(real_a, upto=stage)
        stack_ba = self.G_ba(real_b, upto=stage)
        fake_b, fake_a = stack_ab.final, stack_ba.final
        rec_a = self.G_ba(fake_b, upto=stage).final
        rec_b = self.G_ab(fake_a, upto=stage).final
        # A refiner's cycle may be measured at the stage below's resolution (LossConfig.refiner_cycle).
        cycle_view = downsample if stage > 1 and cfg.refiner_cycle == "coarse" else _identity
        terms = {
            "G_ab_gan": gan_loss(self.D_b[k](judge(fake_b)), True, cfg.gan_mode, for_discriminator=False),
            "G_ba_gan": gan_loss(self.D_a[k](judge(fake_a)), True, cfg.gan_mode, for_discriminator=False),
            "cycle_a": F.l1_loss(cycle_view(rec_a), cycle_view(real_a)),
            "cycle_b": F.l1_loss(cycle_view(rec_b), cycle_view(real_b)),
        }
        loss = terms["G_ab_gan"] + terms["G_ba_gan"] + cfg.lambda_cycle * (terms["cycle_a"] + terms["cycle_b"])
        if cfg.lambda_identity > 0:
            # G_ab should leave an image that is already in B alone (and G_ba one in A).
            terms["idt_b"] = F.l1_loss(self.G_ab(real_b, upto=stage).final, real_b)
            terms["idt_a"] = F.l1_loss(self.G_ba(real_a, upto=stage).final, real_a)
            loss = loss + cfg.lambda_cycle * cfg.lambda_identity * (terms["idt_a"] + terms["idt_b"])
        if cfg.lambda_coarse > 0 and stage > 1:
            # A refining stage keeps the stage below's result at that stage's resolution (see LossConfig).
            terms["coarse_ab"] = F.l1_loss(downsample(fake_b), stack_ab.outputs[-2].detach())
            terms["coarse_ba"] = F.l1_loss(downsample(fake_a), stack_ba.outputs[-2].detach())
            loss = loss + cfg.lambda_coarse * (terms["coarse_ab"] + terms["coarse_ba"])
        terms = {name: value.detach() for name, value in terms.items()}
        terms["G_total"] = loss.detach()
        return GeneratorStep(
            loss=loss,
            terms=terms,
            fake_a=fake_a.detach(),
            fake_b=fake_b.detach(),
            rec_a=rec_a.detach(),
            rec_b=rec_b.detach(),
            stack_ab=stack_ab,
            stack_ba=stack_ba,
        )

    def discriminator_step(
        self, *, real_a: Tensor, real_b: Tensor, fake_a: Tensor, fake_b: Tensor, stage: int,
        augment: Augment | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Discriminator losses of ``stage``: ``D_a`` on real A vs fake A, ``D_b`` on real B vs fake B.

        Keyword-only: four batches of one type, where a swapped pair would train silently on the
        wrong images.

        Args:
            real_a, real_b: real batches at ``stage``'s resolution.
            fake_a, fake_b: generated batches (typically drawn from image pools), detached.
            stage: 1-based stage index.
            augment: applied to every batch, real and fake alike, before its discriminator judges it
                (the one given to :meth:`generator_step`).

        Returns:
            ``(loss, terms)``; each discriminator's loss is halved, as in CycleGAN.
        """
        self.require_training_parts()
        self._check_stage(stage)
        mode, k = self.config.loss.gan_mode, stage - 1
        judge = augment or _identity
        d_a = 0.5 * (gan_loss(self.D_a[k](judge(real_a)), True, mode)
                     + gan_loss(self.D_a[k](judge(fake_a.detach())), False, mode))
        d_b = 0.5 * (gan_loss(self.D_b[k](judge(real_b)), True, mode)
                     + gan_loss(self.D_b[k](judge(fake_b.detach())), False, mode))
        return d_a + d_b, {"D_a": d_a.detach(), "D_b": d_b.detach()}
