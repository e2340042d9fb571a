"""The air-gap scripts run for real against a temporary root with stand-in artifacts.

airgap-stage.sh verifies every digest before placing anything, refuses a
corrupted file naming it with both digests, and changes nothing on a second
run; k3s-install.sh then installs from the staged binary and install script
with INSTALL_K3S_SKIP_DOWNLOAD (no download: curl fails in this sandbox), and
re-runs the installer exactly when the staged binary changed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import airgap as airgap_component
from components import scripts
from stacks import airgap
from tests.components.test_k3s_scripts import PUT_BACK, TOKEN, Sandbox, host_state, make_config
from tests.shell import lint

SCRIPTS = ("airgap-stage", "airgap-unstage", "airgap-upload-dir", "airgap-upload-dir-remove", "airgap-registries",
           "airgap-registries-remove")

STAND_IN_BINARY = '#!/bin/sh\nexec "$SANDBOX/fake-k3s" {version} "$@"\n'
# The K3s install script with INSTALL_K3S_SKIP_DOWNLOAD: writes the unit, starts K3s, never fetches the binary.
STAND_IN_INSTALLER = """#!/bin/sh
set -e
echo "installer skip=$INSTALL_K3S_SKIP_DOWNLOAD version=$INSTALL_K3S_VERSION exec=$INSTALL_K3S_EXEC" >>"$SANDBOX/calls"
# Failing before it wrote its uninstall script (the real one writes it before the unit).
if [ -f "$SANDBOX/installer-fails" ]; then echo "cannot create /usr/local/bin/k3s-killall.sh" >&2; exit 1; fi
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
            **airgap_component.stage_params(make_config(), resolved),
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
    lint(scripts.render("airgap-upload-dir-remove", airgap_component.upload_dir_remove_params()), tmp_path, "rm.sh")
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


def test_a_digest_mismatch_creates_nothing(host: Host) -> None:
    before = host_state(host.sandbox)
    result = host.stage({"k3s-airgap-images-amd64.tar.zst": sha(b"other images")})
    assert result.returncode == 1
    assert "sha256 mismatch for k3s-airgap-images-amd64.tar.zst" in result.stderr
    # Not even the directories: the K3s images directory would be /var/lib/rancher on a new host.
    assert not host.airgap.exists() and not host.images.exists()
    assert host_state(host.sandbox) == before


def test_a_refused_mirror_download_on_a_new_host_leaves_not_even_its_scratch_directory(host: Host) -> None:
    # Only mirror URLs: nothing was uploaded, so not even /var/lib/k3s-cilium is there yet.
    (host.sandbox.root / "offline").unlink()
    airgap_dir = host.sandbox.root / "var-lib-k3s-cilium" / "airgap"
    resolved = [airgap.Resolved("installer", "install.sh", sha(b"the real one"), "url",
                                "https://mirror.internal/install.sh", str(airgap_dir / "install.sh"), "0755")]
    params = {**airgap_component.stage_params(make_config(), resolved), "AIRGAP_DIR": str(airgap_dir),
              "IMAGES_DIR": str(host.images), "IMAGES_MANIFEST": str(airgap_dir / "images.list")}
    before = host_state(host.sandbox)
    result = host.sandbox.run(scripts.render("airgap-stage", params))
    assert result.returncode == 1
    assert host_state(host.sandbox) == before
    assert "sha256 mismatch for install.sh (https://mirror.internal/install.sh)" in result.stderr


PINNED = "v1.33.3+k3s1"  # make_config()'s k3s.version


@pytest.mark.parametrize(("binary", "is_what"), [
    (STAND_IN_BINARY.format(version="v1.32.0+k3s1").encode(), "is v1.32.0+k3s1"),
    (b"#!/bin/sh\necho 'Usage: busybox [function [arguments]...]'\n",
     "is not a K3s release: Usage: busybox [function [arguments]...]"),
    (b"\x7fELF\x02\x01\x01\x00 not for this machine", "is not a K3s release: no version output"),
], ids=["other-release", "other-program", "not-executable-here"])
def test_a_binary_that_is_not_the_pinned_release_is_refused_before_anything_is_placed(
    host: Host, binary: bytes, is_what: str
) -> None:
    host.put("k3s", binary)
    before = host_state(host.sandbox)
    result = host.stage()
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"airgap-stage: the staged k3s binary {is_what}, but the stack pins k3s.version {PINNED}; nothing was placed"]
    assert not host.airgap.exists() and not host.images.exists()
    assert host_state(host.sandbox) == before


def test_an_unchanged_binary_is_refused_when_k3s_version_moves_on(host: Host) -> None:
    assert host.stage().returncode == 0
    before = host_state(host.sandbox)
    script = host.stage_script(host.artifacts()).replace(f"K3S_VERSION={PINNED}", "K3S_VERSION=v1.34.1+k3s1")
    result = host.sandbox.run(script)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"airgap-stage: the staged k3s binary is {PINNED}, but the stack pins k3s.version v1.34.1+k3s1; "
        "nothing was placed"]
    assert host_state(host.sandbox) == before


