"""``Translator``: inference with a trained model, on aligned images or on whole portraits, one by one
or a stream of photos in batches."""

from __future__ import annotations

import contextlib
import operator
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scan.align import (
    MASKS,
    TEMPLATES,
    AlignedFace,
    Face,
    NoFaceError,
    align_faces,
    landmark_hull_mask,
    paste_back,
    rounded_square_mask,
)
from scan.align.crop import quad_to_matrix, template_quad, warp_to_crops
from scan.align.landmarks import FACE_MODES, LandmarkBackend, get_backend
from scan.checkpoint import load_model
from scan.compiling import check_compile_available, compile_errors, compile_modules
from scan.datasets.images import to_rgb
from scan.errors import DeviceError, UserError
from scan.generator import StackOutput
from scan.imageops import as_model_input, model_to_pil, pil_to_model, pil_to_uint8
from scan.model import SCAN
from scan.video import FaceTracker, temporal_blend

__all__ = ["Translator", "PortraitResult", "FaceResult", "NonFiniteOutputError", "PhotoSource", "resolve_device",
           "available_devices"]

PRECISIONS = ("fp32", "bf16")

# What to do instead when compiling fails (the end of a CompileError's message).
COMPILE_HINT = "run without --compile"

# A photo for Translator.portraits: an image, or a function that loads one (called in a worker thread,
# so that decoding overlaps the network).
PhotoSource = Image.Image | Callable[[], Image.Image]

T = TypeVar("T")


class NonFiniteOutputError(UserError, RuntimeError):
    """The model produced NaN/inf: its weights are broken (a diverged or corrupt model)."""


def available_devices() -> list[str]:
    """The devices this machine can run on: ``cpu``, then ``cuda:0``, ``cuda:1``, ... and ``mps``."""
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU; otherwise the named device,
    checked to exist here.

    Raises:
        DeviceError: not a device name, or no such device on this machine (the message lists those
            there are).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = available_devices()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device {device!r} is not a device name; available here: {', '.join(available)}") from None
    name = f"cuda:{resolved.index or 0}" if resolved.type == "cuda" else resolved.type
    if name not in available:
        raise DeviceError(f"device {device!r} is not available on this machine; available: {', '.join(available)}")
    return resolved


@dataclass
class FaceResult:
    """One translated face.

    Attributes:
        crop: the model's input, :math:`(3, S, S)` in ``[-1, 1]``.
        output: the translated crop, :math:`(3, S, S)` in ``[-1, 1]``.
        stages: every stage's output, coarse to fine.
        alphas: every stage's fusion map (``None`` for stage 1).
        aligned: detection and crop matrix; ``None`` when the input was an aligned image already.
        track: in a video, the face's identity (the same number in every frame it is tracked).
    """

    crop: Tensor
    output: Tensor
    stages: list[Tensor] = field(default_factory=list)
    alphas: list[Tensor | None] = field(default_factory=list)
    aligned: AlignedFace | None = None
    track: int | None = None


