"""Air-gapped installs: the ``airgap`` config block, its validation and what it renders.

Without internet on the hosts (and on the Pulumi runner), everything the
program would download comes from the stack instead:

- ``airgap.k3s``: the K3s binary, the install script and image archives, each
  from a file on the Pulumi host (uploaded over SSH) or from an internal mirror
  URL the hosts fetch from, each with a sha256 (given, or read from
  ``airgap.sumsFile``) that the host checks before anything is placed;
- ``airgap.registries``: K3s' ``registries.yaml`` (mirrors, rewrites, TLS),
  with credentials from the secret ``registryCredentials``;
- ``airgap.cilium``: the chart (local ``.tgz``, unpacked directory, OCI
  reference or mirror repository) and the registry of every image it deploys.

Everything is checked here, before any resource is registered: local paths
exist and are files (or a chart directory), digests are 64 hex digits and
match the local files, URLs are ``https`` unless ``allowHttp`` says otherwise.
Relative paths are relative to the project directory (where ``pulumi`` runs).
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args
from urllib.parse import urlparse

import yaml
from packaging.version import Version
from pydantic import Field, field_validator, model_validator

from stacks.model import ConfigModel

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# On the hosts. Uploads land in a directory the SSH user owns (SFTP runs as that user); the
# stage script copies what it verified into root-owned places.
UPLOAD_DIR = "/var/lib/k3s-cilium/upload"
AIRGAP_DIR = "/var/lib/k3s-cilium/airgap"
IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"
REGISTRIES_PATH = "/etc/rancher/k3s/registries.yaml"
# Which image archives the stage script placed, so that one dropped from the stack is removed.
IMAGES_MANIFEST = f"{AIRGAP_DIR}/images.list"
# The digest of what the install last started with: a changed artifact restarts K3s.
ARTIFACTS_MARKER = f"{AIRGAP_DIR}/installed.sha256"
STAGED_BINARY = f"{AIRGAP_DIR}/k3s"
STAGED_INSTALLER = f"{AIRGAP_DIR}/install.sh"

# Archive types K3s imports from agent/images (docs: "Air-Gap Install", manually deploy images).
IMAGE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.bz2", ".tar.lz4")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_IMAGE_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# host[:port] with optional path, as a registry or repository prefix: registry.internal:5000/cilium
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?(/[a-z0-9]+([._/-][a-z0-9]+)*)?$")
_REPOSITORY = _REGISTRY
_REGISTRY_HOST = re.compile(r"^([A-Za-z0-9.-]+(:\d{1,5})?|\*)$")
# K3s releases that brought `disable-default-registry-endpoint` (docs.k3s.io, Private Registry Configuration,
# "Default Endpoint Fallback": the January 2024 releases); every minor after 1.29 has it from its first release.
DEFAULT_ENDPOINT_FLAG_SINCE = {26: 13, 27: 10, 28: 6, 29: 1}
_OCI = re.compile(r"^oci://[A-Za-z0-9.-]+(:\d{1,5})?(/[a-z0-9]+([._/-][a-z0-9]+)*)+$")




def _sha256(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower().removeprefix("sha256:")
    if not _SHA256.match(value):
        raise ValueError("must be a sha256 digest: 64 hex digits (e.g. from `sha256sum <file>`)")
    return value


def _image_digest(value: str | None) -> str | None:
    if value is not None and not _IMAGE_DIGEST.match(value):
        raise ValueError("must be an image digest 'sha256:' followed by 64 hex digits")
    return value


def _url_problem(url: str, allow_http: bool) -> str | None:
    parsed = urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        return "must be an https:// URL"
    if parsed.scheme == "http" and not allow_http:
        return "is plain http: use https, or set airgap.allowHttp: true for a mirror without TLS"
    if any(c.isspace() for c in url) or "'" in url:
        return "must not contain spaces or quotes"
    return None


def resolve_path(path: str) -> Path:
    """A configured local path: absolute, or relative to the project directory."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate


