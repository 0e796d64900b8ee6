"""Input checks that say what was wrong (kornia's ``KORNIA_CHECK_SHAPE`` style): one home for them."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["check_shape", "check_divisible", "check_positive_int"]


def check_shape(x: Tensor, shape: Sequence[int | str], name: str) -> None:
    """Check a tensor's shape against a pattern.

    Args:
        x: the tensor.
        shape: one entry per dimension: an ``int`` must match exactly; a name (``"B"``, ``"H"``) is
            any size.
        name: who expects it, for the message (``"ResnetGenerator"``).

    Raises:
        ValueError: ``{name} expects (B, 3, H, W), got (3, 64, 64)``.
    """
    if x.ndim != len(shape) or any(isinstance(want, int) and got != want for got, want in zip(x.shape, shape)):
        raise ValueError(f"{name} expects ({', '.join(map(str, shape))}), got {tuple(x.shape)}")


def check_divisible(x: Tensor, multiple: int, name: str) -> None:
    """Check that a ``(..., H, W)`` tensor's sides are divisible by ``multiple``.

    Raises:
        ValueError: ``{name} needs H and W divisible by 8, got (30, 30)``.
    """
    if x.shape[-1] % multiple or x.shape[-2] % multiple:
        raise ValueError(f"{name} needs H and W divisible by {multiple}, got {tuple(x.shape[-2:])}")


def check_positive_int(name: str, value: object) -> None:
    """Check that ``value`` is a whole number >= 1 (not a bool, not a float).

    Raises:
        ValueError: ``batch_size must be a whole number >= 1, got 2.5``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
