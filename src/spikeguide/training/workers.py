"""Run torchrun's worker processes so that a user error inside them reaches the user as one line.

A worker that fails with a :class:`~spikeguide.errors.SpikeguideError` writes its message to the
file named by ``SPIKEGUIDE_ERROR_FILE`` (the CLI does so when the variable is set). The launcher
forwards the workers' output as it comes but holds back torchrun's own lines (its report of a
failure, ``ChildFailedError``) and the tracebacks torch prefixes with ``[rankN]:`` (the other
workers', whose peer went away). When a worker left a message, it prints that one line and exits
with code 2; any other failure is a bug, and what was held back is shown in full. Ctrl-C reaches
torchrun and the workers as well: the launcher keeps relaying while they checkpoint and say
where they stopped, then exits with 128 + SIGINT.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

ERROR_FILE_ENV = "SPIKEGUIDE_ERROR_FILE"
# torchrun's agent logs in glog format ("E1204 22:30:01.123000 123 torch/distributed/...] failed
# (exitcode: 2) ..."), its report of the failure follows; a worker's uncaught exception is
# printed line by line as "[rank1]: Traceback ..."
TORCHRUN_LINE = re.compile(r"^[EWI]\d{4} \d\d:\d\d:\d\d")
TORCHRUN_FAILURE = re.compile(r"^E\d{4} .*failed \(exitcode")
WORKER_TRACEBACK = re.compile(r"^\[rank\d+\]:")
# a failed group torchrun restarts (--max-restarts): what was held back of it is dropped, and
# the new group's output passes as before
TORCHRUN_RESTART = re.compile(r"will restart worker group")


def report_worker_error(message: str) -> bool:
    """Under the launcher, hand ``message`` to it (the first worker's wins) and return True;
    elsewhere return False."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path:
        return False
    try:
        with open(path, "x") as f:
            f.write(message)
    except FileExistsError:
        pass
    return True


def run_workers(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run the torchrun command ``cmd`` (``env`` added to this process's environment, which
    takes precedence); a worker's user error becomes one line and exit code 2. A SIGTERM sent to
    this process (a batch system's) is passed on to torchrun, which passes it to the workers."""
    with tempfile.TemporaryDirectory(prefix="spikeguide-") as tmp:
        error_file = Path(tmp) / "error"
        env = {**(env or {}), **os.environ, ERROR_FILE_ENV: str(error_file)}
        held: list[str] = []
        failed = interrupted = False
        with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, bufsize=1) as proc:
            signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
            while True:
                try:
                    for line in proc.stderr:
                        if TORCHRUN_RESTART.search(line):
                            failed, held = False, []
                            continue
                        failed = failed or bool(TORCHRUN_FAILURE.match(line))
                        if (failed or interrupted or TORCHRUN_LINE.match(line)
                                or WORKER_TRACEBACK.match(line)):
                            held.append(line)
                        else:
                            sys.stderr.write(line)
                    break
                except KeyboardInterrupt:
                    # Ctrl-C reached torchrun and its workers too: they checkpoint and stop, and
                    # closing their pipe now would break what they still write
                    interrupted = True
        # a group restarted after a failure may still have finished: its exit status decides
        if proc.returncode and error_file.is_file():
            print(f"spikeguide: error: {error_file.read_text()}", file=sys.stderr)
            return 2
        if interrupted:  # the workers' own lines; torchrun's report of the signal adds nothing
            sys.stderr.writelines(ln for ln in held if ln.startswith("spikeguide"))
            return 128 + signal.SIGINT
        if proc.returncode:
            sys.stderr.writelines(held)
        return proc.returncode
