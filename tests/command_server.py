"""Runs command lines in forks of one warm interpreter, for tests that run many of them (the bad-input
table of tests/test_bad_inputs.py, the README's benchmark commands; conftest's ``commands`` fixture).

A fresh ``python infer.py ...`` spends about 3 s importing torch and scan before it reads its first
argument, and ``train.py`` about 6 s with Lightning; this server imports them once, then forks a child
per command line. The child is a whole process, as the command would be: its own folder, standard
streams (files), ``sys.argv`` and exit status; an exception it does not catch prints its traceback
and exits 1; a signal that kills it gives a negative status, as :mod:`subprocess` reports one. It
ends as Python ends (its threads joined, its exit handlers run, its streams flushed) but without
freeing every module of the warm interpreter one by one, which alone took 3.3 s (0.03 s without).
Only import-time state is shared, so a command line whose environment must differ before imports
runs as a plain subprocess instead (the caller's job).

Protocol: one JSON request per line on stdin (``argv``: ``[script, *args]`` or ``["-m", module, *args]``;
``cwd``; ``env``: the environment; ``stdout``/``stderr``: files; ``timeout``: seconds), one JSON line
``{"returncode": N}`` on stdout when its command has ended. :class:`CommandServer` is the tests' side.
"""

import atexit
import importlib
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

PRELOAD = ("scan", "scan.infer_cli", "scan.export", "scan.align.cli", "scan.datasets.demo", "scan.training.cli",
           "scan.evaluation.cli")


def _become(request: dict) -> str | None:
    """In the child: take the command's folder, environment, streams, time limit and arguments; the
    module to run (``-m``), or None for a script."""
    os.chdir(request["cwd"])
    os.environ.clear()  # the caller's whole environment, as a subprocess would inherit it
    os.environ.update(request["env"])
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                           (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
        opened = os.open(path, mode, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    signal.alarm(int(request["timeout"]))  # its default action ends the child
    argv = request["argv"]
    if argv[0] == "-m":  # as `python -m module`: the folder it runs in first on the path
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        return argv[1]
    sys.argv = list(argv)  # as `python script.py`: the script's folder first on the path
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
    return None


class CommandServer:
    """The tests' side of a server, started at its first command: :meth:`run` is
    ``subprocess.run(capture_output=True)`` for ``python ARGV...``, without the imports. One command at
    a time (one server per thread)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def run(self, argv: list[str], cwd: str | os.PathLike[str] | None = None, timeout: int = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``python *argv`` in ``cwd`` (default: here), in this process's environment as it is now (as
        a subprocess inherits it) plus ``env``; only variables read after the imports take effect
        (others need a real subprocess)."""
        if self.process is None:
            self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__)], text=True,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert self.process.stdin is not None and self.process.stdout is not None
        streams = tempfile.mkdtemp(prefix="command-streams-")
        try:
            request = {"argv": [str(a) for a in argv], "cwd": str(cwd or os.getcwd()),
                       "env": {**os.environ, **(env or {})}, "timeout": timeout,
                       "stdout": os.path.join(streams, "stdout"), "stderr": os.path.join(streams, "stderr")}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
            assert answer, "the command server ended"
            with open(request["stdout"]) as out, open(request["stderr"]) as err:
                return subprocess.CompletedProcess(argv, json.loads(answer)["returncode"], out.read(), err.read())
        finally:
            shutil.rmtree(streams, ignore_errors=True)

    def close(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
            self.process = None


def _run_as_main(module: str | None) -> int:
    """Run the script (``sys.argv[0]``) or ``module`` as ``__main__``; its exit status."""
    try:
        if module is None:
            runpy.run_path(sys.argv[0], run_name="__main__")
        else:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:  # as Python reads sys.exit's argument
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what Python's exit does first: join the threads
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the command
            os._exit(_run_as_main(_become(request)))
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