@cache
def file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """The sha256 of a local file (cached per size and mtime: an image archive is read once per run)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_sha256(path: Path) -> str:
    stat = path.stat()
    return file_sha256(path, stat.st_size, stat.st_mtime_ns)


class Artifact(ConfigModel):
    """One file the hosts need: from the Pulumi host (``path``) or a mirror (``url``)."""

    path: str | None = Field(None, description="File on the Pulumi host, uploaded to every node over SSH.")
    url: str | None = Field(None, description="Internal mirror URL the nodes download from (curl or wget).")
    sha256: str | None = Field(
        None, description="Expected sha256; defaults to the file name's line in `airgap.sumsFile`."
    )

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        return _sha256(value)

    @model_validator(mode="after")
    def _one_source(self) -> Artifact:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path (a file on the Pulumi host) or url (an internal mirror)")
        return self

    @property
    def file_name(self) -> str:
        if self.path is not None:
            return Path(self.path).name
        return PurePosixPath(urlparse(self.url or "").path).name


class K3sArtifacts(ConfigModel):
    binary: Artifact = Field(description="The `k3s` binary of `k3s.version` for the nodes' architecture.")
    install_script: Artifact = Field(description="The K3s install script (`install.sh` from get.k3s.io).")
    images: list[Artifact] = Field(
        default_factory=list,
        description="Image archives (`k3s-airgap-images-<arch>.tar.zst`, Cilium's images, ...) for "
        f"`{IMAGES_DIR}`; empty when a registry mirror serves every image.",
    )


class RegistryMirror(ConfigModel):
    endpoints: list[str] = Field(description="Mirror endpoints, tried in order (`https://registry.internal:5000`).")
    rewrites: dict[str, str] = Field(
        default_factory=dict, description="Regex rewrites of the image name (`'^rancher/(.*)': 'mirror/rancher/$1'`)."
    )


class RegistryTls(ConfigModel):
    ca_file: str | None = Field(None, description="CA bundle path ON THE NODES for the registry's certificate.")
    insecure_skip_verify: bool = Field(False, description="Skip certificate verification (not for production).")


class RegistryConfig(ConfigModel):
    tls: RegistryTls | None = Field(None, description="TLS settings for this registry.")


class Registries(ConfigModel):
    mirrors: dict[str, RegistryMirror] = Field(
        default_factory=dict, description="Per registry (`docker.io`, `quay.io`, `*`): where containerd pulls from."
    )
    configs: dict[str, RegistryConfig] = Field(
        default_factory=dict,
        description="Per mirror host: TLS settings. Credentials come from the secret `registryCredentials`.",
    )
    disable_default_endpoint: bool = Field(
        False,
        description="Start K3s with `disable-default-registry-endpoint`: the images of a registry listed in "
        "`mirrors` come from its endpoints only, never from the public registry when they fail or lack an image. "
        "Needs K3s "
        f"{', '.join(f'v1.{minor}.{patch}+k3s1' for minor, patch in sorted(DEFAULT_ENDPOINT_FLAG_SINCE.items()))} "
        "or a later release.",
    )

    @field_validator("mirrors", "configs")
    @classmethod
    def _hosts(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [host for host in value if not _REGISTRY_HOST.match(host)]
        if bad:
            raise ValueError(f"registry names must be host[:port] or '*', not {', '.join(map(repr, bad))}")
        return value


ImageName = Literal[
    "agent", "operator", "certgen", "hubbleRelay", "hubbleUiBackend", "hubbleUi", "envoy", "nodeinit",
    "clustermeshApiserver", "clustermeshEtcd", "kvstoremesh", "etcdOperator", "spireInit", "spireAgent",
    "spireServer", "ztunnel",
]


class ImageOverride(ConfigModel):
    repository: str | None = Field(None, description="Full repository (`registry.internal:5000/cilium/cilium`).")
    digest: str | None = Field(None, description="Image digest (`sha256:...`) pinned instead of the chart's.")

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is not None and not _REPOSITORY.match(value):
            raise ValueError("must be a repository like 'registry.internal:5000/cilium/cilium' (no tag, no scheme)")
        return value

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        return _image_digest(value)


class CiliumArtifacts(ConfigModel):
    chart: str | None = Field(
        None,
        description="Local chart (`cilium-<version>.tgz` or an unpacked `cilium/` directory) or an OCI reference "
        "(`oci://registry.internal/charts/cilium`). Default: the `cilium` chart from `chartRepository`.",
    )
    chart_sha256: str | None = Field(
        None, description="Expected sha256 of a local `.tgz` chart; defaults to its line in `airgap.sumsFile`."
    )
    chart_repository: str | None = Field(
        None, description="Helm repository mirroring helm.cilium.io (`https://charts.internal/cilium`)."
    )
    image_registry: str | None = Field(
        None,
        description="Registry prefix for every image the chart deploys, each under the last segment of the "
        "chart's repository (`registry.internal:5000/cilium` makes `registry.internal:5000/cilium/cilium`, "
        "`.../operator-generic`, `.../hubble-relay`, `.../etcd`, `.../spire-agent`, `.../busybox`, ...). An image "
        "`cilium.values` switch on that it cannot redirect is refused, naming its values key.",
    )
    keep_chart_digests: bool = Field(
        True,
        description="Keep the chart's image digests (right when images were copied by digest, e.g. "
        "`skopeo copy --all`); false pulls by tag from the registry (Cilium 1.13, whose chart keeps some "
        "digests inside `tag`, needs a local `chart` for that).",
    )
    images: dict[ImageName, ImageOverride] = Field(
        default_factory=dict,
        description="Per image (" + ", ".join(f"`{name}`" for name in get_args(ImageName)) + "; the chart of "
        "`cilium.version` must have it): repository and/or digest, over `imageRegistry`.",
    )

    @field_validator("chart_sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        return _sha256(value)

    @field_validator("image_registry")
    @classmethod
    def _registry(cls, value: str | None) -> str | None:
        if value is not None and not _REGISTRY.match(value):
            raise ValueError("must be a registry prefix like 'registry.internal:5000/cilium' (no scheme, no tag)")
        return value

    @model_validator(mode="after")
    def _one_chart_source(self) -> CiliumArtifacts:
        if self.chart and self.chart_repository:
            raise ValueError("give chart (a local chart or oci:// reference) or chartRepository, not both")
        if self.chart_sha256 and not (self.chart and self.chart.endswith(".tgz")):
            raise ValueError("chartSha256 applies to a local .tgz chart only")
        if self.chart and self.chart.startswith("oci://") and not _OCI.match(self.chart):
            raise ValueError(f"chart {self.chart!r} is not an OCI reference like 'oci://registry.internal/charts/cilium'")
        return self


class Airgap(ConfigModel):
    sums_file: str | None = Field(
        None, description="`<sha256>  <file name>` lines (`sha256sum` output, e.g. K3s' `sha256sum-amd64.txt`) on "
        "the Pulumi host, for artifacts without their own `sha256`.",
    )
    allow_http: bool = Field(False, description="Accept plain `http://` mirror URLs (default: https only).")
    k3s: K3sArtifacts | None = Field(
        None, description="K3s from these artifacts with `INSTALL_K3S_SKIP_DOWNLOAD`; unset: from the internet."
    )
    registries: Registries | None = Field(None, description="K3s' `/etc/rancher/k3s/registries.yaml`.")
    cilium: CiliumArtifacts | None = Field(None, description="The Cilium chart and images from internal sources.")


# --- validation against the files and the rest of the config ------------------------------------


def read_sums(path: Path) -> dict[str, str]:
    """``sha256sum`` output as {file name: digest}; ``*name`` (binary mode) and ``./dir/name`` are accepted."""
    sums: dict[str, str] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and _SHA256.match(parts[0].lower()):
            sums[PurePosixPath(parts[1].lstrip("*")).name] = parts[0].lower()
    return sums


@dataclass(frozen=True)
class Resolved:
    """An artifact with its digest settled and where it goes on the hosts."""

    role: Literal["binary", "installer", "image"]
    name: str  # file name on the host
    sha256: str
    source: Literal["file", "url"]
    location: str  # local absolute path, or the URL
    dest: str
    mode: str

    @property
    def upload_path(self) -> str:
        return f"{UPLOAD_DIR}/{self.name}"


def chart_version(chart: Path) -> str | None:
    """``version`` from a chart's Chart.yaml (a ``.tgz`` or a directory)."""
    if chart.is_dir():
        text = (chart / "Chart.yaml").read_text()
    else:
        with tarfile.open(chart) as archive:
            members = archive.getmembers()
            member = next((m for m in members if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml")), None)
            extracted = archive.extractfile(member) if member else None
            if extracted is None:
                return None
            text = io.TextIOWrapper(extracted, encoding="utf-8").read()
    document = yaml.safe_load(text) or {}
    return str(document.get("version")) if isinstance(document, dict) else None


def _digest_for(where: str, artifact: Artifact, sums: dict[str, str], sums_file: str | None) -> tuple[str | None, str]:
    """(the expected digest, a problem or '')."""
    if artifact.sha256:
        return artifact.sha256, ""
    name = artifact.file_name
    if name in sums:
        return sums[name], ""
    if sums_file:
        return None, f"{where}: no sha256 given and {name!r} has no line in sumsFile {sums_file}"
    return None, f"{where}: no sha256 given; set sha256 or airgap.sumsFile"


def _check_artifact(
    where: str, artifact: Artifact, sums: dict[str, str], sums_file: str | None, allow_http: bool
) -> tuple[str | None, list[str]]:
    problems = []
    name = artifact.file_name
    if not name or not _FILE_NAME.match(name):
        problems.append(f"{where}: file name {name!r} must be letters, digits and '._+-'")
    expected, problem = _digest_for(where, artifact, sums, sums_file)
    if problem:
        problems.append(problem)
    if artifact.url is not None:
        url_problem = _url_problem(artifact.url, allow_http)
        if url_problem:
            problems.append(f"{where}.url: {artifact.url!r} {url_problem}")
    if artifact.path is not None:
        local = resolve_path(artifact.path)
        if not local.exists():
            problems.append(f"{where}.path: {artifact.path!r} does not exist (looked at {local})")
        elif not local.is_file():
            problems.append(f"{where}.path: {artifact.path!r} is not a file")
        elif expected:
            found = local_sha256(local)
            if found != expected:
                problems.append(
                    f"{where}.path: {artifact.path!r} does not match its sha256: expected {expected}, found {found}"
                )
    return expected, problems


def problems(airgap: Airgap | None, cilium_version: str) -> list[str]:
    """Every problem of the airgap block against the local files, as '<key>: <problem>' lines."""
    if airgap is None:
        return []
    try:
        _resolve(airgap, cilium_version)
    except AirgapError as error:
        return error.problems
    return []


class AirgapError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Chart:
    """What the Helm release is given: ``chart`` and, for a repository, its URL."""

    kind: Literal["repository", "mirror", "tgz", "dir", "oci"]
    chart: str
    repository: str | None
    version: str | None
    # For a local chart: a digest of its content, carried in the release's description so that a
    # changed chart upgrades the release even when the values did not change.
    sha256: str | None = None


def _tree_sha256(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{local_sha256(path)}\n".encode())
    return digest.hexdigest()


def _resolve(airgap: Airgap, cilium_version: str) -> tuple[list[Resolved], Chart | None]:
    found: list[str] = []
    sums: dict[str, str] = {}
    if airgap.sums_file:
        path = resolve_path(airgap.sums_file)
        if not path.is_file():
            found.append(f"airgap.sumsFile: {airgap.sums_file!r} is not a file (looked at {path})")
        else:
            sums = read_sums(path)
    artifacts: list[Resolved] = []
    if airgap.k3s:
        entries: list[tuple[str, Artifact, Literal["binary", "installer", "image"], str, str]] = [
            ("airgap.k3s.binary", airgap.k3s.binary, "binary", STAGED_BINARY, "0755"),
            ("airgap.k3s.installScript", airgap.k3s.install_script, "installer", STAGED_INSTALLER, "0755"),
        ]
        for index, image in enumerate(airgap.k3s.images):
            name = image.file_name
            where = f"airgap.k3s.images[{index}]"
            if not name.endswith(IMAGE_SUFFIXES):
                found.append(f"{where}: {name!r} is not an image archive K3s imports ({', '.join(IMAGE_SUFFIXES)})")
            entries.append((where, image, "image", f"{IMAGES_DIR}/{name}", "0644"))
        names = [artifact.file_name for _, artifact, _, _, _ in entries]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            found.append(f"airgap.k3s: two artifacts share the file name {', '.join(repeated)} (one upload each)")
        for where, artifact, role, dest, mode in entries:
            expected, artifact_problems = _check_artifact(where, artifact, sums, airgap.sums_file, airgap.allow_http)
            found += artifact_problems
            if expected:
                artifacts.append(
                    Resolved(
                        role=role,
                        name=artifact.file_name,
                        sha256=expected,
                        source="file" if artifact.path is not None else "url",
                        location=str(resolve_path(artifact.path)) if artifact.path is not None else artifact.url or "",
                        dest=dest,
                        mode=mode,
                    )
                )
    chart = None
    if airgap.cilium:
        chart, chart_problems = _resolve_chart(airgap, airgap.cilium, sums, cilium_version)
        found += chart_problems
    if airgap.registries:
        for host, mirror in airgap.registries.mirrors.items():
            if not mirror.endpoints:
                found.append(f"airgap.registries.mirrors.{host}.endpoints: give at least one endpoint")
            for endpoint in mirror.endpoints:
                problem = _url_problem(endpoint, airgap.allow_http)
                if problem:
                    found.append(f"airgap.registries.mirrors.{host}.endpoints: {endpoint!r} {problem}")
            for pattern in mirror.rewrites:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    found.append(f"airgap.registries.mirrors.{host}.rewrites: {pattern!r} is not a regex ({exc})")
    if found:
        raise AirgapError(found)
    return artifacts, chart


def _resolve_chart(
    airgap: Airgap, cilium: CiliumArtifacts, sums: dict[str, str], version: str
) -> tuple[Chart | None, list[str]]:
    if cilium.chart_repository:
        problem = _url_problem(cilium.chart_repository, airgap.allow_http)
        if problem:
            return None, [f"airgap.cilium.chartRepository: {cilium.chart_repository!r} {problem}"]
        return Chart("mirror", "cilium", cilium.chart_repository, version), []
    if not cilium.chart:
        return None, []
    if cilium.chart.startswith("oci://"):
        return Chart("oci", cilium.chart, None, version), []
    where = "airgap.cilium.chart"
    local = resolve_path(cilium.chart)
    if not local.exists():
        return None, [f"{where}: {cilium.chart!r} does not exist (looked at {local})"]
    if local.is_dir():
        if not (local / "Chart.yaml").is_file():
            return None, [f"{where}: {cilium.chart!r} is a directory without Chart.yaml (an unpacked chart)"]
        kind: Literal["tgz", "dir"] = "dir"
        digest = _tree_sha256(local)
    elif cilium.chart.endswith(".tgz"):
        kind = "tgz"
        expected = cilium.chart_sha256 or sums.get(local.name)
        if expected is None:
            return None, [f"{where}: no chartSha256 given and {local.name!r} has no line in airgap.sumsFile"]
        digest = local_sha256(local)
        if digest != expected:
            return None, [f"{where}: {cilium.chart!r} does not match its sha256: expected {expected}, found {digest}"]
    else:
        return None, [f"{where}: {cilium.chart!r} must be a .tgz file, a chart directory or an oci:// reference"]
    try:
        found_version = chart_version(local)
    except (OSError, tarfile.TarError, yaml.YAMLError) as exc:
        return None, [f"{where}: {cilium.chart!r} cannot be read as a Helm chart ({exc})"]
    if found_version != version:
        return None, [f"{where}: {cilium.chart!r} is chart version {found_version}, but cilium.version is {version}"]
    # A local chart's version is its own; Helm is given the path only, relative to the project directory
    # (where the Kubernetes provider runs) when the chart is in it: the release's inputs are then the same
    # from every checkout, and a no-op `up` from another machine upgrades nothing.
    return Chart(kind, release_path(local), None, None, digest), []


def release_path(local: Path) -> str:
    """``local`` as the Helm release names it: relative to the project directory when inside it."""
    root = PROJECT_ROOT.resolve()
    resolved = local.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(local)


def artifacts(airgap: Airgap | None, cilium_version: str) -> list[Resolved]:
    """The K3s artifacts with their digests (the config was validated: no problems left)."""
    return _resolve(airgap, cilium_version)[0] if airgap else []


def chart(airgap: Airgap | None, cilium_version: str) -> Chart | None:
    """Where the Helm release takes the Cilium chart from; None: helm.cilium.io."""
    return _resolve(airgap, cilium_version)[1] if airgap else None


# --- what the hosts get -------------------------------------------------------------------------


def stage_lines(resolved: list[Resolved]) -> str:
    """The stage script's ARTIFACTS parameter: ``<name> <sha256> <file|url> <source> <dest> <mode>`` lines."""
    return "\n".join(
        f"{a.name} {a.sha256} {a.source} {a.upload_path if a.source == 'file' else a.location} {a.dest} {a.mode}"
        for a in resolved
    )


def artifacts_digest(resolved: list[Resolved]) -> str:
    """One digest of every artifact K3s reads: the install converges (and restarts K3s) when it changes."""
    return hashlib.sha256("".join(f"{a.name} {a.sha256}\n" for a in resolved).encode()).hexdigest()


def install_params(airgap: Airgap | None, cilium_version: str) -> dict[str, str]:
    """What k3s-install.sh needs to install from the staged artifacts; empty values: download from the internet."""
    resolved = artifacts(airgap, cilium_version)
    if not resolved:
        return {"AIRGAP_BINARY": "", "AIRGAP_INSTALLER": "", "AIRGAP_DIGEST": "", "AIRGAP_MARKER": ARTIFACTS_MARKER}
    return {
        "AIRGAP_BINARY": STAGED_BINARY,
        "AIRGAP_INSTALLER": STAGED_INSTALLER,
        "AIRGAP_DIGEST": artifacts_digest(resolved),
        "AIRGAP_MARKER": ARTIFACTS_MARKER,
    }


def parse_credentials(text: str) -> dict[str, dict[str, str]]:
    """The secret ``registryCredentials``: YAML/JSON ``{<registry host>: {username, password}}``.

    Problems name the registry and the key, never a value.
    """
    if not text.strip():
        return {}
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        raise AirgapError(["registryCredentials: is not YAML or JSON ({<registry>: {username, password}})"]) from None
    if not isinstance(document, dict):
        raise AirgapError(["registryCredentials: must be a mapping {<registry>: {username, password}}"])
    found, credentials = [], {}
    for host, entry in document.items():
        if not isinstance(host, str) or not _REGISTRY_HOST.match(host):
            found.append(f"registryCredentials: registry name {str(host)!r} must be host[:port]")
            continue
        if not isinstance(entry, dict) or set(entry) != {"username", "password"} or not all(
            isinstance(v, str) and v for v in entry.values()
        ):
            found.append(f"registryCredentials.{host}: must be {{username, password}}, both non-empty strings")
            continue
        credentials[host] = {"username": entry["username"], "password": entry["password"]}
    if found:
        raise AirgapError(found)
    return credentials


def registries_yaml(registries: Registries | None, credentials: dict[str, dict[str, str]]) -> str:
    """``/etc/rancher/k3s/registries.yaml`` (with the credentials: handle it as a secret)."""
    mirrors: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    if registries:
        for host, mirror in registries.mirrors.items():
            entry: dict[str, Any] = {"endpoint": list(mirror.endpoints)}
            if mirror.rewrites:
                entry["rewrite"] = dict(mirror.rewrites)
            mirrors[host] = entry
        for host, config in registries.configs.items():
            if config.tls:
                tls: dict[str, Any] = {"insecure_skip_verify": config.tls.insecure_skip_verify}
                if config.tls.ca_file:
                    tls["ca_file"] = config.tls.ca_file
                configs.setdefault(host, {})["tls"] = tls
    for host, credential in credentials.items():
        configs.setdefault(host, {})["auth"] = dict(credential)
    document: dict[str, Any] = {"mirrors": mirrors}
    if configs:
        document["configs"] = configs
    return str(yaml.safe_dump(document, sort_keys=True, default_flow_style=False))


# --- Cilium images ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartImage:
    """An image the official chart can deploy: where its values are and which charts have it.

    Read from the packaged charts 1.13.18 to 1.20.0 (values.yaml and the templates that render each
    image with ``include "cilium.image"``).
    """

    key: str  # its name in airgap.cilium.images
    path: tuple[str, ...]  # the values path of its {repository, tag, digest, useDigest, override} mapping
    upstream: str  # the chart's repository; its last segment names the image under imageRegistry
    since: Version  # first Cilium minor whose chart has it
    until: Version | None = None  # last one, when a later chart dropped it
    digest_key: str = "digest"  # the operator's chart appends "-generic" and reads genericDigest
    override_of: str | None = None  # the preflight check runs the agent's (and envoy's) image: same override

    @property
    def name(self) -> str:
        return self.upstream.rsplit("/", 1)[1]

    @property
    def override_key(self) -> str:
        return self.override_of or self.key

    @property
    def values_key(self) -> str:
        return ".".join(self.path)

    def in_chart(self, minor: Version) -> bool:
        return self.since <= minor and (self.until is None or minor <= self.until)


V1_13, V1_14, V1_15, V1_18, V1_19, V1_20 = (Version(v) for v in ("1.13", "1.14", "1.15", "1.18", "1.19", "1.20"))
_SPIRE = ("authentication", "mutual", "spire", "install")
CHART_IMAGES = (
    ChartImage("agent", ("image",), "quay.io/cilium/cilium", V1_13),
    ChartImage("preflight", ("preflight", "image"), "quay.io/cilium/cilium", V1_13, override_of="agent"),
    ChartImage("preflightEnvoy", ("preflight", "envoy", "image"), "quay.io/cilium/cilium-envoy", V1_18,
               override_of="envoy"),
    ChartImage("operator", ("operator", "image"), "quay.io/cilium/operator", V1_13, digest_key="genericDigest"),
    ChartImage("certgen", ("certgen", "image"), "quay.io/cilium/certgen", V1_13),
    ChartImage("hubbleRelay", ("hubble", "relay", "image"), "quay.io/cilium/hubble-relay", V1_13),
    ChartImage("hubbleUiBackend", ("hubble", "ui", "backend", "image"), "quay.io/cilium/hubble-ui-backend", V1_13),
    ChartImage("hubbleUi", ("hubble", "ui", "frontend", "image"), "quay.io/cilium/hubble-ui", V1_13),
    ChartImage("envoy", ("envoy", "image"), "quay.io/cilium/cilium-envoy", V1_14),
    ChartImage("nodeinit", ("nodeinit", "image"), "quay.io/cilium/startup-script", V1_13),
    ChartImage("clustermeshApiserver", ("clustermesh", "apiserver", "image"), "quay.io/cilium/clustermesh-apiserver",
               V1_13),
    # From 1.15 on, etcd and kvstoremesh run the clustermesh-apiserver image.
    ChartImage("clustermeshEtcd", ("clustermesh", "apiserver", "etcd", "image"), "quay.io/coreos/etcd", V1_13, V1_14),
    ChartImage("kvstoremesh", ("clustermesh", "apiserver", "kvstoremesh", "image"), "quay.io/cilium/kvstoremesh",
               V1_14, V1_14),
    # etcd.managed: true (the charts up to 1.15).
    ChartImage("etcdOperator", ("etcd", "image"), "quay.io/cilium/cilium-etcd-operator", V1_13, V1_15),
    # authentication.mutual.spire.{enabled, install.enabled}; the 1.14 chart has no such mappings (see below).
    ChartImage("spireInit", (*_SPIRE, "initImage"), "docker.io/library/busybox", V1_15),
    ChartImage("spireAgent", (*_SPIRE, "agent", "image"), "ghcr.io/spiffe/spire-agent", V1_15),
    ChartImage("spireServer", (*_SPIRE, "server", "image"), "ghcr.io/spiffe/spire-server", V1_15),
    # encryption.enabled with encryption.type: ztunnel.
    ChartImage("ztunnel", ("encryption", "ztunnel", "image"), "docker.io/istio/ztunnel", V1_19, V1_19),
    ChartImage("ztunnel", ("encryption", "ztunnel", "image"), "quay.io/cilium/ztunnel", V1_20),
)
# The 1.13 charts pin these by a digest inside `tag` (certgen `v0.1.11@sha256:...`) and have no digest key:
# a digest of our own, or pulling by tag, must replace the tag's digest rather than add one.
_TAG_CARRIES_DIGEST = {V1_13: frozenset({"certgen", "hubbleUiBackend", "hubbleUi", "etcdOperator", "clustermeshEtcd"})}


def minor_of(version: Version | str) -> Version:
    parsed = Version(str(version))
    return Version(f"{parsed.major}.{parsed.minor}")


def chart_images(version: Version | str) -> list[ChartImage]:
    """The images the chart of this Cilium version has."""
    minor = minor_of(version)
    return [image for image in CHART_IMAGES if image.in_chart(minor)]


def local_chart(cilium: CiliumArtifacts | None) -> Path | None:
    """The local chart (``.tgz`` or directory) the release installs, when there is one on this machine."""
    if cilium is None or not cilium.chart or cilium.chart.startswith("oci://"):
        return None
    local = resolve_path(cilium.chart)
    return local if local.exists() else None


@cache
def _chart_values(source: Path, size: int, mtime_ns: int) -> dict[str, Any]:
    if source.name == "values.yaml":
        text = source.read_text()
    else:
        with tarfile.open(source) as archive:
            member = next(
                (m for m in archive.getmembers() if m.name.count("/") == 1 and m.name.endswith("/values.yaml")), None
            )
            extracted = archive.extractfile(member) if member else None
            if extracted is None:
                return {}
            text = io.TextIOWrapper(extracted, encoding="utf-8").read()
    document = yaml.safe_load(text)
    return document if isinstance(document, dict) else {}


def chart_values(chart: Path) -> dict[str, Any]:
    """A local chart's own values.yaml (cached per file size and mtime; do not modify it)."""
    source = chart / "values.yaml" if chart.is_dir() else chart
    stat = source.stat()
    return _chart_values(source, stat.st_size, stat.st_mtime_ns)


def _at(values: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(values, dict) or part not in values:
            return None
        values = values[part]
    return values


def _tag_carries_digest(image: ChartImage, minor: Version, in_chart: Any) -> bool:
    if isinstance(in_chart, dict):  # the local chart says it itself
        return "@" in str(in_chart.get("tag") or "")
    return image.key in _TAG_CARRIES_DIGEST.get(minor, frozenset())


def image_values(cilium: CiliumArtifacts | None, version: Version) -> dict[str, Any]:
    """Helm values pointing every image of the chart (for this minor) at the internal registry."""
    if cilium is None or (cilium.image_registry is None and not cilium.images):
        return {}
    minor = minor_of(version)
    chart = local_chart(cilium)
    try:
        defaults = chart_values(chart) if chart else None
    except (OSError, tarfile.TarError, yaml.YAMLError):
        defaults = None  # the chart's own validation names the problem
    values: dict[str, Any] = {}
    for image in chart_images(minor):
        override = cilium.images.get(image.override_key)  # type: ignore[call-overload]
        repository = override.repository if override and override.repository else None
        if repository is None and cilium.image_registry:
            repository = f"{cilium.image_registry}/{image.name}"
        digest = override.digest if override else None
        in_chart = _at(defaults, image.path)
        entry: dict[str, Any] = {}
        if _tag_carries_digest(image, minor, in_chart):
            if digest:
                # A reference by digest alone (`<repository>@sha256:...`) is complete; the chart's
                # `override` takes it as it is, where a digest key would follow the tag's own digest.
                upstream = in_chart.get("repository") if isinstance(in_chart, dict) else None
                entry["override"] = f"{repository or upstream or image.upstream}@{digest}"
            else:
                if repository:
                    entry["repository"] = repository
                if not cilium.keep_chart_digests and isinstance(in_chart, dict):
                    entry["tag"] = str(in_chart["tag"]).partition("@")[0]
                # Without a local chart the bare tag is unknown: image_problems refuses that stack.
        else:
            if repository:
                entry["repository"] = repository
            if digest:
                entry[image.digest_key] = digest
                entry["useDigest"] = True
            elif not cilium.keep_chart_digests:
                entry["useDigest"] = False
        if not entry:
            continue
        node = values
        for part in image.path[:-1]:
            node = node.setdefault(part, {})
        node[image.path[-1]] = entry
    return values


def _mirrored(airgap: Airgap, host: str) -> bool:
    mirrors = airgap.registries.mirrors if airgap.registries else {}
    return host in mirrors or "*" in mirrors


def _span(key: str) -> str:
    minors = [image for image in CHART_IMAGES if image.override_key == key]
    since = min(image.since for image in minors)
    untils = [image.until for image in minors]
    until = None if None in untils else max(u for u in untils if u is not None)
    if until is None:
        return f"{since} and later"
    return str(since) if until == since else f"{since} to {until}"


def _unmapped(airgap: Airgap, registry: str, minor: Version, user: dict[str, Any]) -> list[str]:
    """Images that ``cilium.values`` switch on and imageRegistry cannot redirect, each with its fix.

    The program never sets these values itself, so the user's values (over the charts' defaults: all
    off, spire's install.enabled on) say whether they are on. Truthiness is Helm's: false, 0, "",
    null and empty collections are off.
    """
    found = []
    install = _at(user, (*_SPIRE, "enabled"))
    spire = bool(_at(user, ("authentication", "mutual", "spire", "enabled"))) and (install is None or bool(install))
    if minor == V1_14 and spire:
        for part in ("agent", "server"):
            if not isinstance(_at(user, (*_SPIRE, part, "image")), str):
                found.append(
                    f"cilium.values.{'.'.join((*_SPIRE, part, 'image'))}: the Cilium 1.14 chart gives SPIRE's {part} "
                    f"image as one string (ghcr.io/spiffe/spire-{part}:<tag>@<digest>), which "
                    "airgap.cilium.imageRegistry cannot redirect; set it to your registry's copy, e.g. "
                    f"'{registry}/spire-{part}:<tag>@<digest>'"
                )
        if not _mirrored(airgap, "docker.io"):
            found.append(
                "cilium.values.authentication.mutual.spire.enabled: the Cilium 1.14 chart's SPIRE init containers "
                "run docker.io/library/busybox, written into its templates with no values key; mirror docker.io "
                "in airgap.registries.mirrors, or use Cilium 1.15 or later (its chart has "
                "authentication.mutual.spire.install.initImage, which imageRegistry redirects)"
            )
    if V1_13 <= minor <= V1_15 and bool(_at(user, ("etcd", "managed"))):
        missing = [host for host in ("quay.io", "docker.io") if not _mirrored(airgap, host)]
        if missing:
            found.append(
                "cilium.values.etcd.managed: the cilium-etcd-operator it deploys (etcd.image, redirected) starts "
                "the etcd-operator, etcd and busybox images itself (quay.io/coreos/etcd-operator, "
                "quay.io/coreos/etcd, docker.io/library/busybox), outside the chart's values; mirror "
                f"{' and '.join(missing)} in airgap.registries.mirrors, or use an external etcd (etcd.endpoints) "
                "instead of etcd.managed"
            )
    if minor >= V1_19 and bool(_at(user, ("standaloneDnsProxy", "enabled"))):
        image = _at(user, ("standaloneDnsProxy", "image"))
        if not (isinstance(image, dict) and (image.get("override") or image.get("repository"))):
            found.append(
                "cilium.values.standaloneDnsProxy.image: the chart has no image for the standalone DNS proxy "
                "(its repository is empty), so airgap.cilium.imageRegistry has none to redirect; set "
                "standaloneDnsProxy.image.repository, tag and digest to your registry's copy"
            )
    return found


def image_problems(airgap: Airgap, cilium_version: str, user_values: dict[str, Any]) -> list[str]:
    """Problems of ``airgap.cilium``'s images against the chart of ``cilium_version`` and ``cilium.values``."""
    cilium = airgap.cilium
    if cilium is None:
        return []
    minor = minor_of(cilium_version)
    images = chart_images(minor)
    found = [
        f"airgap.cilium.images.{key}: the Cilium {minor} chart has no such image (the charts of Cilium "
        f"{_span(key)} have it); remove it"
        for key in cilium.images
        if key not in {image.override_key for image in images}
    ]
    chart_is_local = bool(cilium.chart) and not str(cilium.chart).startswith("oci://")
    if (cilium.image_registry or cilium.images) and not cilium.keep_chart_digests and not chart_is_local:
        pinned = [
            image.values_key
            for image in images
            if image.key in _TAG_CARRIES_DIGEST.get(minor, frozenset())
            and not ((override := cilium.images.get(image.override_key)) and override.digest)  # type: ignore[call-overload]
        ]
        if pinned:
            found.append(
                f"airgap.cilium.keepChartDigests: false cannot pull {', '.join(pinned)} by tag: the Cilium {minor} "
                "chart pins them by a digest inside `tag`, and the bare tag is read from the chart itself, which "
                "is not local here; give airgap.cilium.chart as the local chart (cilium-<version>.tgz), pin each "
                "one's digest in airgap.cilium.images, or keep the chart's digests"
            )
    if cilium.image_registry:
        found += _unmapped(airgap, cilium.image_registry, minor, user_values)
    return found


def default_endpoint_problems(airgap: Airgap, k3s_version: str) -> list[str]:
    """``registries.disableDefaultEndpoint`` needs a K3s release that has the flag."""
    if not (airgap.registries and airgap.registries.disable_default_endpoint):
        return []
    minor, patch = (int(part) for part in k3s_version.removeprefix("v").split("+")[0].split(".")[1:3])
    since = DEFAULT_ENDPOINT_FLAG_SINCE.get(minor)
    if minor > max(DEFAULT_ENDPOINT_FLAG_SINCE) or (since is not None and patch >= since):
        return []
    releases = ", ".join(f"v1.{m}.{p}+k3s1" for m, p in sorted(DEFAULT_ENDPOINT_FLAG_SINCE.items()))
    return [
        f"airgap.registries.disableDefaultEndpoint: K3s {k3s_version} (k3s.version) has no "
        f"disable-default-registry-endpoint; it came with {releases} and is in every later release: raise "
        "k3s.version or leave disableDefaultEndpoint false"
    ]


# --- the plan -----------------------------------------------------------------------------------


def plan(airgap: Airgap | None, cilium_version: str) -> dict[str, Any] | None:
    """The airgap part of the offline plan (no secrets: credentials are never read); None when unused."""
    if airgap is None or not (airgap.k3s or airgap.registries or airgap.cilium):
        return None
    resolved, chart_source = _resolve(airgap, cilium_version)
    out: dict[str, Any] = {
        "artifacts": [
            {"name": a.name, "role": a.role, "from": a.source, "source": a.location, "sha256": a.sha256,
             "onHost": a.dest}
            for a in resolved
        ],
    }
    if resolved:
        out["install"] = "INSTALL_K3S_SKIP_DOWNLOAD=true with the verified binary and install script"
    if airgap.registries:
        out["registries"] = yaml.safe_load(registries_yaml(airgap.registries, {}))
        # K3s' disable-default-registry-endpoint (in every node's K3s config): no pull from the public registry.
        out["defaultEndpointFallback"] = not airgap.registries.disable_default_endpoint
    if chart_source:
        out["chart"] = {"kind": chart_source.kind, "chart": chart_source.chart, "repository": chart_source.repository,
                        "sha256": chart_source.sha256}
    return out


def plan_text(section: dict[str, Any]) -> list[str]:
    lines = ["air-gapped sources:"]
    for row in section["artifacts"]:
        lines.append(f"  {row['role']:<9} {row['name']} from {row['from']} {row['source']}")
        lines.append(f"            sha256 {row['sha256']} -> {row['onHost']}")
    if section.get("install"):
        lines.append(f"  install: {section['install']}")
    if section.get("registries"):
        for host, mirror in sorted(section["registries"].get("mirrors", {}).items()):
            lines.append(f"  registry mirror {host}: {', '.join(mirror['endpoint'])}")
        lines.append(
            "  mirrored registries fall back to the public registry when their endpoints fail"
            if section.get("defaultEndpointFallback", True)
            else "  mirrored registries never fall back to the public registry (disable-default-registry-endpoint)"
        )
    if section.get("chart"):
        chart_row = section["chart"]
        where = chart_row["repository"] or chart_row["chart"]
        lines.append(f"  cilium chart ({chart_row['kind']}): {where}")
    return lines


def checked_credentials(text: str, airgap: Airgap | None) -> bool:
    """Whether the secret ``registryCredentials`` holds any; raises ``pulumi.RunError`` naming each problem."""
    import pulumi  # only the program needs it; the offline plan never reads a secret

    try:
        credentials = parse_credentials(text)
    except AirgapError as error:
        raise pulumi.RunError("invalid k3s-cilium secret:\n" + "\n".join(f"  - {p}" for p in error.problems)) from None
    if credentials and (airgap is None or airgap.registries is None):
        raise pulumi.RunError(
            "k3s-cilium:registryCredentials is set but airgap.registries is not: the credentials would not be used"
        )
    return bool(credentials)
