"""k3s-cilium: load and validate the stack config, build the components, export outputs."""

import gc
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pulumi
from pulumi.runtime import config as runtime_config
from pulumi.runtime.config import is_config_secret

from components import load_balancer
from components.cilium import CiliumRelease, CiliumReleaseArgs
from components.host_tuning import HostTuning, HostTuningArgs
from components.k3s import K3sCluster, K3sClusterArgs
from components.kube_proxy import KubeProxyRemoval, KubeProxyRemovalArgs
from components.load_balancer import LoadBalancingArgs
from components.verify import Verification, VerificationArgs
from stacks import airgap, encryption, gateway_api, preflight
from stacks.checks import planned_checks
from stacks.config import NAMESPACE, SECRET_KEYS, ConfigError, StackConfig, config_keys, parse
from stacks.features import Resolved, resolve


def load_config(config: pulumi.Config) -> tuple[StackConfig, Resolved]:
    """The validated stack config; every problem is reported before any resource exists."""
    raw: dict[str, object] = {
        key: config.get(key) if key == "tier" else config.get_object(key)
        for key in config_keys(StackConfig)
        if config.get(key) is not None
    }
    # Every key of the stack in our namespace, known or not: a misspelt one (`featurs`) is refused as
    # the offline plan refuses it, instead of deploying without the overrides it was meant to hold.
    stack_keys = {key.partition(":")[2] for key in runtime_config.CONFIG.get() if key.startswith(f"{NAMESPACE}:")}
    raw |= {key: None for key in stack_keys - raw.keys() - set(config_keys(StackConfig)) - set(SECRET_KEYS)}
    try:
        stack_config = parse(raw)
        features = resolve(stack_config)
        # The checks' fixed addresses and placement must fit the config too.
        planned_checks(stack_config, features)
        return stack_config, features
    except ConfigError as problem:
        raise pulumi.RunError(str(problem)) from None


def require_encrypted(config: pulumi.Config, stack_config: StackConfig) -> None:
    """A secret stored in plaintext in Pulumi.<stack>.yaml is an error, not a warning."""
    for key in SECRET_KEYS:
        if config.get(key) and not is_config_secret(config.full_key(key)):
            raise pulumi.RunError(
                f"{NAMESPACE}:{key} is stored in plaintext in the stack file: remove it and set it with "
                f"`pulumi config set --secret {key} ...`"
            )
    # A BGP password lives inside loadBalancer: the engine marks the key secret when any part of it is.
    bgp = stack_config.load_balancer.bgp
    with_password = [index for index, peer in enumerate(bgp.peers if bgp else []) if peer.password is not None]
    if with_password and not is_config_secret(config.full_key("loadBalancer")):
        raise pulumi.RunError(
            "\n".join(
                f"{NAMESPACE}:loadBalancer.bgp.peers[{index}].password is stored in plaintext in the stack file: "
                f"set it with `pulumi config set --secret --path 'loadBalancer.bgp.peers[{index}].password' ...`"
                for index in with_password
            )
        )


# Young-generation size once the program is built (Python's default is 700 allocations).
YOUNG_COLLECTION_THRESHOLD = 100_000


@contextmanager
def built_without_collecting() -> Iterator[None]:
    """What the program builds lives until it exits, so the garbage collector's passes free next to
    nothing while walking a heap that grows with the nodes: a third of a 200-node evaluation. It is
    off while the program builds; then the built heap is frozen (later passes skip it) and the
    collector runs again, less often, for what resolving the outputs allocates."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD)
        gc.enable()


# The exit status by which a Python program tells its language host that the error is already reported.
EXIT_ALREADY_REPORTED = 32


def stop_quietly_when_interrupted() -> None:
    """When a resource fails, the engine cancels the run and the language host interrupts the program
    with SIGINT (as on Ctrl-C). The failing resource has reported why; Python's KeyboardInterrupt
    traceback would only look like a crash of the program and bury that message."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_ALREADY_REPORTED)

    signal.signal(signal.SIGINT, stop)


