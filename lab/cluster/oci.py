"""OCI image archives written here, without a registry or a container engine (``ctr images import`` reads them).

An image is one uncompressed layer made from a directory tree, written
deterministically (owner root, modification time 0, names sorted), so the
same tree always gives the same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


class _Hashing:
    """A file being written, with the sha256 and size of what went into it (tarfile also asks tell())."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def write_layer(tree: Path, path: Path, owners: Mapping[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """``tree``'s files as a tar layer in ``path`` (paths relative to it, modes kept, owners and times
    zeroed but for the paths ``owners`` gives a uid and gid), streamed: a runtime of a gigabyte never sits
    in memory. Returns its descriptor."""
    with path.open("wb") as raw:
        out = _Hashing(raw)
        with tarfile.open(fileobj=cast(BinaryIO, out), mode="w", format=tarfile.PAX_FORMAT) as tar:
            for member in sorted(tree.rglob("*")):
                info = tar.gettarinfo(str(member), arcname=str(member.relative_to(tree)))
                info.uid, info.gid = (owners or {}).get(info.name, (0, 0))
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with member.open("rb") as content:
                        tar.addfile(info, content)
                else:
                    tar.addfile(info)
    return {"mediaType": LAYER, "digest": "sha256:" + out.sha256.hexdigest(), "size": out.size}


def _descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob)}


def write_archive(
    archive: Path,
    names: str | Sequence[str],
    tree: Path,
    entrypoint: Sequence[str],
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    owners: Mapping[str, tuple[int, int]] | None = None,
) -> str:
    """An OCI archive of one image under each of ``names`` (``registry.k8s.io/pause:3.10``), its layer stored
    once; returns its manifest digest."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    layer_file = archive.with_name(archive.name + ".layer")
    layer = write_layer(tree, layer_file, owners)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": list(entrypoint), "Env": list(env), "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": _descriptor(CONFIG, config),
            "layers": [layer],
        },
        sort_keys=True,
    ).encode()
    described = _descriptor(MANIFEST, manifest)
    # containerd names an imported image after io.containerd.image.name, other tools after ref.name.
    named = [
        {**described, "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}}
        for name in ([names] if isinstance(names, str) else names)
    ]
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": named}, sort_keys=True).encode()
    with tarfile.open(archive, "w") as tar:
        entries = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        entries += [(f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b) for b in (config, manifest)]
        for path, blob in entries:
            info = tarfile.TarInfo(path)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        tar.add(layer_file, arcname="blobs/sha256/" + layer["digest"].removeprefix("sha256:"))
    layer_file.unlink()
    return str(described["digest"])
