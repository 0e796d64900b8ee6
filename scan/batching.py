"""Many photos through the network in batches: the pipeline behind
:meth:`scan.translator.Translator.portraits`.

Worker threads run the steps before the network on each photo (decode, detect, align), the calling
thread translates batches of crops gathered across photos, and workers run the steps after it
(blend, paste); results come out in input order, at most about ``2 * (batch_size + workers)``
photos held in memory at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import Tensor

from scan.align.crop import AlignedFace
from scan.portrait import FaceResult, PhotoSource, PortraitResult, PreparedPhoto

__all__ = ["translate_in_batches"]

T = TypeVar("T")


def translate_in_batches(
    photos: Iterator[PhotoSource],
    prepare: Callable[[PhotoSource], PreparedPhoto],
    translate: Callable[[Tensor, list[AlignedFace | None]], list[FaceResult]],
    finish: Callable[[PreparedPhoto, list[FaceResult]], PortraitResult],
    batch_size: int,
    workers: int,
    return_exceptions: bool,
) -> Iterator[PortraitResult | Exception]:
    """Prepare photos in workers -> translate their crops in batches -> finish them in workers ->
    results in input order.

    Args:
        photos: the photos (or their loaders), read lazily.
        prepare: the steps before the network, for one photo (run in a worker).
        translate: the network on a batch of crops :math:`(B, 3, S, S)`, one result per crop (run in
            the calling thread).
        finish: the steps after the network, for one photo and its translated faces (run in a worker).
        batch_size: crops per call of ``translate`` (a photo with more faces is split over batches).
        workers: threads for ``prepare`` and ``finish``; 0 runs everything in the calling thread.
        return_exceptions: yield a photo's exception in its place and carry on.

    Yields:
        A result per photo, in order (or, with ``return_exceptions``, the exception it raised).

    Raises:
        Exception: without ``return_exceptions``, the first failing photo's error, in its turn.
    """
    executor = ThreadPoolExecutor(workers, thread_name_prefix="scan-portraits") if workers else None

    def submit(fn: Callable[..., T], *args: object) -> Future[T]:
        return executor.submit(fn, *args) if executor is not None else _run_now(fn, *args)

    # Photos being prepared ahead of the network: enough for the next batch while this one runs,
    # plus one per worker; bounded, as each holds its whole photo until it is pasted back.
    lookahead = batch_size + workers
    preparing: deque[tuple[_InFlight, Future[PreparedPhoto]]] = deque()
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
                _translate_batch(batch, translate)
                queued = [row for row in queued if row[0].error is None]  # a failed photo's other crops
                for flight in dict.fromkeys(f for f, _, _ in batch):
                    if flight.translated and flight.error is None and flight.finished is None:
                        assert flight.prepared is not None
                        flight.finished = submit(finish, flight.prepared, flight.faces)
            # Yield the photos done at the head of the order. Wait for the head once nothing is left
            # to prepare, or when finished photos pile up behind it (they hold memory).
            while unreturned and unreturned[0].ready(
                wait=(not preparing and not more) or len(unreturned) > 2 * lookahead
            ):
                result = unreturned.popleft().result()
                if isinstance(result, Exception) and not return_exceptions:
                    raise result
                yield result
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _translate_batch(batch: list[tuple[_InFlight, Tensor, AlignedFace | None]],
                     translate: Callable[[Tensor, list[AlignedFace | None]], list[FaceResult]]) -> None:
    """Translate one batch of crops gathered from several photos; each photo gets its faces (or,
    where the batch failed, the error)."""
    try:
        faces = translate(torch.stack([crop for _, crop, _ in batch]), [face for _, _, face in batch])
    except Exception as e:  # e.g. NaN output: every photo of the batch fails with it
        for flight, _, _ in batch:
            flight.error = e
        return
    for (flight, _, _), face in zip(batch, faces):
        flight.faces.append(face)


@dataclass(eq=False)  # compared and hashed by identity: one per photo
class _InFlight:
    """One photo on its way: prepared, translated crop by crop, then finished (pasted back) in a
    worker, unless it failed on the way."""

    prepared: PreparedPhoto | None = None
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
            raise AssertionError("a photo was yielded before it was translated (a bug in translate_in_batches)")
        try:
            return self.finished.result()
        except Exception as e:
            return e


def _run_now(fn: Callable[..., T], *args: object) -> Future[T]:
    """``fn(*args)`` run in the calling thread, as a finished future (the pipeline without workers)."""
    future: Future[T] = Future()
    try:
        future.set_result(fn(*args))
    except Exception as e:
        future.set_exception(e)
    return future