@dataclass
class PortraitResult:
    """``image``: the result photo (pasted back) or the first translated crop; ``faces``: per face."""

    image: Image.Image
    faces: list[FaceResult]


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
                 compile: bool = False, compile_batch_size: int = 1) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
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
        return cls(load_model(path), direction, device, precision, compile, compile_batch_size)

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
        _check_positive("batch_size", batch_size)
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
                :func:`scan.imageops.as_model_input`).
            NonFiniteOutputError: the model's output holds NaN/inf (broken weights).
            scan.compiling.CompileError: compiling for a new image size failed.
        """
        images = as_model_input(images, self.channels).to(self.device)
        with torch.inference_mode(), self._autocast():
            if self.compiled:
                with compile_errors(COMPILE_HINT):
                    out = self._run_padded(images)
            else:
                out = self.generator(images)
        if not bool(torch.isfinite(out.final).all()):
            raise NonFiniteOutputError(
                "the model's output is NaN/inf: its weights are broken (a diverged run or a corrupt file)"
            )
        return out.map(Tensor.float)

    def _run_padded(self, images: Tensor) -> StackOutput:
        """The generator on ``images`` in chunks of the compiled batch sizes (see :meth:`translate`)."""
        largest = self.compiled_batch_sizes[-1]
        chunks = []
        for start in range(0, len(images), largest):
            chunk = images[start:start + largest]
            padded_size = next(size for size in self.compiled_batch_sizes if size >= len(chunk))
            padding = chunk.new_zeros(padded_size - len(chunk), *chunk.shape[1:])
            # Always a new tensor, made under inference mode: the compiled code is specialised on that
            # too (a tensor from outside inference mode would recompile it).
            out = self.generator(torch.cat([chunk, padding]))
            # The networks treat each image on its own (instance norm, eval-mode batch norm): the
            # padding changes nothing in the real images' outputs.
            chunks.append(out.map(operator.itemgetter(slice(len(chunk)))))
        return chunks[0] if len(chunks) == 1 else StackOutput.cat(chunks)

    def __call__(self, image: Image.Image | Tensor) -> Image.Image | Tensor:
        """Translate an already aligned image.

        A PIL image (any mode, EXIF orientation applied, as the file loader does) is resized to the
        model's size and the result returned as a PIL image of that size; a tensor (see
        :meth:`translate`) is translated as it is.
        """
        if isinstance(image, Tensor):
            return self.translate(image).final
        return model_to_pil(self.translate(self._model_input(_as_rgb(image))).final)

    def _model_input(self, image: Image.Image) -> Tensor:
        """An RGB image resized to the model's input, :math:`(1, 3, S, S)` in ``[-1, 1]``."""
        return pil_to_model(image.resize((self.size, self.size), Image.Resampling.BICUBIC))

    def _face_results(self, crops: Tensor, aligned: Sequence[AlignedFace | None]) -> list[FaceResult]:
        out = self.translate(crops).map(Tensor.cpu)  # one transfer per tensor, not per face
        return [_face_result(crops[i], out, i, a) for i, a in enumerate(aligned)]

    def aligned(self, image: Image.Image) -> PortraitResult:
        """Translate an image that is already an aligned crop; the result has the input's size."""
        prepared = self._prepare(image, align="none")
        return self._finish(prepared, self._face_results(prepared.crops, [None]))

    def landmark_backend(self, name: str = "auto") -> LandmarkBackend:
        """The landmark backend ``name`` (``auto``, ``fan``, ``dlib``), created once and kept."""
        if name not in self._backends:
            self._backends[name] = get_backend(name, device=str(self.device))
        return self._backends[name]

    def _paste_masks(self, mask: str, aligned: list[AlignedFace]) -> Tensor:
        """The paste-back mask of each face, :math:`(N, 1, S, S)`: ``hull`` follows its landmarks,
        ``square`` is one rounded square for all."""
        if mask == "hull":
            return torch.stack([landmark_hull_mask(a.landmarks_in_crop, self.size) for a in aligned])
        return rounded_square_mask(self.size).expand(len(aligned), 1, self.size, self.size)

    def share_landmark_models(self, other: Translator) -> None:
        """Use ``other``'s landmark models from now on (each loaded once, kept by both): for several
        translators in one process, e.g. both directions of a model, or several models."""
        self._backends = other._backends

    def portrait(
        self,
        photo: Image.Image,
        align: str = "ffhq",
        paste: bool = True,
        faces: str = "largest",
        landmarks: str = "auto",
        mask: str = "square",
        min_score: float | None = None,
        user_landmarks: np.ndarray | list[np.ndarray] | None = None,
    ) -> PortraitResult:
        """Translate the face(s) of a photo.

        Args:
            photo: the photo (any PIL mode; EXIF orientation is applied, as the file loader does).
                Faces are detected on a copy at most ``scan.align.MAX_DETECT_SIDE`` pixels long;
                crops are cut from the photo itself.
            align: ``ffhq`` or ``portrait`` crop template; ``none`` for a photo that is an aligned
                crop already (as :meth:`aligned`).
            paste: blend the translated faces back into the photo; otherwise ``image`` is the first
                translated crop.
            faces: ``largest`` or ``all``.
            landmarks: ``auto``, ``fan`` or ``dlib`` backend.
            mask: paste-back mask, ``square`` (rounded, feathered) or ``hull`` (landmark hull).
            min_score: detection threshold (default: the backend's).
            user_landmarks: ``(68, 2)`` landmarks per face computed elsewhere (skips detection).

        Returns:
            A :class:`PortraitResult`; its ``faces`` hold every stage's output and alpha map.

        Raises:
            ValueError: an unknown ``align``, ``faces`` or ``mask``.
            scan.align.NoFaceError: no face was found.
            scan.align.AlignmentError: no landmark backend is usable.
        """
        _check_portrait_options(align, faces, mask)
        # With the user's landmarks no backend is used (align_faces skips detection).
        backend = None if align == "none" or user_landmarks is not None else self._shared_backend(landmarks)
        prepared = self._prepare(photo, align, faces, backend, min_score, user_landmarks)
        return self._finish(prepared, self._face_results(prepared.crops, prepared.aligned_faces()), paste, mask)

    def portraits(
        self,
        photos: Iterable[PhotoSource],
        batch_size: int | None = None,
        workers: int = 2,
        align: str = "ffhq",
        paste: bool = True,
        faces: str = "largest",
        landmarks: str = "auto",
        mask: str = "square",
        min_score: float | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[PortraitResult | Exception]:
        """Translate the faces of many photos, in batches, lazily; one result per photo, in order.

        Worker threads decode the photos (where given as loaders), find and align their faces, and
        paste the translated faces back, while the main thread runs the network on batches of
        ``batch_size`` crops gathered across photos (a photo with more faces than that is split over
        batches). Each result equals :meth:`portrait`'s up to float rounding. At most about
        ``2 * (batch_size + workers)`` photos are held in memory at a time.

        Args:
            photos: PIL images, or functions without arguments that load one (e.g.
                ``functools.partial(load_image, path)``), so that decoding runs in the workers.
            batch_size: crops per network call; raise it on a GPU (16-64). Default: the largest
                batch size compiled for (see :meth:`compile`), else 8.
            workers: threads that prepare and paste photos; 0 does it all in the calling thread.
            align: ``ffhq`` or ``portrait``, or ``none`` for photos that are aligned crops already
                (each translated as by :meth:`aligned`).
            paste, faces, landmarks, mask, min_score: as for :meth:`portrait`.
            return_exceptions: yield a photo's exception in its place (an unreadable file, no face,
                NaN output) and carry on, instead of raising it.

        Yields:
            A :class:`PortraitResult` per photo, in the order of ``photos`` (or, with
            ``return_exceptions``, the ``Exception`` that photo raised).

        Raises:
            ValueError: a bad ``batch_size``, ``workers``, ``align``, ``faces`` or ``mask`` (at
                once, before any photo is read).
            scan.align.AlignmentError: no landmark backend is usable (at once).
            Exception: without ``return_exceptions``, the first failing photo's error, in its turn
                (the photos before it are yielded first).
        """
        if batch_size is None:
            batch_size = self.compiled_batch_sizes[-1] if self.compiled else 8
        _check_positive("batch_size", batch_size)
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be a whole number >= 0, got {workers!r}")
        _check_portrait_options(align, faces, mask)
        backend = None if align == "none" else self._shared_backend(landmarks)  # a missing one fails now

        def prepare(photo: PhotoSource) -> _PreparedPhoto:
            if callable(photo):
                photo = photo()
            elif isinstance(photo, Image.Image):
                # A lazily opened image decodes on first use, and two threads decoding one object (the
                # same image given twice) would corrupt it: one such decode at a time.
                with _DECODE_LOCK:
                    photo.load()
            return self._prepare(photo, align, faces, backend, min_score)

        def finish(prepared: _PreparedPhoto, results: list[FaceResult]) -> PortraitResult:
            return self._finish(prepared, results, paste, mask)

        return self._stream(iter(photos), prepare, finish, batch_size, workers, return_exceptions)

    def _stream(
        self,
        photos: Iterator[PhotoSource],
        prepare: Callable[[PhotoSource], _PreparedPhoto],
        finish: Callable[[_PreparedPhoto, list[FaceResult]], PortraitResult],
        batch_size: int,
        workers: int,
        return_exceptions: bool,
    ) -> Iterator[PortraitResult | Exception]:
        """The pipeline behind :meth:`portraits`: prepare in workers -> batches on the device -> finish
        in workers -> results in input order."""
        executor = ThreadPoolExecutor(workers, thread_name_prefix="scan-portraits") if workers else None

        def submit(fn: Callable[..., T], *args: object) -> Future[T]:
            return executor.submit(fn, *args) if executor is not None else _run_now(fn, *args)

        # Photos being prepared ahead of the network: enough for the next batch while this one runs,
        # plus one per worker; bounded, as each holds its whole photo until it is pasted back.
        lookahead = batch_size + workers
        preparing: deque[tuple[_InFlight, Future[_PreparedPhoto]]] = deque()
        unreturned: deque[_InFlight] = deque()  # every photo not yielded yet, in input order
        queued: list[tuple[_InFlight, Tensor, AlignedFace | None]] = []  # crops waiting for a batch
        more = True
        try:
            while more or preparing or unreturned:
                while more and len(preparing) < lookahead:
                    try:
                        photo = next(photos)
                    except StopIteration:
                        more = False
                        break
                    flight = _InFlight()
                    unreturned.append(flight)
                    preparing.append((flight, submit(prepare, photo)))
                if preparing:  # the next photo in order (usually prepared already) joins the queue
                    flight, future = preparing.popleft()
                    try:
                        flight.prepared = future.result()
                        queued += [(flight, crop, face)
                                   for crop, face in zip(flight.prepared.crops, flight.prepared.aligned_faces())]
                    except Exception as e:
                        flight.error = e
                # Full batches go as soon as there is one; at the end of the input, the short rest.
                while len(queued) >= batch_size or (queued and not preparing and not more):
                    batch, queued = queued[:batch_size], queued[batch_size:]
                    self._translate_batch(batch)
                    queued = [row for row in queued if row[0].error is None]  # a failed photo's other crops
                    for flight in dict.fromkeys(f for f, _, _ in batch):
                        if flight.translated and flight.error is None and flight.finished is None:
                            assert flight.prepared is not None
                            flight.finished = submit(finish, flight.prepared, flight.faces)
                # Yield the photos done at the head of the order. Wait for the head once nothing is
                # left to prepare, or when finished photos pile up behind it (they hold memory).
                while unreturned and unreturned[0].ready(
                    wait=(not preparing and not more) or len(unreturned) > 2 * lookahead
                ):
                    flight = unreturned.popleft()
                    result = flight.result()
                    if isinstance(result, Exception) and not return_exceptions:
                        raise result
                    yield result
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)

    def _translate_batch(self, batch: list[tuple[_InFlight, Tensor, AlignedFace | None]]) -> None:
        """Translate one batch of crops gathered from several photos; each photo gets its faces (or,
        where the batch failed, the error)."""
        crops = torch.stack([crop for _, crop, _ in batch])
        try:
            out = self.translate(crops).map(Tensor.cpu)  # one transfer per tensor, not per face
        except Exception as e:  # e.g. NaN output: every photo of the batch fails with it
            for flight, _, _ in batch:
                flight.error = e
            return
        for row, (flight, crop, face) in enumerate(batch):
            flight.faces.append(_face_result(crop, out, row, face))

    def _shared_backend(self, name: str) -> LandmarkBackend:
        """The landmark backend ``name``, safe to call from several threads at once."""
        return _SerialBackend(self.landmark_backend(name))

    def _prepare(
        self,
        photo: Image.Image,
        align: str = "ffhq",
        faces: str = "largest",
        backend: LandmarkBackend | None = None,
        min_score: float | None = None,
        user_landmarks: np.ndarray | list[np.ndarray] | None = None,
    ) -> _PreparedPhoto:
        """The part of a portrait before the network: the photo as RGB, its faces found and cut out
        (or, with ``align="none"``, the photo resized to a crop).

        Raises:
            TypeError: ``photo`` is not a PIL image.
            scan.align.NoFaceError: no face was found.
        """
        image = _as_rgb(photo)
        if align == "none":
            return _PreparedPhoto(self._model_input(image), [], None, image.size)
        # The photo stays uint8: only the faces' surroundings are converted to floats (a 12000 px
        # photo would take GBs as floats).
        pixels = pil_to_uint8(image)
        aligned = align_faces(pixels, self.size, align, 1.0, "auto" if backend is None else backend, faces, min_score,
                              user_landmarks)
        if not aligned:
            raise NoFaceError("no face found")
        return _PreparedPhoto(torch.stack([a.crop for a in aligned]), aligned, pixels, image.size)

    def _finish(self, prepared: _PreparedPhoto, results: list[FaceResult], paste: bool = True,
                mask: str = "square") -> PortraitResult:
        """The part of a portrait after the network: the result image from the translated faces."""
        if prepared.pixels is None:  # an aligned crop: its translation, at the input's size
            return PortraitResult(model_to_pil(results[0].output).resize(prepared.size, Image.Resampling.BICUBIC),
                                  results)
        if not paste:
            return PortraitResult(model_to_pil(results[0].output), results)
        matrices = np.stack([a.matrix for a in prepared.aligned])
        blended = paste_back(prepared.pixels, torch.stack([r.output for r in results]), matrices,
                             self._paste_masks(mask, prepared.aligned))
        return PortraitResult(Image.fromarray(blended.permute(1, 2, 0).numpy(), "RGB"), results)

    def video(
        self,
        frames: Iterable[Image.Image | np.ndarray],
        align: str = "ffhq",
        faces: str = "largest",
        landmarks: str = "auto",
        mask: str = "square",
        min_score: float | None = None,
        fps: float = 25.0,
        detect_every: int = 10,
        temporal: float = 0.7,
        fade_frames: int = 6,
    ) -> Iterator[PortraitResult]:
        """Translate the faces of a video, frame by frame, lazily (one frame in memory at a time).

        Faces are detected on the first frame and every ``detect_every`` frames (and at once when a
        track loses its face), tracked in between, and their landmarks smoothed over time, so the
        crop does not jitter (:class:`scan.video.FaceTracker`). Faces that appear or leave fade in
        and out of the paste-back; frames without a face come out untouched. Each face's
        translation is blended with its previous one in crop space where the input did not change
        (``temporal``, :func:`scan.video.temporal_blend`), which removes most of the frame-to-frame
        flicker at the price of a short lag on slow changes of colour or light.

        Args:
            frames: RGB frames: PIL images, or ``uint8`` arrays :math:`(H, W, 3)` (what
                :func:`scan.video.read_video` yields).
            align, faces, landmarks, mask, min_score: as for :meth:`portrait` (always pasted back).
            fps: the clip's frame rate (the smoothing filter's time step).
            detect_every: frames between full detections.
            temporal: weight of the previous translation where nothing moved, in ``[0, 1)``; 0 turns
                the colour smoothing off.
            fade_frames: frames over which a face fades in or out (0: it pops).

        Yields:
            Per frame, a :class:`PortraitResult`: ``image`` the frame with its faces pasted back,
            ``faces`` per face (with ``track``, its identity); no faces on a frame passed through.
        """
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        if not 0 <= temporal < 1:
            raise ValueError(f"temporal must be in [0, 1), got {temporal}")
        tracker = FaceTracker(self.landmark_backend(landmarks), faces, detect_every, fps, min_score,
                              fade_frames=fade_frames)
        for frame in frames:
            array = _frame_array(frame)
            tracks = tracker.update(array)
            if not tracks:
                yield PortraitResult(Image.fromarray(array, "RGB"), [])
                continue
            pixels = torch.from_numpy(array).permute(2, 0, 1)
            matrices = np.stack([quad_to_matrix(template_quad(t.landmarks, align), self.size) for t in tracks])
            crops = warp_to_crops(pixels, matrices, self.size)
            aligned = [AlignedFace(t.face, c, m) for t, c, m in zip(tracks, crops, matrices)]
            results = self._face_results(crops, aligned)
            for track, result in zip(tracks, results):
                if track.fresh:
                    track.state.clear()
                    track.fresh = False
                result.output, _ = temporal_blend(result.output, track.state.get("output"), result.crop,
                                                  track.state.get("crop"), temporal)
                track.state.update(output=result.output, crop=result.crop)
                result.track = track.id
            masks = self._paste_masks(mask, aligned)
            weights = torch.tensor([t.weight for t in tracks], dtype=masks.dtype)
            blended = paste_back(pixels, torch.stack([r.output for r in results]), matrices,
                                 masks * weights[:, None, None, None])
            yield PortraitResult(Image.fromarray(blended.permute(1, 2, 0).numpy(), "RGB"), results)


