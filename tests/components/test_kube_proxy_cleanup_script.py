"""kube-proxy-cleanup.sh against real iptables, each test in its own network namespace.

The fixtures under ``fixtures/`` are iptables-restore dumps of a K3s node running
Cilium, with kube-proxy's leftovers tagged ``[kube-proxy] ``. The expected result of
a cleanup is computed without the script: a second namespace is seeded with the
untagged lines only, and both namespaces are compared through ``iptables-save``.

Needs root, ``ip netns`` and the iptables-legacy and iptables-nft binaries. A missing
binary skips the tests that need it; everything else that goes wrong fails.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.scripts import render
from tests.shell import lint

FIXTURES = Path(__file__).parent / "fixtures"
KUBE_PROXY_TAG = "[kube-proxy] "
COMMANDS = {"ipv4": "iptables", "ipv6": "ip6tables"}
BACKENDS = ("legacy", "nft")
# The order in which the script inspects backends, and so prints its summary.
ALL_COMBINATIONS = [(backend, family) for family in COMMANDS for backend in BACKENDS]
TIMEOUT_SECONDS = 120

# KUBE-* chains that are not kube-proxy's and must survive: kubelet's
# (KUBE-FIREWALL in filter, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) and those of
# K3s's embedded kube-router network policy controller.
KEPT_KUBE_CHAINS = {
    "ipv4": {
        ("mangle", "KUBE-IPTABLES-HINT"),
        ("mangle", "KUBE-KUBELET-CANARY"),
        ("nat", "KUBE-KUBELET-CANARY"),
        ("filter", "KUBE-FIREWALL"),
        ("filter", "KUBE-KUBELET-CANARY"),
        ("filter", "KUBE-NWPLCY-DEFAULT"),
        ("filter", "KUBE-POD-FW-7NHB5BNCPA4SFLUS"),
        ("filter", "KUBE-ROUTER-FORWARD"),
        ("filter", "KUBE-ROUTER-INPUT"),
        ("filter", "KUBE-ROUTER-OUTPUT"),
    },
    "ipv6": {
        ("mangle", "KUBE-IPTABLES-HINT"),
        ("mangle", "KUBE-KUBELET-CANARY"),
        ("nat", "KUBE-KUBELET-CANARY"),
        ("filter", "KUBE-FIREWALL"),
        ("filter", "KUBE-KUBELET-CANARY"),
        ("filter", "KUBE-ROUTER-FORWARD"),
        ("filter", "KUBE-ROUTER-INPUT"),
        ("filter", "KUBE-ROUTER-OUTPUT"),
    },
}


@dataclass(frozen=True)
class Fixture:
    seed: str
    """The whole dump: kube-proxy's state and everything else."""
    without_kube_proxy: str
    """The untagged lines only: what must be left after the cleanup."""
    kube_proxy_chains: frozenset[tuple[str, str]]
    """(table, chain) of every tagged chain."""
    kube_proxy_rule_count: int


def load_fixture(family: str) -> Fixture:
    seed, kept, chains, rules = [], [], set(), 0
    table = None
    for line in (FIXTURES / f"kube-proxy-{family}.rules").read_text().splitlines():
        if line.startswith("*"):
            table = line[1:]
        if not line.startswith(KUBE_PROXY_TAG):
            seed.append(line)
            kept.append(line)
            continue
        body = line.removeprefix(KUBE_PROXY_TAG)
        seed.append(body)
        if body.startswith(":"):
            chains.add((table, body[1:].split()[0]))
        elif body.startswith("-A "):
            rules += 1
        else:
            raise ValueError(f"only chains and rules can be tagged: {line!r}")
    return Fixture("\n".join(seed) + "\n", "\n".join(kept) + "\n", frozenset(chains), rules)


def normalize(dump: str) -> str:
    """iptables-save output without the timestamped comments and the counters."""
    lines = [line for line in dump.splitlines() if not line.startswith("#")]
    return "\n".join(re.sub(r"\[\d+:\d+\]$", "[0:0]", line) for line in lines) + "\n"


def kube_chains(dump: str) -> set[tuple[str, str]]:
    table, found = None, set()
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":KUBE-"):
            found.add((table, line[1:].split()[0]))
    return found


def jumps(dump: str) -> list[tuple[str, str, str]]:
    """(table, rule, target) of every rule with a -j or -g target."""
    table, found = None, []
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            words = shlex.split(line)
            for flag, target in itertools.pairwise(words):
                if flag in ("-j", "-g"):
                    found.append((table, line, target))
    return found


