"""The images the namespace cluster's nodes import (``ctr images import``): built here, never pulled."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from . import oci

# The sandbox image the nodes' containerd is configured with (node.py).
PAUSE = "registry.k8s.io/pause:3.10"


def _one_binary(binaries: Path, images: Path, binary: str, name: str) -> Path:
    """An image of one binary built by lab/datapath/build.sh, at the root, as its entrypoint."""
    archive = images / f"{binary}.tar"
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch)
        shutil.copy2(binaries / binary, tree / binary)
        oci.write_archive(archive, name, tree, entrypoint=[f"/{binary}"])
    return archive


def build_pause(binaries: Path, images: Path) -> Path:
    """Kubernetes' pause as the pod sandbox image."""
    return _one_binary(binaries, images, "pause", PAUSE)


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


# Cilium's own relay image is distroless (static:nonroot): the binary in /usr/local/bin, a passwd
# naming the nonroot user, its home (the relay's gops agent writes $HOME/.config/gops), a /tmp.
NONROOT = 65532
NONROOT_PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"


def build_relay(binaries: Path, images: Path, names: list[str]) -> Path:
    """Hubble Relay (``hubble-relay``, built by lab/datapath/build.sh from Cilium's module) under ``names``,
    as the chart renders them; the chart runs ``hubble-relay serve``."""
    archive = images / "hubble-relay.tar"
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch)
        (tree / "usr" / "local" / "bin").mkdir(parents=True)
        shutil.copy2(binaries / "hubble-relay", tree / "usr" / "local" / "bin" / "hubble-relay")
        (tree / "etc").mkdir()
        (tree / "etc" / "passwd").write_text(NONROOT_PASSWD)
        (tree / "tmp").mkdir()
        (tree / "tmp").chmod(0o1777)
        (tree / "home" / "nonroot").mkdir(parents=True)
        (tree / "home" / "nonroot").chmod(0o700)
        oci.write_archive(
            archive,
            names,
            tree,
            entrypoint=["/usr/local/bin/hubble-relay"],
            owners={"home/nonroot": (NONROOT, NONROOT)},
        )
    return archive


def build_coredns(binaries: Path, images: Path, name: str) -> Path:
    """CoreDNS (built with the Corefile's plugins) under ``name``."""
    return _one_binary(binaries, images, "coredns", name)
