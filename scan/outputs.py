"""Writing files so that nothing a user owns is lost: one atomic writer and a per-run output plan.

Every file scan writes (images, stage strips, exports, models, checkpoints, configs) goes through
:func:`atomic_write`: the content goes to a temporary file beside the target, is flushed to disk,
then renamed over the target. A crash, a kill or a full disk leaves the previous file intact (or
no file), never a truncated one.

A command first *claims* every path it will write in an :class:`OutputPlan`, before it writes any:
the plan refuses a path that is one of the run's inputs, one that another output of the same run
already claimed, and an existing file unless ``overwrite`` is set.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from scan.errors import InputError, UserError, write_failure

__all__ = ["OutputError", "OutputPlan", "atomic_write", "atomic_write_bytes", "save_image", "output_stems",
           "check_output_folder", "short_labels"]


class OutputError(UserError, OSError):
    """A file could not be written (permissions, a full disk, a file where a folder should be)."""


def _file_mode() -> int:
    # mkstemp creates files readable by the owner only; give the result the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files of ``path`` that a killed writer left (SIGKILL, a power cut): those
    whose writer's pid (in their name) is no running process."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.*.tmp{glob.escape(path.suffix)}"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # its writer is gone
            with contextlib.suppress(OSError):
                tmp.unlink()
        except OSError:  # alive (another user's process): not ours to touch
            pass


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Write a file atomically: ``write(temporary_path)``, fsync, then rename over ``path``.

    Args:
        path: the destination; missing parent folders are created.
        write: writes the whole content to the path it is given (which has ``path``'s suffix, so
            writers that pick a format by extension, like PIL's ``save``, work unchanged).

    Returns:
        ``path``.

    Raises:
        OutputError: the file could not be written; the previous file, if any, is untouched.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        # The writer's pid in the name: a later write of the same file removes what a killed one left.
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                    suffix=f".tmp{path.suffix}")
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        if tmp is not None:  # first: the free space then reported is what the user has
            tmp.unlink(missing_ok=True)
            tmp = None
        raise OutputError(write_failure(path, e)) from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], serialise: Callable[[io.BytesIO], object]) -> Path:
    """:func:`atomic_write` for writers that fail badly on a full disk: ``serialise`` writes into
    memory, then plain Python writes the bytes (so a full disk is an ``OSError`` with its errno, never
    torch's C++ "enforce fail" or an abort of the whole process, as ``torch.jit.save`` does)."""
    buffer = io.BytesIO()
    serialise(buffer)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def save_image(image: Image.Image, path: str | os.PathLike[str], **params: Any) -> Path:
    """Save a PIL image atomically, in the format its extension names (``params``: PIL's save options)."""
    return atomic_write(path, lambda tmp: image.save(tmp, **params))


def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """A path's resolved form, and its (device, inode) when it exists, so hard links compare equal."""
    resolved = path.resolve()
    try:
        st = resolved.stat()
        return resolved, (st.st_dev, st.st_ino)
    except OSError:
        return resolved, None


class OutputPlan:
    """The files one run will write, checked before any is written.

    Args:
        inputs: files the run reads; never written, even with ``overwrite``.
        overwrite: allow replacing files that exist (but never an input or another output).

    Example:
        >>> plan = OutputPlan(inputs=[photo], overwrite=False)
        >>> target = plan.claim(out_dir / "me.png", source=photo)   # raises InputError if unsafe
        >>> save_image(result, target)
    """

    def __init__(self, inputs: Iterable[str | os.PathLike[str]] = (), overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._inputs: dict[Path, Path] = {}
        self._input_inodes: dict[tuple[int, int], Path] = {}
        self._claimed: dict[Path, str] = {}
        for p in inputs:
            self.protect(p)

    def protect(self, path: str | os.PathLike[str]) -> None:
        """Mark ``path`` as an input of the run."""
        resolved, inode = _identity(Path(path))
        self._inputs[resolved] = Path(path)
        if inode is not None:
            self._input_inodes[inode] = Path(path)

    def claim(self, path: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Path:
        """Reserve ``path`` as an output of this run.

        Args:
            path: the file to be written.
            source: what it is written from (named in the error when two outputs collide).

        Returns:
            ``path``.

        Raises:
            InputError: ``path`` is an input, was claimed already, is a folder or a special file (a
                device, pipe or socket), exists (without ``overwrite``), or lies under a file or an
                unwritable folder.
        """
        path = Path(path)
        resolved, inode = _identity(path)
        input_path = self._inputs.get(resolved) or (self._input_inodes.get(inode) if inode else None)
        if input_path is not None:
            same = "" if input_path == path else f" {input_path} (the same file)"
            raise InputError(f"{path} is the input{same}; choose another output")
        if resolved in self._claimed:
            raise InputError(f"{path}: two outputs of this run would get this name (from {self._claimed[resolved]} "
                             f"and {source or 'another input'})")
        if path.is_dir():
            raise InputError(f"{path} is a folder; give a file name")
        if path.exists() and not path.is_file():  # --overwrite would replace a device node with a file
            raise InputError(f"{path} is not a regular file (a device, pipe or socket); choose another output")
        if path.exists() and not self.overwrite:
            raise InputError(f"{path} exists; pass --overwrite to replace it")
        _check_writable_parent(path)
        self._claimed[resolved] = str(source) if source is not None else str(path)
        return path

    def __contains__(self, path: str | os.PathLike[str]) -> bool:
        return Path(path).resolve() in self._claimed


def _check_writable_parent(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a folder we may create files in."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot write {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        if os.statvfs(ancestor).f_flag & os.ST_RDONLY:
            raise InputError(f"cannot write {path}: {ancestor} is on a read-only file system")
        raise InputError(f"cannot write {path}: no permission to write in {ancestor}")


def check_output_folder(output: Path, source: Path) -> None:
    """A folder run's output folder: a folder (or not there yet), and neither its input folder nor
    inside it (its outputs would become inputs of the next run).

    Raises:
        InputError: it is a file, the input folder, or inside it.
    """
    if output.exists() and not output.is_dir():
        raise InputError(f"output {output} is a file; give a folder")
    if output.resolve() == source.resolve() or output.resolve().is_relative_to(source.resolve()):
        raise InputError(f"output {output} is the input folder or inside it; choose another folder")


def output_stems(files: Iterable[Path], root: Path) -> dict[Path, Path]:
    """Collision-free output names for a folder run, without the suffix the caller adds.

    Each input keeps its path relative to ``root`` and its stem (``sub/face.jpg`` -> ``sub/face``);
    where several inputs of one folder share a stem (``face.jpg``, ``face.png``) each keeps its whole
    name instead (``face.jpg``, ``face.png``), so that their outputs cannot overwrite one another.
    """
    files = list(files)
    relative = {f: f.relative_to(root) for f in files}
    shared = Counter(r.with_suffix("") for r in relative.values())
    return {f: (r if shared[r.with_suffix("")] > 1 else r.with_suffix("")) for f, r in relative.items()}


def short_labels(checkpoints: Sequence[Path]) -> list[str]:
    """What the model picker shows for each checkpoint: its file name without the extension (never
    the server's path), with as many parent folders as it takes to tell apart files of one name."""
    parts = [Path(p).with_suffix("").parts for p in checkpoints]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in checkpoints]
