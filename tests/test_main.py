"""The whole program (`__main__.py`) under Pulumi's mock engine, stack by stack."""

from __future__ import annotations

import re
from typing import Any

import pulumi
import pytest

from tests.main_program import COMMAND, RELEASE, run_stack, stack_config, with_changes
from tests.mocks import FAKE_TOKEN, Recorded, depends_transitively


@pytest.fixture(scope="module")
def dev() -> Recorded:
    return run_stack(stack_config())


def test_dev_stack_builds_every_component(dev):
    components = {r.type for r in dev.resources if not r.custom}
    assert {
        "k3s-cilium:index:K3sCluster",
        "k3s-cilium:index:CiliumRelease",
        "k3s-cilium:index:KubeProxyRemoval",
        "k3s-cilium:index:HostTuning",
    } <= components
    assert len(dev.of_type(RELEASE)) == 1
    assert dev.exports["tier"] == "kpr"
    assert dev.exports["features"] == ["nativeRouting", "kubeProxyReplacement"]


def test_order_is_cluster_then_cilium_then_kube_proxy_removal(dev):
    release = dev.of_type(RELEASE)[0]
    first_install = dev.named("k3s-server-server-1")
    assert depends_transitively(dev, release, first_install)
    for agent in ("agent-1", "agent-2"):
        assert depends_transitively(dev, release, dev.named(f"k3s-agent-{agent}"))
    cleanups = dev.matching(r"^kube-proxy-cleanup-")
    assert {c.name for c in cleanups} == {
        "kube-proxy-cleanup-server-1",
        "kube-proxy-cleanup-agent-1",
        "kube-proxy-cleanup-agent-2",
    }
    for cleanup in cleanups:
        assert depends_transitively(dev, cleanup, release)


def test_hosts_are_tuned_once_every_preflight_passed_not_after_the_install():
    """A failed K3s install must find the tuning in the state, so that destroy reverts it."""
    rec = run_stack(with_changes(features={"hostTuning": True}))
    passed = rec.named("k3s-preflight-passed")
    for node in ("server-1", "agent-1", "agent-2"):
        tuning = rec.named(f"host-tuning-{node}")
        assert depends_transitively(rec, tuning, passed)
        installs = [r for r in rec.matching(r"^k3s-(server|agent)-") if r.type == COMMAND]
        assert not any(depends_transitively(rec, tuning, install) for install in installs), node


def test_no_plaintext_secret_reaches_any_input_or_export(dev):
    needles = ("fake-key-material-9f3a1c", FAKE_TOKEN, "client-key-data")
    for resource in dev.resources:
        for path, text in resource.plain_strings():
            for needle in needles:
                assert needle not in text, f"{resource.name}.{path} holds a secret in plaintext"
    assert dev.is_secret_output("kubeconfig") or "kubeconfig" in dev.secret_exports


CONFIGURED_TOKEN = "K10configured-token-c0ffee::server:swordfish-77"
KEY_PASSWORD = "key-passphrase-7d1e"


def test_configured_token_travels_only_as_secret_stdin():
    rec = run_stack(stack_config(), token=CONFIGURED_TOKEN)
    carriers = [r for r in rec.of_type(COMMAND) if CONFIGURED_TOKEN in str(r.inputs.get("stdin", ""))]
    assert {r.name for r in carriers} >= {"k3s-server-server-1", "k3s-agent-agent-1", "k3s-agent-agent-2"}
    for resource in carriers:
        assert resource.is_secret("stdin")
    for resource in rec.resources:
        for path, text in resource.plain_strings():
            assert CONFIGURED_TOKEN not in text, f"{resource.name}.{path}"
    assert not rec.matching(r"^k3s-token-"), "a configured token must not be read back from the server"


def test_invalid_config_fails_before_any_resource_is_registered():
    bad = with_changes(tier="turbo")
    bad["k3s-cilium:nodes"] = [{"name": "a", "host": "10.0.0.1;reboot", "role": "agent"}]
    with pytest.raises(pulumi.RunError) as caught:
        run_stack(bad)
    message = str(caught.value)
    assert "k3s-cilium:tier: 'turbo'" in message and "k3s-cilium:nodes[0].host" in message
    assert "at least one node needs role 'server'" in message


def test_invalid_config_registers_nothing():
    errors: list[str] = []

    def run() -> None:
        for changes in (
            {"features": {"netkit": True}, "cilium": {"version": "1.15.19"}},
            {"k3s": {"serviceCidr": "10.43.0.0/29"}},
        ):
            with pytest.raises(pulumi.RunError) as caught:
                run_stack(with_changes(**changes))
            errors.append(str(caught.value))

    assert registered_names(run) == []
    assert "features.netkit: needs Cilium >= 1.16" in errors[0]
    assert "k3s-cilium:k3s.serviceCidr: 10.43.0.0/29 is too small" in errors[1]


