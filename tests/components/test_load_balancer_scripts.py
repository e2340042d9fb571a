"""The LoadBalancer scripts run for real against a fake kubectl, their output judged by the real assertion CLI."""

from __future__ import annotations

from pathlib import Path

from components.scripts import render
from stacks.checks import planned_checks
from stacks.config import parse
from stacks.features import resolve
from tests.components.test_verify_scripts import FIXTURES, assert_cli
from tests.shell import executable, lint, run_script

# Answers `get <object> -o jsonpath=...` with nothing until the READY_AFTER-th call, then with
# FAKE_READY; `get <object> -o json` with the file FAKE_JSON; `get crd <name>` fails until the
# CRD_AFTER-th call; `wait` succeeds. Every call is logged to FAKE_LOG.
FAKE_KUBECTL = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
count() { local n=$(( $(cat "$FAKE_STATE/$1" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$FAKE_STATE/$1"; echo "$n"; }
case " $* " in
  *" -o jsonpath="*) (( $(count ready) >= ${READY_AFTER:-1} )) && printf '%s' "${FAKE_READY:-}"; exit 0 ;;
  *" -o json "*) cat "$FAKE_JSON" ;;
  *" get crd "*) (( $(count crd) >= ${CRD_AFTER:-1} )) ;;
  *" wait "*) exit 0 ;;
  *) echo "fake kubectl: unexpected $*" >&2; exit 9 ;;
esac
"""

STACK = {
    "nodes": [
        {"name": "server-1", "host": "10.0.0.10", "role": "server"},
        {"name": "agent-1", "host": "10.0.0.11", "role": "agent"},
    ],
    # Addresses of the fixtures in tests/verification/fixtures/lb (service_lb_smoke_*.json).
    "loadBalancer": {
        "mode": "l2",
        "pools": [{"name": "lan", "blocks": ["10.0.10.0/24"]}],
        "l2": {"interfaces": ["^eth0$"]},
    },
}


def fake(tmp_path: Path, **env: str) -> dict[str, str]:
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "state").mkdir(exist_ok=True)
    kubectl = executable(tmp_path / "bin" / "kubectl", FAKE_KUBECTL)
    return {"KUBECTL": str(kubectl), "FAKE_LOG": str(tmp_path / "log"), "FAKE_STATE": str(tmp_path / "state"), **env}


def address_check() -> object:
    cfg = parse(STACK)
    return next(c for c in planned_checks(cfg, resolve(cfg)) if c.check == "loadbalancer-address")


def test_the_scripts_pass_lint(tmp_path):
    lint(render("verify-object", {}), tmp_path, "verify-object.sh")
    lint(render("loadbalancer-crds", {}), tmp_path, "loadbalancer-crds.sh")


def test_the_address_is_collected_once_assigned_and_passes_the_planned_check(tmp_path):
    check = address_check()
    env = fake(tmp_path, READY_AFTER="3", FAKE_READY="10.0.10.254",
               FAKE_JSON=str(FIXTURES / "lb" / "service_lb_smoke_satisfied.json"))
    params = {"NAMESPACE": "k3s-cilium-verify", "OBJECT": "service/smoke-lb",
              "READY_JSONPATH": "{.status.loadBalancer.ingress[*].ip}", "WAIT_SECONDS": 30}
    collected = run_script(tmp_path, "verify-object", params, {**env, "KUBECTL": env["KUBECTL"]})
    assert collected.returncode == 0, collected.stderr
    log = Path(env["FAKE_LOG"]).read_text().splitlines()
    assert sum("jsonpath=" in line for line in log) == 3
    verdict = assert_cli(check, collected.stdout)  # type: ignore[arg-type]
    assert verdict.returncode == 0, verdict.stderr


def test_an_address_never_assigned_is_still_printed_and_the_check_says_why(tmp_path):
    env = fake(tmp_path, READY_AFTER="1000", FAKE_JSON=str(FIXTURES / "lb" / "service_lb_smoke_already_allocated.json"))
    params = {"NAMESPACE": "k3s-cilium-verify", "OBJECT": "service/smoke-lb",
              "READY_JSONPATH": "{.status.loadBalancer.ingress[*].ip}", "WAIT_SECONDS": 1}
    collected = run_script(tmp_path, "verify-object", params, env)
    assert collected.returncode == 0, collected.stderr
    verdict = assert_cli(address_check(), collected.stdout)  # type: ignore[arg-type]
    assert verdict.returncode == 1
    assert "already_allocated" in verdict.stderr
    assert verdict.stderr.startswith("node cluster: check loadbalancer-address:")


def test_the_objects_wait_until_their_crds_are_registered(tmp_path):
    env = fake(tmp_path, CRD_AFTER="3")
    crds = "ciliumloadbalancerippools.cilium.io ciliuml2announcementpolicies.cilium.io"
    waited = run_script(tmp_path, "loadbalancer-crds", {"CRD_NAMES": crds, "TIMEOUT_SECONDS": 30}, env)
    assert waited.returncode == 0, waited.stderr
    log = Path(env["FAKE_LOG"]).read_text()
    assert "wait --for condition=established" in log and "crd/ciliuml2announcementpolicies.cilium.io" in log


def test_a_crd_never_registered_fails_naming_it_and_where_to_look(tmp_path):
    env = fake(tmp_path, CRD_AFTER="1000")
    crds = "ciliumbgpclusterconfigs.cilium.io"
    waited = run_script(tmp_path, "loadbalancer-crds", {"CRD_NAMES": crds, "TIMEOUT_SECONDS": 2}, env)
    assert waited.returncode == 1
    assert "CRD ciliumbgpclusterconfigs.cilium.io not registered within 2s" in waited.stderr
    assert "cilium-operator" in waited.stderr
