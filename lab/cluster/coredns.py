"""CoreDNS, as K3s deploys it by default (its bundled ``coredns`` manifest; the program leaves ``coredns`` out of
``k3s.disable`` unless a stack names it): the cluster's DNS at the address kubelet gives every pod
(cluster.CLUSTER_DNS). What the lab deploys is K3s' manifest cut to what the namespace cluster needs:
the same objects and names (ServiceAccount, ClusterRole ``system:coredns``, ConfigMap, Deployment ``coredns``,
Service ``kube-dns``), a Corefile without ``forward`` (nothing is reachable upstream here) and without
K3s' NodeHosts and custom imports. CoreDNS itself is built here (lab/datapath/build.sh build coredns).

Hubble Relay needs it: it finds the agents through the ``hubble-peer`` Service by name
(``hubble-peer.kube-system.svc.cluster.local``).
"""

from __future__ import annotations

from typing import Any

# The version K3s v1.33 ships (lab/datapath/build.sh COREDNS_VERSION).
IMAGE = "lab.local/coredns/coredns:v1.12.2"
NAMESPACE = "kube-system"
NAME = "coredns"
SERVICE = "kube-dns"
LABELS = {"k8s-app": "kube-dns"}
COREFILE = """.:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
    loadbalance
}
"""


def manifests(cluster_dns: str) -> list[dict[str, Any]]:
    """The objects, for ``kubectl apply``."""
    meta = {"namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME, **meta}, "data": {"Corefile": COREFILE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, **meta, "labels": {**LABELS, "kubernetes.io/name": "CoreDNS"}},
            "spec": {
                "revisionHistoryLimit": 0,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "selector": {"matchLabels": LABELS},
                "template": {
                    "metadata": {"labels": LABELS},
                    "spec": {
                        "priorityClassName": "system-cluster-critical",
                        "serviceAccountName": NAME,
                        "tolerations": [
                            {"key": "CriticalAddonsOnly", "operator": "Exists"},
                            {
                                "key": "node-role.kubernetes.io/control-plane",
                                "operator": "Exists",
                                "effect": "NoSchedule",
                            },
                        ],
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "containers": [
                            {
                                "name": NAME,
                                "image": IMAGE,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "volumeMounts": [
                                    {"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}
                                ],
                                "ports": [
                                    {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                    {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                                ],
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["all"]},
                                    "readOnlyRootFilesystem": True,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                                    "initialDelaySeconds": 60,
                                    "periodSeconds": 10,
                                    "timeoutSeconds": 1,
                                    "successThreshold": 1,
                                    "failureThreshold": 3,
                                },
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"},
                                    "periodSeconds": 2,
                                    "timeoutSeconds": 1,
                                    "successThreshold": 1,
                                    "failureThreshold": 3,
                                },
                            }
                        ],
                        "dnsPolicy": "Default",
                        "volumes": [
                            {
                                "name": "config-volume",
                                "configMap": {"name": NAME, "items": [{"key": "Corefile", "path": "Corefile"}]},
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, **meta, "labels": {**LABELS, "kubernetes.io/name": "CoreDNS"}},
            "spec": {
                "selector": LABELS,
                "clusterIP": cluster_dns,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
    ]
