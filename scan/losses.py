"""CycleGAN's objective: GAN losses (LSGAN, vanilla, hinge) and the image pool of past fakes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scan.components import get_gan_loss, register_gan_loss

__all__ = ["gan_loss", "GANLoss", "ImagePool"]



@register_gan_loss("lsgan")
def _least_squares(logits: Tensor, target_is_real: bool, for_discriminator: bool = True) -> Tensor:
    """Mean squared error to 1 (real) or 0 (fake): CycleGAN's default."""
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    return F.mse_loss(logits, target)


@register_gan_loss("vanilla")
def _cross_entropy(logits: Tensor, target_is_real: bool, for_discriminator: bool = True) -> Tensor:
    """Binary cross-entropy with logits: the original GAN loss."""
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


@register_gan_loss("hinge")
def _hinge(logits: Tensor, target_is_real: bool, for_discriminator: bool = True) -> Tensor:
    """The discriminator's margin loss, or the generator's ``-mean(logits)``."""
    if not for_discriminator:
        return -logits.mean()
    return F.relu(1.0 - logits).mean() if target_is_real else F.relu(1.0 + logits).mean()


def gan_loss(logits: Tensor, target_is_real: bool, mode: str = "lsgan", for_discriminator: bool = True) -> Tensor:
    """Adversarial loss of discriminator logits.

    Args:
        logits: patch logits from a discriminator.
        target_is_real: whether ``logits`` should be judged real.
        mode: a registered loss (``scan.components.gan_losses()``): ``lsgan`` (mean squared error to
            1/0), ``vanilla`` (BCE with logits), ``hinge``, or one of your own
            (:func:`scan.components.register_gan_loss`).
        for_discriminator: the discriminator's side of the loss (matters for ``hinge``: else the
            generator's ``-mean``).

    Returns:
        A scalar loss.

    Raises:
        ValueError: an unregistered mode; the message lists the registered ones.
    """
    return get_gan_loss(mode)(logits, target_is_real, for_discriminator)


class GANLoss(nn.Module):
    """:func:`gan_loss` with a fixed mode.

    Args:
        mode: a registered GAN loss (``lsgan``, ``vanilla``, ``hinge``, ...).
    """

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        self.loss = get_gan_loss(mode)  # fails now for an unknown mode
        self.mode = mode

    def forward(self, logits: Tensor, target_is_real: bool, for_discriminator: bool = True) -> Tensor:
        return self.loss(logits, target_is_real, for_discriminator)


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
