"""One error policy for every command: what a user can fix is one line on stderr and exit status 2.

Every error a user can cause (a bad file, option, path or device) derives from :class:`UserError`.
The commands run their body under :func:`command_errors` (or through :func:`run_command`), which turns
a :class:`UserError` into ``error: <one line>`` and exit status 2, and anything else (a bug) into one
line that asks for a ``--debug`` rerun and exit status 1. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = ["UserError", "InputError", "DeviceError", "EXIT_USER_ERROR", "EXIT_FAILED", "one_line", "run_command",
           "command_errors", "CommandStatus", "add_debug_flag", "each_carrying_on", "report_failures", "positive_int",
           "int_range", "image_side", "true_or_false", "write_failure", "STORAGE_ERRNOS",
           "Terminated"]

T = TypeVar("T")

EXIT_USER_ERROR = 2
EXIT_FAILED = 1  # some inputs of a folder run failed, or a bug
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix: a bad input file, path, option or device. Reported in one line."""


class InputError(UserError, ValueError):
    """A bad input or output path, or an input file that cannot be used."""


class DeviceError(UserError, ValueError):
    """A device that does not exist on this machine."""


# torch's DataLoader re-raises a worker's exception with the worker's whole traceback in its message.
_WORKER_TRACEBACK = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback")


