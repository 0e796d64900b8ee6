"""The models ``scan-web`` offers: every checkpoint named on its command line, loaded once, a
:class:`~scan.translator.Translator` per model and direction, labelled by the file's stem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scan.checkpoint import load_model
from scan.errors import InputError
from scan.model import DIRECTIONS
from scan.outputs import short_labels
from scan.translator import Translator

__all__ = ["Models", "check_choice"]


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """A choice of the page, checked (Gradio checks dropdown values too; this keeps the functions safe
    for any other caller)."""
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}")


class Models:
    """The checkpoints named on the command line, loaded once; the page picks among their labels.

    Args:
        checkpoints: model files or training checkpoints; each is labelled by its file name without the
            extension (:func:`scan.outputs.short_labels`); :meth:`get` takes the path as given too.
        device, precision: as for :class:`Translator`.
        landmarks: the landmark backend (``auto``, ``fan``, ``dlib``); loaded now, so a missing one
            fails at start-up instead of on the first photo.

    Raises:
        InputError: a checkpoint named twice, or none.
        scan.CheckpointError, DeviceError, AlignmentError: as when loading them by hand.
    """

    def __init__(self, checkpoints: Sequence[Path], device: str = "auto", precision: str = "fp32",
                 landmarks: str = "auto") -> None:
        if not checkpoints:
            raise InputError("give at least one --checkpoint")
        paths = [str(p) for p in checkpoints]
        if len(set(paths)) != len(paths):
            raise InputError(f"a --checkpoint is named twice: {', '.join(sorted(paths))}")
        labels = short_labels(checkpoints)
        self.landmarks = landmarks
        self.translators: dict[tuple[str, str], Translator] = {}
        first: Translator | None = None
        for label, path in zip(labels, checkpoints):
            model = load_model(path)
            for direction in model.directions:  # an inference-only file may hold one
                translator = Translator(model, direction, device, precision)
                if first is None:
                    first = translator
                    first.landmark_backend(landmarks)  # loaded now: the first photo is as quick as the others
                translator.share_landmark_models(first)  # one copy of the landmark model for them all
                self.translators[label, direction] = translator
        self.labels = labels
        # The path as given on the command line names the same model (the library's callers use it).
        self._by_path = dict(zip(paths, labels))

    def label(self, name: str) -> str:
        """The picker's label for a label or a checkpoint's path as given."""
        return self._by_path.get(name, name)

    def get(self, label: str, direction: str) -> Translator:
        """The translator for one model and direction.

        Raises:
            InputError: a label or direction that was not offered.
        """
        check_choice("direction", direction, DIRECTIONS)
        label = self._by_path.get(label, label)
        check_choice("model", label, self.labels)
        if (label, direction) not in self.translators:
            raise InputError(f"model {label!r} is an inference-only file that holds no {direction} translator")
        return self.translators[label, direction]
