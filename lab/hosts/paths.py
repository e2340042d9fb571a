"""Where the lab keeps its files: the repository, the cache outside git, the run directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "lab" / "hosts" / "build-image.sh"


def cache_dir() -> Path:
    """``${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/lab``: images, keys; never in git."""
    root = os.environ.get("K3S_CILIUM_CACHE") or str(Path.home() / ".cache" / "k3s-cilium")
    return Path(root) / "lab"


def run_dir() -> Path:
    """The one running lab: overlays, seed disks, sockets, consoles, state.json."""
    return cache_dir() / "run"


def lab_key() -> Path:
    return cache_dir() / "ssh" / "id_ed25519"