def summary_line(backend: str, family: str, chains: int, rules: int) -> str:
    return f"backend={backend} family={family} chains_removed={chains} rules_removed={rules}"


def require_binaries(backend: str, family: str) -> None:
    for suffix in ("save", "restore"):
        binary = f"{COMMANDS[family]}-{backend}-{suffix}"
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed, so the {backend} {family} backend cannot be tested")


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
        )

    def restore(self, backend: str, family: str, rules: str) -> None:
        binary = f"{COMMANDS[family]}-{backend}-restore"
        done = self.run([binary], stdin=rules)
        assert done.returncode == 0, f"seeding with {binary} failed:\n{done.stderr}"

    def save(self, backend: str, family: str) -> str:
        binary = f"{COMMANDS[family]}-{backend}-save"
        done = self.run([binary])
        assert done.returncode == 0, f"{binary} failed:\n{done.stderr}"
        return normalize(done.stdout)

    def snapshot(self) -> dict[tuple[str, str], str]:
        return {(backend, family): self.save(backend, family) for backend, family in ALL_COMBINATIONS}


@pytest.fixture
def make_netns() -> Iterator[Callable[[], Netns]]:
    if os.geteuid() != 0:
        pytest.fail("these tests create network namespaces and run iptables: run them as root")
    assert shutil.which("ip"), "the ip command (iproute2) is not installed"
    counter = itertools.count()
    created: list[str] = []

    def make() -> Netns:
        name = f"kpc-test-{os.getpid()}-{next(counter)}"
        done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        assert done.returncode == 0, f"ip netns add {name} failed:\n{done.stderr}"
        created.append(name)
        return Netns(name)

    yield make
    leftovers = []
    for name in created:
        done = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
        if done.returncode != 0:
            leftovers.append(f"{name}: {done.stderr.strip()}")
    assert not leftovers, f"could not delete network namespaces: {leftovers}"


@pytest.fixture(scope="module")
def script() -> str:
    return render("kube-proxy-cleanup")


def run_script(netns: Netns, script: str, *wrapper: str) -> subprocess.CompletedProcess[str]:
    """Run the script as the remote side would, optionally under a wrapper command."""
    return netns.run([*wrapper, "bash", "-c", script])


def expected_after_cleanup(make_netns, backend: str, family: str, fixture: Fixture) -> str:
    reference = make_netns()
    reference.restore(backend, family, fixture.without_kube_proxy)
    return reference.save(backend, family)


def assert_only_kube_proxy_state_is_gone(dump: str, family: str, fixture: Fixture) -> None:
    dangling = [rule for table, rule, target in jumps(dump) if (table, target) in fixture.kube_proxy_chains]
    assert dangling == [], "rules still jump to kube-proxy chains"
    assert kube_chains(dump) == KEPT_KUBE_CHAINS[family], "KUBE- chains other than the ones to keep"


def test_rendered_script_passes_lint(tmp_path: Path, script: str) -> None:
    lint(script, tmp_path, "kube-proxy-cleanup.sh")