def _check_positive(name: str, value: int) -> None:
    """Raise a ValueError unless ``value`` is a whole number >= 1 (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def _check_portrait_options(align: str, faces: str, mask: str) -> None:
    """Raise a ValueError for an unknown crop template, face mode or paste-back mask."""
    if align not in (*TEMPLATES, "none"):
        raise ValueError(f"align must be one of {(*TEMPLATES, 'none')}, got {align!r}")
    if faces not in FACE_MODES:
        raise ValueError(f"faces must be one of {FACE_MODES}, got {faces!r}")
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")


@dataclass
class _PreparedPhoto:
    """A photo made ready for the network (the part of a portrait that runs in worker threads).

    Attributes:
        crops: the network's inputs, :math:`(N, 3, S, S)` in ``[-1, 1]``.
        aligned: per crop, its detection and crop matrix; empty for an aligned input.
        pixels: the photo, :math:`(3, H, W)` ``uint8``, to paste the faces back into; ``None`` for
            an aligned input.
        size: the photo's ``(width, height)``.
    """

    crops: Tensor
    aligned: list[AlignedFace]
    pixels: Tensor | None
    size: tuple[int, int]

    def aligned_faces(self) -> list[AlignedFace | None]:
        """Per crop, its detection and matrix; ``None`` each for an aligned input."""
        return list(self.aligned) if self.aligned else [None] * len(self.crops)


@dataclass(eq=False)  # compared and hashed by identity: one per photo
class _InFlight:
    """One photo on its way through :meth:`Translator.portraits`: prepared, translated crop by crop,
    then finished (pasted back) in a worker, unless it failed on the way."""

    prepared: _PreparedPhoto | None = None
    error: Exception | None = None
    faces: list[FaceResult] = field(default_factory=list)  # translated so far, in crop order
    finished: Future[PortraitResult] | None = None

    @property
    def translated(self) -> bool:
        return self.prepared is not None and len(self.faces) == len(self.prepared.crops)

    def ready(self, wait: bool) -> bool:
        """Whether :meth:`result` can be taken: it failed, or its finishing is done (or, with
        ``wait``, under way: :meth:`result` then blocks for it)."""
        return self.error is not None or (self.finished is not None and (wait or self.finished.done()))

    def result(self) -> PortraitResult | Exception:
        if self.error is not None:
            return self.error
        if self.finished is None:
            raise AssertionError("a photo was yielded before it was translated (a bug in Translator._stream)")
        try:
            return self.finished.result()
        except Exception as e:
            return e


_DECODE_LOCK = threading.Lock()

# One lock per landmark backend object, however many translators share it.
_BACKEND_LOCKS: weakref.WeakKeyDictionary[object, threading.Lock] = weakref.WeakKeyDictionary()
_BACKEND_LOCKS_GUARD = threading.Lock()


class _SerialBackend:
    """A landmark backend that detects in one thread at a time: neither dlib's detector nor
    face_alignment's FAN is documented as thread-safe, and the workers of
    :meth:`Translator.portraits` (or a web server's request threads) share one."""

    def __init__(self, backend: LandmarkBackend) -> None:
        self.backend = backend
        self.name = backend.name
        self.default_min_score = backend.default_min_score
        with _BACKEND_LOCKS_GUARD:
            self._lock = _BACKEND_LOCKS.setdefault(backend, threading.Lock())

    def detect(self, image: np.ndarray) -> list[Face]:
        with self._lock:
            return self.backend.detect(image)


def _run_now(fn: Callable[..., T], *args: object) -> Future[T]:
    """``fn(*args)`` run in the calling thread, as a finished future (the pipeline without workers)."""
    future: Future[T] = Future()
    try:
        future.set_result(fn(*args))
    except Exception as e:
        future.set_exception(e)
    return future


def _face_result(crop: Tensor, out: StackOutput, row: int, aligned: AlignedFace | None) -> FaceResult:
    """Row ``row`` of a translated batch as one face's result."""
    return FaceResult(crop.cpu(), out.final[row], [o[row] for o in out.outputs],
                      [None if a is None else a[row] for a in out.alphas], aligned)


def _frame_array(frame: Image.Image | np.ndarray) -> np.ndarray:
    """A video frame as a writable RGB ``uint8`` ``(H, W, 3)`` array."""
    if isinstance(frame, Image.Image):
        return np.array(_as_rgb(frame))
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise TypeError(f"expected RGB uint8 frames of shape (H, W, 3) or PIL images, got {array.dtype} "
                        f"{array.shape}")
    return array if array.flags.writeable and array.flags.c_contiguous else np.array(array)


def _as_rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__} (tensors go to translate())")
    return to_rgb(image)
