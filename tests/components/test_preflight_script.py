"""preflight.sh on fake hosts: stub uname/ip/systemctl/firewall-cmd/getenforce/rpm, a fake sysfs and os-release.

Each test renders the script exactly as the K3sCluster component does for a
stack and node, points its host paths at a sandbox, and runs it with a PATH
that holds only the stubs and the basic tools it needs, so that what the
"host" has installed is what the test says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from components import k3s, scripts
from stacks import encryption, preflight
from stacks.config import StackConfig, parse
from stacks.features import resolve
from tests.shell import lint

BASIC_TOOLS = ("bash", "awk", "grep", "cut", "head", "readlink", "cat", "sed", "tr", "env", "rm")

STUBS = {
    "uname": """case "$1" in -r) cat "$SANDBOX/kernel" ;; -m) echo x86_64 ;; esac""",
    # Links other than eth0 are files in $SANDBOX/links; the kernel has a module where $SANDBOX/kmod/<name> exists.
    "ip": """
case "$*" in
  "-o -4 addr show") cat "$SANDBOX/addrs" ;;
  "-4 route show default") echo "default via 10.0.2.254 dev eth0 proto static" ;;
  "-d -j link show dev "*) cat "$SANDBOX/link-${6}.json" 2>/dev/null || exit 1 ;;
  "link show dev "*) [ -e "$SANDBOX/links/$4" ] || { echo "Device \"$4\" does not exist." >&2; exit 1; } ;;
  "link add dev "*" type wireguard")
    echo "ip $*" >>"$SANDBOX/calls"
    [ -e "$SANDBOX/kmod/wireguard" ] || { echo "Error: Unknown device type." >&2; exit 2; }
    [ -e "$SANDBOX/links/$4" ] && { echo "RTNETLINK answers: File exists" >&2; exit 2; }
    : >"$SANDBOX/links/$4"
    [ -e "$SANDBOX/kill-after-add" ] && kill -TERM "$PPID"
    exit 0 ;;
  "link del dev "*)
    echo "ip $*" >>"$SANDBOX/calls"
    [ -e "$SANDBOX/broken-link-del" ] && { echo "RTNETLINK answers: Operation not permitted" >&2; exit 2; }
    rm "$SANDBOX/links/$4" 2>/dev/null || { echo "Cannot find device \"$4\"" >&2; exit 1; } ;;
  "xfrm state count")
    echo "ip $*" >>"$SANDBOX/calls"
    [ -e "$SANDBOX/kmod/xfrm_user" ] || { echo "RTNETLINK answers: Protocol not supported" >&2; exit 2; }
    echo "SAD count 0" ;;
  *) exit 2 ;;
esac""",
    "modprobe": """echo "modprobe $*" >>"$SANDBOX/calls"
[ "$1 $2" = "-n -q" ] && [ -e "$SANDBOX/kmod/$3" ]""",
    "systemctl": """[ "$1" = is-enabled ] || exit 2
if [ -e "$SANDBOX/enabled/$2" ]; then echo enabled; else echo disabled; exit 1; fi""",
    "getenforce": """cat "$SANDBOX/selinux" 2>/dev/null || echo Disabled""",
    "rpm": """[ "$1" = -q ] && [ -e "$SANDBOX/rpms/$2" ]""",
    "firewall-cmd": """
