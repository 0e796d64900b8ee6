"""``Translator``: inference with a trained model, on aligned images or on whole portraits: one photo,
a stream of photos in batches, or a video.

The translator runs the network; the portrait's other steps are in :mod:`scan.portrait` (decode,
detect, align before it; blend, paste after it), which the methods here compose:

    portrait(photo)     prepare -> translate_faces -> finish
    portraits(photos)   the same, photos prepared and finished in worker threads, crops translated
                        in batches across photos (scan.batching)
    video(frames)       decode_frame -> tracker.update -> align -> translate_faces -> temporal
                        smoothing -> blend -> paste, frame by frame
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scan.align.crop import AlignedFace
from scan.align.landmarks import LandmarkBackend, SerialBackend, get_backend
from scan.align.tracking import FaceTracker
from scan.batching import translate_in_batches
from scan.checkpoint import load_model
from scan.checks import check_positive_int
from scan.compiling import check_compile_available, compile_errors, compile_modules, run_padded
from scan.errors import InputError, UserError
from scan.generator import StackOutput
from scan.imageio import as_model_input, model_to_pil
from scan.model import SCAN
from scan.portrait import (
    FaceResult,
    PhotoSource,
    PortraitOptions,
    PortraitResult,
    align,
    blend,
    decode_frame,
    face_result,
    finish,
    paste,
    prepare,
    with_settings,
)
from scan.runtime import available_devices, budget_threads, resolve_device
from scan.temporal import TemporalSmoother

__all__ = ["Translator", "PortraitOptions", "PortraitResult", "FaceResult", "NonFiniteOutputError", "PhotoSource",
           "resolve_device", "available_devices"]

PRECISIONS = ("fp32", "bf16")

# What to do instead when compiling fails (the end of a CompileError's message).
COMPILE_HINT = "run without --compile"


class NonFiniteOutputError(UserError, RuntimeError):
    """The model produced NaN/inf: its weights are broken (a diverged or corrupt model)."""


class Translator:
    """Runs one direction of a trained SCAN model under ``torch.inference_mode``; no Trainer needed.

    Args:
        model: the model.
        direction: ``a2b`` or ``b2a``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        precision: ``fp32`` or ``bf16`` (autocast).
        compile: compile the networks with ``torch.compile`` now (see :meth:`compile`): tens of
            seconds up front, then faster batches on a GPU.
        compile_batch_size: with ``compile``, the batch size to compile for (see :meth:`compile`).
        threads: CPU threads torch may keep busy, process-wide (:func:`scan.runtime.budget_threads`).

    Raises:
        ValueError: an unknown ``precision``.
        scan.errors.DeviceError: a device this machine does not have.
        scan.compiling.CompileError: with ``compile``, ``torch.compile`` failed on this machine.

    Example:
        >>> translator = Translator.from_checkpoint("selfie2anime.pt")
        >>> result = translator.portrait(Image.open("me.jpg"))
        >>> result.image.save("me_anime.png")
    """

    def __init__(self, model: SCAN, direction: str = "a2b", device: str = "auto", precision: str = "fp32",
                 compile: bool = False, compile_batch_size: int = 1, threads: int | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if threads is not None:  # else as they are
            budget_threads(threads)
        self.device = resolve_device(device)
        self.generator = model.generator(direction).to(self.device).eval()
        self.direction, self.precision = direction, precision
        self.size, self.channels = model.config.top_size, model.config.channels
        self._backends: dict[str, LandmarkBackend] = {}
        self.compiled = False
        # The batch sizes the compiled networks were warmed up for, ascending: translate() runs every
        # batch at one of them, so a new batch size never triggers a recompilation.
        self.compiled_batch_sizes: list[int] = []
        if compile:
            self.compile(compile_batch_size)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], direction: str = "a2b", device: str = "auto", precision: str = "fp32",
        compile: bool = False, compile_batch_size: int = 1,
    ) -> Translator:
        """Load a scan model file (or training checkpoint) safely and wrap one of its directions (the
        arguments are the constructor's)."""
        # Only the direction's generator is built: a translator never needs the discriminators.
        return cls(load_model(path, directions=[direction]), direction, device, precision, compile, compile_batch_size)

    def compile(self, batch_size: int = 1) -> None:
        """Compile the generator's networks in place with ``torch.compile`` and warm them up now.

        Each stage network and fusion block is compiled on its own (the stack's Python loop and
        checks stay eager), for static shapes, on ``$SCAN_COMPILE_BACKEND`` (default ``inductor``).
        Compiling happens here, in :meth:`warm_up`, not on the first real image. It pays on a GPU
        for many images; on a CPU it costs tens of seconds and gains little.

        Args:
            batch_size: the batch size to compile for. :meth:`translate` then runs every batch in
                chunks of this size, padding the last, so that no batch size recompiles; for other
                sizes as well (e.g. 1 for video frames), call :meth:`warm_up` with each.

        Raises:
            scan.compiling.CompileError: ``torch.compile`` failed on this machine (no C++ compiler,
                no Triton, an unsupported device or backend); one line that says why.
        """
        if not self.compiled:
            with compile_errors(COMPILE_HINT):  # an unknown backend fails here already
                check_compile_available(self.device, COMPILE_HINT)  # a missing compiler fails in seconds
                compile_modules(self.generator.networks())
            self.compiled = True
        self.warm_up(batch_size)

    def warm_up(self, batch_size: int = 1) -> None:
        """Translate one dummy batch at the model's size, so that everything done once (compiling,
        CUDA and oneDNN set-up) happens now rather than on the first image.

        With compiled networks this compiles them for ``batch_size``, which becomes one of the sizes
        :meth:`translate` pads its batches to.

        Args:
            batch_size: the batch size.

        Raises:
            ValueError: ``batch_size`` is not a positive whole number.
            scan.compiling.CompileError: compiling failed (one line).
            NonFiniteOutputError: the model's output is NaN/inf (broken weights).
        """
        check_positive_int("batch_size", batch_size)
        dummy = torch.zeros(batch_size, self.channels, self.size, self.size)
        if self.compiled and batch_size not in self.compiled_batch_sizes:
            # The new size is added first, so that this very batch is run (and compiled) unpadded.
            self.compiled_batch_sizes = sorted({*self.compiled_batch_sizes, batch_size})
        self.translate(dummy)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def translate(self, images: Tensor) -> StackOutput:
        """Translate a batch: floats in ``[-1, 1]`` or ``uint8`` in ``[0, 255]``, :math:`(B, 3, H, W)`
        (or one image :math:`(3, H, W)`) with sides the stack accepts. Outputs are floats in ``[-1, 1]``,
        on the translator's device.

        With compiled networks, the batch runs in chunks of the largest warmed-up batch size, each
        padded to the smallest warmed-up size that holds it (the padding is dropped): shapes the
        networks were compiled for. Another image size compiles once more.

        Raises:
            TypeError, ValueError: images of another dtype, shape or range (see
                :func:`scan.imageio.as_model_input`).
            NonFiniteOutputError: the model's output holds NaN/inf (broken weights).
            scan.compiling.CompileError: compiling for a new image size failed.
        """
        images = as_model_input(images, self.channels).to(self.device)
        with torch.inference_mode(), self._autocast():
            if self.compiled:
                with compile_errors(COMPILE_HINT):
                    out = run_padded(self.generator, images, self.compiled_batch_sizes)
            else:
                out = self.generator(images)
        if not bool(torch.isfinite(out.final).all()):
            raise NonFiniteOutputError(
                "the model's output is NaN/inf: its weights are broken (a diverged run or a corrupt file)"
            )
        return out.map(Tensor.float)

    def __call__(self, image: Image.Image | Tensor) -> Image.Image | Tensor:
        """Translate an already aligned image.

        A PIL image (any mode, EXIF orientation applied, as the file loader does) is resized to the
        model's size and the result returned as a PIL image of that size; a tensor (see
        :meth:`translate`) is translated as it is.
        """
        if isinstance(image, Tensor):
            return self.translate(image).final
        crop = prepare(image, PortraitOptions(align="none"), self.size, None).crops
        return model_to_pil(self.translate(crop).final)

    def translate_faces(self, crops: Tensor, aligned: Sequence[AlignedFace | None]) -> list[FaceResult]:
        """Translate, the portrait step: a batch of face crops :math:`(N, 3, S, S)` through every stage,
        one :class:`FaceResult` per crop (with its stages, alpha maps and ``aligned``), on the CPU."""
        out = self.translate(crops).map(Tensor.cpu)  # one transfer per tensor, not per face
        return [face_result(crops[i], out, i, a) for i, a in enumerate(aligned)]

    def aligned(self, image: Image.Image) -> PortraitResult:
        """Translate an image that is already an aligned crop; the result has the input's size."""
        return self.portrait(image, PortraitOptions(align="none"))

    def landmark_backend(self, name: str = "auto") -> LandmarkBackend:
        """The landmark backend ``name`` (``auto``, ``fan``, ``dlib``), created once and kept."""
        if name not in self._backends:
            self._backends[name] = get_backend(name, device=str(self.device))
        return self._backends[name]

    def share_landmark_models(self, other: Translator) -> None:
        """Use ``other``'s landmark models from now on (each loaded once, kept by both): for several
        translators in one process, e.g. both directions of a model, or several models."""
        self._backends = other._backends

    def portrait(self, photo: Image.Image, options: PortraitOptions | None = None, *,
                 user_landmarks: np.ndarray | list[np.ndarray] | None = None, **settings: Any) -> PortraitResult:
        """Translate the face(s) of a photo: decode -> detect -> align -> translate -> blend -> paste.

        Args:
            photo: the photo (any PIL mode; EXIF orientation is applied, as the file loader does).
                Faces are detected on a copy at most ``scan.align.MAX_DETECT_SIDE`` pixels long;
                crops are cut from the photo itself.
            options: how (:class:`~scan.portrait.PortraitOptions`: crop template, paste-back, faces,
                landmarks, blend kind, detection threshold); default: its defaults.
            user_landmarks: ``(68, 2)`` landmarks per face computed elsewhere (skips detection).
            **settings: options by name, over ``options``: ``align``, ``paste``, ``faces``,
                ``landmarks``, ``mask``, ``min_score`` (``portrait(photo, mask="hull")``).

        Returns:
            A :class:`PortraitResult`; its ``faces`` hold every stage's output and alpha map.

        Raises:
            ValueError: an unknown ``align``, ``faces``, ``landmarks`` or ``mask``.
            scan.align.NoFaceError: no face was found.
            scan.align.AlignmentError: no landmark backend is usable.
        """
        options = with_settings(options, settings)
        # With the user's landmarks no backend is used (nothing is detected).
        backend = None if options.align == "none" or user_landmarks is not None else self._shared_backend(options)
        prepared = prepare(photo, options, self.size, backend, user_landmarks)
        return finish(prepared, self.translate_faces(prepared.crops, prepared.aligned_faces()), options)

    def portraits(
        self,
        photos: Iterable[PhotoSource],
        options: PortraitOptions | None = None,
        *,
        batch_size: int | None = None,
        workers: int = 2,
        return_exceptions: bool = False,
        **settings: Any,
    ) -> Iterator[PortraitResult | Exception]:
        """Translate the faces of many photos, in batches, lazily; one result per photo, in order.

        Worker threads decode the photos (where given as loaders), find and align their faces, and
        paste the translated faces back, while the main thread runs the network on batches of
        ``batch_size`` crops gathered across photos (a photo with more faces than that is split over
        batches; :func:`scan.batching.translate_in_batches`). Each result equals :meth:`portrait`'s
        up to float rounding. At most about ``2 * (batch_size + workers)`` photos are held in memory
        at a time.

        Args:
            photos: PIL images, or functions without arguments that load one (e.g.
                ``functools.partial(load_image, path)``), so that decoding runs in the workers.
            options, **settings: as for :meth:`portrait`; ``align="none"`` for photos that are
                aligned crops already (each translated as by :meth:`aligned`).
            batch_size: crops per network call; raise it on a GPU (16-64). Default: the largest
                batch size compiled for (see :meth:`compile`), else 8.
            workers: threads that prepare and paste photos; 0 does it all in the calling thread.
            return_exceptions: yield a photo's exception in its place (an unreadable file, no face,
                NaN output) and carry on, instead of raising it.

        Yields:
            A :class:`PortraitResult` per photo, in the order of ``photos`` (or, with
            ``return_exceptions``, the ``Exception`` that photo raised).

        Raises:
            ValueError: a bad ``batch_size``, ``workers`` or option (at once, before any photo is read).
            scan.align.AlignmentError: no landmark backend is usable (at once).
            Exception: without ``return_exceptions``, the first failing photo's error, in its turn
                (the photos before it are yielded first).
        """
        if batch_size is None:
            batch_size = self.compiled_batch_sizes[-1] if self.compiled else 8
        check_positive_int("batch_size", batch_size)
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be a whole number >= 0, got {workers!r}")
        options = with_settings(options, settings)
        backend = None if options.align == "none" else self._shared_backend(options)  # a missing one fails now
        return translate_in_batches(
            iter(photos), functools.partial(prepare, options=options, size=self.size, backend=backend),
            self.translate_faces, functools.partial(finish, options=options), batch_size, workers, return_exceptions,
        )

    def video(
        self,
        frames: Iterable[Image.Image | np.ndarray],
        options: PortraitOptions | None = None,
        *,
        fps: float = 25.0,
        detect_every: int = 10,
        temporal: float = 0.7,
        fade_frames: int = 6,
        **settings: Any,
    ) -> Iterator[PortraitResult]:
        """Translate the faces of a video, frame by frame, lazily (one frame in memory at a time).

        A portrait's steps with a tracker in place of detection: faces are detected on the first
        frame and every ``detect_every`` frames (and at once when a track loses its face), tracked in
        between, and their landmarks smoothed over time, so the crop does not jitter
        (:class:`scan.align.tracking.FaceTracker`). Faces that appear or leave fade in and out of the
        paste-back; frames without a face come out untouched. Each face's translation is blended with
        its previous one in crop space where the input did not change (``temporal``,
        :class:`scan.temporal.TemporalSmoother`), which removes most of the frame-to-frame flicker at
        the price of a short lag on slow changes of colour or light.

        Args:
            frames: RGB frames: PIL images, or ``uint8`` arrays :math:`(H, W, 3)` (what
                :func:`scan.videoio.read_video` yields).
            options, **settings: as for :meth:`portrait`; a video's faces are always aligned on a
                template and pasted back.
            fps: the clip's frame rate (the smoothing filter's time step).
            detect_every: frames between full detections.
            temporal: weight of the previous translation where nothing moved, in ``[0, 1)``; 0 turns
                the colour smoothing off.
            fade_frames: frames over which a face fades in or out (0: it pops).

        Yields:
            Per frame, a :class:`PortraitResult`: ``image`` the frame with its faces pasted back,
            ``faces`` per face (with ``track``, its identity); no faces on a frame passed through.
        """
        options = with_settings(options, settings)
        if options.align == "none" or not options.paste:
            raise ValueError("a video's faces are always aligned on a template and pasted back")
        smoother = TemporalSmoother(temporal)
        tracker = FaceTracker(self.landmark_backend(options.landmarks), options.faces, detect_every, fps,
                              options.min_score, fade_frames=fade_frames)
        first_shape = None
        for index, frame in enumerate(frames):
            array = decode_frame(frame)  # decode
            first_shape = first_shape or array.shape
            if array.shape != first_shape:  # a tracked face would be pasted where it no longer is
                raise InputError(f"frame {index} is {array.shape[1]}x{array.shape[0]} px, but the clip started at "
                                 f"{first_shape[1]}x{first_shape[0]}: a clip's frames must keep one size")
            tracks = tracker.update(array)  # track, in place of detect
            smoother.keep_only([t.id for t in tracks])
            if not tracks:
                yield PortraitResult(Image.fromarray(array, "RGB"), [])
                continue
            pixels = torch.from_numpy(array).permute(2, 0, 1)
            aligned = align(pixels, [t.face for t in tracks], options, self.size)  # align
            faces = self.translate_faces(torch.stack([a.crop for a in aligned]), aligned)  # translate
            for track, face in zip(tracks, faces):  # steady colours
                face.output = smoother(track.id, face.output, face.crop, restart=track.fresh)
                face.track = track.id
            blends = blend(pixels, faces, options)  # blend
            yield PortraitResult(paste(pixels, blends, faces, opacity=[t.weight for t in tracks]), faces)  # paste

    def _shared_backend(self, options: PortraitOptions) -> LandmarkBackend:
        """The options' landmark backend, safe to call from several threads at once."""
        return SerialBackend(self.landmark_backend(options.landmarks))
