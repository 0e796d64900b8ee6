"""``scan-eval`` (also ``python -m scan.evaluation``): score models on a held-out folder, every stage.

    scan-eval --checkpoint model.pt --data selfie2anime                    # KID/FID (+ PSNR/SSIM with answers)
    scan-eval --checkpoint old.pt new.pt --data demo_data --out report.json  # side by side, JSON report
    scan-eval --checkpoint model.pt --data demo_data --metrics psnr ssim --direction a2b

The data is a CycleGAN-layout folder: ``testA/`` and ``testB/`` (``--split``), and where the data has
known answers ``testA_target/`` (``testB_target/``). KID and FID need the standard Inception file
(``inception-2015-12-05.pt``): fetched into the cache on first use where there is a network, else
given with ``--inception-weights PATH``; without it they are skipped with one line, and the other
metrics still run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from scan.checkpoint import load_model
from scan.errors import EXIT_FAILED, InputError, add_debug_flag, int_range, positive_int, run_command
from scan.evaluation.evaluator import (
    DIRECTIONS,
    DISTRIBUTION_METRICS,
    METRICS,
    PAIRED_METRICS,
    DirectionReport,
    EvalFolders,
    Evaluator,
)
from scan.evaluation.features import MissingWeightsError, load_inception
from scan.outputs import OutputPlan, atomic_write
from scan.runtime import MAX_WORKERS, resolve_device

__all__ = ["main", "build_parser", "format_table"]

DEFAULT_METRICS = ("psnr", "ssim", "detail", "kid", "fid")
COLUMNS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "detail": "detail (dB)", "cycle": "cycle L1",
           "kid": "KID x100", "fid": "FID"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scan-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, nargs="+", type=Path, metavar="PATH",
                   help="one or several scan model files or training checkpoints, compared side by side")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="CycleGAN-layout folder (testA/, testB/, "
                   "optionally testA_target/ with known answers)")
    p.add_argument("--split", default="test", help="which folders: {split}A/, {split}B/ (default: test)")
    p.add_argument("--direction", choices=(*DIRECTIONS, "both"), default="both")
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=None, metavar="METRIC",
                   help=f"any of {', '.join(METRICS)} (default: {' '.join(DEFAULT_METRICS)}; detail: PSNR of the "
                        "high-frequency band; cycle: round-trip L1)")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N")
    p.add_argument("--workers", type=int_range(0, MAX_WORKERS), default=0, metavar="N",
                   help="decoding processes (default 0: in-process)")
    p.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                   help="only the first N images of each folder")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="the models' precision")
    p.add_argument("--inception-weights", type=Path, default=None, metavar="PATH",
                   help="a local copy of inception-2015-12-05.pt (or any TorchScript feature extractor with its "
                        "call: uint8 images in, (N, D) features out)")
    p.add_argument("--no-download", action="store_true", help="never fetch the Inception file (also $SCAN_OFFLINE=1)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="write the report as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_debug_flag(p)
    return p


def _number(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return "nan"
    return {"ssim": f"{value:.3f}", "cycle": f"{value:.4f}", "kid": f"{100 * value:.2f}"}.get(metric, f"{value:.2f}")


def _cell(row: dict[str, float], metric: str) -> str:
    if metric not in row:
        return ""
    if metric == "kid" and "kid_std" in row:
        return f"{_number(row['kid'], 'kid')} ± {_number(row['kid_std'], 'kid')}"
    return _number(row[metric], metric)


def _row_label(row: str, report: DirectionReport) -> str:
    """``oracle_stage1`` -> ``oracle: answer through 64 px``; the other rows as they are."""
    if row.startswith("oracle_stage") and report.top_size:
        stage = int(row.removeprefix("oracle_stage"))
        return f"oracle: answer through {report.top_size // 2 ** (report.stages - stage)} px"
    return row


def format_table(reports: dict[str, DirectionReport], metrics: tuple[str, ...]) -> str:
    """A Markdown table of one direction: a row per model and stage (and the oracle rows), a column per metric.

    Args:
        reports: ``{model name: report}`` of one direction.
        metrics: the columns, in order (those no row has are left out).
    """
    shown = [m for m in metrics if any(m in row for r in reports.values() for row in r.rows.values())]
    lines = ["| model | row | " + " | ".join(COLUMNS[m] for m in shown) + " |", "|---|---|" + "---|" * len(shown)]
    for name, report in reports.items():
        for row_name, row in report.rows.items():
            if not any(m in row for m in shown):
                continue  # e.g. the untranslated input where only the cycle error was asked for
            lines.append(f"| {name} | {_row_label(row_name, report)} | " + " | ".join(_cell(row, m) for m in shown)
                         + " |")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _model_names(paths: list[Path]) -> list[str]:
    """Short names for the table: the file names, or the whole paths where two share a name."""
    names = [p.name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _features(args: argparse.Namespace, metrics: tuple[str, ...], explicit: bool) -> tuple[Any, tuple[str, ...], bool]:
    """The feature extractor, the metrics that can run, and whether an asked-for metric was dropped."""
    if not set(metrics) & set(DISTRIBUTION_METRICS):
        return None, metrics, False
    try:
        return load_inception(args.inception_weights, download=not args.no_download), metrics, False
    except MissingWeightsError as error:
        if args.inception_weights is not None:
            raise
        remaining = tuple(m for m in metrics if m not in DISTRIBUTION_METRICS)
        if not remaining:
            raise
        print(f"warning: {error}; computing {' '.join(remaining)} only", file=sys.stderr)
        return None, remaining, explicit


def _check_inputs(args: argparse.Namespace) -> None:
    """Every path the command reads or writes, checked before any model is loaded."""
    if not args.data.is_dir():
        raise InputError(f"{args.data}: no such folder (give a CycleGAN-layout data folder)")
    missing = [p for p in args.checkpoint if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: no such model file")
    resolved = [p.resolve() for p in args.checkpoint]
    twice = next((p for p, r in zip(args.checkpoint, resolved) if resolved.count(r) > 1), None)
    if twice is not None:
        raise InputError(f"{twice} is given twice; compare different models")
    if args.out is not None:
        OutputPlan(inputs=args.checkpoint, overwrite=args.overwrite).claim(args.out)


def _scorable(args: argparse.Namespace, metrics: tuple[str, ...]) -> dict[str, EvalFolders]:
    """The directions asked for that some metric can score, each with its folders; a note for what the
    data cannot give (no known answers, no real images of the other domain)."""
    directions = list(DIRECTIONS) if args.direction == "both" else [args.direction]
    folders = {d: EvalFolders.from_root(args.data, d, args.split) for d in directions}
    for direction, f in list(folders.items()):
        lacking = [what for what, folder, needs in (("known answers", f.targets, PAIRED_METRICS),
                                                    ("real images of the other domain", f.real, DISTRIBUTION_METRICS))
                   if folder is None and set(needs) & set(metrics)]
        scorable = [m for m in metrics if m == "cycle" or (m in PAIRED_METRICS and f.targets is not None)
                    or (m in DISTRIBUTION_METRICS and f.real is not None)]
        if lacking or not scorable:
            left = "those metrics are left out" if scorable else "nothing to score there, skipped"
            print(f"note: {direction}: no {' and no '.join(lacking)} under {args.data}; {left}", file=sys.stderr)
        if not scorable:
            del folders[direction]
    if not folders:
        raise InputError(f"{args.data}: none of {', '.join(metrics)} can be computed on this data (KID/FID need "
                         "the other domain's real images, PSNR/SSIM/detail known answers such as testA_target/)")
    return folders


def _evaluate(evaluator: Evaluator, model: Any, name: str, direction: str, folders: EvalFolders) -> DirectionReport:
    """One model in one direction, what went wrong on the way said in ``warning:`` lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # files skipped by the folder walk
        result = evaluator.evaluate(model, folders, direction, name=name)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    for line in result.skipped:
        print(f"warning: {line}; left out", file=sys.stderr)
    broken = [row for row, scores in result.rows.items() if not all(map(math.isfinite, scores.values()))]
    if broken:
        print(f"warning: {name} {direction}: {', '.join(broken)} scored NaN/inf (the model's output is not finite: "
              "diverged or broken weights?)", file=sys.stderr)
    return result