MAX_LINE = 600  # characters of a message shown on its one line


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line: the last line of an embedded worker traceback (where
    DataLoader put one); else, for a :class:`UserError` (scan's own message, which may name a file
    whose name holds a newline), all its lines joined; for anything else its first line (torch's
    and compilers' messages run to pages); else the exception's type name."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if _WORKER_TRACEBACK.search(text) and lines:
        last = lines[-1]
        # "module.NoImagesError: folder: ..." -> "folder: ..."
        return re.sub(r"^[\w.]+(Error|Exception): ", "", last)
    if not lines:
        return type(error).__name__
    joined = " ".join(lines) if isinstance(error, UserError) else lines[0]
    return joined if len(joined) <= MAX_LINE else joined[:MAX_LINE - 3] + "..."


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (for bug reports)")


@dataclass
class CommandStatus:
    """A command's exit status: its body sets ``code``; :func:`command_errors` sets it on an error."""

    code: int = 0


# What the storage, not scan, did wrong: a full disk or quota, a read-only or failing filesystem.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})


def write_failure(path: str | os.PathLike[str] | None, error: OSError) -> str:
    """One line for a failed write: the path, the system's reason and, for a full disk, what is free.

    Example:
        >>> write_failure("/tmp/x.png", OSError(13, "Permission denied"))
        'cannot write /tmp/x.png: Permission denied'
    """
    reason = error.strerror or str(error) or type(error).__name__
    where = f"cannot write {path}" if path is not None else "a write failed"
    if error.errno in (errno.ENOSPC, errno.EDQUOT) and path is not None:
        folder = Path(path).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            reason += f" ({shutil.disk_usage(folder).free / 1e6:,.1f} MB free there)"
        except OSError:
            pass
    return f"{where}: {reason}"


class Terminated(BaseException):
    """SIGTERM (``kill``, a scheduler) or SIGHUP (a closed terminal), raised in the main thread so that
    the command stops as on Ctrl-C: ``finally`` blocks run, temporary files are removed, one line."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    if signal.getsignal(signal.SIGTERM) is not _terminate:
        # A handler that calls this one after its own (Lightning's, during training) stops the run at
        # the next step and writes its checkpoint: SIGHUP joins that path; SIGTERM is already on it.
        if signum == signal.SIGHUP:
            os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated(signum)


@contextlib.contextmanager
def _stop_signals_and_quiet_storage_threads() -> Iterator[None]:
    """While a command runs: SIGTERM and SIGHUP raise :class:`Terminated`; a background thread that
    a full disk stops (TensorBoard's event writer) prints no traceback, since the command reports the
    failed write itself. Both are restored afterwards."""
    in_main = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGHUP)} if in_main else {}
    previous_hook = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in STORAGE_ERRNOS):
            previous_hook(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous_hook
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def command_errors(debug: bool = False, user_errors: tuple[type[BaseException], ...] = ()) -> Iterator[CommandStatus]:
    """Run a command's body (the ``with`` block) under the error policy.

    Args:
        debug: re-raise instead (the traceback is shown).
        user_errors: further exception types to treat as the user's (e.g. ``ValueError`` where the
            body only validates a config the user wrote).

    Yields:
        The command's status: the body sets its ``code``; an error sets 2 for a :class:`UserError`,
        1 for any other exception, 130 on Ctrl-C, 143 on SIGTERM and 129 on SIGHUP (the shell's codes).

    Example:
        >>> with command_errors(args.debug) as status:
        ...     status.code = run(args)
        >>> return status.code
    """
    status = CommandStatus()
    caught: tuple[type[BaseException], ...] = (UserError, *user_errors)
    try:
        with _stop_signals_and_quiet_storage_threads():
            yield status
    except Terminated as e:
        if debug:
            raise
        print(f"error: stopped by {e}", file=sys.stderr)
        status.code = 128 + e.signum
    except caught as e:
        if debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        status.code = EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        status.code = EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            raise
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:  # a full disk under a writer not ours
            print(f"error: {write_failure(e.filename, e)}", file=sys.stderr)  # (TensorBoard's, say)
            status.code = EXIT_USER_ERROR
            return
        print(f"error: unexpected {type(e).__name__}: {one_line(e)} (a bug: rerun with --debug and report the "
              "traceback)", file=sys.stderr)
        status.code = EXIT_FAILED


def run_command(body: Callable[[], int], debug: bool = False,
                user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's body under the error policy (see :func:`command_errors`).

    Args:
        body: the command; returns its exit status.
        debug: re-raise instead (the traceback is shown).
        user_errors: further exception types to treat as the user's.

    Returns:
        ``body``'s status; 2 for a :class:`UserError`; 1 for any other exception; 130 on Ctrl-C.
    """
    with command_errors(debug, user_errors) as status:
        status.code = body()
    return status.code


def each_carrying_on(items: Iterable[T], work: Callable[[T], object], name: Callable[[T], object],
                     debug: bool = False) -> list[str]:
    """A folder run: ``work(item)`` for every item, carrying on past the ones that fail.

    Args:
        items: the inputs (wrap them in a progress bar first, if wanted).
        work: processes one item.
        name: names an item in a failure line (its path).
        debug: re-raise an unexpected exception instead of listing it.

    Returns:
        One line per failed item, naming it: a :class:`UserError`'s message, or the unexpected
        exception.
    """
    failures: list[str] = []
    for item in items:
        try:
            work(item)
        except UserError as e:
            message = one_line(e)  # most messages name their file already; the others get it in front
            named = " ".join(str(name(item)).splitlines())  # as one_line shows a name holding a newline
            failures.append(message if named in message else f"{named}: {message}")
        except Exception as e:  # a bug on one input must not cost the others; --debug shows it
            if debug:
                raise
            failures.append(f"{name(item)}: unexpected {type(e).__name__}: {one_line(e)} (rerun with --debug)")
    return failures


def report_failures(failures: list[str], total: int, what: str = "input(s)") -> None:
    """The end of a folder run: how many of ``total`` inputs failed, one line each."""
    print(f"{len(failures)} of {total} {what} failed:", file=sys.stderr)
    for line in failures:
        print(f"  {line}", file=sys.stderr)


def positive_int(text: str) -> int:
    """An argparse type: a whole number above zero (``--size 0`` is a mistake, not a default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (a count of threads or processes, say:
    a thousand of them would hold a thousand images in memory)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def true_or_false(text: str) -> bool:
    """An argparse type: ``true`` / ``false`` (also yes/no, 1/0)."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


MAX_IMAGE_SIDE = 8192


def image_side(text: str) -> int:
    """An argparse type: an image side in pixels, from 8 to 8192 (a side of 100000 would ask for
    120 GB before failing)."""
    value = positive_int(text)
    if not 8 <= value <= MAX_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(f"{value} px is outside 8..{MAX_IMAGE_SIDE}")
    return value