def fail_to_place(host: Host, name: str) -> None:
    """A stub mv that cannot put ``name`` in place (a full disk, an I/O error)."""
    real = shutil.which("mv")
    stub = host.sandbox.bin / "mv"
    stub.write_text(f'#!/bin/sh\ncase "$*" in *"{name}.airgap-new "*"/{name}") '
                    f'echo "mv: cannot move: No space left on device" >&2; exit 1 ;; esac\nexec {real} "$@"\n')
    stub.chmod(0o755)


def test_a_failure_while_placing_on_a_new_host_removes_what_was_placed(host: Host) -> None:
    fail_to_place(host, "k3s-airgap-images-amd64.tar.zst")
    before = host_state(host.sandbox)
    result = host.stage()
    assert result.returncode == 1
    assert f"placed {host.airgap / 'k3s'}" in result.stderr  # placed before the failure
    assert result.stderr.splitlines()[-1] == (
        "airgap-stage: put back what this run had placed: the artifacts are as they were before it")
    assert host_state(host.sandbox) == before


def test_a_failure_while_placing_new_artifacts_puts_the_previous_ones_back(host: Host) -> None:
    assert host.stage().returncode == 0
    before = host_state(host.sandbox)
    host.put("k3s", STAND_IN_BINARY.format(version=PINNED).encode() + b"# rebuilt\n")
    host.put("k3s-airgap-images-amd64.tar.zst", b"newer images")
    fail_to_place(host, "k3s-airgap-images-amd64.tar.zst")
    uploads = {name: host_state(host.sandbox)[f"upload/{name}"] for name in ("k3s", "k3s-airgap-images-amd64.tar.zst")}
    result = host.stage()
    assert result.returncode == 1
    assert f"placed {host.airgap / 'k3s'}" in result.stderr
    assert host_state(host.sandbox) == {**before, **{f"upload/{n}": state for n, state in uploads.items()}}


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


def test_a_failed_first_install_from_staged_artifacts_removes_the_binary_it_placed(host: Host) -> None:
    assert host.stage().returncode == 0
    (host.sandbox.root / "installer-fails").touch()
    staged = host_state(host.sandbox)
    result = host.install()
    assert result.returncode == 1
    # No uninstall script to run: the binary k3s-install.sh put in place and the artifacts' marker are
    # gone all the same, and the staged artifacts (the stage resource's) are as they were.
    assert host_state(host.sandbox) == staged
    assert result.stderr.splitlines()[-2:] == ["cannot create /usr/local/bin/k3s-killall.sh", PUT_BACK]


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


def registries_params(sandbox: Sandbox, node: int, path: Path) -> dict[str, Any]:
    cfg = make_config()
    return {**airgap_component.registries_params(cfg.nodes[node]), "REGISTRIES_PATH": str(path),
            "K3S_BIN": str(sandbox.k3s_bin), "API_READY_TIMEOUT": 0}


def registries_run(sandbox: Sandbox, node: int, path: Path, document: str) -> subprocess.CompletedProcess[str]:
    return sandbox.run(scripts.render("airgap-registries", registries_params(sandbox, node, path)), stdin=document)


def without_service(state: dict[str, Any]) -> dict[str, Any]:
    return {path: value for path, value in state.items() if path != "active"}


def running_server(sandbox: Sandbox) -> None:
    """K3s runs on the sandbox host, and its API server will not come back after a restart."""
    sandbox.k3s_bin.write_text('#!/bin/sh\nexec "$SANDBOX/fake-k3s" v1.33.3+k3s1 "$@"\n')
    sandbox.k3s_bin.chmod(0o755)
    (sandbox.root / "active").touch()
    (sandbox.root / "api-down").touch()


def test_registries_that_k3s_does_not_come_back_with_are_removed_again(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    running_server(sandbox)
    before = host_state(sandbox)
    path = sandbox.etc / "registries.yaml"
    result = registries_run(sandbox, 0, path, "mirrors: {}\n")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-2:] == [
        "airgap-registries: the API server did not become ready within 0s",
        "airgap-registries: registries.yaml is removed again (there was none before); k3s is restarting with it"]
    assert sandbox.calls()[-1] == "systemctl restart --no-block k3s"
    # The file and /etc/rancher/k3s it created are gone (K3s restarted: its stand-in was touched).
    assert without_service(host_state(sandbox)) == without_service(before)


def test_a_failed_registries_change_puts_the_previous_file_back(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    path = sandbox.etc / "registries.yaml"
    assert registries_run(sandbox, 0, path, "mirrors: {}\n").stdout == "registries=written\n"
    running_server(sandbox)
    before = host_state(sandbox)
    result = registries_run(sandbox, 0, path, "mirrors: {docker.io: {endpoint: [https://r.internal]}}\n")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "airgap-registries: the previous registries.yaml is back; k3s is restarting with it")
    assert without_service(host_state(sandbox)) == without_service(before)


