"""Host tuning for the ``extreme`` tier (feature ``hostTuning``), reverted when it is turned off.

One remote command per node runs ``components/scripts/host-tuning.sh``: a tuned
network profile, the CPU governor ``performance``, irqbalance stopped and the
IRQs of the node's physical NICs spread round-robin over its CPUs. The script
saves the host's previous state under ``STATE_DIR`` on the node, once, and the
command's ``delete`` runs ``host-tuning-revert.sh``, which restores it; both
are idempotent. So turning the feature off (or leaving ``extreme``) deletes the
commands and puts each host back as it was.

Changing the profile only updates the command (its ``update`` re-runs the
tuning, the saved original state stays); a node moved to another host (its
address is the trigger) is a replacement that deletes before it creates, so
the old host is reverted before the new one is tuned, never after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pulumi
from pulumi_command import remote

from components.remote import host_identity, node_command, script, stdout_by_node
from stacks.config import StackConfig
from stacks.features import Resolved

# network-latency by default: the tiers that turn host tuning on are about
# per-packet cost (eBPF host routing, XDP, BIG TCP, netkit), network-latency
# keeps CPUs out of deep C-states and includes latency-performance (the
# "performance" governor); network-throughput only raises socket buffer sizes,
# which BIG TCP and BBR address in the datapath already.
TunedProfile = Literal["network-latency", "network-throughput"]
DEFAULT_TUNED_PROFILE: TunedProfile = "network-latency"
STATE_DIR = "/var/lib/k3s-cilium/host-tuning"


@dataclass(frozen=True)
class HostTuningArgs:
    cfg: StackConfig
    features: Resolved
    # SSH connection per node name (K3sCluster.connections).
    connections: Mapping[str, remote.ConnectionArgs]
    # What every node's tuning waits for (K3sCluster.preflight_passed): the host is tuned as soon as
    # every preflight passed, beside the K3s install, so that a failed install leaves a tuning the
    # state knows about (destroy reverts it). One dependency, not one per node.
    after: pulumi.Resource | None = None
    tuned_profile: TunedProfile = DEFAULT_TUNED_PROFILE


class HostTuning(pulumi.ComponentResource):
    """Per-node host tuning when feature ``hostTuning`` is on; no children otherwise."""

    enabled: bool
    # Node name -> the tuning script's summary line ("tuned=... governor=... irqs=N irqbalance=...").
    summaries: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: HostTuningArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("k3s-cilium:index:HostTuning", name, None, opts)
        cfg = args.cfg
        self.enabled = "hostTuning" in args.features

        commands: dict[str, remote.Command] = {}
        if self.enabled:
            for node in cfg.nodes:
                apply = script("host-tuning", {"TUNED_PROFILE": args.tuned_profile, "STATE_DIR": STATE_DIR})
                # The revert is a delete, so a replacement reverts first (node_command); a node moved
                # to another host (its trigger) is reverted on the old host before the new one is tuned.
                commands[node.name] = node_command(
                    f"{name}-{node.name}",
                    args.connections[node.name],
                    self,
                    user=cfg.ssh_user(node),
                    create=apply,
                    update=apply,
                    delete=script("host-tuning-revert", {"STATE_DIR": STATE_DIR}),
                    triggers=host_identity(cfg, node),
                    depends_on=[args.after] if args.after is not None else [],
                )
        self.summaries = stdout_by_node(commands)

        self.register_outputs({"summaries": self.summaries})
