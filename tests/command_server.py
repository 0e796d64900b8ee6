"""Runs command lines in forks of one warm interpreter, for tests that run many of them (the bad-input
table of tests/test_bad_inputs.py).

A fresh ``python infer.py ...`` spends two to four seconds importing torch, Lightning and scan before it
reads its first argument; this server imports them once, then forks a child per command line. The child
is a whole process, as the command would be: its own folder, standard streams (files), ``sys.argv`` and
exit status; an exception it does not catch prints its traceback and exits 1; a signal that kills it
gives a negative status, as :mod:`subprocess` reports one. Only import-time state is shared, so a command
line whose environment must differ before imports runs as a plain subprocess instead (the caller's job).

Protocol: one JSON request per line on stdin (``argv``: ``[script, *args]`` or ``["-m", module, *args]``;
``cwd``; ``env``: variables to set; ``stdout``/``stderr``: files; ``timeout``: seconds), one JSON line
``{"returncode": N}`` on stdout when its command has ended. :class:`CommandServer` is the tests' side.
"""

import importlib
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile

PRELOAD = ("scan", "scan.infer_cli", "scan.export", "scan.align.cli", "scan.datasets.demo", "scan.training.cli")


def _become(request: dict) -> str | None:
    """In the child: take the command's folder, environment, streams, time limit and arguments; the
    module to run (``-m``), or None for a script."""
    os.chdir(request["cwd"])
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
    """A running server and the tests' way to it: :meth:`run` is ``subprocess.run(capture_output=True)``
    for ``python ARGV...``, without the imports. One command at a time (one server per thread)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__)], text=True, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"})

    def run(self, argv: list[str], cwd: str | os.PathLike[str], timeout: int = 300) -> subprocess.CompletedProcess:
        streams = tempfile.mkdtemp(prefix="command-streams-")
        try:
            request = {"argv": argv, "cwd": str(cwd), "env": {}, "timeout": timeout,
                       "stdout": os.path.join(streams, "stdout"), "stderr": os.path.join(streams, "stderr")}
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
            assert answer, "the command server ended"
            with open(request["stdout"]) as out, open(request["stderr"]) as err:
                return subprocess.CompletedProcess(argv, json.loads(answer)["returncode"], out.read(), err.read())
        finally:
            shutil.rmtree(streams, ignore_errors=True)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def main() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the command: what it raises unwinds this loop and ends the child as Python would
            module = _become(request)
            if module is None:
                runpy.run_path(sys.argv[0], run_name="__main__")
            else:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
