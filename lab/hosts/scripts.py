"""The program's own remote scripts, rendered exactly as its components render them, run over SSH.

These steps do not go through Pulumi: they take the command line and the stdin
the component would hand to pulumi-command (``components.remote.command_line``
and ``bundle`` of the script rendered with the component's parameters) and run
them with ``ssh`` as root on the lab's hosts. The report labels them so.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..report import Step, StepFailed
from . import paths
from .vms import Host, LabState, ssh_run

T = TypeVar("T")

FIXTURES = paths.REPO / "tests" / "components" / "fixtures"
KUBE_PROXY_TAG = "[kube-proxy] "
BACKENDS = ("legacy", "nft")
FAMILIES = {"ipv4": "iptables", "ipv6": "ip6tables"}

# What host tuning touches, read before and after: tuned's profile, the governors, irqbalance,
# the affinity of every IRQ of a NIC with a device, and the tuning's saved state.
SNAPSHOT = r"""
set -u
profile=$(tuned-adm active 2>&1 | sed -n 's/^Current active profile: *//p;s/^No current active profile.*/none/p')
echo "tuned=${profile%%$'\n'*}"
for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
  [ -e "$f" ] && echo "governor:${f#/sys/devices/system/cpu/}=$(cat "$f")"
done
echo "irqbalance=$(systemctl is-active irqbalance)"
for dev in /sys/class/net/*; do
  [ -e "$dev/device" ] || continue
  pci=$(readlink -f "$dev/device/..")
  for v in "$pci"/msi_irqs/* "$dev"/device/msi_irqs/*; do
    [ -e "$v" ] || continue
    irq=${v##*/}
    echo "irq:${dev##*/}:$irq=$(cat "/proc/irq/$irq/smp_affinity_list" 2>/dev/null)"
  done
done
echo "state_dir=$([ -e /var/lib/k3s-cilium/host-tuning ] && echo present || echo absent)"
"""


def tuning_differences(before: dict[str, str], after: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """What differs between two snapshots; NIC IRQ affinities only when irqbalance was not running before.

    A running irqbalance owns the IRQ affinities and moves them whenever it rebalances: once the revert
    started it again, their values say nothing about the revert.
    """
    irqbalance_owns = before.get("irqbalance") == "active"
    return {
        key: {"before": before.get(key), "after": after.get(key)}
        for key in sorted(set(after) | set(before))
        if after.get(key) != before.get(key) and not (irqbalance_owns and key.startswith("irq:"))
    }


def in_parallel(hosts: list[Host], work: Callable[[Host], T]) -> dict[str, T]:
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = {host.name: pool.submit(work, host) for host in hosts}
        return {name: future.result() for name, future in futures.items()}


HostResult = dict[str, Any]


def on_every_host(
    state: LabState,
    step: Step,
    work: Callable[[Host], HostResult],
    problems: Callable[[HostResult], list[str]],
) -> None:
    """``work`` on every host at once: the step records each host's result and the worst exit
    status, and fails naming each host's problems."""
    results = in_parallel(state.hosts, work)
    step.details["hosts"] = results
    step.exit_status = max(result["exit"] for result in results.values())
    found = [f"{name}: {problem}" for name, result in results.items() for problem in problems(result)]
    if found:
        raise StepFailed("; ".join(found))


def failed_exit(result: HostResult, output: str = "stderr") -> list[str]:
    """A host's non-zero exit status as a problem, with what its command printed."""
    return [f"exit {result['exit']}: {result[output]}"] if result["exit"] else []


