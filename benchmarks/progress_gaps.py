"""The longest silence of a command: run it, timestamp every screen update (a line or a progress-bar redraw,
i.e. text ended by \\n or \\r on stdout or stderr) and report the longest gaps with what was shown around them.

    python benchmarks/progress_gaps.py -- imitlab train runs/demos --out runs/x --epochs 2

A command that "shows progress" redraws at least every few seconds from start to end; the report names the
phase that stays silent longest.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=5, help="How many of the longest gaps to show.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command, after --.")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")

    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "160"})
    selector = selectors.DefaultSelector()
    for stream in (proc.stdout, proc.stderr):
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ)
    updates: list[tuple[float, str]] = [(0.0, "<start>")]
    pending = {proc.stdout: b"", proc.stderr: b""}
    open_streams = 2
    while open_streams:
        for key, _ in selector.select():
            data = key.fileobj.read()
            if not data:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            now = time.monotonic() - start
            *pieces, pending[key.fileobj] = re.split(rb"[\r\n]", pending[key.fileobj] + data)
            updates += [(now, piece.decode(errors="replace").strip()) for piece in pieces if piece.strip()]
    code = proc.wait()
    updates.append((time.monotonic() - start, f"<exit {code}>"))

    gaps = sorted(((later[0] - earlier[0], earlier, later) for earlier, later in zip(updates, updates[1:])),
                  key=lambda gap: -gap[0])
    print(f"{len(updates) - 2} screen updates in {updates[-1][0]:.1f} s; longest gaps:")
    for seconds, (t0, before), (t1, after) in gaps[:args.top]:
        print(f"  {seconds:6.1f} s  at {t0:7.1f} s  after: {before[:90]!r}\n{'':26}before: {after[:90]!r}")
    sys.exit(code)


if __name__ == "__main__":
    main()