def test_unstage_and_upload_dir_removal_leave_no_directory_of_ours(host: Host) -> None:
    root = host.sandbox.root / "var-lib-k3s-cilium"
    upload = root / "upload"
    upload.mkdir(parents=True)
    (upload / "k3s").write_bytes(b"uploaded")
    airgap_dir = root / "airgap"
    airgap_dir.mkdir()
    (airgap_dir / "images.list").write_text("k3s-airgap-images-amd64.tar.zst\n")
    host.images.mkdir()
    (host.images / "k3s-airgap-images-amd64.tar.zst").write_bytes(b"images")
    unstage = scripts.render("airgap-unstage", {
        "AIRGAP_DIR": str(airgap_dir), "IMAGES_MANIFEST": str(airgap_dir / "images.list"),
        "IMAGES_DIR": str(host.images), "UPLOAD_DIR": str(upload)})
    remove = scripts.render("airgap-upload-dir-remove", {"UPLOAD_DIR": str(upload)})
    tuning = root / "host-tuning"
    tuning.mkdir()  # host tuning's saved state: not ours to remove here
    result = host.sandbox.run(unstage)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in root.iterdir()) == ["host-tuning"]
    assert not list(host.images.iterdir())
    tuning.rmdir()
    result = host.sandbox.run(unstage)
    assert result.returncode == 0, result.stderr
    assert not root.exists()
    # The upload directory's own delete, after a failed stage (which left nothing but the uploads).
    upload.mkdir(parents=True)
    (upload / "k3s").write_bytes(b"uploaded")
    first = host.sandbox.run(remove)
    assert (first.returncode, first.stdout) == (0, "upload-dir=removed parent=removed\n"), first.stderr
    assert not root.exists()
    again = host.sandbox.run(remove)
    assert (again.returncode, again.stdout) == (0, "upload-dir=removed parent=absent\n"), again.stderr
    upload.mkdir(parents=True)
    (root / "airgap").mkdir()
    kept = host.sandbox.run(remove)
    assert (kept.returncode, kept.stdout) == (0, "upload-dir=removed parent=kept\n"), kept.stderr
    assert sorted(p.name for p in root.iterdir()) == ["airgap"]


def test_a_failed_upload_dir_create_removes_the_directories_it_made(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    upload = tmp_path / "var-lib-k3s-cilium" / "upload"
    script = scripts.render("airgap-upload-dir", {"UPLOAD_DIR": str(upload), "OWNER": "root"})
    # install -d makes the directories, then cannot give them to the user (e.g. root squashed on NFS).
    stub = sandbox.bin / "install"
    stub.write_text('#!/bin/sh\nfor last; do :; done\nmkdir -p "$last"\n'
                    'echo "install: cannot change owner of \'$last\': Operation not permitted" >&2\nexit 1\n')
    stub.chmod(0o755)
    before = host_state(sandbox)
    result = sandbox.run(script)
    assert result.returncode == 1
    assert "Operation not permitted" in result.stderr
    assert host_state(sandbox) == before
    stub.unlink()
    ok = sandbox.run(script)
    assert ok.returncode == 0, ok.stderr
    assert upload.is_dir() and upload.stat().st_mode & 0o777 == 0o700


def test_registries_removal_leaves_no_empty_directory_behind(tmp_path: Path) -> None:
    # A host whose K3s install never succeeded: no uninstall removed /etc/rancher/k3s.
    sandbox = Sandbox(tmp_path)
    before = host_state(sandbox)
    path = sandbox.etc / "registries.yaml"
    assert registries_run(sandbox, 2, path, "mirrors: {}\n").stdout == "registries=written\n"
    remove = scripts.render("airgap-registries-remove", registries_params(sandbox, 2, path))
    for expected in ("registries=removed\n", "registries=absent\n"):
        result = sandbox.run(remove)
        assert (result.returncode, result.stdout) == (0, expected), result.stderr
        assert host_state(sandbox) == before
    # What K3s keeps there (its node password) stays, and so do the directories holding it.
    assert registries_run(sandbox, 2, path, "mirrors: {}\n").returncode == 0
    (sandbox.etc.parent / "node").mkdir()
    (sandbox.etc.parent / "node" / "password").write_text("node password")
    assert sandbox.run(remove).returncode == 0
    assert sorted(p.name for p in sandbox.etc.parent.iterdir()) == ["node"]


def test_removing_registries_yaml_restarts_a_running_k3s_to_forget_the_mirrors(tmp_path: Path) -> None:
    """containerd reads the mirrors and credentials only when K3s starts."""
    sandbox = Sandbox(tmp_path)
    path = sandbox.etc / "registries.yaml"
    assert registries_run(sandbox, 2, path, "mirrors: {}\n").returncode == 0
    (sandbox.root / "active").touch()
    result = sandbox.run(scripts.render("airgap-registries-remove", registries_params(sandbox, 2, path)))
    assert (result.returncode, result.stdout) == (0, "registries=removed restarted=k3s-agent\n"), result.stderr
    assert "systemctl restart k3s-agent" in sandbox.calls()
    assert not path.exists()
