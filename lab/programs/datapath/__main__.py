"""The lab's datapath program: the product's Cilium half on the namespace cluster (lab/cluster).

K3s cannot be had here, so there is no ``K3sCluster``: the cluster is upstream Kubernetes that
lab/cluster started. Everything after it is the product's own, built as ``__main__.py`` builds it:
``CiliumRelease``, ``KubeProxyRemoval``, ``LoadBalancing`` (when ``loadBalancer.mode`` is not
``none``) and ``Verification`` from the stack's ``k3s-cilium:*`` config, with the cluster's kubeconfig
(this project's secret ``kubeconfig``) and SSH connections (``components.remote.connection``, the
host keys pinned in the stack) in place of what ``K3sCluster`` gives. One check is left out, and the
report says so: ``kpr-integrity`` reads K3s' own process and config files, and no K3s runs here.
"""

import pulumi

from components import load_balancer
from components.cilium import CiliumRelease, CiliumReleaseArgs
from components.kube_proxy import KubeProxyRemoval, KubeProxyRemovalArgs
from components.load_balancer import LoadBalancingArgs
from components.remote import connection
from components.verify import Verification, VerificationArgs
from stacks.checks import planned_checks
from stacks.config import NAMESPACE, ConfigError, StackConfig, config_keys, parse
from stacks.features import resolve

# Checks about K3s itself, which does not run in the lab.
K3S_CHECKS = ("kpr-integrity",)

config = pulumi.Config(NAMESPACE)
raw = {key: config.get(key) if key == "tier" else config.get_object(key) for key in config_keys(StackConfig)}
try:
    stack_config = parse({key: value for key, value in raw.items() if value is not None})
    features = resolve(stack_config)
    planned_checks(stack_config, features)
except ConfigError as problem:
    raise pulumi.RunError(str(problem)) from None

private_key = config.require_secret("sshPrivateKey")
connections = {node.name: connection(stack_config, node, private_key) for node in stack_config.nodes}

cilium = CiliumRelease(
    "cilium",
    CiliumReleaseArgs(
        cfg=stack_config,
        features=features,
        kubeconfig=pulumi.Config().require_secret("kubeconfig"),
        connections=connections,
    ),
)
kube_proxy = KubeProxyRemoval(
    "kube-proxy",
    KubeProxyRemovalArgs(cfg=stack_config, features=features, connections=connections, depends_on=[cilium.restart]),
)
# LoadBalancer Services (loadBalancer.mode): the pools and the L2 or BGP objects, after the release.
load_balancing = load_balancer.load_balancing(
    "loadbalancer",
    LoadBalancingArgs(
        cfg=stack_config, provider=cilium.provider, connections=connections, depends_on=[cilium.release]
    ),
)
verification = Verification(
    "verify",
    VerificationArgs(
        cfg=stack_config,
        features=features,
        connections=connections,
        provider=cilium.provider,
        depends_on=[
            cilium.restart,
            *([kube_proxy.done] if kube_proxy.done else []),
            *(load_balancing.objects.values() if load_balancing else []),
        ],
        omit_checks=K3S_CHECKS,
    ),
)

pulumi.export("tier", stack_config.tier)
pulumi.export("features", list(features.enabled))
pulumi.export("skippedFeatures", features.skipped)
pulumi.export("ciliumRelease", cilium.release_status)
pulumi.export("kubeProxyCleanup", kube_proxy.summaries)
pulumi.export("loadBalancer", load_balancer.exported(stack_config, load_balancing))
pulumi.export("verification", verification.verification)
pulumi.export("omittedChecks", list(K3S_CHECKS))
