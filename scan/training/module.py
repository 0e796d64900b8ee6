"""The LightningModule that trains a SCAN model stage by stage (Lightning's GAN template:
manual optimisation, ``toggle_optimizer``, ``manual_backward``, ``log_dict``)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import Tensor

from scan.compiling import COMPILE_MODES, check_compile_available, compile_errors, compile_modules
from scan.config import SCANConfig, apply_overrides
from scan.diffaugment import DiffAugment
from scan.errors import UserError
from scan.losses import ImagePool
from scan.model import SCAN
from scan.registry import create_config
from scan.training.callbacks import TrainingImages
from scan.training.checkpoint_io import SafeCheckpointIO
from scan.training.finetune import check_phases_trainable, frozen_modules, load_initial_weights
from scan.training.progress import throttled

__all__ = ["Phase", "SCANModule", "NonFiniteLossError", "OptimizerSpec", "default_schedule"]

# What Lightning makes of max_epochs=None (with no max_steps) before any hook of ours runs: the only
# trace of a trainer whose epoch limit the user left to the schedule.
_LIGHTNING_UNSET_MAX_EPOCHS = 1000
_COMPILE_HINT = "train without --model.compile"


def _fused_adam_supported(device: torch.device) -> bool:
    """Whether Adam's fused kernel runs on ``device`` (CUDA, CPU, MPS, XPU, ... in recent torch)."""
    probe = torch.zeros(1, device=device, requires_grad=True)
    try:
        torch.optim.Adam([probe], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


class NonFiniteLossError(UserError, RuntimeError):
    """The loss stayed NaN/inf for too many steps in a row."""


@dataclass
class Phase:
    """One phase of the training schedule.

    Attributes:
        stage: the stage trained (1-based; earlier stages frozen), or ``"joint"`` to fine-tune every
            stage at once (earlier stages at ``joint_lr_scale`` times the learning rate).
        epochs: epochs at the constant learning rate.
        decay_epochs: epochs of linear decay to zero that follow (CycleGAN's ``n_epochs_decay``).
    """

    stage: int | Literal["joint"] = 1
    epochs: int = 100
    decay_epochs: int = 100

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.decay_epochs

    def lr_factor(self, epoch_in_phase: int) -> float:
        """CycleGAN's linear rule: 1 for ``epochs`` epochs, then down to ``1 / (decay + 1)``."""
        return max(0.0, 1.0 - max(0, epoch_in_phase + 1 - self.epochs) / float(self.decay_epochs + 1))


def default_schedule(num_stages: int) -> list[Phase]:
    """CycleGAN's 100 + 100 epochs for every stage in turn, no joint phase."""
    return [Phase(stage=k, epochs=100, decay_epochs=100) for k in range(1, num_stages + 1)]


def _weighted_sum(terms: list[tuple[float, Tensor]]) -> Tensor:
    """``sum(weight * loss)`` over one or more ``(weight, loss)`` pairs."""
    (weight, loss), *rest = terms
    total = weight * loss
    for weight, loss in rest:
        total = total + weight * loss
    return total


def _as_phase(value: Phase | dict[str, Any]) -> Phase:
    return value if isinstance(value, Phase) else Phase(**value)


def _resolve_config(model: SCANConfig | str | dict[str, Any], overrides: dict[str, Any] | None) -> SCANConfig:
    """The model config from a preset name, a config, or a config's ``to_dict()`` form (a checkpoint's
    hyper-parameters), with ``overrides`` applied."""
    if isinstance(model, str):
        return create_config(model, **(overrides or {}))
    config = model if isinstance(model, SCANConfig) else SCANConfig.from_dict(model)
    return apply_overrides(config, overrides) if overrides else config


@dataclass
class OptimizerSpec:
    """One optimiser of the schedule: the phase it serves, its role in that phase and what it steps.

    ``SCANModule.optimizer_specs`` lists them in the order ``configure_optimizers`` returns (and a
    checkpoint stores) the optimisers; a loss with parameters of its own adds its optimiser by
    declaring one more spec there, with a role of its own: every role but ``"discriminator"`` is
    stepped on the generator's loss, after the same backward pass.

    Attributes:
        phase_index: index of the phase in the schedule (0-based).
        role: what it optimises in that phase, e.g. ``"generator"`` or ``"discriminator"``.
        param_groups: Adam's parameter groups, each with its ``"params"`` and its base ``"lr"``.
    """

    phase_index: int
    role: str
    param_groups: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return f"phase{self.phase_index}/{self.role}"


class SCANModule(pl.LightningModule):
    """Trains a :class:`~scan.SCAN` model from unpaired batches ``{"a": ..., "b": ...}`` in ``[-1, 1]``
    at the top stage's resolution.

    Every phase of ``schedule`` has its own generator and discriminator optimisers (Adam, see
    :meth:`optimizer_specs`), so a checkpoint restores every phase's state exactly. The learning rate
    is a pure function of the epoch (constant, then linear decay within each phase), so a resumed run
    continues on the same rate without scheduler state.

    The schedule owns the end of the run: on a trainer whose ``max_epochs`` was left unset, training
    stops when the last phase is done. An explicit ``max_epochs`` or ``max_steps`` still wins (epochs
    past the schedule run at learning rate 0), except ``max_epochs=1000``: Lightning's stand-in for an
    unset limit, it reads as unset.

    Args:
        model: preset name (see ``scan.list_models()``) or a whole model config (or its ``to_dict()``
            form, as checkpoints store it).
        model_overrides: config fields to replace, e.g. ``{"loss": {"lambda_cycle": 5.0}}``.
        schedule: phases in order; default: each stage for 100 + 100 epochs.
        lr: Adam learning rate (CycleGAN: 2e-4).
        beta1: Adam beta1 (CycleGAN: 0.5).
        beta2: Adam beta2.
        joint_lr_scale: learning-rate factor of the earlier stages in a ``joint`` phase.
        stage_weights: in a ``joint`` phase, the weight of each stage's losses (generator and
            discriminator), coarse to fine; default 1 for every stage.
        image_log_every_n_steps: training image grids are logged every this many batches (0: never).
        channels_last: use the channels-last memory format (faster convs on recent GPUs / CPUs).
        max_nonfinite_steps: consecutive steps with NaN/inf gradients (each skipped) before the run
            stops. The count is kept on the device and read every this many batches (the one host
            synchronisation of the step), so a run stops at most this many batches late.
        compile: compile every generator stage, fusion block and discriminator with ``torch.compile``
            (:mod:`scan.compiling`); the first steps of each phase take longer while it compiles.
        compile_mode: ``torch.compile``'s mode, e.g. ``"max-autotune"`` (default: its default).
        init_from: start from a trained model's weights: a scan model file (``model.pt``) or a scan
            training checkpoint of the same architecture (:mod:`scan.training.finetune`); the
            optimisers, schedule and image pools start fresh. A resumed run (``ckpt_path``) takes its
            weights from its checkpoint instead (Lightning loads it after this).
        freeze: parts that keep their weights, from ``scan.training.finetune.FREEZABLE``:
            ``generators``, ``stage1`` ... ``stageN``, ``fusion``, ``encoders``, ``discriminators``.
            They are left out of every optimiser, whatever the phase.
        diff_augment: DiffAugment policy (:mod:`scan.diffaugment`), e.g. ``"color,translation,cutout"``:
            applied to real and fake images before every discriminator call of training (for 10-300
            training images). ``None`` or ``""``: off.
    """

    def __init__(
        self,
        model: SCANConfig | str = "scan-128-256",
        model_overrides: dict[str, Any] | None = None,
        schedule: list[Phase] | None = None,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        joint_lr_scale: float = 0.1,
        stage_weights: list[float] | None = None,
        image_log_every_n_steps: int = 500,
        channels_last: bool = False,
        max_nonfinite_steps: int = 10,
        compile: bool = False,
        compile_mode: str | None = None,
        init_from: str | None = None,
        freeze: list[str] | None = None,
        diff_augment: str | None = None,
    ) -> None:
        super().__init__()
        config = _resolve_config(model, model_overrides)
        phases = [_as_phase(p) for p in (schedule or default_schedule(config.num_stages))]
        self._check_schedule(phases, config)
        # Hyper-parameters are stored as plain data: checkpoints must load with weights_only=True. The
        # model is stored resolved (overrides applied), so load_from_checkpoint rebuilds the same one.
        model = config.to_dict()  # type: ignore[assignment]  # (the locals are read by save_hyperparameters)
        model_overrides = None
        schedule = [dataclasses.asdict(p) for p in phases]  # type: ignore[misc]  # noqa: F841 (plain data, as above)
        init_from = None if init_from is None else os.fspath(init_from)
        if freeze is not None:
            freeze = [freeze] if isinstance(freeze, str) else [str(name) for name in freeze]
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.model = SCAN(config)
        self.phases = phases
        if not (0 < lr < math.inf and 0 <= beta1 < 1 and 0 <= beta2 < 1 and 0 < joint_lr_scale < math.inf):
            raise ValueError(f"Adam needs 0 < lr (got {lr}), beta1 and beta2 in [0, 1) (got {beta1}, {beta2}) and "
                             f"0 < joint_lr_scale (got {joint_lr_scale}), each finite")
        self.lr, self.betas, self.joint_lr_scale = lr, (beta1, beta2), joint_lr_scale
        self.stage_weights = [1.0] * config.num_stages if stage_weights is None else [float(w) for w in stage_weights]
        if len(self.stage_weights) != config.num_stages or not all(0 <= w < math.inf for w in self.stage_weights):
            raise ValueError(f"stage_weights needs {config.num_stages} finite non-negative weights (one per stage), "
                             f"got {stage_weights}")
        self.image_log_every_n_steps = image_log_every_n_steps
        self.channels_last = channels_last
        if max_nonfinite_steps < 1:
            raise ValueError(f"max_nonfinite_steps must be >= 1, got {max_nonfinite_steps}")
        self.max_nonfinite_steps = max_nonfinite_steps
        # Not self.compile: that is nn.Module's compile() method.
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(map(str, COMPILE_MODES))}, got {compile_mode!r}")
        self.compile_networks, self.compile_mode = compile, compile_mode
        # Per role ("generator", "discriminator"): device-side counters of skipped steps, see _step_unless_nonfinite.
        self._nonfinite: dict[str, dict[str, Tensor]] = {}
        # One pool of past fakes per stage and domain, as in CycleGAN (per process under DDP).
        self.pools = {
            f"stage{k}_{d}": ImagePool(config.loss.pool_size) for k in range(1, config.num_stages + 1) for d in "ab"
        }
        # Fine-tuning (scan.training.finetune): what keeps its weights, and the discriminators' augmentation.
        self.frozen_parts = list(freeze or [])
        self._frozen_modules = frozen_modules(self.model, self.frozen_parts)  # a list: not registered as children
        self._frozen = {id(p) for m in self._frozen_modules for p in m.parameters()}
        check_phases_trainable([p.stage for p in phases], self.model, self._frozen)
        self.augment = DiffAugment(diff_augment) if diff_augment else None
        if init_from:
            load_initial_weights(self.model, init_from)
        if channels_last:
            # Module.to takes memory_format at run time; torch's type stubs leave it out.
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @staticmethod
    def _check_schedule(phases: list[Phase], config: SCANConfig) -> None:
        if not phases:
            raise ValueError("the schedule needs at least one phase")
        for p in phases:
            if p.stage != "joint" and not (isinstance(p.stage, int) and 1 <= p.stage <= config.num_stages):
                raise ValueError(f"schedule phase {p}: stage must be 1..{config.num_stages} or 'joint'")
            if p.epochs < 0 or p.decay_epochs < 0 or p.total_epochs == 0:
                raise ValueError(f"schedule phase {p}: needs epochs >= 0, decay_epochs >= 0, and one of them > 0")

    # ----------------------------------------------------------------------------------- schedule
    @property
    def config(self) -> SCANConfig:
        return self.model.config

    @property
    def top_size(self) -> int:
        """The training resolution of the top stage (``train.py`` links the data's crop size to it)."""
        return self.config.top_size

    @property
    def total_epochs(self) -> int:
        return sum(p.total_epochs for p in self.phases)

    def phase_at(self, epoch: int) -> tuple[int, int]:
        """``(phase index, epoch within that phase)`` of a global epoch (past the end: the last phase)."""
        start = 0
        for index, phase in enumerate(self.phases):
            if epoch < start + phase.total_epochs:
                return index, epoch - start
            start += phase.total_epochs
        return len(self.phases) - 1, epoch - (start - self.phases[-1].total_epochs)

    def trained_stage(self, phase: Phase) -> int:
        return self.config.num_stages if phase.stage == "joint" else int(phase.stage)

    # --------------------------------------------------------------------------------- optimisers
    def optimizer_specs(self) -> list[OptimizerSpec]:
        """Every optimiser of the run, phase by phase: the generators' then the discriminators'.

        The order is the one checkpoints store optimiser states in: append, never reorder.

        Returns:
            One :class:`OptimizerSpec` per optimiser.
        """
        top = self.config.num_stages
        specs: list[OptimizerSpec] = []
        for index, phase in enumerate(self.phases):
            if phase.stage == "joint":
                g_groups = []
                for stage in range(1, top + 1):
                    gens, _ = self.model.stage_modules(stage)
                    scale = 1.0 if stage == top else self.joint_lr_scale
                    g_groups.append({"params": [p for m in gens for p in m.parameters()], "lr": self.lr * scale})
                d_params = [p for d in [*self.model.D_a, *self.model.D_b] for p in d.parameters()]
            else:
                gens, discs = self.model.stage_modules(int(phase.stage))
                g_groups = [{"params": [p for m in gens for p in m.parameters()], "lr": self.lr}]
                d_params = [p for m in discs for p in m.parameters()]
            specs.append(OptimizerSpec(index, "generator", g_groups))
            specs.append(OptimizerSpec(index, "discriminator", [{"params": d_params, "lr": self.lr}]))
        return specs

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        # Frozen parameters (``freeze``) are in no optimiser: no step and no moments, whatever the phase
        # (and so _set_up_epoch never gives them requires_grad). Their groups stay, maybe empty: the
        # learning-rate rule and the logs find groups by position.
        specs = [dataclasses.replace(spec, param_groups=[
            {**group, "params": [p for p in group["params"] if id(p) not in self._frozen]}
            for group in spec.param_groups]) for spec in self.optimizer_specs()]
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"optimizer_specs: every (phase, role) needs its own optimiser, got {names}")
        # Built here, after the model reached its device: the lookup below finds an optimiser by name.
        self._optimizer_index = {(spec.phase_index, spec.role): i for i, spec in enumerate(specs)}
        # Adam's fused kernel takes a device-side "skip this step" flag (found_inf): a NaN/inf step is
        # skipped without the host waiting for the device. Where there is no fused kernel, a step's
        # skip is decided on the host instead.
        self._fused = _fused_adam_supported(self.device)
        optimizers: list[torch.optim.Optimizer] = [
            torch.optim.Adam(spec.param_groups, lr=self.lr, betas=self.betas, fused=self._fused or None)
            for spec in specs
        ]
        for opt in optimizers:
            for group in opt.param_groups:
                group["initial_lr"] = group["lr"]
        return optimizers

    def _optimizer(self, phase_index: int, role: str) -> Any:
        """The (Lightning-wrapped) optimiser of ``role`` in phase ``phase_index``."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return optimizers[self._optimizer_index[(phase_index, role)]]

    def _phase_optimizers(self, phase_index: int, exclude: tuple[str, ...] = ()) -> list[Any]:
        """Every optimiser of phase ``phase_index``, but those of the roles in ``exclude``."""
        return [self._optimizer(index, role) for index, role in self._optimizer_index
                if index == phase_index and role not in exclude]

    def on_fit_start(self) -> None:
        # The schedule owns the end of the run: a trainer whose epoch limit was left unset (Lightning
        # has turned None into 1000 by now) stops after the last phase instead of running on at lr 0.
        loop = self.trainer.fit_loop
        if loop.max_epochs == _LIGHTNING_UNSET_MAX_EPOCHS and loop.max_steps == -1:
            loop.max_epochs = self.total_epochs
            rank_zero_info(f"max_epochs not set: training stops when the schedule is done, after "
                           f"{self.total_epochs} epochs in {len(self.phases)} phase(s)")
        if self.compile_networks:
            check_compile_available(self.device, _COMPILE_HINT)
            compile_modules(self.model.networks(), self.compile_mode)

    def on_train_start(self) -> None:
        # After a resume has loaded the optimiser states (whose param groups overwrite ours): the
        # sync-free skip of a non-finite step needs Adam's fused kernel (see _step_unless_nonfinite).
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group["fused"] = self._fused
                if not self._fused:
                    continue
                for p in group["params"]:
                    # A checkpoint saved before the fused kernel keeps Adam's step counts on the CPU,
                    # where the kernel needs them beside the parameter.
                    state = opt.state.get(p, {})
                    if "step" in state:
                        state["step"] = state["step"].to(device=p.device, dtype=torch.float32)
        # A run resumed from a mid-epoch checkpoint continues its epoch without on_train_epoch_start.
        self._set_up_epoch()

    def on_train_epoch_end(self) -> None:
        # The batches after the last periodic check (or all of them, in epochs shorter than it).
        self._check_nonfinite()

    def on_train_end(self) -> None:
        if self.current_epoch >= self.total_epochs:
            rank_zero_info(f"schedule done: {len(self.phases)} phase(s), {self.total_epochs} epochs")

    def on_train_epoch_start(self) -> None:
        self._set_up_epoch()

    def _set_up_epoch(self) -> None:
        """The epoch's phase: learning rates, what is frozen, the per-epoch logs."""
        index, epoch_in_phase = self.phase_at(self.current_epoch)
        phase = self.phases[index]
        factor = phase.lr_factor(epoch_in_phase)
        active: set[int] = set()
        for opt in self._phase_optimizers(index):
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor
                active.update(id(p) for p in group["params"])
        # The learning rate and phase change per epoch: made device tensors once here, not every step.
        top_lr = self._optimizer(index, "generator").param_groups[-1]["lr"]
        self._epoch_logs = {f"lr/stage{self.trained_stage(phase)}": torch.tensor(top_lr, device=self.device),
                            "phase": torch.tensor(float(index), device=self.device)}
        # Freeze what this phase does not train. toggle_optimizer alone would miss parameters that
        # belong to no optimiser (a schedule that starts at stage 2), and backpropagate into them.
        for p in self.model.parameters():
            p.requires_grad_(id(p) in active)
        # Frozen stages run in eval mode (no dropout / running-stat updates in any custom network).
        stage = self.trained_stage(phase)
        for k in range(self.config.num_stages):
            frozen = phase.stage != "joint" and k + 1 < stage
            for direction in (self.model.G_ab, self.model.G_ba):
                direction.stages[k].train(not frozen)
                if k > 0:
                    direction.fusions[k - 1].train(not frozen)
        # So do the parts `freeze` names (a frozen discriminator's spectral norm stops its power iteration).
        for module in self._frozen_modules:
            module.eval()

    # ----------------------------------------------------------------------------------- training
    def _step_unless_nonfinite(self, optimizers: list[Any], what: str) -> None:
        """Step ``optimizers`` on the gradients just computed, unless one of them is NaN/inf.

        The decision stays on the device: every optimiser gets the same ``found_inf`` flag, which
        Adam's fused kernel reads to skip its update (parameters, moments and step count untouched),
        as ``torch.amp.GradScaler`` does. Under DDP the gradients are all-reduced by then, so every
        rank takes the same decision without a collective of its own. The counters behind the
        ``max_nonfinite_steps`` limit are device tensors too, read by :meth:`_check_nonfinite`.
        """
        grads = [p.grad for opt in optimizers for group in opt.param_groups for p in group["params"]
                 if p.grad is not None]
        if not grads:
            return
        # A NaN/inf anywhere makes the total norm NaN/inf (finite gradients too large for fp32 would
        # too, and are no step to take either).
        found_inf = (~torch.isfinite(torch.nn.utils.get_total_norm(grads))).float()
        counters = self._nonfinite.get(what)
        if counters is None:
            zero = torch.zeros((), device=found_inf.device)
            counters = self._nonfinite[what] = {"run": zero.clone(), "worst": zero.clone(), "skipped": zero.clone()}
        counters["run"].add_(1).mul_(found_inf)  # consecutive skipped steps: +1, or back to 0
        torch.maximum(counters["worst"], counters["run"], out=counters["worst"])
        counters["skipped"].add_(found_inf)
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            # fp16: the GradScaler hands the fused kernel its own found_inf (and skips on the device)
            for opt in optimizers:
                opt.step()
        elif self._fused:
            for opt in optimizers:
                opt.optimizer.found_inf = found_inf  # Lightning's wrapper -> the torch optimiser
                opt.step()
                del opt.optimizer.found_inf
        elif not bool(found_inf):  # no fused kernel here: the host decides (a synchronisation)
            for opt in optimizers:
                opt.step()

    def _check_nonfinite(self) -> None:
        """Every ``max_nonfinite_steps`` batches: stop the run after that many skipped steps in a row,
        warn about any skipped since the last check (one host synchronisation)."""
        if not self._nonfinite:
            return
        roles = list(self._nonfinite)
        readings = torch.stack([torch.stack([self._nonfinite[r]["worst"], self._nonfinite[r]["skipped"]])
                                for r in roles]).tolist()
        limit = self.max_nonfinite_steps
        for role, (worst, skipped) in zip(roles, readings):
            counters = self._nonfinite[role]
            if worst >= limit:
                raise NonFiniteLossError(
                    f"training stopped at epoch {self.current_epoch}, batch step {self.global_step}: the {role} "
                    f"loss was NaN/inf for {int(worst)} steps in a row; lower the learning rate, train in fp32, or "
                    "check the data"
                )
            if skipped:
                warnings.warn(f"step {self.global_step}: {int(skipped)} of the last {limit} {role} steps skipped "
                              f"(non-finite loss); the run stops after {limit} in a row", stacklevel=2)
            counters["worst"].copy_(counters["run"])
            counters["skipped"].zero_()

    def judged_stages(self, phase: Phase) -> list[tuple[int, float]]:
        """The stages whose losses ``phase`` optimises, with their weights: the trained stage alone,
        or in a ``joint`` phase every stage, each judged by its own discriminators at its own
        resolution and weighted by ``stage_weights``."""
        if phase.stage == "joint":
            return list(zip(range(1, self.config.num_stages + 1), self.stage_weights))
        return [(int(phase.stage), 1.0)]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        """One generator and one discriminator update of the current phase.

        Returns:
            ``{"stage": k, "images": {...}}``: the top judged stage and its images of this step
            (detached), for callbacks such as :class:`~scan.training.callbacks.TrainingImages`.
        """
        # Networks compile on their first call of a phase: a failure there is one line too.
        with compile_errors(_COMPILE_HINT) if self.compile_networks else contextlib.nullcontext():
            return self._training_step(batch, batch_idx)

    def _training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        index, _ = self.phase_at(self.current_epoch)
        judged = self.judged_stages(self.phases[index])
        opt_g, opt_d = self._optimizer(index, "generator"), self._optimizer(index, "discriminator")
        if self.channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
        reals = {stage: (self.model.stage_input(batch["a"], stage), self.model.stage_input(batch["b"], stage))
                 for stage, _ in judged}

        # Generators (this stage's, or all in a joint phase): toggle_optimizer freezes every other
        # parameter, the earlier stages and the discriminators included.
        self.toggle_optimizer(opt_g)
        # Any other role of the phase is a loss's own network (a PatchNCE head, say): it learns from
        # the generator's loss, so it is unfrozen and stepped with it (untoggle restores its state).
        with_generator = self._phase_optimizers(index, exclude=("generator", "discriminator"))
        for opt in with_generator:
            for group in opt.param_groups:
                for p in group["params"]:
                    p.requires_grad_(True)
        # DiffAugment, where asked for: both steps judge augmented images (passed only then, so that a
        # generator_step replaced by a subclass needs no augment argument).
        augment: dict[str, Any] = {} if self.augment is None else {"augment": self.augment}
        steps = {stage: self.model.generator_step(*reals[stage], stage, **augment) for stage, _ in judged}
        g_loss = _weighted_sum([(weight, steps[stage].loss) for stage, weight in judged])
        self.manual_backward(g_loss)
        self._step_unless_nonfinite([opt_g, *with_generator], "generator")
        for opt in (opt_g, *with_generator):
            opt.zero_grad(set_to_none=True)
        self.untoggle_optimizer(opt_g)

        # Discriminators, each stage's pair on a mix of new and past fakes of that stage.
        self.toggle_optimizer(opt_d)
        d_losses, d_terms = {}, {}
        for stage, _ in judged:
            real_a, real_b = reals[stage]
            fake_a = self.pools[f"stage{stage}_a"].query(steps[stage].fake_a)
            fake_b = self.pools[f"stage{stage}_b"].query(steps[stage].fake_b)
            d_losses[stage], d_terms[stage] = self.model.discriminator_step(
                real_a=real_a, real_b=real_b, fake_a=fake_a, fake_b=fake_b, stage=stage, **augment
            )
        d_loss = _weighted_sum([(weight, d_losses[stage]) for stage, weight in judged])
        if d_loss.requires_grad:  # frozen discriminators (`freeze`) learn nothing: no backward pass
            self.manual_backward(d_loss)
            self._step_unless_nonfinite([opt_d], "discriminator")
        opt_d.zero_grad(set_to_none=True)
        self.untoggle_optimizer(opt_d)

        # Device tensors, logged as they are: Lightning reads them only when it writes the logs (every
        # log_every_n_steps) or redraws the progress bar. Rank 0's values, not all-reduced: an
        # all-reduce per value and step costs more than the curves gain from it.
        logs = {f"train/stage{stage}/{name}": value for stage, _ in judged
                for name, value in {**steps[stage].terms, **d_terms[stage]}.items()}
        top = judged[-1][0]
        logs.update(self._epoch_logs)
        self.log_dict(logs, on_step=True, on_epoch=False)
        self.log("G", g_loss.detach(), prog_bar=True, on_step=True, logger=False)
        self.log("D", d_loss.detach(), prog_bar=True, on_step=True, logger=False)
        if (batch_idx + 1) % self.max_nonfinite_steps == 0:
            self._check_nonfinite()

        step, (real_a, real_b) = steps[top], reals[top]
        images = {"real_a": real_a, "fake_b": step.fake_b, "rec_a": step.rec_a, "real_b": real_b,
                  "fake_a": step.fake_a, "rec_b": step.rec_b, "alpha_ab": step.stack_ab.alphas[-1],
                  "alpha_ba": step.stack_ba.alphas[-1]}
        return {"stage": top, "images": {k: None if v is None else v.detach() for k, v in images.items()}}

    # ----------------------------------------------------------------------- checkpoints and data
    def setup(self, stage: str) -> None:
        # Safe checkpoint I/O (atomic writes, weights_only reads) unless the user chose another one.
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = SafeCheckpointIO()
        # Under DDP each phase leaves most parameters unused (frozen stages, the other optimiser's
        # networks), so DDP must look for them; `--trainer.strategy ddp` then just works.
        ddp_kwargs = getattr(strategy, "_ddp_kwargs", None)
        if isinstance(ddp_kwargs, dict):
            ddp_kwargs["find_unused_parameters"] = True

    def configure_callbacks(self) -> list[Callback]:
        # The step's image grids, every image_log_every_n_steps batches. Lightning's bars read the losses
        # from the device after every batch; this one by the clock (it replaces the trainer's, whose
        # settings it keeps). A bar of the user's own is left alone.
        bar = throttled(self.trainer.progress_bar_callback)
        return [TrainingImages(self.image_log_every_n_steps)] + ([] if bar is None else [bar])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What scan.load_model needs to rebuild the model from a .ckpt, as plain data.
        checkpoint["scan"] = {"format": "scan-lightning", "config": self.config.to_dict()}
        # Every rank's pools, gathered (all ranks run this hook): a resumed DDP run gets its own back.
        pools = {}
        for name, pool in self.pools.items():
            state = pool.state_dict()
            images = cast(Tensor, state["images"])
            if self.trainer.world_size > 1:
                images = cast(Tensor, self.all_gather(images.to(self.device))).cpu()  # (world, n, C, H, W)
            else:
                images = images.unsqueeze(0)
            pools[name] = {"size": state["size"], "images": images}
        checkpoint["image_pools"] = pools

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rank, world = self.global_rank, self.trainer.world_size if self._trainer is not None else 1
        for name, state in checkpoint.get("image_pools", {}).items():
            if name in self.pools:
                images = state["images"]
                own = images[rank] if images.shape[0] == world and images.ndim == 5 else images[0]
                self.pools[name].load_state_dict({"size": state["size"], "images": own}, self.device)

