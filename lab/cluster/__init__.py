"""The namespace cluster: upstream Kubernetes and Cilium, nodes as Linux namespaces on this machine (issue 22)."""