def test_a_misspelt_key_is_refused_as_the_offline_plan_refuses_it():
    """The program reads the whole stack config, not only the keys it knows."""
    misspelt = with_changes(featurs={"dsr": True})
    with pytest.raises(pulumi.RunError) as caught:
        run_stack(misspelt)
    assert "k3s-cilium:featurs: unknown config key; allowed: tier, nodes" in str(caught.value)
    # ...the same words as `python -m stacks plan`, and nothing registered before it.
    def run() -> None:
        with pytest.raises(pulumi.RunError):
            run_stack(misspelt)

    assert registered_names(run) == []
    # Keys of other namespaces and the secrets are no concern of it.
    run_stack({**stack_config(), "kubernetes:context": "x", "other:thing": "y"})


def test_every_script_with_a_secret_stdout_prints_it_last(dev):
    """pulumi-command's error after a failure holds the whole output whatever `logging` says: a script
    whose stdout is a secret prints it as its very last act, when nothing can fail after it."""
    secret = [r for r in dev.of_type(COMMAND) if "stdout" in (r.options.get("additional_secret_outputs") or [])]
    assert {r.name for r in secret} == {"k3s-kubeconfig-server-1", "k3s-token-server-1"}
    for command in secret:
        assert command.inputs["logging"] == "none", command.name
        script = command.script().replace("\\\n", " ")  # continued lines as one
        lines = [line.strip() for line in script.splitlines() if line.strip()]
        assert re.fullmatch(r'cat -- "\$[A-Z_]+"', lines[-1]), (command.name, lines[-1])
        printing = [line for line in lines[:-1] if re.search(r"\b(cat|echo|printf)\b", line) and ">&2" not in line]
        assert all("<<" in line or ">" in line for line in printing), (command.name, printing)


def test_same_config_twice_is_identical():
    assert run_stack(stack_config()).snapshot() == run_stack(stack_config()).snapshot()


def test_every_check_runs_after_cilium_and_the_kube_proxy_cleanup(dev):
    release = dev.of_type(RELEASE)[0]
    cleanups = dev.matching(r"^kube-proxy-cleanup-")
    # The rollout's own checks of each node (k3s-node-checks-assert-<node>) come before the release, which waits
    # for the last of them.
    rollout_checks = dev.matching(r"^k3s-node-checks-assert-")
    assert len(rollout_checks) == 3
    assert all(depends_transitively(dev, release, check) for check in rollout_checks)
    assertions = [r for r in dev.resources if r.type == "command:local:Command" and r.name.startswith("verify-")]
    assert {a.name for a in assertions} >= {
        f"verify-{check}-assert-{node}"
        for check in ("agent-status", "no-kube-proxy-rules", "service-list", "probes")
        for node in ("server-1", "agent-1", "agent-2")
    }
    for assertion in assertions:
        assert depends_transitively(dev, assertion, release), assertion.name
        for cleanup in cleanups:
            assert depends_transitively(dev, assertion, cleanup), (assertion.name, cleanup.name)


def test_verification_is_exported_per_node_and_check(dev):
    verification = dev.exports["verification"]
    assert set(verification["nodes"]) == {"server-1", "agent-1", "agent-2"}
    assert {"agent-status", "no-kube-proxy-rules"} <= set(verification["nodes"]["agent-1"])


@pytest.mark.parametrize("key", ["sshPrivateKey", "sshPrivateKeyPassword", "k3sToken"])
def test_a_secret_stored_in_plaintext_is_refused(key):
    from tests.main_program import ROOT, SECRETS, SSH_KEY
    from tests.mocks import run_program

    config = {
        **stack_config(),
        "k3s-cilium:sshPrivateKey": SSH_KEY,
        "k3s-cilium:sshPrivateKeyPassword": KEY_PASSWORD,
        "k3s-cilium:k3sToken": CONFIGURED_TOKEN,
    }
    encrypted = tuple(k for k in SECRETS if k != f"k3s-cilium:{key}")
    with pytest.raises(pulumi.RunError) as caught:
        run_program(
            lambda: __import__("runpy").run_path(str(ROOT / "__main__.py"), run_name="__main__"),
            config=config,
            secret_config=encrypted,
        )
    assert f"k3s-cilium:{key} is stored in plaintext" in str(caught.value)
    assert f"pulumi config set --secret {key}" in str(caught.value)