fw="$SANDBOX/fw"
echo "firewall-cmd $*" >>"$SANDBOX/calls"
permanent=0; zone=public
for arg in "$@"; do
  case "$arg" in
    --permanent) permanent=1 ;;
    --zone=*) zone=${arg#--zone=} ;;
  esac
done
for arg in "$@"; do
  case "$arg" in
    --state) if [ -e "$fw/running" ]; then echo running; else echo "not running"; exit 252; fi ;;
    --get-zone-of-interface=*) cat "$fw/zone" 2>/dev/null || exit 2 ;;
    --get-default-zone) echo public ;;
    --list-ports) cat "$fw/$zone.ports" 2>/dev/null; echo ;;
    --list-services) cat "$fw/$zone.services" 2>/dev/null; echo ;;
    --info-service=*)
      s=${arg#--info-service=}; printf '%s\\n  ports: %s\\n' "$s" "$(cat "$fw/service.$s" 2>/dev/null)" ;;
    --query-source=*) grep -qx "${arg#--query-source=}" "$fw/$zone.sources" 2>/dev/null ;;
    --query-port=*) tr ' ' '\\n' <"$fw/$zone.ports" 2>/dev/null | grep -qxF -- "${arg#--query-port=}" ;;
    --add-port=*) [ $permanent = 1 ] && printf ' %s' "${arg#--add-port=}" >>"$fw/$zone.ports" ;;
    --add-source=*)
      if [ -e "$fw/broken-add-source" ]; then echo "Error: INVALID_ADDR: ${arg#--add-source=}" >&2; exit 13; fi
      [ $permanent = 1 ] && echo "${arg#--add-source=}" >>"$fw/$zone.sources" ;;
    --remove-port=*)
      left=$(tr ' ' '\\n' <"$fw/$zone.ports" | grep -vxF -- "${arg#--remove-port=}" | grep . | tr '\\n' ' ')
      printf ' %s' ${left} >"$fw/$zone.ports" ;;
    --remove-source=*)
      left=$(grep -vxF -- "${arg#--remove-source=}" "$fw/$zone.sources")
      if [ -n "$left" ]; then echo "$left" >"$fw/$zone.sources"; else rm -f "$fw/$zone.sources"; fi ;;
    --reload)
      if [ -e "$fw/broken-reload" ]; then echo "Error: COMMAND_FAILED: 'python-nftables' failed" >&2; exit 254; fi ;;
  esac