stop_quietly_when_interrupted()
config = pulumi.Config(NAMESPACE)
stack_config, features = load_config(config)
require_encrypted(config, stack_config)
# Pulumi.yaml defaults k3sToken and sshPrivateKeyPassword to "" (optional keys need
# a default): empty means no token (the first server generates it) and no passphrase.
token = config.get_secret("k3sToken") if config.get("k3sToken") else None
key_password = config.get_secret("sshPrivateKeyPassword") if config.get("sshPrivateKeyPassword") else None
# Credentials for airgap.registries (secret YAML/JSON), checked before any resource without showing a value.
registry_credentials = airgap.checked_credentials(config.get("registryCredentials") or "", stack_config.airgap)
# The IPsec key (features.encryption ipsec), checked the same way; and the Gateway API CRD bundle, read and
# checked against its pinned digest, before any resource.
ipsec_key = config.get("ipsecKey") or None
problems = [f"{NAMESPACE}:{line}" for line in encryption.key_problems(stack_config.features.encryption, ipsec_key)]
try:
    gateway_api_crds = gateway_api.program_crds(
        "gatewayApi" in features,
        stack_config.gateway_api,
        stack_config.cilium.parsed_version,
        stack_config.k3s.version,
        stack_config.k3s.disable,
        Path(__file__).parent,
    )
except gateway_api.CrdBundleError as problem:
    problems.append(f"{NAMESPACE}:{problem}")
if problems:
    raise pulumi.RunError("\n".join(problems))

with built_without_collecting():
    cluster = K3sCluster(
        "k3s",
        K3sClusterArgs(
            config=stack_config,
            features=features,
            ssh_private_key=config.require_secret("sshPrivateKey"),
            token=token,
            ssh_private_key_password=key_password,
            registry_credentials=config.get_secret("registryCredentials") if registry_credentials else None,
        ),
    )
    nodes_ready = list(cluster.nodes_ready.values())
    host_tuning = HostTuning(
        "host-tuning",
        HostTuningArgs(
            cfg=stack_config, features=features, connections=cluster.connections, after=cluster.preflight_passed
        ),
    )
    cilium = CiliumRelease(
        "cilium",
        CiliumReleaseArgs(
            cfg=stack_config,
            features=features,
            kubeconfig=cluster.kubeconfig,
            connections=cluster.connections,
            depends_on=nodes_ready,
            nodes_ready=cluster.nodes_ready,
            ipsec_key=config.get_secret("ipsecKey") if ipsec_key else None,
            gateway_api_crds=gateway_api_crds,
            gateway_api_crds_check=gateway_api.crds_check_expect(
                "gatewayApi" in features,
                stack_config.gateway_api,
                stack_config.cilium.parsed_version,
                stack_config.k3s.version,
                stack_config.k3s.disable,
            ),
        ),
    )
    kube_proxy = KubeProxyRemoval(
        "kube-proxy",
        KubeProxyRemovalArgs(
            cfg=stack_config, features=features, connections=cluster.connections, depends_on=[cilium.restart]
        ),
    )
    # LoadBalancer Services (loadBalancer.mode): the pools and the L2 or BGP objects, after the release.
    load_balancing = load_balancer.load_balancing(
        "loadbalancer",
        LoadBalancingArgs(
            cfg=stack_config, provider=cilium.provider, connections=cluster.connections, depends_on=[cilium.release]
        ),
    )
    verification = Verification(
        "verify",
        VerificationArgs(
            cfg=stack_config,
            features=features,
            connections=cluster.connections,
            provider=cilium.provider,
            depends_on=[
                cilium.restart,
                *([kube_proxy.done] if kube_proxy.done else []),
                *(load_balancing.objects.values() if load_balancing else []),
            ],
            # A feature preflight left off on a node (its NIC cannot carry it) is not asserted there.
            node_skips={node: facts.apply(preflight.skipped_on_node) for node, facts in cluster.node_facts.items()},
        ),
    )

pulumi.export("tier", stack_config.tier)
pulumi.export("features", list(features.enabled))
pulumi.export("skippedFeatures", features.skipped)
pulumi.export(
    "nodeSkippedFeatures",
    cluster.node_info.apply(lambda info: {node: preflight.skip_reasons(facts) for node, facts in info.items()}),
)
pulumi.export("nodes", cluster.node_info)
pulumi.export("kubeconfig", cluster.kubeconfig)
# The etcd snapshot taken before the last K3s version change (README "Upgrades").
pulumi.export("k3sSnapshot", cluster.snapshot)
pulumi.export("kubeconfigExpires", cluster.kubeconfig_expires)
pulumi.export("ciliumRelease", cilium.release_status)
pulumi.export("kubeProxyCleanup", kube_proxy.summaries)
pulumi.export("hostTuning", host_tuning.summaries)
pulumi.export("loadBalancer", load_balancer.exported(stack_config, load_balancing))
pulumi.export("verification", verification.verification)
