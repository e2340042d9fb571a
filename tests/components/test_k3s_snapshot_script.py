"""k3s-snapshot.sh run for real against a stub `k3s` (its `--version` and `etcd-snapshot save`)."""

from __future__ import annotations

from pathlib import Path

from components.scripts import render
from tests.shell import executable, lint, run_script

# `--version` prints FAKE_RUNNING as K3s does; `etcd-snapshot save --name N` writes
# <data>/server/db/snapshots/N-<node>-<timestamp> unless FAKE_SAVE_FAILS, and says so as K3s does.
FAKE_K3S = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
case "$1" in
  --version) printf 'k3s version %s (7d2b2b5c)\ngo version go1.24.4\n' "$FAKE_RUNNING" ;;
  etcd-snapshot)
    [[ -z ${FAKE_SAVE_FAILS:-} ]] || { echo "etcdserver: request timed out" >&2; exit 1; }
    name=$4
    mkdir -p "$FAKE_DATA/server/db/snapshots"
    : >"$FAKE_DATA/server/db/snapshots/$name-server-1-1764730000"
    echo "Snapshot $name-server-1-1764730000 saved."
    ;;
  *) echo "fake k3s: unexpected $*" >&2; exit 9 ;;
esac
"""
TARGET = "v1.34.1+k3s1"


def snapshot(tmp_path: Path, etcd: bool = True, **env: str):
    data = tmp_path / "data"
    if etcd:
        (data / "server" / "db" / "etcd").mkdir(parents=True)
    (tmp_path / "bin").mkdir(exist_ok=True)
    k3s = executable(tmp_path / "bin" / "k3s", FAKE_K3S)
    environment = {"FAKE_DATA": str(data), "FAKE_LOG": str(tmp_path / "log"), "FAKE_RUNNING": "v1.33.3+k3s1", **env}
    params = {"TARGET_VERSION": TARGET, "K3S_DATA_DIR": str(data), "K3S": str(k3s)}
    return run_script(tmp_path, "k3s-snapshot", params, environment)


def test_the_script_passes_lint(tmp_path):
    lint(render("k3s-snapshot", {}), tmp_path, "k3s-snapshot.sh")


def test_a_version_change_saves_a_snapshot_named_after_both_releases(tmp_path):
    done = snapshot(tmp_path)
    assert done.returncode == 0, done.stderr
    name = "k3s-cilium-v1.33.3-k3s1-to-v1.34.1-k3s1"
    path = tmp_path / "data" / "server" / "db" / "snapshots" / f"{name}-server-1-1764730000"
    assert done.stdout == f"snapshot={path} name={name} from=v1.33.3+k3s1 to={TARGET}\n"
    assert f"etcd-snapshot save --name {name}" in (tmp_path / "log").read_text()


def test_nothing_is_saved_when_the_release_does_not_change_or_nothing_runs(tmp_path):
    unchanged = snapshot(tmp_path, FAKE_RUNNING=TARGET)
    assert unchanged.stdout == "snapshot=none reason=unchanged\n"
    assert "etcd-snapshot" not in (tmp_path / "log").read_text()
    fresh = run_script(tmp_path, "k3s-snapshot", {"TARGET_VERSION": TARGET, "K3S_DATA_DIR": "/nonexistent"},
                       {}, path="/usr/bin:/bin")
    assert fresh.returncode == 0 and fresh.stdout == "snapshot=none reason=first-install\n"


def test_a_single_server_on_sqlite_says_it_has_no_snapshot(tmp_path):
    done = snapshot(tmp_path, etcd=False)
    assert done.returncode == 0
    assert done.stdout == f"snapshot=none reason=sqlite from=v1.33.3+k3s1 to={TARGET}\n"


def test_a_failed_save_stops_before_any_node_is_upgraded(tmp_path):
    done = snapshot(tmp_path, FAKE_SAVE_FAILS="1")
    assert done.returncode == 1
    name = "k3s-cilium-v1.33.3-k3s1-to-v1.34.1-k3s1"
    assert f"k3s etcd-snapshot save --name {name} failed; no node was upgraded" in done.stderr
    assert "etcdserver: request timed out" in done.stderr
