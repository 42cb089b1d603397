"""Run torchrun's worker processes so that a user error inside them reaches the user as one line.

A worker that fails with a :class:`~spikeguide.errors.SpikeguideError` writes its message to the
file named by ``SPIKEGUIDE_ERROR_FILE`` (the CLI does so when the variable is set). The launcher
forwards the workers' output as it comes but holds back torchrun's own lines (its report of a
failure, ``ChildFailedError``) and the tracebacks torch prefixes with ``[rankN]:`` (the other
workers', whose peer went away). A worker that died without a message (killed, crashed) is
said at once in torchrun's line, since torchrun may restart the group (``--max-restarts``) and
the run go on. When a worker left a message, the launcher stops torchrun (a user error would
only come back at every restart), prints that one line and exits with code 2; any other failure
is a bug, and what was held back is shown in full. Ctrl-C reaches
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
# (exitcode: 2) ..."); when it gives up, its report of the failure follows as a traceback of its
# own; a worker's uncaught exception is printed line by line as "[rank1]: Traceback ..."
TORCHRUN_LINE = re.compile(r"^[EWI]\d{4} \d\d:\d\d:\d\d")
TORCHRUN_REPORT = re.compile(r"^Traceback \(most recent call last\)")
WORKER_TRACEBACK = re.compile(r"^\[rank\d+\]:")
WORKER_DIED = re.compile(r"^E\d{4} .*failed \(exitcode: (?!2\))")


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
        report = interrupted = False
        with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, bufsize=1) as proc:
            signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
            while True:
                try:
                    for line in proc.stderr:
                        if not report and error_file.is_file():
                            # a user error stays one at every restart: stop torchrun instead
                            proc.terminate()
                        report = (report or error_file.is_file()
                                  or bool(TORCHRUN_REPORT.match(line)))
                        if (WORKER_DIED.match(line) and not interrupted
                                and not error_file.is_file()):
                            sys.stderr.write(line)
                        elif (report or interrupted or TORCHRUN_LINE.match(line)
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
