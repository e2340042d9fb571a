"""The images the namespace cluster's nodes import (``ctr images import``): built here, never pulled."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from . import oci

# The sandbox image the nodes' containerd is configured with (node.py).
PAUSE = "registry.k8s.io/pause:3.10"


def build_pause(binaries: Path, images: Path) -> Path:
    """Kubernetes' pause (built by lab/datapath/build.sh) as the pod sandbox image."""
    archive = images / "pause.tar"
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch)
        shutil.copy2(binaries / "pause", tree / "pause")
        oci.write_archive(archive, PAUSE, tree, entrypoint=["/pause"])
    return archive


def build_smoke(binaries: Path, images: Path, name: str) -> Path:
    """The lab's test server (lab/datapath/testserver, ours) under ``name``, the smoke image the program
    deploys (nginx, which no registry here serves): it answers GET / with 200 on port 80 as nginx does."""
    archive = images / "smoke.tar"
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch)
        shutil.copy2(binaries / "testserver", tree / "testserver")
        oci.write_archive(archive, name, tree, entrypoint=["/testserver", "serve"])
    return archive


def build_cilium(runtime: Path, images: Path, names: list[str]) -> Path:
    """The agent's and the operator's images (``names``, as the chart renders them), one root file system
    (lab/datapath/build-runtime.sh) for both."""
    if not (runtime / "usr" / "bin" / "cilium-agent").is_file():
        raise RuntimeError(f"no Cilium runtime in {runtime}: run lab/datapath/build-runtime.sh")
    archive = images / "cilium.tar"
    oci.write_archive(archive, names, runtime, entrypoint=["/usr/bin/cilium-dbg"])
    return archive