@pytest.mark.root
@pytest.mark.parametrize("family", COMMANDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_removes_kube_proxy_state_and_keeps_everything_else(make_netns, script, backend, family) -> None:
    require_binaries(backend, family)
    fixture = load_fixture(family)
    node = make_netns()
    node.restore(backend, family, fixture.seed)
    seeded = node.save(backend, family)
    assert fixture.kube_proxy_chains <= kube_chains(seeded), "the fixture did not seed kube-proxy's chains"
    before = node.snapshot()

    first = run_script(node, script)

    assert first.returncode == 0, f"cleanup failed:\n{first.stderr}"
    after = node.snapshot()
    assert_only_kube_proxy_state_is_gone(after[backend, family], family, fixture)
    assert after[backend, family] == expected_after_cleanup(make_netns, backend, family, fixture)
    untouched = {key: dump for key, dump in before.items() if key != (backend, family)}
    assert {key: after[key] for key in untouched} == untouched, "other backends or families changed"
    expected_summary = [
        summary_line(b, f, len(fixture.kube_proxy_chains), fixture.kube_proxy_rule_count)
        if (b, f) == (backend, family)
        else summary_line(b, f, 0, 0)
        for b, f in ALL_COMBINATIONS
    ]
    assert first.stdout.splitlines() == expected_summary

    second = run_script(node, script)

    assert second.returncode == 0, f"second cleanup failed:\n{second.stderr}"
    assert node.snapshot() == after, "a second run changed iptables"
    assert second.stdout.splitlines() == [summary_line(b, f, 0, 0) for b, f in ALL_COMBINATIONS]


@pytest.mark.root
def test_cleans_every_backend_and_family_in_one_run(make_netns, script) -> None:
    for backend, family in ALL_COMBINATIONS:
        require_binaries(backend, family)
    fixtures = {family: load_fixture(family) for family in COMMANDS}
    node = make_netns()
    for backend, family in ALL_COMBINATIONS:
        node.restore(backend, family, fixtures[family].seed)

    done = run_script(node, script)

    assert done.returncode == 0, f"cleanup failed:\n{done.stderr}"
    after = node.snapshot()
    for backend, family in ALL_COMBINATIONS:
        assert_only_kube_proxy_state_is_gone(after[backend, family], family, fixtures[family])
        assert after[backend, family] == expected_after_cleanup(make_netns, backend, family, fixtures[family])
    assert done.stdout.splitlines() == [
        summary_line(b, f, len(fixtures[f].kube_proxy_chains), fixtures[f].kube_proxy_rule_count)
        for b, f in ALL_COMBINATIONS
    ]


@pytest.mark.root
def test_node_without_kube_proxy_state_is_left_untouched(make_netns, script) -> None:
    for backend, family in ALL_COMBINATIONS:
        require_binaries(backend, family)
    node = make_netns()
    for backend, family in ALL_COMBINATIONS:
        node.restore(backend, family, load_fixture(family).without_kube_proxy)
    before = node.snapshot()

    done = run_script(node, script)

    assert done.returncode == 0, f"cleanup failed:\n{done.stderr}"
    assert node.snapshot() == before
    assert done.stdout.splitlines() == [summary_line(b, f, 0, 0) for b, f in ALL_COMBINATIONS]


@pytest.mark.root
def test_node_without_any_tables_gets_none_created(make_netns, script) -> None:
    # Writing nothing when there is nothing to remove matters most for legacy:
    # creating its tables on an nft node would split the ruleset over two backends.
    for backend, family in ALL_COMBINATIONS:
        require_binaries(backend, family)
    node = make_netns()

    done = run_script(node, script)

    assert done.returncode == 0, f"cleanup failed:\n{done.stderr}"
    assert node.snapshot() == {key: "\n" for key in ALL_COMBINATIONS}
    assert done.stdout.splitlines() == [summary_line(b, f, 0, 0) for b, f in ALL_COMBINATIONS]


@pytest.mark.root
def test_falls_back_to_plain_iptables_when_variants_are_missing(make_netns, script, tmp_path) -> None:
    require_binaries("legacy", "ipv4")
    multi = shutil.which("xtables-legacy-multi")
    assert multi, "xtables-legacy-multi is missing although iptables-legacy is installed"
    # A host whose only iptables is a plain legacy one, and no ip6tables at all.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("iptables", "iptables-save", "iptables-restore"):
        (bin_dir / name).symlink_to(multi)
    fixture = load_fixture("ipv4")
    node = make_netns()
    node.restore("legacy", "ipv4", fixture.seed)

    done = run_script(node, script, "env", f"PATH={bin_dir}:/usr/bin:/bin")

    assert done.returncode == 0, f"cleanup failed:\n{done.stderr}"
    assert node.save("legacy", "ipv4") == expected_after_cleanup(make_netns, "legacy", "ipv4", fixture)
    assert done.stdout.splitlines() == [
        summary_line("legacy", "ipv4", len(fixture.kube_proxy_chains), fixture.kube_proxy_rule_count)
    ]
    for backend, family in ALL_COMBINATIONS[1:]:
        assert f"backend={backend} family={family} skipped" in done.stderr


@pytest.mark.root
def test_uses_the_iptables_k3s_bundles_when_the_host_has_none(make_netns, script) -> None:
    require_binaries("nft", "ipv4")
    multi = shutil.which("xtables-nft-multi")
    assert multi, "xtables-nft-multi is missing although iptables-nft is installed"
    fixture = load_fixture("ipv4")
    node = make_netns()
    node.restore("nft", "ipv4", fixture.seed)
    # K3s's aux directory exists only inside a private mount namespace, on a
    # tmpfs over /var/lib, so the test leaves the machine's /var/lib alone.
    aux = "/var/lib/rancher/k3s/data/current/bin/aux"
    links = " && ".join(f"ln -s {multi} {aux}/{name}" for name in ("iptables", "iptables-save", "iptables-restore"))
    setup = f"mount -t tmpfs tmpfs /var/lib && mkdir -p {aux} && {links}"
    wrapper = ["unshare", "--mount", "--propagation", "private", "bash", "-c", f'{setup} && exec "$@"', "k3s-host"]

    done = run_script(node, script, *wrapper, "env", "PATH=/usr/bin:/bin")

    assert done.returncode == 0, f"cleanup failed:\n{done.stderr}"
    assert node.save("nft", "ipv4") == expected_after_cleanup(make_netns, "nft", "ipv4", fixture)
    assert done.stdout.splitlines() == [
        summary_line("nft", "ipv4", len(fixture.kube_proxy_chains), fixture.kube_proxy_rule_count)
    ]


@pytest.mark.root
def test_skips_ipv6_when_the_kernel_has_none(make_netns, script) -> None:
    for backend, family in ALL_COMBINATIONS:
        require_binaries(backend, family)
    ipv4, ipv6 = load_fixture("ipv4"), load_fixture("ipv6")
    node = make_netns()
    node.restore("nft", "ipv4", ipv4.seed)
    node.restore("nft", "ipv6", ipv6.seed)
    ipv6_before = node.save("nft", "ipv6")
    # What a kernel booted with ipv6.disable=1 looks like to the script.
    hide_ipv6 = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "bash",
        "-c",
        'mount -t tmpfs tmpfs /proc/sys/net && exec "$@"',
        "no-ipv6",
    ]

    done = run_script(node, script, *hide_ipv6)

    assert done.returncode == 0, f"cleanup failed:\n{done.stderr}"
    assert "family=ipv6 skipped" in done.stderr
    assert node.save("nft", "ipv4") == expected_after_cleanup(make_netns, "nft", "ipv4", ipv4)
    assert node.save("nft", "ipv6") == ipv6_before
    assert done.stdout.splitlines() == [
        summary_line("legacy", "ipv4", 0, 0),
        summary_line("nft", "ipv4", len(ipv4.kube_proxy_chains), ipv4.kube_proxy_rule_count),
    ]


