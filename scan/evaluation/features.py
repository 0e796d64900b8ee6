"""Feature extractors for the distribution metrics (KID, FID): the seam, and the field's Inception.

A feature extractor is any ``nn.Module`` that takes a batch of ``uint8`` RGB images
:math:`(N, 3, H, W)` and returns features :math:`(N, D)`, with an ``int`` attribute ``num_features``
(``D``). The default is the standard FID Inception-v3 (2048-d pool features), loaded as the TorchScript
file the field shares, ``inception-2015-12-05.pt`` (as StyleGAN2-ADA's and clean-fid's metrics load
it; it resizes to 299 px itself): no network definition of ours, and no torchvision.

Nothing is downloaded unless asked for: :func:`load_inception` looks for the file (an explicit path,
``$SCAN_INCEPTION_WEIGHTS``, then the cache), and fetches it only with ``download=True`` and
``$SCAN_OFFLINE`` unset. Where it cannot, :class:`MissingWeightsError` says in one line which file it
looked for and how to give a local copy.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from scan.errors import UserError
from scan.outputs import atomic_write

__all__ = ["TorchScriptFeatures", "MissingWeightsError", "load_inception", "default_inception_path",
           "INCEPTION_FILE", "INCEPTION_URL"]

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = f"https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{INCEPTION_FILE}"
WEIGHTS_OPTION = "--inception-weights PATH"


class MissingWeightsError(UserError, FileNotFoundError):
    """The feature extractor's weights are not on this machine and could not be fetched."""


def default_inception_path() -> Path:
    """Where the Inception file is looked for and cached: ``$SCAN_INCEPTION_WEIGHTS``, else
    ``$XDG_CACHE_HOME/scan/`` (``~/.cache/scan/``)."""
    explicit = os.environ.get("SCAN_INCEPTION_WEIGHTS")
    if explicit:
        return Path(explicit).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "scan" / INCEPTION_FILE


def offline() -> bool:
    """``$SCAN_OFFLINE`` set (to anything but ``0``): never try the network."""
    return os.environ.get("SCAN_OFFLINE", "0") not in ("", "0")


class TorchScriptFeatures(nn.Module):
    """A feature extractor stored as TorchScript (``torch.jit.load``: the file holds no Python code).

    The Inception file's ``forward(images, return_features=False)`` is called with
    ``return_features=True``; a file whose ``forward`` takes the images alone is called with them.

    Args:
        path: the ``.pt`` file.
        name: what reports call it (default: the file's stem).

    Raises:
        MissingWeightsError: no such file.
        UserError: not a TorchScript file, or its output is not ``(N, D)``.

    Shape:
        - Input: :math:`(N, 3, H, W)` ``uint8``
        - Output: :math:`(N, D)` float32
    """

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise MissingWeightsError(f"{path}: no such feature extractor file")
        try:
            with warnings.catch_warnings():  # "torch.jit.load is deprecated": the field's file is TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                self.network = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError, OSError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"{path}: not a TorchScript feature extractor ({first})") from None
        arguments = [a.name for a in self.network.forward.schema.arguments]
        self._kwargs = {"return_features": True} if "return_features" in arguments else {}
        self.name = name or path.stem
        with torch.no_grad():
            probe = self(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
        if probe.ndim != 2 or probe.shape[0] != 2:
            raise UserError(f"{path}: a feature extractor must return (N, D) features, got {tuple(probe.shape)} for "
                            "2 images")
        self.num_features = int(probe.shape[1])

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images, **self._kwargs).float()


def _download(url: str, path: Path, timeout_s: float = 30.0) -> None:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        data = response.read()
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_inception(path: str | os.PathLike[str] | None = None, download: bool = True,
                   option: str = WEIGHTS_OPTION) -> TorchScriptFeatures:
    """The standard FID Inception-v3 feature extractor (2048-d pool features).

    Args:
        path: a local copy of ``inception-2015-12-05.pt``, or any TorchScript extractor with the same
            call (``uint8`` images in, ``(N, D)`` out); default: :func:`default_inception_path`.
        download: fetch the file into the cache when it is missing (never under ``$SCAN_OFFLINE``,
            never for an explicit ``path``).
        option: how the user gives a local copy, for the error message (``scan-eval``'s by default).

    Raises:
        MissingWeightsError: not there and not fetched; the one-line message names the file looked
            for and the option that takes a local copy.
    """
    if path is not None:
        return TorchScriptFeatures(path)
    target = default_inception_path()
    if not target.is_file():
        why = "offline ($SCAN_OFFLINE)" if offline() else "no download asked for"
        if download and not offline():
            try:
                _download(INCEPTION_URL, target)
                why = ""
            except (urllib.error.URLError, OSError, UserError) as error:
                why = f"download failed: {getattr(error, 'reason', None) or error}"
        if why:
            raise MissingWeightsError(f"KID/FID need the Inception weights {target} ({why}); give a local copy of "
                                      f"{INCEPTION_FILE} with {option}")
    return TorchScriptFeatures(target)