done""",
}

VIRTIO_LINK = {"ifname": "eth0", "gso_max_size": 65536, "tso_max_size": 65536, "gro_max_size": 65536}
MLX5_LINK = {"ifname": "eth0", "gso_max_size": 65536, "tso_max_size": 524280, "gro_max_size": 65536}


class FakeHost:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        for tool in BASIC_TOOLS:
            found = shutil.which(tool)
            assert found, tool
            (self.bin / tool).symlink_to(found)
        for name, body in STUBS.items():
            self.executable(name, body)
        for path in ("enabled", "rpms", "fw", "sys/class/net/eth0", "sys/module", "run-systemd", "drivers/virtio_net",
                     "links", "kmod", "lib-modules"):
            (root / path).mkdir(parents=True)
        self.kernel("6.8.0-45-generic")
        self.os_release(ID="ubuntu", VERSION_ID="24.04")
        (root / "addrs").write_text("2: eth0    inet 10.0.2.1/24 brd 10.0.2.255 scope global eth0\n")
        self.nic("virtio_net", VIRTIO_LINK)

    def executable(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)

    def kernel(self, release: str) -> None:
        (self.root / "kernel").write_text(release + "\n")

    def os_release(self, **fields: str) -> None:
        (self.root / "os-release").write_text("".join(f'{key}="{value}"\n' for key, value in fields.items()))

    def nic(self, driver: str, link: dict[str, Any]) -> None:
        (self.root / "drivers" / driver).mkdir(parents=True, exist_ok=True)
        device = self.root / "sys/class/net/eth0/device"
        device.mkdir(exist_ok=True)
        target = device / "driver"
        if target.is_symlink():
            target.unlink()
        target.symlink_to(self.root / "drivers" / driver)
        (self.root / "link-eth0.json").write_text(json.dumps([link], separators=(",", ":")))

    def modules(self, *names: str) -> None:
        """Kernel modules the host's kernel can load (what modprobe and the kernel's autoload find)."""
        for name in names:
            (self.root / "kmod" / name).touch()

    def install(self, *commands: str) -> None:
        for command in commands:
            self.executable(command, "exit 0")

    def run(self, cfg: StackConfig, node_name: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        features = resolve(cfg)
        node = next(n for n in cfg.nodes if n.name == node_name)
        params = {
            **k3s.preflight_params(cfg, features, node),
            "SYSFS": str(self.root / "sys"),
            "OS_RELEASE": str(self.root / "os-release"),
            "SYSTEMD_RUN_DIR": str(self.root / "run-systemd"),
            "MODULES_DIR": str(self.root / "lib-modules"),
            **overrides,
        }
        script = scripts.render("preflight", params)
        env = {"PATH": str(self.bin), "SANDBOX": str(self.root), "HOME": str(self.root)}
        return subprocess.run([str(self.bin / "bash"), "-c", script], capture_output=True, text=True, env=env,
                              timeout=60)

    def calls(self) -> list[str]:
        path = self.root / "calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    fake = FakeHost(tmp_path)
    fake.install("curl")
    return fake


def stack(**extra: Any) -> StackConfig:
    return parse({
        "nodes": [
            {"name": "server-1", "host": "10.0.1.1", "role": "server"},
            {"name": "agent-1", "host": "10.0.2.1", "role": "agent"},
        ],
        **extra,
    })


def facts(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return k3s.parse_facts(result.stdout)


def test_rendered_preflight_passes_lint(tmp_path: Path) -> None:
    for mode in ("none", "wireguard", "ipsec"):
        off = {} if mode == "none" else {"bigTcp": False}  # BIG TCP needs encryption off
        cfg = stack(tier="extreme", verify={"connectivityTest": True}, k3s={"openFirewall": True},
                    features={"encryption": mode, **off})
        features = resolve(cfg)
        for node in cfg.nodes:
            lint(scripts.render("preflight", k3s.preflight_params(cfg, features, node)), tmp_path,
                 f"pf-{mode}-{node.name}.sh")


def test_a_clean_host_passes_and_reports_its_facts(host: FakeHost) -> None:
    result = host.run(stack(), "agent-1")
    assert result.returncode == 0, result.stderr
    assert facts(result) == {
        "kernel": "6.8.0-45-generic", "os": "ubuntu-24.04", "arch": "x86_64", "k3s": "absent", "nic": "eth0",
        "driver": "virtio_net", "tso_max_size": "65536", "gso_max_size": "65536", "xdp_native": "yes",
        "firewalld": "inactive", "selinux": "disabled", "skipped": "none",
    }


# --- item 3: the kernel floor follows the Cilium minor -----------------------------------------


@pytest.mark.parametrize(
    ("version", "kernel", "problem"),
    [
        ("1.19.6", "5.4.0-216-generic", "kernel 5.4.0 is older than 5.10 required by Cilium 1.19"),
        ("1.18.12", "5.4.0-216-generic", "kernel 5.4.0 is older than 5.10 required by Cilium 1.18"),
        ("1.17.18", "5.4.0-216-generic", None),
        ("1.16.19", "4.19.300", "kernel 4.19.300 is older than 5.4 required by Cilium 1.16"),
        ("1.15.19", "4.19.0-26-amd64", "kernel 4.19.0 is older than 4.19.57 required by Cilium 1.15"),
        ("1.15.19", "4.19.57", None),
    ],
)
def test_kernel_floor_is_the_pinned_cilium_minors(host: FakeHost, version: str, kernel: str,
                                                  problem: str | None) -> None:
    host.kernel(kernel)
    result = host.run(stack(tier="baseline", cilium={"version": version}), "agent-1")
    lines = result.stderr.splitlines()
    if problem is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert any(line.startswith(f"node agent-1: {problem} (Linux >= ") for line in lines), lines


@pytest.mark.parametrize(
    ("os_id", "like", "release", "version", "passes"),
    [
        ("rhel", "fedora", "8.10", "1.19.6", True),
        ("rhel", "fedora", "8.8", "1.19.6", False),
        ("rocky", "rhel centos fedora", "8.10", "1.19.6", True),
        ("almalinux", "rhel centos fedora", "8.6", "1.16.19", True),
        ("centos", "rhel fedora", "8.4", "1.16.19", False),
        ("ubuntu", "debian", "18.04", "1.15.19", False),  # a 4.18 kernel elsewhere is just old
    ],
)
def test_rhel_4_18_counts_from_the_release_cilium_names(host: FakeHost, os_id: str, like: str, release: str,
                                                        version: str, passes: bool) -> None:
    host.kernel("4.18.0-553.el8_10.x86_64")
    host.os_release(ID=os_id, ID_LIKE=like, VERSION_ID=release)
    result = host.run(stack(tier="baseline", cilium={"version": version}), "agent-1")
    assert (result.returncode == 0) == passes, result.stderr


# --- item 2: what really stops K3s -----------------------------------------------------------


def test_host_iptables_is_not_required_and_wget_will_do_for_the_installer(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.install("wget")
    result = host.run(stack(verify={"smoke": False}), "agent-1")
    assert result.returncode == 0, result.stderr


def test_no_downloader_at_all_is_named(tmp_path: Path) -> None:
    result = FakeHost(tmp_path).run(stack(verify={"smoke": False}), "agent-1")
    assert result.returncode == 1
    assert "node agent-1: none of curl, wget is installed (needed by the K3s install script download)" in (
        result.stderr.splitlines())


def test_smoke_probes_need_curl_on_every_node(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.install("wget")
    result = host.run(stack(), "agent-1")
    assert result.returncode == 1
    assert "node agent-1: required command 'curl' is not installed (needed by verify.smoke" in result.stderr


def test_firewalld_with_closed_ports_fails_naming_node_and_ports(host: FakeHost) -> None:
    (host.root / "fw/running").touch()
    (host.root / "fw/public.ports").write_text("22/tcp 10250/tcp")
    cfg = stack(nodes=[{"name": f"server-{i}", "host": f"10.0.1.{i}", "role": "server"} for i in (1, 2, 3)])
    result = host.run(cfg, "server-2")
    assert result.returncode == 1
    assert facts(result)["firewalld"] == "running"
    lines = result.stderr.splitlines()
    assert any(line.startswith("node server-2: firewalld (zone public) closes ports 6443/tcp 2379-2380/tcp "
                               "4240/tcp that K3s and Cilium need") and "k3s.openFirewall: true" in line
               for line in lines), lines
    assert any(line.startswith("node server-2: firewalld does not trust the pod/service networks "
                               "10.42.0.0/16 10.43.0.0/16") for line in lines), lines


def test_ports_open_through_a_range_or_a_service_count(host: FakeHost) -> None:
    fw = host.root / "fw"
    (fw / "running").touch()
    (fw / "public.ports").write_text("6000-6500/tcp 4240/tcp 8472/udp")
    (fw / "public.services").write_text("ssh kubelet")
    (fw / "service.kubelet").write_text("10250/tcp")
    (fw / "trusted.sources").write_text("10.42.0.0/16\n10.43.0.0/16\n")
    result = host.run(stack(tier="baseline"), "server-1")  # tunnel mode: 8472/udp too
    assert result.returncode == 0, result.stderr


def test_open_firewall_opens_what_is_closed_once(host: FakeHost) -> None:
    (host.root / "fw/running").touch()
    cfg = stack(k3s={"openFirewall": True})
    first = host.run(cfg, "server-1")
    assert first.returncode == 0, first.stderr
    assert "opened 6443/tcp 10250/tcp 4240/tcp in firewalld zone public" in first.stderr
    assert "firewall-cmd --permanent --zone=public --add-port=6443/tcp" in host.calls()
    (host.root / "calls").unlink()
    again = host.run(cfg, "server-1")
    assert again.returncode == 0, again.stderr
    assert not any("--add-" in call or "--reload" in call for call in host.calls())


def firewall(host: FakeHost) -> dict[str, list[str]]:
    """firewalld's configuration on the fake host: each zone's ports and sources."""
    return {path.name: sorted(path.read_text().split()) for path in sorted((host.root / "fw").glob("*.*"))}


def test_open_firewall_changes_nothing_while_another_check_fails(host: FakeHost) -> None:
    # A failed preflight is not in the state: nothing would ever close what it opened.
    (host.root / "fw/running").touch()
    (host.root / "fw/public.ports").write_text("22/tcp")
    host.kernel("5.4.0-216-generic")
    before = firewall(host)
    result = host.run(stack(k3s={"openFirewall": True}), "server-1")
    assert result.returncode == 1
    assert not any("--add-" in call or "--reload" in call for call in host.calls())
    assert firewall(host) == before
    lines = result.stderr.splitlines()
    assert lines[0] == ("preflight: node server-1: firewalld left as it is until the problems below are fixed "
                        "(k3s.openFirewall would open 6443/tcp 10250/tcp 4240/tcp in zone public, "
                        "trust 10.42.0.0/16 10.43.0.0/16)")
    assert lines[1].startswith("node server-1: kernel 5.4.0 is older than 5.10 required by Cilium 1.19")
    # Fixed: the same run opens it.
    host.kernel("6.8.0-45-generic")
    assert host.run(stack(k3s={"openFirewall": True}), "server-1").returncode == 0
    assert firewall(host)["public.ports"] == ["10250/tcp", "22/tcp", "4240/tcp", "6443/tcp"]


@pytest.mark.parametrize(("broken", "why"), [
    ("broken-add-source", "firewall-cmd --add-source=10.42.0.0/16 failed: Error: INVALID_ADDR: 10.42.0.0/16"),
    ("broken-reload", "firewall-cmd --reload failed: Error: COMMAND_FAILED: 'python-nftables' failed"),
])
def test_open_firewall_that_fails_halfway_removes_what_it_had_added(host: FakeHost, broken: str, why: str) -> None:
    (host.root / "fw/running").touch()
    (host.root / "fw/public.ports").write_text("22/tcp 10250/tcp")
    (host.root / "fw/trusted.sources").write_text("10.43.0.0/16\n")
    (host.root / "fw" / broken).touch()
    before = firewall(host)
    result = host.run(stack(k3s={"openFirewall": True}), "server-1")
    assert result.returncode == 1
    assert "firewall-cmd --permanent --zone=public --add-port=6443/tcp" in host.calls()  # it had started
    assert firewall(host) == before
    assert result.stderr.splitlines() == [
        f"node server-1: could not open firewalld for K3s and Cilium ({why}); its configuration is as it was"]


def test_nm_cloud_setup_enabled_is_refused(host: FakeHost) -> None:
    (host.root / "enabled/nm-cloud-setup.timer").touch()
    result = host.run(stack(), "agent-1")
    assert result.returncode == 1
    assert any(line.startswith("node agent-1: nm-cloud-setup.timer enabled: it breaks K3s networking "
                               "(k3s-io/k3s#8805)") for line in result.stderr.splitlines())


def test_selinux_enforcing_needs_k3s_selinux(host: FakeHost) -> None:
    (host.root / "selinux").write_text("Enforcing\n")
    result = host.run(stack(), "agent-1")
    assert result.returncode == 1 and facts(result)["selinux"] == "enforcing"
    assert "node agent-1: SELinux is enforcing but the k3s-selinux policy is not installed" in result.stderr
    (host.root / "rpms/k3s-selinux").touch()
    assert host.run(stack(), "agent-1").returncode == 0


# --- item 5: the cilium CLI the connectivity test needs, before anything is built -------------


def test_connectivity_test_needs_the_cilium_cli_on_the_first_server(host: FakeHost) -> None:
    cfg = stack(verify={"connectivityTest": True})
    host.install("timeout")
    result = host.run(cfg, "server-1")
    assert result.returncode == 1
    assert "node server-1: required command 'cilium' is not installed (needed by verify.connectivityTest" in (
        result.stderr)
    assert "cilium-cli release for Cilium 1.19" in result.stderr
    assert host.run(cfg, "agent-1").returncode == 0  # only the first server runs it
    host.install("cilium")
    assert host.run(cfg, "server-1").returncode == 0


# --- item 4: the NIC carrying the node's address ---------------------------------------------


def test_tier_big_tcp_is_skipped_on_a_nic_without_large_tso(host: FakeHost) -> None:
    result = host.run(stack(tier="extreme"), "agent-1")
    assert result.returncode == 0, result.stderr
    seen = facts(result)
    assert seen["skipped"] == "bigTcp" and seen["tso_max_size"] == "65536"
    assert preflight.skip_reasons(seen) == {
        "bigTcp": "NIC eth0 (virtio_net) has tso_max_size 65536: Cilium runs without BIG TCP on it "
        "(needs more than 65536)"}


def test_big_tcp_stays_on_a_nic_with_large_tso(host: FakeHost) -> None:
    host.nic("mlx5_core", MLX5_LINK)
    result = host.run(stack(tier="extreme"), "agent-1")
    assert result.returncode == 0, result.stderr
    assert facts(result)["skipped"] == "none" and facts(result)["driver"] == "mlx5_core"


def test_forced_big_tcp_fails_naming_node_and_nic(host: FakeHost) -> None:
    result = host.run(stack(tier="extreme", features={"bigTcp": True}), "agent-1")
    assert result.returncode == 1
    assert ("node agent-1: NIC eth0 cannot carry bigTcp: driver virtio_net has tso_max_size 65536, BIG TCP needs "
            "more than 65536; use other NICs (nodeIp) or set features.bigTcp: false") in result.stderr.splitlines()


def test_xdp_preset_is_skipped_on_a_driver_without_native_xdp(host: FakeHost) -> None:
    host.nic("e1000", MLX5_LINK)
    result = host.run(stack(tier="extreme"), "agent-1")
    assert result.returncode == 0, result.stderr
    assert facts(result)["skipped"] == "xdp" and facts(result)["xdp_native"] == "no"


def test_forced_native_xdp_fails_naming_node_and_nic(host: FakeHost) -> None:
    host.nic("e1000", MLX5_LINK)
    result = host.run(stack(tier="kpr", features={"xdp": True}, cilium={"xdpMode": "native"}), "agent-1")
    assert result.returncode == 1
    assert "node agent-1: NIC eth0 cannot carry xdp: driver e1000 has no native XDP" in result.stderr


def test_the_nic_is_the_one_holding_the_node_address(host: FakeHost) -> None:
    (host.root / "addrs").write_text("2: eth0    inet 192.168.0.5/24 scope global eth0\n"
                                     "3: eth1    inet 10.0.2.1/24 scope global eth1\n")
    (host.root / "link-eth1.json").write_text(json.dumps([dict(MLX5_LINK, ifname="eth1")]))
    result = host.run(stack(tier="extreme"), "agent-1")
    assert facts(result)["nic"] == "eth1" and facts(result)["tso_max_size"] == "524280"


def test_preflight_is_read_only_without_open_firewall(host: FakeHost) -> None:
    (host.root / "fw/running").touch()
    before = {p: p.read_bytes() for p in host.root.rglob("*") if p.is_file() and not p.is_symlink()}
    host.run(stack(tier="extreme"), "server-1")
    after = {p: p.read_bytes() for p in host.root.rglob("*") if p.is_file() and not p.is_symlink()}
    assert {p: v for p, v in after.items() if p.name != "calls"} == {
        p: v for p, v in before.items() if p.name != "calls"}


def test_plan_notes_say_which_nic_features_preflight_decides() -> None:
    cfg = stack(tier="extreme")
    notes = preflight.plan_notes(cfg, resolve(cfg))
    assert set(notes) == {"bigTcp", "xdp"}
    assert "preflight leaves it off (and unverified) on other nodes" in notes["bigTcp"]
    forced = stack(tier="extreme", features={"bigTcp": True})
    assert "preflight fails" in preflight.plan_notes(forced, resolve(forced))["bigTcp"]


# --- transparent encryption: what every node's kernel must provide ---------------------------


def encrypted(mode: str, **extra: Any) -> StackConfig:
    return stack(features={"encryption": mode}, **extra)


PROBE_ADD = "ip link add dev k3scwgprobe type wireguard"
PROBE_DEL = "ip link del dev k3scwgprobe"


def probe_link_gone(host: FakeHost) -> bool:
    return not any((host.root / "links").iterdir())


def test_wireguard_host_passes_and_the_probe_link_is_deleted(host: FakeHost) -> None:
    host.modules("wireguard")
    result = host.run(encrypted("wireguard"), "agent-1")
    assert result.returncode == 0, result.stderr
    assert facts(result)["encryption"] == "wireguard:ok"
    assert [call for call in host.calls() if call.startswith("ip link")] == [PROBE_ADD, PROBE_DEL]
    assert probe_link_gone(host)


@pytest.mark.parametrize("version", ["1.19.6", "1.16.19"])
def test_a_node_without_wireguard_fails_naming_node_and_fix(host: FakeHost, version: str) -> None:
    (host.root / "enabled/nm-cloud-setup.timer").touch()  # every check runs before failing
    result = host.run(encrypted("wireguard", cilium={"version": version}), "agent-1")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    expected = encryption.wireguard_module_problem("agent-1", False, Version(version))
    assert expected in lines, lines
    assert expected.startswith("node agent-1: no WireGuard in the kernel") and "features.encryption: ipsec" in expected
    assert any(line.startswith("node agent-1: nm-cloud-setup.timer enabled") for line in lines), lines
    assert facts(result)["encryption"] == "wireguard:missing"
    assert PROBE_DEL not in host.calls() and probe_link_gone(host)  # nothing was added


def test_the_probe_link_is_deleted_when_the_run_is_cut_short(host: FakeHost) -> None:
    host.modules("wireguard")
    (host.root / "kill-after-add").touch()  # SIGTERM right after the link was added
    result = host.run(encrypted("wireguard"), "agent-1")
    assert result.returncode == 143
    assert host.calls()[-1] == PROBE_DEL
    assert probe_link_gone(host)


def test_a_probe_link_that_will_not_go_is_a_problem(host: FakeHost) -> None:
    host.modules("wireguard")
    (host.root / "broken-link-del").touch()
    result = host.run(encrypted("wireguard"), "agent-1")
    assert result.returncode == 1
    assert ("node agent-1: could not delete the WireGuard probe link k3scwgprobe it had added; delete it with "
            "'ip link del dev k3scwgprobe'") in result.stderr.splitlines()


def test_a_probe_link_left_by_a_killed_run_is_removed_first(host: FakeHost) -> None:
    host.modules("wireguard")
    (host.root / "links/k3scwgprobe").touch()
    result = host.run(encrypted("wireguard"), "agent-1")
    assert result.returncode == 0, result.stderr
    assert [call for call in host.calls() if call.startswith("ip link")] == [PROBE_DEL, PROBE_ADD, PROBE_DEL]
    assert probe_link_gone(host)


@pytest.mark.parametrize("where", ["modprobe", "sysfs", "builtin", None])
def test_without_ip_modprobe_and_sysfs_say_whether_wireguard_is_there(host: FakeHost, where: str | None) -> None:
    (host.bin / "ip").unlink()
    if where == "modprobe":
        host.modules("wireguard")
    elif where == "sysfs":
        (host.root / "sys/module/wireguard").mkdir()
    elif where == "builtin":
        release = host.root / "lib-modules/6.8.0-45-generic"
        release.mkdir()
        (release / "modules.builtin").write_text("kernel/drivers/net/wireguard/wireguard.ko\n")
    result = host.run(encrypted("wireguard"), "agent-1")
    assert (result.returncode == 0) == (where is not None), result.stderr
    assert not any(call.startswith("ip ") for call in host.calls())


@pytest.mark.parametrize("where", ["modprobe", "sysfs", "builtin"])
def test_ipsec_host_with_xfrm_and_esp4_passes(host: FakeHost, where: str) -> None:
    host.modules("xfrm_user")
    if where == "modprobe":
        host.modules("esp4")
    elif where == "sysfs":
        (host.root / "sys/module/esp4").mkdir()
    else:
        release = host.root / "lib-modules/6.8.0-45-generic"
        release.mkdir()
        (release / "modules.builtin").write_text("kernel/net/ipv4/esp4_offload.ko\nkernel/net/ipv4/esp4.ko\n")
    result = host.run(encrypted("ipsec"), "agent-1")
    assert result.returncode == 0, result.stderr
    assert facts(result)["encryption"] == "ipsec:ok"
    assert "ip xfrm state count" in host.calls() and PROBE_ADD not in host.calls()


@pytest.mark.parametrize(("present", "missing"), [
    (("xfrm_user",), ["esp4"]),
    (("esp4",), ["xfrm_user"]),
    ((), ["esp4", "xfrm_user"]),
])
def test_ipsec_names_what_the_kernel_lacks(host: FakeHost, present: tuple[str, ...], missing: list[str]) -> None:
    host.modules(*present)
    release = host.root / "lib-modules/6.8.0-45-generic"
    release.mkdir()
    (release / "modules.builtin").write_text("kernel/net/ipv4/esp4_offload.ko\n")  # not esp4 itself
    result = host.run(encrypted("ipsec"), "server-1")
    assert result.returncode == 1
    expected = encryption.ipsec_modules_problem("server-1", missing)
    assert expected in result.stderr.splitlines(), result.stderr
    assert f"(missing {', '.join(missing)})" in expected and "features.encryption: wireguard" in expected
    assert facts(result)["encryption"] == "ipsec:missing"


def test_no_encryption_probes_nothing_and_adds_no_fact(host: FakeHost) -> None:
    result = host.run(stack(), "agent-1")
    assert result.returncode == 0, result.stderr
    assert "encryption" not in facts(result)
    assert not any(call.startswith(("ip ", "modprobe")) for call in host.calls())


def test_wireguard_port_joins_the_firewalld_check_and_esp_does_not(host: FakeHost) -> None:
    fw = host.root / "fw"
    (fw / "running").touch()
    (fw / "public.ports").write_text("10250/tcp 4240/tcp 4244/tcp 8472/udp 6081/udp")
    (fw / "trusted.sources").write_text("10.42.0.0/16\n10.43.0.0/16\n")
    host.modules("wireguard", "xfrm_user", "esp4")
    result = host.run(encrypted("wireguard"), "agent-1")
    assert result.returncode == 1
    assert "closes ports 51871/udp that K3s and Cilium need" in result.stderr
    assert host.run(encrypted("ipsec"), "agent-1").returncode == 0, "ESP is no port"
    assert host.run(encrypted("none"), "agent-1").returncode == 0


def test_encryption_params() -> None:
    wireguard, ipsec, none = encrypted("wireguard"), encrypted("ipsec"), stack()
    server = wireguard.servers[0]
    wg = preflight.params(wireguard, resolve(wireguard), server)
    assert wg["ENCRYPTION"] == "wireguard" and wg["ENCRYPTION_MODULES"] == "wireguard"
    assert "51871/udp" in wg["FIREWALL_PORTS"].split()
    assert f"node server-1: {wg['ENCRYPTION_PROBLEM']}" == encryption.wireguard_module_problem(
        "server-1", False, wireguard.cilium.parsed_version)
    ip = preflight.params(ipsec, resolve(ipsec), server)
    assert ip["ENCRYPTION"] == "ipsec" and ip["ENCRYPTION_MODULES"] == "esp4 xfrm_user"
    assert "51871/udp" not in ip["FIREWALL_PORTS"].split()
    assert ip["ENCRYPTION_PROBLEM"].startswith("no IPsec support in the kernel (missing @MISSING@);")
    plain = preflight.params(none, resolve(none), server)
    assert (plain["ENCRYPTION"], plain["ENCRYPTION_MODULES"], plain["ENCRYPTION_PROBLEM"]) == ("none", "", "")


def test_environment_is_not_leaking_host_tools() -> None:
    assert "PATH" in os.environ  # the fake host's PATH replaces it entirely in FakeHost.run
