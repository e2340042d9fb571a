#!/usr/bin/env bash
# One node of the namespace cluster: run by lab/cluster/node.py as
#   ip netns exec <node netns> unshare --mount --uts --ipc --pid --fork --mount-proc --propagation private \
#     bash node-init.sh
# so that every path Kubernetes, containerd, the CNI plugins and Cilium use on a host is this
# node's own: its directories are bound over /var/lib/kubelet, /etc/cni/net.d, ... and it gets a
# sysfs of its network namespace and a BPF file system of its own. Then it runs containerd and
# kubelet and waits; stopping this script's PID 1 (unshare's child) ends everything in the node.
#
# Environment: NODE_NAME, NODE_DIR (its files: root/, config, logs/), DATAPATH_BIN (the built
# binaries), IMAGES_DIR (OCI archives to import), CNI_PLUGINS (Debian's /usr/lib/cni), CGROUP_HIERARCHIES (the machine's cgroup v1
# mounts as `<options>:<directory>`, e.g. `cpu:cpu name=systemd:systemd`), API_FORWARD (api_forward.py)
# and API_SERVER (host:port it forwards 127.0.0.1:6444 to, as K3s' agent load balancer would).
set -euo pipefail

readonly NODE_PATHS=(/var/lib/kubelet /var/lib/containerd /run/containerd /etc/cni/net.d /opt/cni/bin
  /var/lib/cni /run/cilium /var/lib/cilium /var/log/pods /var/log/containers /etc/kubernetes
  /usr/local/bin /run/netns)

# As PID 1 of the node's PID namespace this shell gets only the signals it handles: stop on TERM.
trap 'kill -TERM $(jobs -p) 2>/dev/null; wait; exit 0' TERM
hostname "$NODE_NAME"
for path in "${NODE_PATHS[@]}"; do
  mkdir -p "$NODE_DIR/root$path" "$path"
  mount --bind "$NODE_DIR/root$path" "$path"
done

# `ip netns exec` mounted a sysfs of the node's network namespace over /sys, without the cgroup
# file systems below it: mount the machine's hierarchies again (the same cgroups, no cgroup
# namespace: the kubelet's cgroupRoot keeps the node's cgroups below the lab's own).
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
for hierarchy in $CGROUP_HIERARCHIES; do
  mkdir -p "/sys/fs/cgroup/${hierarchy#*:}"
  mount -t cgroup -o "${hierarchy%%:*}" cgroup "/sys/fs/cgroup/${hierarchy#*:}"
done
mkdir -p /sys/fs/cgroup/unified
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
mount -t bpf bpf /sys/fs/bpf
# Mounts the pods make (Cilium's bpf and cgroup2 file systems, Bidirectional) must reach the node.
mount --make-rshared /

cp "$CNI_PLUGINS/loopback" /opt/cni/bin/loopback
mkdir -p "$NODE_DIR/logs"

containerd --config "$NODE_DIR/containerd.toml" >>"$NODE_DIR/logs/containerd.log" 2>&1 &
for _ in $(seq 1 100); do
  [ -S /run/containerd/containerd.sock ] && break
  sleep 0.1
done
[ -S /run/containerd/containerd.sock ] || {
  echo "node-init: $NODE_NAME: containerd did not start (logs/containerd.log)" >&2
  exit 1
}
for image in "$IMAGES_DIR"/*.tar; do
  [ -e "$image" ] || continue
  ctr --namespace k8s.io images import --all-platforms "$image" >>"$NODE_DIR/logs/images.log" 2>&1
done

# The lab's stand-in for K3s' agent load balancer (the program's default k8sServiceHost/Port).
python3 "$API_FORWARD" 127.0.0.1:6444 "$API_SERVER" >>"$NODE_DIR/logs/api-forward.log" 2>&1 &

# The program reaches a node over SSH like a host. sshd wants its privilege separation directory.
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$NODE_DIR/sshd_config" >>"$NODE_DIR/logs/sshd.log" 2>&1 &

"$DATAPATH_BIN/kubelet" --config="$NODE_DIR/kubelet.yaml" --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" >>"$NODE_DIR/logs/kubelet.log" 2>&1 &

# The first child to exit ends the node: the others are stopped with it.
wait -n
echo "node-init: $NODE_NAME: a process exited; stopping the node" >&2
exit 1