@pytest.mark.root
def test_fails_with_a_message_when_iptables_fails(make_netns, script) -> None:
    require_binaries("nft", "ipv4")
    fixture = load_fixture("ipv4")
    node = make_netns()
    node.restore("nft", "ipv4", fixture.seed)
    before = node.snapshot()
    # Without root (a caller that forgot sudo) iptables cannot read the rules.
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

    done = run_script(node, script, *as_nobody)

    assert done.returncode == 1
    assert "backend=nft family=ipv4: 'iptables-nft-save' failed" in done.stderr
    assert "kube-proxy-cleanup: failed" in done.stderr
    assert node.snapshot() == before


@pytest.mark.root
def test_fails_with_a_message_when_the_xtables_lock_stays_taken(make_netns) -> None:
    require_binaries("legacy", "ipv4")
    assert shutil.which("flock"), "flock (util-linux) is not installed"
    fixture = load_fixture("ipv4")
    node = make_netns()
    node.restore("legacy", "ipv4", fixture.seed)
    before = node.snapshot()
    script = render("kube-proxy-cleanup", {"XTABLES_LOCK_WAIT_SECONDS": 1})
    # A private /run gives this run its own xtables lock, so holding it blocks
    # the script and nothing else on this machine.
    hold_lock = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "bash",
        "-c",
        'mount -t tmpfs tmpfs /run && exec flock /run/xtables.lock "$@"',
        "hold-xtables-lock",
    ]

    started = time.monotonic()
    done = run_script(node, script, *hold_lock)
    waited = time.monotonic() - started

    assert done.returncode == 1
    assert waited < 15, f"the script waited {waited:.0f}s for the lock instead of XTABLES_LOCK_WAIT_SECONDS=1"
    assert "backend=legacy family=ipv4: 'iptables-legacy-restore --noflush' failed" in done.stderr
    assert "xtables lock" in done.stderr
    assert node.snapshot() == before


@pytest.mark.root
def test_rejects_a_lock_wait_that_is_not_a_number(make_netns) -> None:
    node = make_netns()

    done = run_script(node, render("kube-proxy-cleanup", {"XTABLES_LOCK_WAIT_SECONDS": "soon"}))

    assert done.returncode == 2
    assert "XTABLES_LOCK_WAIT_SECONDS must be a number of seconds, not soon" in done.stderr
    assert done.stdout == ""
