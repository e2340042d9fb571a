"""Transparent encryption on a node: what the agent's ``cilium-dbg encrypt status`` says.

One check on the machinery of :mod:`verification.expectations` (it joins its
``CHECKS`` when this module is imported):

- ``encryption-status``: ``cilium-dbg encrypt status`` in the node's agent pod
  (``cilium encrypt status`` in the 1.13 and 1.14 images, whose CLI was not yet
  renamed); the ``Encryption:`` line of ``cilium-dbg status`` is read too.

The formats, from Cilium's printers (``printEncryptionStatus`` in
``cilium-dbg/cmd/encrypt_status.go``, ``cilium/cmd/`` before 1.15; the status
line in ``pkg/client/client.go``), read at the tags v1.13.18 to v1.20.0:

- ``Encryption: %-26s`` with the mode ``Disabled``, ``IPsec`` or ``Wireguard``
  (``Ztunnel`` from 1.19), padded with blanks;
- IPsec: ``Decryption interface(s): a, b``, ``Keys in use: %-26d``,
  ``Max Seq. Number: 0x<n>/0xffffffff`` (``/0xffffffffffffffff`` from 1.18;
  ``N/A`` before any packet), ``Errors: %-26d`` and, when non-zero, one
  ``\\t<XfrmCounter>: %-26d`` line per counter of ``/proc/net/xfrm_stat``;
- WireGuard: ``Interface: cilium_wg0``, ``\\tPublic key: <base64>``,
  ``\\tNumber of peers: <n>``;
- from 1.19.6 (and 1.20) a first line ``Msg: <text>`` when the agent did not
  answer or its WireGuard state differs from the kernel's, and the IPsec and
  WireGuard sections print whenever the kernel has that state;
- ``cilium-dbg status``: ``Encryption:`` then the mode, then (WireGuard)
  ``[cilium_wg0 (Pubkey: <key>, Port: 51871, Peers: <n>)]`` on 1.13 and
  ``[NodeEncryption: Enabled|Disabled|OptedOut, cilium_wg0 (...)]`` from 1.14,
  or the agent's message instead of the bracket.

What the output does not show is ``None``, never guessed. The XFRM error
explanations are those of docs.cilium.io security/network/encryption-ipsec,
"Troubleshooting" (the table of known explanations).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from verification.expectations import (
    CHECKS,
    Check,
    Expectations,
    JsonValue,
    KeySpec,
    Problem,
    Verdict,
    _int,
    _is_int,
    _one_of,
    _str,
)

MODES = {"disabled": "Disabled", "ipsec": "IPsec", "wireguard": "Wireguard"}
WIREGUARD_INTERFACE = "cilium_wg0"

_QUOTED_CHARS = 300
_LABEL = re.compile(r"^\s*(?P<label>[A-Za-z][A-Za-z .()]*?)\s*:\s?(?P<value>.*?)\s*$")
_COUNTER = re.compile(r"^\s*(?P<name>Xfrm[A-Za-z]+)\s*:\s*(?P<count>\d+)\s*$")
_SEQ = re.compile(r"^0[xX](?P<seq>[0-9a-fA-F]+)/0[xX](?P<limit>[0-9a-fA-F]+)$")
_STATUS_WG = re.compile(r"(?P<name>[\w.-]+) \(Pubkey: (?P<key>[^,]*), Port: (?P<port>\d+), Peers: (?P<peers>\d+)\)")
_NODE_ENCRYPTION = re.compile(r"NodeEncryption: (?P<state>\w+)")

# docs.cilium.io security/network/encryption-ipsec, "Troubleshooting": what each counter means and what to do.
XFRM_EXPLANATIONS: dict[str, tuple[str, str]] = {
    "XfrmInError": (
        "the kernel decrypted a packet for a pod that was deleted, or failed to allocate memory",
        "expected in small numbers while pods are deleted; if it keeps rising, check the node's memory",
    ),
    "XfrmInNoStates": (
        "no XFRM state to decrypt with (expected briefly while a rebooted node's key is deployed, "
        "or after a key rotation whose old key was removed too early)",
        "run the check again after a minute; if the counter keeps rising, rotate the IPsec key "
        "(docs: encryption-ipsec, 'Key Rotation'), which replaces stale XFRM states",
    ),
    "XfrmInStateProtoError": (
        "a key or anti-replay sequence mismatch between nodes (a key changed without incrementing its key id)",
        "rotate the IPsec key properly: a new ipsecKey whose key id is one higher (docs: encryption-ipsec, "
        "'Key Rotation')",
    ),
    "XfrmInStateInvalid": (
        "a packet matched an XFRM state that was being deleted (node scale-down, upgrade)",
        "expected in small numbers after nodes leave; run the check again",
    ),
    "XfrmInTmplMismatch": (
        "a bug in the XFRM configuration for decryption",
        "rotate the IPsec key; if it persists, report it with `cilium-dbg encrypt status` and `ip xfrm state`",
    ),
    "XfrmInNoPols": (
        "a bug in the XFRM configuration for decryption",
        "rotate the IPsec key; if it persists, report it with `cilium-dbg encrypt status` and `ip xfrm policy`",
    ),
    "XfrmInPolBlock": ("an explicit drop, not used by Cilium", "look for XFRM policies Cilium did not install"),
    "XfrmOutNoStates": (
        "no XFRM state to encrypt with (expected briefly while a rebooted node's key is deployed)",
        "run the check again after a minute; if the counter keeps rising, rotate the IPsec key",
    ),
    "XfrmOutStateSeqError": (
        "an encryption XFRM state reached its maximum sequence number",
        "rotate the IPsec key (a new key id resets the sequence numbers)",
    ),
    "XfrmOutPolBlock": (
        "Cilium dropped packets that would otherwise have left the node in plain text",
        "check that every node's agent runs with IPsec and has the same cilium-ipsec-keys Secret",
    ),
    "XfrmFwdHdrError": (
        "the kernel decrypted a packet for a pod that was deleted, or failed to allocate memory",
        "expected in small numbers while pods are deleted; if it keeps rising, check the node's memory",
    ),
}
_UNKNOWN_XFRM = (
    "an XFRM error the Cilium docs do not explain (usually a Linux subfeature Cilium does not use)",
    "inspect `ip -s xfrm state` on the node",
)


def _quote(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _QUOTED_CHARS else flat[: _QUOTED_CHARS - 3] + "..."


@dataclass(frozen=True)
class WireguardInterface:
    name: str
    public_key: str | None
    peers: int | None
    port: int | None = None


@dataclass(frozen=True)
class IpsecStatus:
    decryption_interfaces: tuple[str, ...] | None
    keys_in_use: int | None
    max_seq: int | None  # None: "N/A" or not printed
    seq_limit: int | None
    errors: int | None
    xfrm_errors: dict[str, int]


@dataclass(frozen=True)
class EncryptStatus:
    """What ``cilium-dbg encrypt status`` (or the ``Encryption:`` line of ``cilium-dbg status``) printed."""

    source: str | None  # "encrypt-status", "status" or None when there is no Encryption line
    mode: str | None  # as printed: "Disabled", "IPsec", "Wireguard"; "" when the agent gave none
    msg: str | None
    ipsec: IpsecStatus | None
    interfaces: tuple[WireguardInterface, ...]
    node_encryption: str | None  # only the status line (1.14+) has it
    first_line: str | None = None
    unparsed: tuple[str, ...] = field(default_factory=tuple)

    @property
    def peers(self) -> int | None:
        counts = [i.peers for i in self.interfaces if i.peers is not None]
        return sum(counts) if counts else None


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _status_line(value: str) -> tuple[str, str | None, tuple[WireguardInterface, ...], str | None]:
    """``Wireguard   [NodeEncryption: Disabled, cilium_wg0 (Pubkey: k, Port: 51871, Peers: 1)]`` and kin."""
    mode, _, rest = value.strip().partition(" ")
    if "\t" in mode:
        mode, _, more = mode.partition("\t")
        rest = f"{more} {rest}"
    rest = rest.strip()
    if not rest.startswith("["):
        return mode, rest or None, (), None
    interfaces = tuple(
        WireguardInterface(m["name"], m["key"], int(m["peers"]), int(m["port"])) for m in _STATUS_WG.finditer(rest)
    )
    node = _NODE_ENCRYPTION.search(rest)
    return mode, None, interfaces, node["state"] if node else None


def parse_encrypt_status(text: str) -> EncryptStatus:
    """``cilium-dbg encrypt status`` of any release 1.13-1.20, or the output of ``cilium-dbg status``.

    kubectl's notes (``Defaulted container ...``) and other lines that are none of the printer's are kept in
    ``unparsed``, never read as values.
    """
    lines = [line.rstrip() for line in text.splitlines()]
    first_line = next((_quote(line) for line in lines if line.strip()), None)
    mode: str | None = None
    msg: str | None = None
    source: str | None = None
    node_encryption: str | None = None
    status_interfaces: tuple[WireguardInterface, ...] = ()
    ipsec_fields: dict[str, str] = {}
    counters: dict[str, int] = {}
    interfaces: list[dict[str, str]] = []
    unparsed: list[str] = []
    in_errors = False
    for line in lines:
        if not line.strip():
            continue
        counter = _COUNTER.match(line)
        if counter and in_errors:
            counters[counter["name"]] = int(counter["count"])
            continue
        match = _LABEL.match(line)
        if match is None:
            unparsed.append(line)
            continue
        label, value = match["label"], match["value"]
        in_errors = False
        if label == "Msg" and mode is None:
            msg = value or None
        elif label == "Encryption" and mode is None:
            if "[" in value or "\t" in value.strip() or re.search(r"\S\s{2,}\S", value):
                source = "status"
                mode, status_msg, status_interfaces, node_encryption = _status_line(value)
                msg = msg or status_msg
            else:
                source = "encrypt-status"
                mode = value.strip()
        elif source == "encrypt-status" and label in ("Decryption interface(s)", "Keys in use", "Max Seq. Number"):
            ipsec_fields[label] = value.strip()
        elif source == "encrypt-status" and label == "Errors":
            ipsec_fields[label] = value.strip()
            in_errors = True
        elif source == "encrypt-status" and label == "Interface":
            interfaces.append({"name": value.strip()})
        elif source == "encrypt-status" and label in ("Public key", "Number of peers") and interfaces:
            interfaces[-1][label] = value.strip()
        else:
            unparsed.append(line)
    ipsec = None
    if ipsec_fields:
        seq = _SEQ.match(ipsec_fields.get("Max Seq. Number", ""))
        names = ipsec_fields.get("Decryption interface(s)")
        ipsec = IpsecStatus(
            decryption_interfaces=None if names is None else tuple(n.strip() for n in names.split(",") if n.strip()),
            keys_in_use=_number(ipsec_fields.get("Keys in use", "")),
            max_seq=int(seq["seq"], 16) if seq else None,
            seq_limit=int(seq["limit"], 16) if seq else None,
            errors=_number(ipsec_fields.get("Errors", "")),
            xfrm_errors=counters,
        )
    parsed_interfaces = status_interfaces or tuple(
        WireguardInterface(i["name"], i.get("Public key") or None, _number(i.get("Number of peers", "")))
        for i in interfaces
    )
    return EncryptStatus(
        source=source,
        mode=mode,
        msg=msg,
        ipsec=ipsec,
        interfaces=parsed_interfaces,
        node_encryption=node_encryption,
        first_line=first_line,
        unparsed=tuple(unparsed),
    )


# --------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------

ENCRYPTION_STATUS_KEYS: dict[str, KeySpec] = {
    "mode": KeySpec("disabled|wireguard|ipsec: the encryption the agent must report", _one_of(*MODES)),
    "peers": KeySpec("WireGuard: at least this many peers on cilium_wg0 (the other nodes: nodes - 1)", _is_int),
    "minKeys": KeySpec(
        "IPsec: at least this many keys in use (2 per remote node per IP family, docs: encryption-ipsec)", _is_int
    ),
    "maxXfrmErrors": KeySpec("IPsec: at most this many XFRM errors in all (0: none)", _is_int),
}

_RESTART = "kubectl -n kube-system rollout restart ds/cilium"


def _mode_fix(wanted: str) -> str:
    if wanted == "disabled":
        return (
            "the agent still encrypts: check that cilium-config has no enable-wireguard/enable-ipsec set to "
            f'"true" (kubectl -n kube-system get cm cilium-config -o yaml), then restart the agents ({_RESTART})'
        )
    key = "enable-wireguard" if wanted == "wireguard" else "enable-ipsec"
    return (
        f'check that cilium-config has {key}: "true" (Helm values encryption.enabled=true, '
        f"encryption.type={wanted}) and restart the agents ({_RESTART}); the agent's log says why it did not start "
        "encrypting (kubectl -n kube-system logs <cilium pod on {node}> -c cilium-agent)"
    )


def _figures(status: EncryptStatus) -> dict[str, JsonValue]:
    figures: dict[str, JsonValue] = {
        "source": status.source,
        "mode": status.mode,
        "msg": status.msg,
        "nodeEncryption": status.node_encryption,
        "interfaces": [
            {"name": i.name, "publicKey": i.public_key, "peers": i.peers, "port": i.port} for i in status.interfaces
        ],
        "peers": status.peers,
    }
    ipsec = status.ipsec
    if ipsec is not None:
        figures["ipsec"] = {
            "decryptionInterfaces": list(ipsec.decryption_interfaces)
            if ipsec.decryption_interfaces is not None
            else None,
            "keysInUse": ipsec.keys_in_use,
            "maxSeqNumber": ipsec.max_seq,
            "seqLimit": ipsec.seq_limit,
            "errors": ipsec.errors,
            "xfrmErrors": dict(sorted(ipsec.xfrm_errors.items())),
        }
    return figures


def _wireguard_problems(status: EncryptStatus, peers: int | None) -> list[Problem]:
    if not status.interfaces:
        return [
            Problem(
                f"WireGuard interface {WIREGUARD_INTERFACE}",
                "present",
                None,
                "the agent has no WireGuard device: the node's kernel needs WireGuard (CONFIG_WIREGUARD, "
                "`modprobe wireguard` on {node}); the agent's log names the error",
            )
        ]
    if peers is None:
        return []
    seen = status.peers
    if seen is None:
        return [Problem("WireGuard peers", f"at least {peers}", None)]
    if seen < peers:
        return [
            Problem(
                "WireGuard peers",
                f"at least {peers} (one per other node)",
                f"{seen}",
                "every other node's agent must run with WireGuard and publish its public key (annotation "
                "network.cilium.io/wg-pub-key: kubectl get ciliumnodes -o yaml); check that all cilium pods are "
                "ready (kubectl -n kube-system get pods -l k8s-app=cilium -o wide) and UDP 51871 is open between "
                "the nodes",
            )
        ]
    return []


def _ipsec_problems(status: EncryptStatus, min_keys: int | None, max_errors: int | None) -> list[Problem]:
    ipsec = status.ipsec
    if ipsec is None:
        if min_keys or max_errors is not None:
            return [
                Problem(
                    "IPsec state (Keys in use, Errors)",
                    "printed",
                    None,
                    "the kernel has no Cilium XFRM state: check that the Secret kube-system/cilium-ipsec-keys exists "
                    "and the agent's log for IPsec errors",
                )
            ]
        return []
    found: list[Problem] = []
    if min_keys is not None:
        keys = ipsec.keys_in_use
        if keys is None or keys < min_keys:
            found.append(
                Problem(
                    "IPsec keys in use",
                    f"at least {min_keys} (2 per remote node)",
                    None if keys is None else str(keys),
                    "the agent has not installed XFRM states for every other node: check that all cilium pods "
                    "are ready and run the same cilium-ipsec-keys Secret; stale states go with a key rotation "
                    "(docs: encryption-ipsec, 'XFRM State Staling in Cilium')",
                )
            )
    if ipsec.max_seq is not None and ipsec.seq_limit is not None and ipsec.max_seq >= ipsec.seq_limit:
        found.append(
            Problem(
                "IPsec max sequence number",
                f"below its limit 0x{ipsec.seq_limit:x}",
                f"0x{ipsec.max_seq:x}",
                "the sequence space is used up and packets are dropped: rotate the IPsec key (a new key id)",
            )
        )
    if max_errors is not None:
        total = ipsec.errors
        if total is None:
            found.append(Problem("IPsec XFRM errors", f"at most {max_errors}", None))
        elif total > max_errors:
            if not ipsec.xfrm_errors:
                found.append(Problem("IPsec XFRM errors", f"at most {max_errors}", str(total)))
            for name, count in sorted(ipsec.xfrm_errors.items()):
                meaning, fix = XFRM_EXPLANATIONS.get(name, _UNKNOWN_XFRM)
                found.append(Problem(f"XFRM counter {name}", "0", f"{count} ({meaning})", fix))
    return found


def evaluate_encryption_status(text: str, expect: Expectations) -> Verdict:
    status = parse_encrypt_status(text)
    verdict = Verdict(figures=_figures(status))
    if status.mode is None:
        verdict.add(
            Problem(
                "cilium-dbg encrypt status output",
                "with an 'Encryption: <mode>' line",
                status.first_line,
                "run `cilium-dbg encrypt status` in the node's agent (`cilium encrypt status` on Cilium 1.13-1.14)",
            )
        )
        return verdict
    if status.msg is not None:
        verdict.add(
            Problem(
                "agent message",
                "none",
                _quote(status.msg),
                "the agent did not answer or its state differs from the kernel's: check that the cilium pod on "
                "{node} is ready and read its log",
            )
        )
    wanted = (_str(expect, "mode") or "").lower() or None
    seen = status.mode.strip()
    if wanted is not None and seen.lower() != wanted:
        shown = seen or "no mode (the agent gave none)"
        verdict.add(Problem("encryption mode", MODES[wanted], shown, _mode_fix(wanted)))
        return verdict
    if seen.lower() == "wireguard":
        verdict.problems.extend(_wireguard_problems(status, _int(expect, "peers")))
    if seen.lower() == "ipsec":
        verdict.problems.extend(_ipsec_problems(status, _int(expect, "minKeys"), _int(expect, "maxXfrmErrors")))
    return verdict


ENCRYPTION_CHECKS = (
    Check(
        "encryption-status",
        "cilium-dbg encrypt status (cilium encrypt status on <= 1.14), or cilium-dbg status",
        ENCRYPTION_STATUS_KEYS,
        evaluate_encryption_status,
    ),
)

# Registered here, at the end, so that importing this module before verification.expectations works too.
CHECKS.update((check.name, check) for check in ENCRYPTION_CHECKS)
