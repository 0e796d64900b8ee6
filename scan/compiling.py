"""``torch.compile`` for scan's networks: in place, and with one clear line where it is not available.

Compiling a network with :meth:`torch.nn.Module.compile` keeps its parameter names (no
``_orig_mod.`` prefix), so checkpoints and model files are the same with and without it. Compiling
happens lazily, on a network's first call; :func:`compile_errors` turns a failure there (no C++
compiler, no Triton, an unsupported device) into a :class:`CompileError` the commands report in one
line.
"""

from __future__ import annotations

import contextlib
import operator
import os
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from scan.errors import UserError, one_line
from scan.generator import StackOutput

__all__ = ["CompileError", "COMPILE_BACKEND_ENV", "COMPILE_MODES", "compile_backend", "compile_modules",
           "compile_errors", "check_compile_available", "run_padded"]

# torch.compile's backend; tests set "aot_eager" (the same graph capture, no code generation, seconds
# instead of minutes on a CPU).
COMPILE_BACKEND_ENV = "SCAN_COMPILE_BACKEND"
# torch.compile's modes (None: its default).
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompileError(UserError, RuntimeError):
    """``torch.compile`` failed on this machine (no compiler, no Triton, unsupported device)."""


def compile_backend() -> str:
    """The backend :func:`compile_modules` uses: ``$SCAN_COMPILE_BACKEND``, else ``inductor``."""
    return os.environ.get(COMPILE_BACKEND_ENV) or "inductor"


def compile_modules(modules: Iterable[nn.Module], mode: str | None = None) -> None:
    """Compile each module in place (:meth:`torch.nn.Module.compile`), for static shapes.

    Args:
        modules: the networks; each is compiled on its own, so the Python around them (the stack's
            loop, the losses, the checks) stays eager.
        mode: ``torch.compile``'s mode (``None``, ``"max-autotune"``, ``"reduce-overhead"``, ...).
    """
    for module in modules:
        module.compile(backend=compile_backend(), mode=mode, dynamic=False)


def _is_compile_failure(error: BaseException) -> bool:
    # Dynamo wraps what goes wrong in a backend (BackendCompilerFailed, InductorError, ...) in
    # exceptions of its own modules; anything else is the network's own error and passes through.
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor"))


@contextlib.contextmanager
def compile_errors(hint: str) -> Iterator[None]:
    """Turn a compilation failure inside the block into a one-line :class:`CompileError`.

    Args:
        hint: what the user can do instead, e.g. ``"run without --compile"``.
    """
    try:
        yield
    except Exception as e:
        if not _is_compile_failure(e):
            raise
        cause = _innermost(e)
        raise CompileError(
            f"torch.compile failed on this machine ({type(cause).__name__}: {one_line(cause)}); {hint}"
        ) from e


def _innermost(error: BaseException) -> BaseException:
    # Dynamo wraps a backend's error (BackendCompilerFailed, InductorError) with a first line that says
    # nothing ("backend='inductor' raised:"); the wrapped error's own message says what went wrong.
    while isinstance(inner := getattr(error, "inner_exception", None), BaseException):
        error = inner
    return error


def check_compile_available(device: torch.device | str, hint: str) -> None:
    """Compile and run a two-operation function on ``device``: a missing compiler or Triton shows
    now, in one line, not minutes into a run.

    Raises:
        CompileError: compiling failed; the message says why and ends with ``hint``.
    """
    with compile_errors(hint):
        probe = torch.compile(lambda x: torch.relu(x) * 2.0, backend=compile_backend(), dynamic=False)
        probe(torch.ones(8, device=device))


def run_padded(network: Callable[[Tensor], StackOutput], images: Tensor, batch_sizes: list[int]) -> StackOutput:
    """``network`` on ``images`` in batches of the sizes it was compiled for, so that no new batch size
    recompiles it: chunks of the largest of ``batch_sizes``, each padded with zeros to the smallest
    size that holds it, the padding's outputs dropped.

    Args:
        network: a compiled stack; it must treat each image on its own (instance norm, eval-mode
            batch norm), so that the padding changes nothing in the real images' outputs.
        images: the batch, :math:`(B, C, H, W)`.
        batch_sizes: the compiled batch sizes, ascending.

    Returns:
        The network's output for ``images``.
    """
    largest = batch_sizes[-1]
    chunks = []
    for start in range(0, len(images), largest):
        chunk = images[start:start + largest]
        padded_size = next(size for size in batch_sizes if size >= len(chunk))
        padding = chunk.new_zeros(padded_size - len(chunk), *chunk.shape[1:])
        # Always a new tensor, made under inference mode: the compiled code is specialised on that
        # too (a tensor from outside inference mode would recompile it).
        out = network(torch.cat([chunk, padding]))
        chunks.append(out.map(operator.itemgetter(slice(len(chunk)))))
    return chunks[0] if len(chunks) == 1 else StackOutput.cat(chunks)
