"""Find the throw-away local SLURM cluster started by ``scripts/slurm-cluster.sh``.

Tests that need SLURM call :func:`cluster_env` and skip when it returns ``None``
(or fail, when the environment variable CI is set: see tests/test_slurm.py).
The variables it returns must reach the process that runs submitit (so that
``sbatch`` & co. find the cluster and ``sacct`` is the stand-in that the script
writes, which submitit needs to notice jobs that die), e.g. with
``monkeypatch.setenv`` or ``subprocess.run(..., env=os.environ | env)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

DEFAULT_CLUSTER_DIR = Path("/tmp/hydra-example-slurm")
PARTITION = "kyiv"


def cluster_dir() -> Path:
    """Return the cluster's state directory (``$SLURM_CLUSTER_DIR`` or the default)."""
    return Path(os.environ.get("SLURM_CLUSTER_DIR") or DEFAULT_CLUSTER_DIR)


def cluster_env() -> dict[str, str] | None:
    """Return ``SLURM_CONF`` and ``PATH`` (sacct stand-in first) if a cluster answers.

    Returns ``None`` when the cluster is not started or does not answer ``sinfo``.
    """
    state = cluster_dir()
    conf = state / "etc" / "slurm.conf"
    shim = state / "bin"
    if not conf.is_file() or not (shim / "sacct").is_file():
        return None
    try:  # cheap check first: sinfo takes ~10 s to give up on a dead controller
        os.kill(int((state / "run" / "slurmctld.pid").read_text()), 0)
    except (OSError, ValueError):
        return None
    path = os.pathsep.join([str(shim), os.environ.get("PATH", os.defpath)])
    sinfo = shutil.which("sinfo", path=path)
    if sinfo is None:
        return None
    env = {"SLURM_CONF": str(conf), "PATH": path}
    try:
        subprocess.run(
            [sinfo, "--noheader"],
            env=os.environ | env,
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return env
