"""Give files the mode the user's umask asks for, where a library chose a private one.

``tempfile.mkdtemp`` makes 0700 folders and safetensors writes 0600 files; a bundle or checkpoint built from them
would be unreadable to the service account that serves it, although the user's umask (typically 022) says
others may read what they create.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by setting it, which would
    briefly give files created by other threads the wrong mode)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """Set ``path`` (and, for a folder, everything below it) to the mode a new file or folder gets under the
    current umask: 0666 or 0777 less the umask."""
    mask = current_umask()
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    path = Path(path)
    if not path.is_dir():
        path.chmod(file_mode)
        return
    path.chmod(dir_mode)
    for folder, dirs, files in os.walk(path):
        for name in dirs:
            Path(folder, name).chmod(dir_mode)
        for name in files:
            Path(folder, name).chmod(file_mode)