@dataclass
class Program:
    """The lab stack's config and resolved features, as the program computes them."""

    cfg: Any
    features: Any

    @classmethod
    def load(cls, stack_file: Path) -> Program:
        from stacks.features import resolve
        from stacks.stackfile import load

        cfg = load(stack_file)
        return cls(cfg, resolve(cfg))

    def node(self, name: str) -> Any:
        return next(node for node in self.cfg.nodes if node.name == name)

    def run(
        self, state: LabState, host: Host, name: str, params: dict[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Script ``name`` on ``host`` as the component runs it: its name on the command line, the script on stdin."""
        from components.remote import bundle, command_line, script

        stdin = bundle(script(name, params))
        assert isinstance(stdin, str)
        return ssh_run(state, host, command_line(self.cfg.ssh_user(self.node(host.name)), name), stdin=stdin)


def _summary(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_preflight(state: LabState, program: Program, step: Step) -> None:
    from components.k3s import preflight_params

    def one(host: Host) -> HostResult:
        params = preflight_params(program.cfg, program.features, program.node(host.name))
        result = program.run(state, host, "preflight", params)
        return {"exit": result.returncode, "stdout": result.stdout.strip(), "stderr": result.stderr.strip()}

    on_every_host(state, step, one, lambda r: failed_exit(r, "stderr" if r["stderr"] else "stdout"))


def snapshot(state: LabState, host: Host) -> dict[str, str]:
    result = ssh_run(state, host, "bash -s", stdin=SNAPSHOT)
    if result.returncode:
        raise StepFailed(f"{host.name}: reading the tuning state failed: {result.stderr.strip()}")
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def run_host_tuning(state: LabState, program: Program, step: Step, before: dict[str, dict[str, str]]) -> None:
    """host-tuning.sh twice (the second run must print the same), as HostTuning's create and update do."""
    from components.host_tuning import DEFAULT_TUNED_PROFILE, STATE_DIR

    params = {"TUNED_PROFILE": DEFAULT_TUNED_PROFILE, "STATE_DIR": STATE_DIR}

    def one(host: Host) -> HostResult:
        before[host.name] = snapshot(state, host)
        first = program.run(state, host, "host-tuning", params)
        second = program.run(state, host, "host-tuning", params)
        return {
            "exit": max(first.returncode, second.returncode),
            "summary": _summary(first.stdout),
            "summarySecondRun": _summary(second.stdout),
            "warnings": first.stderr.strip().splitlines(),
            "stderr": (first.stderr + second.stderr).strip() if first.returncode or second.returncode else "",
            "before": before[host.name],
            "tuned": snapshot(state, host),
        }

    def problems(r: HostResult) -> list[str]:
        if r["exit"]:
            return failed_exit(r)
        if r["summary"] != r["summarySecondRun"]:
            return [f"second run printed {r['summarySecondRun']!r}, first {r['summary']!r}"]
        if r["tuned"].get("state_dir") != "present":
            return ["no saved state after tuning"]
        return []

    on_every_host(state, step, one, problems)


def run_host_tuning_revert(state: LabState, program: Program, step: Step, before: dict[str, dict[str, str]]) -> None:
    """host-tuning-revert.sh (HostTuning's delete), twice; the host must read as before the tuning."""
    from components.host_tuning import STATE_DIR

    def one(host: Host) -> HostResult:
        first = program.run(state, host, "host-tuning-revert", {"STATE_DIR": STATE_DIR})
        second = program.run(state, host, "host-tuning-revert", {"STATE_DIR": STATE_DIR})
        after = snapshot(state, host)
        diff = tuning_differences(before.get(host.name, {}), after)
        return {
            "exit": max(first.returncode, second.returncode),
            "summary": _summary(first.stdout),
            "summarySecondRun": _summary(second.stdout),
            "stderr": (first.stderr + second.stderr).strip(),
            "after": after,
            "differencesFromBefore": diff,
        }

    def problems(r: HostResult) -> list[str]:
        found = failed_exit(r)
        if r["differencesFromBefore"]:
            found.append(f"not as before the tuning: {r['differencesFromBefore']}")
        return found

    on_every_host(state, step, one, problems)


@dataclass(frozen=True)
class Fixture:
    seed: str
    chains: frozenset[tuple[str, str]]
    kept_kube_chains: frozenset[tuple[str, str]]
    rules: int
    tables: tuple[str, ...]


def load_fixture(family: str) -> Fixture:
    """tests/components/fixtures/kube-proxy-<family>.rules: the tagged lines are kube-proxy's."""
    seed, chains, kept, tables, rules = [], set(), set(), [], 0
    table = ""
    for line in (FIXTURES / f"kube-proxy-{family}.rules").read_text().splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables.append(table)
        body = line.removeprefix(KUBE_PROXY_TAG)
        seed.append(body)
        if line.startswith(KUBE_PROXY_TAG):
            if body.startswith(":"):
                chains.add((table, body[1:].split()[0]))
            elif body.startswith("-A "):
                rules += 1
        elif body.startswith(":KUBE-"):
            kept.add((table, body[1:].split()[0]))
    return Fixture("\n".join(seed) + "\n", frozenset(chains), frozenset(kept), rules, tuple(tables))


def chains_of(dump: str) -> set[tuple[str, str]]:
    table, found = "", set()
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            found.add((table, line[1:].split()[0]))
    return found


_COUNTS = re.compile(r"backend=(\S+) family=(\S+) chains_removed=(\d+) rules_removed=(\d+)")


def run_kube_proxy_cleanup(state: LabState, program: Program, step: Step) -> None:
    """Load kube-proxy-style rules into both iptables backends and families, run the cleanup twice."""
    fixtures = {family: load_fixture(family) for family in FAMILIES}

    def one(host: Host) -> HostResult:
        out: dict[str, Any] = {"problems": []}
        for family, cmd in FAMILIES.items():
            for backend in BACKENDS:
                loaded = ssh_run(state, host, f"{cmd}-{backend}-restore", stdin=fixtures[family].seed)
                if loaded.returncode:
                    out["problems"].append(f"loading {backend}/{family} failed: {loaded.stderr.strip()}")
        first = program.run(state, host, "kube-proxy-cleanup")
        second = program.run(state, host, "kube-proxy-cleanup")
        out.update(
            exit=max(first.returncode, second.returncode),
            stdout=first.stdout.strip().splitlines(),
            stdoutSecondRun=second.stdout.strip().splitlines(),
            stderr=(first.stderr + second.stderr).strip(),
        )
        counts = {(m[1], m[2]): (int(m[3]), int(m[4])) for m in _COUNTS.finditer(first.stdout)}
        again = {(m[1], m[2]): (int(m[3]), int(m[4])) for m in _COUNTS.finditer(second.stdout)}
        remaining: dict[str, list[str]] = {}
        for family, cmd in FAMILIES.items():
            fixture = fixtures[family]
            for backend in BACKENDS:
                key = f"{backend}/{family}"
                want = (len(fixture.chains), fixture.rules)
                if counts.get((backend, family)) != want:
                    out["problems"].append(f"{key}: removed {counts.get((backend, family))}, expected {want}")
                if again.get((backend, family)) != (0, 0):
                    out["problems"].append(f"{key}: second run removed {again.get((backend, family))}")
                dump = ssh_run(state, host, f"{cmd}-{backend}-save").stdout
                chains = chains_of(dump)
                left = sorted(f"{t}/{c}" for t, c in fixture.chains & chains)
                if left:
                    remaining[key] = left
                    out["problems"].append(f"{key}: kube-proxy chains left: {', '.join(left[:5])}")
                lost = sorted(f"{t}/{c}" for t, c in fixture.kept_kube_chains - chains)
                if lost:
                    out["problems"].append(f"{key}: chains that must stay are gone: {', '.join(lost)}")
                # Leave the host as it booted: no fixture tables' rules or chains.
                reset = "; ".join(f"{cmd}-{backend} -t {t} -F && {cmd}-{backend} -t {t} -X" for t in fixture.tables)
                ssh_run(state, host, reset)
        out["kubeProxyChainsLeft"] = remaining
        return out

    on_every_host(state, step, one, lambda r: [*r["problems"], *failed_exit(r)])


# Everything the program may leave on a host, checked after destroy (or after the direct steps).
CLEAN_CHECK = r"""
set -u
bad=()
for unit in k3s.service k3s-agent.service; do
  systemctl cat "$unit" >/dev/null 2>&1 && bad+=("unit $unit exists")
done
for path in /usr/local/bin/k3s /usr/local/bin/k3s-uninstall.sh /usr/local/bin/k3s-agent-uninstall.sh \
  /etc/rancher /var/lib/rancher /var/lib/k3s-cilium /sys/fs/bpf/cilium /sys/fs/bpf/tc/globals \
  /var/run/cilium /etc/cni/net.d/05-cilium.conflist; do
  [ -e "$path" ] && bad+=("$path exists")
done
links=$(ip -o link show | awk -F': ' '{print $2}' | grep -E '^(cilium_|lxc)' | tr '\n' ' ')
[ -n "$links" ] && bad+=("Cilium links: $links")
for cmd in iptables-legacy-save iptables-nft-save ip6tables-legacy-save ip6tables-nft-save; do
  chains=$($cmd 2>/dev/null | grep -oE '^:(KUBE-(SVC|SEP|SERVICES|NODEPORTS|EXT|FW|SVL)[^ ]*|CILIUM_[^ ]*)' |
    tr '\n' ' ')
  [ -n "$chains" ] && bad+=("$cmd: $chains")
done
printf '%s\n' "${bad[@]}"
"""


def run_host_clean(state: LabState, step: Step, before: dict[str, dict[str, str]]) -> None:
    def one(host: Host) -> HostResult:
        result = ssh_run(state, host, "bash -s", stdin=CLEAN_CHECK)
        leftovers = [line for line in result.stdout.splitlines() if line.strip()]
        if result.returncode:
            leftovers.append(f"check failed (exit {result.returncode}): {result.stderr.strip()}")
        if host.name in before:
            leftovers += [
                f"tuning {key}: {change['before']} -> {change['after']}"
                for key, change in tuning_differences(before[host.name], snapshot(state, host)).items()
            ]
        return {"leftovers": leftovers}

    results = in_parallel(state.hosts, one)
    step.details["hosts"] = results
    problems = [f"{name}: {item}" for name, r in results.items() for item in r["leftovers"]]
    step.exit_status = 1 if problems else 0
    if problems:
        raise StepFailed("; ".join(problems))