# --- issue 10: what the real engine, sshd and a year-old cluster would have shown -----------------


def registered_names(run: Any) -> list[str]:
    """Names of the resources registered while ``run()`` raised a RunError, and its message."""
    from tests import mocks

    registered: list[str] = []
    original = mocks.RecordingMonitor.RegisterResource

    def spy(self: Any, request: Any) -> Any:
        if request.type != "pulumi:pulumi:Stack":
            registered.append(request.name)
        return original(self, request)

    mocks.RecordingMonitor.RegisterResource = spy  # type: ignore[method-assign]
    try:
        run()
    finally:
        mocks.RecordingMonitor.RegisterResource = original  # type: ignore[method-assign]
    return registered


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"nodes": []}, "k3s-cilium:nodes: at least one node needs role 'server'"),
        (
            {"ssh": {"bastion": {"host": "bastion.example.com", "hostKey": "ssh-rsa AAAAB3NzaC1yc2E"}}},
            "k3s-cilium:ssh.bastion.hostKey: 'ssh-rsa AAAAB3NzaC1yc2E' is an ssh-rsa key, which cannot be pinned",
        ),
    ],
    ids=["empty-node-list", "rsa-host-key"],
)
def test_refused_with_the_key_before_any_resource(changes, expected):
    caught: list[str] = []

    def run() -> None:
        with pytest.raises(pulumi.RunError) as error:
            run_stack(with_changes(**changes))
        caught.append(str(error.value))

    assert registered_names(run) == []
    assert expected in caught[0]


def test_key_passphrase_reaches_every_connection_only_as_secret():
    bastion = {"bastion": {"host": "bastion.example.com"}}
    rec = run_stack(with_changes(ssh=bastion), key_password=KEY_PASSWORD)
    commands = rec.of_type(COMMAND)
    assert commands
    for command in commands:
        assert command.inputs["connection"]["privateKeyPassword"] == KEY_PASSWORD, command.name
        assert command.inputs["connection"]["proxy"]["privateKeyPassword"] == KEY_PASSWORD, command.name
        assert command.is_secret("connection.privateKeyPassword") and command.is_secret(
            "connection.proxy.privateKeyPassword"
        )
        for path, text in command.plain_strings():
            assert KEY_PASSWORD not in text, f"{command.name}.{path}"


def test_no_passphrase_configured_sends_none(dev):
    for command in dev.of_type(COMMAND):
        assert "privateKeyPassword" not in command.inputs["connection"], command.name


def test_no_command_asks_sshd_to_accept_its_previous_output():
    """sshd's default AcceptEnv refuses PULUMI_COMMAND_STDOUT with a warning on every update and delete."""
    everything = with_changes(
        tier="extreme", verify={"smoke": True, "connectivityTest": True, "benchmark": True}
    )
    everything["k3s-cilium:cilium"] = {"version": "1.19.6", "nativeRoutingCidr": "10.42.0.0/16"}
    rec = run_stack(everything)
    commands = [r for r in rec.resources if r.type.startswith("command:") and "create" in r.inputs]
    assert {c.name.split("-")[0] for c in commands} >= {"k3s", "cilium", "kube", "host", "verify"}
    for command in commands:
        assert command.inputs.get("addPreviousOutputInEnv") is False, command.name


def test_kubeconfig_expiry_is_exported(dev):
    from tests.mocks import FAKE_CERTIFICATE_EXPIRY

    assert dev.exports["kubeconfigExpires"] == FAKE_CERTIFICATE_EXPIRY.isoformat()
    assert "kubeconfigExpires" not in dev.secret_exports
    assert not [w for w in dev.warnings if "client certificate" in w]


def test_kubeconfig_near_expiry_warns_with_the_renewal_command():
    import datetime as dt

    from tests.certs import kubeconfig_with
    from tests.mocks import DEFAULT_COMMAND_STDOUT, ProgramMocks

    expiring = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=12, hours=1)
    mocks = ProgramMocks(command_stdout=((r"-kubeconfig-", kubeconfig_with(expiring)), *DEFAULT_COMMAND_STDOUT))
    rec = run_stack(stack_config(), mocks=mocks)
    assert rec.exports["kubeconfigExpires"] == expiring.isoformat()
    [warning] = [w for w in rec.warnings if "client certificate" in w]
    assert "expires in 12 days" in warning
    assert (
        "pulumi up --replace 'urn:pulumi:test::k3s-cilium::k3s-cilium:index:K3sCluster$command:remote:Command"
        "::k3s-kubeconfig-server-1'" in warning
    )