def _run(args: argparse.Namespace) -> int:
    _check_inputs(args)
    device = resolve_device(args.device)
    features, metrics, dropped = _features(args, tuple(args.metrics or DEFAULT_METRICS), args.metrics is not None)
    folders = _scorable(args, metrics)
    evaluator = Evaluator(metrics, features, args.batch_size, device, args.precision, args.workers, args.max_images,
                          progress=not args.quiet)
    results: dict[str, dict[str, DirectionReport]] = {d: {} for d in folders}
    report: dict[str, Any] = {"meta": {"data": str(args.data), "split": args.split, "metrics": list(metrics),
                                       "batch_size": args.batch_size, "precision": args.precision,
                                       "device": str(device), "max_images": args.max_images,
                                       "features": getattr(features, "name", None), "torch": torch.__version__},
                              "models": {}}
    for name, path in zip(_model_names(args.checkpoint), args.checkpoint):
        model = load_model(path, map_location=device)
        entry: dict[str, Any] = {"path": str(path), "stages": model.num_stages, "top_size": model.config.top_size}
        for direction, direction_folders in folders.items():
            result = results[direction][name] = _evaluate(evaluator, model, name, direction, direction_folders)
            entry[direction] = {"images": result.images, "real_images": result.real_images,
                                "skipped": result.skipped, "rows": result.rows}
        report["models"][name] = entry
    for direction, reports in results.items():
        first = next(iter(reports.values()))
        print(f"\n{direction}: {first.images} image(s) of {folders[direction].source}"
              + (f", KID/FID against {first.real_images} real image(s)" if first.real_images else ""))
        print(format_table(reports, metrics))
    if args.out is not None:
        text = json.dumps(_plain(report), indent=1)
        atomic_write(args.out, lambda tmp: tmp.write_text(text))
        print(f"\nwrote {args.out}")
    return EXIT_FAILED if dropped else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
