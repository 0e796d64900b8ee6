"""DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", 2020).

With few real images a discriminator memorises them and stops teaching the generator anything. DiffAugment
shows it randomly augmented images instead, real and fake alike, in its own update *and* in the
generator's (the augmentations are differentiable, so the generator learns through them); the
generator still produces un-augmented images, and the discriminator cannot tell real from fake by the
augmentation, which both get.

Augmentations (``"color,translation,cutout"`` is the paper's policy for few-shot training), applied
in the order the policy names them, each drawn per image:

- ``color``: brightness ``+ U(-0.5, 0.5)``, then saturation ``x U(0, 2)``, then contrast ``x U(0.5, 1.5)``
  (each about the image's mean), on ``[0, 1]`` intensities: ``[-1, 1]`` images are converted (the
  paper's code adds the brightness offset to ``[-1, 1]`` images as they are, half this strength);
- ``translation``: a shift by up to 1/8 of each side, whole pixels, the uncovered border filled with
  zero (black);
- ``cutout``: a square of half the side set to zero (black), centred anywhere in the image (so it may
  be partly outside).

``SCANModule(diff_augment="color,translation,cutout")`` (``--model.diff_augment`` of ``train.py``) applies
it before every discriminator call of training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scan.checks import check_shape

__all__ = ["POLICIES", "parse_policy", "diff_augment", "DiffAugment"]


def _color(x: Tensor) -> Tensor:
    """Brightness, saturation, contrast, on ``[0, 1]`` intensities (``(B, C, H, W)``)."""
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)  # per pixel: saturation scales the distance to the grey level
    x = (x - mean) * (torch.rand(b, 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # per image: contrast scales the distance to the mean
    return (x - mean) * (torch.rand(b, 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def _translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """A random whole-pixel shift of up to ``ratio`` of each side, the border filled with zeros."""
    b, c, h, w = x.shape
    shift_y, shift_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-shift_y, shift_y + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-shift_x, shift_x + 1, (b, 1, 1), device=x.device)
    # Each output pixel (y, x) reads the input at (y - dy, x - dx); reads from outside are zero. A
    # gather is differentiable in x (unlike a roll per image, it also needs no loop over the batch).
    src_y = torch.arange(h, device=x.device).view(1, h, 1) - dy
    src_x = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = ((src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)).unsqueeze(1)
    index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    shifted = x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)
    return shifted * inside.to(x.dtype)


def _cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """A square of ``ratio`` of the side, centred at a random pixel, set to zero."""
    b, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # As in the paper's code: the centre anywhere in the image (one more place for an even size).
    cy = torch.randint(0, h + (1 - size_y % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - size_x % 2), (b, 1, 1), device=x.device)
    top, left = cy - size_y // 2, cx - size_x // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    cut = (ys >= top) & (ys < top + size_y) & (xs >= left) & (xs < left + size_x)
    return x * (~cut).unsqueeze(1).to(x.dtype)


# In the order they are applied.
POLICIES: dict[str, Callable[[Tensor], Tensor]] = {"color": _color, "translation": _translation, "cutout": _cutout}


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """The augmentations of a policy string, e.g. ``"color,translation,cutout"``; ``None`` or ``""``: none.

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or one named twice.
    """
    if policy is None:
        return ()
    if not isinstance(policy, str):
        raise ValueError(f"diff_augment takes a comma-separated string such as 'color,translation,cutout', "
                         f"got {policy!r}")
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"diff_augment: unknown {', '.join(map(repr, unknown))}; valid: {', '.join(POLICIES)} "
                         "(comma-separated, e.g. 'color,translation,cutout')")
    if len(set(names)) != len(names):
        raise ValueError(f"diff_augment: {policy!r} names an augmentation twice")
    return names


def diff_augment(images: Tensor, policy: str | tuple[str, ...] | None) -> Tensor:
    """Augment a batch differentiably, each image with its own random draw (torch's RNG on its device).

    Args:
        images: floats in ``[-1, 1]`` (what the model's networks take).
        policy: a policy string such as ``"color,translation,cutout"`` or its parsed names; empty or
            ``None``: ``images`` unchanged (the same tensor).

    Returns:
        The augmented batch, in ``[-1, 1]`` units (the colour changes may leave that range, as in the
        paper; the discriminator takes any value). Gradients flow back to ``images``.

    Shape:
        - Input: :math:`(B, C, H, W)`
        - Output: :math:`(B, C, H, W)`

    Raises:
        ValueError: an unknown augmentation name.
    """
    names = policy if isinstance(policy, tuple) else parse_policy(policy)
    if not names:
        return images
    check_shape(images, ("B", "C", "H", "W"), "diff_augment")
    x = (images + 1) / 2  # the policy's magnitudes are for [0, 1] intensities
    for name in names:  # in the policy's order, as in the paper's code
        x = POLICIES[name](x)
    return x * 2 - 1


class DiffAugment:
    """:func:`diff_augment` with a fixed policy: the ``augment`` callable that
    :meth:`scan.SCAN.generator_step` and :meth:`scan.SCAN.discriminator_step` take.

    Args:
        policy: a policy string (see :func:`parse_policy`).

    Raises:
        ValueError: an unknown augmentation name, or none at all (leave the augmentation out instead).
    """

    def __init__(self, policy: str) -> None:
        self.names = parse_policy(policy)
        if not self.names:
            raise ValueError("DiffAugment needs at least one augmentation, e.g. 'color,translation,cutout'")

    def __call__(self, images: Tensor) -> Tensor:
        return diff_augment(images, self.names)

    def __repr__(self) -> str:
        return f"DiffAugment({','.join(self.names)!r})"
