"""Where a number came from: the code, the packages, the machine, the data and the time.

    record = provenance(settings_fingerprint, data_sha256, simulated, started, finished)

Written by every job as metrics/{job}_provenance.json and read by the aggregator, which refuses
to pool jobs trained with different settings and stamps the table with the commit.
"""
from __future__ import annotations

import json
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from model import config
from model.errors import InputError, read_structured


def git_state(root: Path = config.PROJECT_ROOT) -> dict:
    """The checkout's commit and whether its tracked files differ from it; None when the code
    does not run from a git checkout (or git is missing)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(changes)}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    import sklearn      # here, not at import: commands that never record an environment start faster
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "host": socket.gethostname(), "cpu": _cpu_name(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance(fingerprint: dict, data_file: str, simulated: bool, started: str, finished: str) -> dict:
    return {"git": git_state(), "environment": environment(), "data_file": str(data_file),
            "data_sha256": fingerprint.get("data_sha256"),
            "data": "simulated demo data" if simulated else "measured", "started": started,
            "finished": finished, "settings": fingerprint}


def read_provenance(path: Path | str) -> dict:
    """A job's provenance record; InputError when it is missing or damaged."""
    path = Path(path)
    record = read_structured(path, "provenance record", json.loads)
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise InputError(f"{path}: not a provenance record (no 'settings')")
    return record
