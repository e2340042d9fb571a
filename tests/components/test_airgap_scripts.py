"""The air-gap scripts run for real against a temporary root with stand-in artifacts.

airgap-stage.sh verifies every digest before placing anything, refuses a
corrupted file naming it with both digests, and changes nothing on a second
run; k3s-install.sh then installs from the staged binary and install script
with INSTALL_K3S_SKIP_DOWNLOAD (no download: curl fails in this sandbox), and
re-runs the installer exactly when the staged binary changed.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from components import airgap as airgap_component
from components import scripts
from stacks import airgap
from tests.components.test_k3s_scripts import TOKEN, Sandbox, make_config
from tests.shell import lint

SCRIPTS = ("airgap-stage", "airgap-unstage", "airgap-upload-dir", "airgap-registries")

STAND_IN_BINARY = '#!/bin/sh\nexec "$SANDBOX/fake-k3s" {version} "$@"\n'
# The K3s install script with INSTALL_K3S_SKIP_DOWNLOAD: writes the unit, starts K3s, never fetches the binary.
STAND_IN_INSTALLER = """#!/bin/sh
set -e
echo "installer skip=$INSTALL_K3S_SKIP_DOWNLOAD version=$INSTALL_K3S_VERSION exec=$INSTALL_K3S_EXEC" >>"$SANDBOX/calls"
unit=k3s; [ "$INSTALL_K3S_EXEC" = agent ] && unit=k3s-agent
mkdir -p "$FAKE_SYSTEMD_DIR"
echo "[Service]" >"$FAKE_SYSTEMD_DIR/$unit.service"
touch "$SANDBOX/active"
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Host:
    """A node's filesystem under a temporary root: uploads, staging and the images directory."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.upload = sandbox.root / "upload"
        self.upload.mkdir()
        self.airgap = sandbox.root / "airgap"
        self.images = sandbox.root / "images"
        self.files: dict[str, bytes] = {}

    def put(self, name: str, data: bytes) -> None:
        (self.upload / name).write_bytes(data)
        self.files[name] = data

    def artifacts(self, expected: dict[str, str] | None = None) -> list[airgap.Resolved]:
        out = []
        for name, data in self.files.items():
            role = "binary" if name == "k3s" else "installer" if name == "install.sh" else "image"
            dest = self.images / name if role == "image" else self.airgap / name
            out.append(airgap.Resolved(role=role, name=name, sha256=(expected or {}).get(name, sha(data)),
                                       source="file", location=str(self.upload / name), dest=str(dest),
                                       mode="0644" if role == "image" else "0755"))
        return out

    def stage_script(self, resolved: list[airgap.Resolved]) -> str:
        params = {
            **airgap_component.stage_params(resolved),
            "AIRGAP_DIR": str(self.airgap),
            "IMAGES_DIR": str(self.images),
            "IMAGES_MANIFEST": str(self.airgap / "images.list"),
        }
        # The upload paths are under UPLOAD_DIR on a real host; here under the sandbox.
        params["ARTIFACTS"] = str(params["ARTIFACTS"]).replace(airgap.UPLOAD_DIR, str(self.upload))
        return scripts.render("airgap-stage", params)

    def stage(self, expected: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.sandbox.run(self.stage_script(self.artifacts(expected)))

    def install(self, node: str = "server-1") -> subprocess.CompletedProcess[str]:
        resolved = self.artifacts()
        script = self.sandbox.install_script(
            make_config(), node,
            AIRGAP_BINARY=str(self.airgap / "k3s"),
            AIRGAP_INSTALLER=str(self.airgap / "install.sh"),
            AIRGAP_DIGEST=airgap.artifacts_digest(resolved),
            AIRGAP_MARKER=str(self.airgap / "installed.sha256"),
        )
        return self.sandbox.run(script, stdin=TOKEN)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    sandbox = Sandbox(tmp_path)
    (tmp_path / "offline").touch()  # the stub curl fails: nothing may be downloaded
    found = Host(sandbox)
    found.put("k3s", STAND_IN_BINARY.format(version="v1.33.3+k3s1").encode())
    found.put("install.sh", STAND_IN_INSTALLER.encode())
    found.put("k3s-airgap-images-amd64.tar.zst", b"stand-in image archive")
    return found


@pytest.mark.parametrize("name", SCRIPTS)
def test_template_passes_lint(name: str, tmp_path: Path) -> None:
    text = scripts.template(name)
    assert "set -euo pipefail\n# @params\n" in text
    lint(text, tmp_path, f"{name}.sh")


def test_rendered_scripts_pass_lint(host: Host, tmp_path: Path) -> None:
    lint(host.stage_script(host.artifacts()), tmp_path, "stage.sh")
    lint(scripts.render("airgap-unstage", airgap_component.unstage_params()), tmp_path, "unstage.sh")
    cfg = make_config()
    lint(scripts.render("airgap-registries", airgap_component.registries_params(cfg.nodes[0])), tmp_path, "reg.sh")


def test_stage_places_verified_files_and_a_second_run_changes_nothing(host: Host) -> None:
    first = host.stage()
    assert first.returncode == 0, first.stderr
    assert first.stdout == "airgap: placed=3 unchanged=0 removed=0\n"
    assert (host.airgap / "k3s").read_bytes() == host.files["k3s"]
    assert (host.airgap / "k3s").stat().st_mode & 0o777 == 0o755
    assert (host.images / "k3s-airgap-images-amd64.tar.zst").read_bytes() == b"stand-in image archive"
    assert (host.airgap / "images.list").read_text() == "k3s-airgap-images-amd64.tar.zst\n"
    before = {p: p.stat().st_mtime_ns for p in host.sandbox.root.rglob("*") if p.is_file() and "calls" not in p.name}

    again = host.stage()
    assert again.returncode == 0, again.stderr
    assert again.stdout == "airgap: placed=0 unchanged=3 removed=0\n"
    after = {p: p.stat().st_mtime_ns for p in host.sandbox.root.rglob("*") if p.is_file() and "calls" not in p.name}
    assert after == before


def test_a_corrupted_upload_stops_the_node_naming_file_and_digests(host: Host) -> None:
    expected = sha(host.files["k3s"])
    (host.upload / "k3s").write_bytes(b"corrupted in transit")
    result = host.stage({"k3s": expected})
    assert result.returncode == 1
    found = sha(b"corrupted in transit")
    assert f"sha256 mismatch for k3s ({host.upload / 'k3s'}): expected {expected}, found {found}" in result.stderr
    # Verified before anything is placed: the good artifacts were not placed either.
    assert not (host.airgap / "k3s").exists() and not (host.airgap / "install.sh").exists()
    assert not list(host.images.glob("*"))


def test_a_mirror_download_is_verified_too(host: Host) -> None:
    (host.sandbox.root / "offline").unlink()
    # The stub curl "downloads" its install-script stand-in, whatever the URL: not the expected file.
    resolved = [airgap.Resolved("installer", "install.sh", sha(b"the real one"), "url",
                                "https://mirror.internal/install.sh", str(host.airgap / "install.sh"), "0755")]
    result = host.sandbox.run(host.stage_script(resolved))
    assert result.returncode == 1
    assert "sha256 mismatch for install.sh (https://mirror.internal/install.sh): expected " in result.stderr
    assert not (host.airgap / "install.sh").exists()


def test_a_dropped_image_archive_is_removed(host: Host) -> None:
    assert host.stage().returncode == 0
    del host.files["k3s-airgap-images-amd64.tar.zst"]
    host.put("cilium-images.tar", b"other images")
    result = host.stage()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "airgap: placed=1 unchanged=2 removed=1\n"
    assert sorted(p.name for p in host.images.iterdir()) == ["cilium-images.tar"]


def test_install_from_staged_artifacts_without_download_then_nothing_changes(host: Host) -> None:
    assert host.stage().returncode == 0
    first = host.install()
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"role=server k3s=v1.33.3+k3s1 action=installed {host.sandbox.ca}\n"
    assert "installer skip=true version=v1.33.3+k3s1 exec=server" in host.sandbox.calls()
    assert host.sandbox.k3s_bin.read_bytes() == host.files["k3s"]

    assert host.stage().returncode == 0
    again = host.install()
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"role=server k3s=v1.33.3+k3s1 action=unchanged {host.sandbox.ca}\n"
    assert not any(c.startswith(("installer", "systemctl restart")) for c in host.sandbox.calls())


def test_a_new_binary_reinstalls_and_new_images_restart(host: Host) -> None:
    assert host.stage().returncode == 0 and host.install().returncode == 0
    host.put("k3s", STAND_IN_BINARY.format(version="v1.33.3+k3s1").encode() + b"# rebuilt\n")
    assert host.stage().stdout == "airgap: placed=1 unchanged=2 removed=0\n"
    result = host.install()
    assert result.stdout == f"role=server k3s=v1.33.3+k3s1 action=installed {host.sandbox.ca}\n", result.stderr
    assert host.sandbox.k3s_bin.read_bytes() == host.files["k3s"]

    host.put("k3s-airgap-images-amd64.tar.zst", b"newer images")
    assert host.stage().returncode == 0
    result = host.install()
    assert result.stdout == f"role=server k3s=v1.33.3+k3s1 action=restarted {host.sandbox.ca}\n", result.stderr


def test_registries_from_stdin_written_once_and_restart_only_a_running_k3s(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    cfg = make_config()
    path = tmp_path / "etc" / "registries.yaml"
    params = {**airgap_component.registries_params(cfg.nodes[2]), "REGISTRIES_PATH": str(path)}
    script = scripts.render("airgap-registries", params)
    document = (
        "mirrors:\n  docker.io:\n    endpoint: [https://r.internal]\n"
        "configs: {r.internal: {auth: {password: s3cret}}}\n"
    )
    assert "s3cret" not in script
    first = sandbox.run(script, stdin=document)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "registries=written\n"
    assert path.read_text() == document and path.stat().st_mode & 0o777 == 0o600
    assert sandbox.run(script, stdin=document).stdout == "registries=unchanged\n"
    (tmp_path / "active").touch()
    changed = sandbox.run(script, stdin=document.replace("s3cret", "rotated"))
    assert changed.stdout == "registries=written restarted=k3s-agent\n", changed.stderr
    assert "systemctl restart k3s-agent" in sandbox.calls()
