"""CycleGAN's objective: GAN losses (LSGAN, vanilla, hinge) and the image pool of past fakes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["gan_loss", "GANLoss", "ImagePool"]

GAN_MODES = ("lsgan", "vanilla", "hinge")


def gan_loss(logits: Tensor, target_is_real: bool, mode: str = "lsgan", for_discriminator: bool = True) -> Tensor:
    """Adversarial loss of discriminator logits.

    Args:
        logits: patch logits from a discriminator.
        target_is_real: whether ``logits`` should be judged real.
        mode: ``lsgan`` (mean squared error to 1/0), ``vanilla`` (BCE with logits) or ``hinge``.
        for_discriminator: hinge only: the discriminator's margin loss, else the generator's ``-mean``.

    Returns:
        A scalar loss.
    """
    if mode == "lsgan":
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        return F.mse_loss(logits, target)
    if mode == "vanilla":
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)
    if mode == "hinge":
        if not for_discriminator:
            return -logits.mean()
        return F.relu(1.0 - logits).mean() if target_is_real else F.relu(1.0 + logits).mean()
    raise ValueError(f"unknown gan_mode {mode!r}; valid: {', '.join(GAN_MODES)}")


class GANLoss(nn.Module):
    """:func:`gan_loss` with a fixed mode.

    Args:
        mode: ``lsgan``, ``vanilla`` or ``hinge``.
    """

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown gan_mode {mode!r}; valid: {', '.join(GAN_MODES)}")
        self.mode = mode

    def forward(self, logits: Tensor, target_is_real: bool, for_discriminator: bool = True) -> Tensor:
        return gan_loss(logits, target_is_real, self.mode, for_discriminator)


class ImagePool:
    """Buffer of previously generated images (Shrivastava et al.; CycleGAN's ``ImagePool``).

    The discriminator sees a mix of the newest fakes and older ones, which damps oscillation.
    Until the pool is full every image is stored and returned; then each returned image is, with
    probability 1/2, a stored one (replaced by the new image) or the new image itself. Randomness
    comes from torch's generator, so seeding torch makes it reproducible.

    Args:
        size: images kept; 0 returns the input unchanged.

    Shape:
        - Input: :math:`(B, C, H, W)` (detached)
        - Output: :math:`(B, C, H, W)`
    """

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"ImagePool size must be >= 0, got {size}")
        self.size = size
        self.images: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: Tensor) -> Tensor:
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()) < 0.5:
                index = int(torch.randint(0, self.size, ()))
                out.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, dim=0)

    def state_dict(self) -> dict[str, Tensor | int]:
        """Plain tensors, so the pool survives a checkpoint loaded with ``weights_only=True``."""
        stored = torch.cat(self.images).cpu() if self.images else torch.empty(0)
        return {"size": self.size, "images": stored}

    def load_state_dict(self, state: dict[str, Tensor | int], device: torch.device | str = "cpu") -> None:
        self.size = int(state["size"])
        stored = state["images"]
        assert isinstance(stored, Tensor)
        self.images = [img.unsqueeze(0).to(device) for img in stored] if stored.numel() else []
