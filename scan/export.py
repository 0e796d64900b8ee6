"""Export one direction's whole stack (every stage and fusion block) to ONNX or TorchScript, or an
inference-only scan model file (one direction or both, no discriminators).

    scan-export --checkpoint model.pt --format onnx --direction a2b --output a2b.onnx
    scan-export --checkpoint model.pt --format scan --output small.pt          # both directions
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from scan.checkpoint import load_model, save_model
from scan.errors import UserError, add_debug_flag, image_side, run_command
from scan.generator import StackedGenerator
from scan.model import DIRECTIONS, SCAN
from scan.outputs import OutputPlan, atomic_write, atomic_write_bytes

__all__ = ["FinalOutput", "export_model", "main", "build_parser", "FORMATS"]

FORMATS = ("onnx", "torchscript", "scan")
BOTH = "both"  # --direction for a scan file that keeps both directions


class FinalOutput(nn.Module):
    """A stacked generator returning only its last stage's image (what deployment wants).

    Shape:
        - Input: :math:`(B, 3, H, W)` in ``[-1, 1]``
        - Output: :math:`(B, 3, H, W)` in ``[-1, 1]``
    """

    def __init__(self, generator: StackedGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: Tensor) -> Tensor:
        return self.generator(image).final


class ExportSizeError(UserError, ValueError):
    """An export the format or the stack cannot take: a size, or a direction."""


def export_model(
    model: SCAN, path: str | os.PathLike[str], format: str = "onnx", direction: str = "a2b", size: int | None = None
) -> Path:
    """Export ``model``'s ``direction`` stack for a fixed input size (default: the model's top size),
    or (``format="scan"``) an inference-only scan model file (:func:`scan.save_model`
    ``(inference=True)``) of ``direction`` or of ``"both"``, which takes any size the model does.

    ONNX files are self-contained (weights inside, no ``.data`` side file), input ``image`` and
    output ``translated``, both ``(1, 3, size, size)`` in ``[-1, 1]``.

    The file is written atomically: a failed export leaves any previous file at ``path`` intact.

    Returns:
        The written path.

    Raises:
        ValueError: an unknown format, ``"both"`` for a format that holds one direction, or a size
            the stack cannot take (the message names the multiple it needs).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "scan":
        if size is not None:
            raise ExportSizeError("--size: a scan model file takes any size the model does; give none")
        return save_model(model, path, inference=True,
                          directions=model.directions if direction == BOTH else [direction])
    if direction == BOTH:
        raise ExportSizeError(f"direction {BOTH!r}: an {format} file holds one direction (a2b or b2a)")
    size = model.config.top_size if size is None else size
    multiple = 2 ** (model.num_stages - 1) * 8
    if size < multiple or size % multiple:
        raise ExportSizeError(f"export size {size}: this {model.num_stages}-stage model needs a positive multiple of "
                              f"{multiple} (it was trained at {model.config.top_size})")
    wrapper = FinalOutput(model.generator(direction)).eval().cpu()
    example = torch.zeros(1, model.config.channels, size, size)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about shape checks, which hold for this size
        if format == "onnx":
            program = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=["image"],
                                        output_names=["translated"], verbose=False)
            assert program is not None  # dynamo=True always gives one
            return atomic_write(path, lambda tmp: program.save(tmp, external_data=False))
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, example)
    # Into memory first: torch.jit's own file writer aborts the whole process on a full disk (exit 134).
    return atomic_write_bytes(path, lambda buffer: torch.jit.save(traced, buffer))



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scan-export",
                                     description="Export a scan model's stack to ONNX / TorchScript.")
    parser.add_argument("--checkpoint", required=True, type=Path, help="scan model file or training checkpoint")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--direction", choices=(*DIRECTIONS, BOTH), default=None,
                        help="default: a2b (onnx, torchscript), both (scan)")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--size", type=image_side, default=None,
                        help="input side (default: the model's top size)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output file (never the checkpoint)")
    add_debug_flag(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    OutputPlan(inputs=[args.checkpoint], overwrite=args.overwrite).claim(args.output)
    model = load_model(args.checkpoint)
    direction = args.direction or (BOTH if args.format == "scan" else "a2b")
    path = export_model(model, args.output, args.format, direction, args.size)
    size = f", {path.stat().st_size / 1e6:.2f} MB" if args.format == "scan" else ""
    print(f"wrote {path} ({args.format}, {direction}, {model.num_stages} stage(s){size})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
