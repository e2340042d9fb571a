"""encryption-status: the parser on every sample in fixtures/encryption, and a failing case for each problem.

Where each sample comes from is in fixtures/encryption/README.md; every expected value below is read off
those files (and the docs pages they quote), not off verification/encryption.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from verification.encryption import evaluate_encryption_status, parse_encrypt_status
from verification.expectations import CHECKS, ExpectationError, Problem, Verdict

FIXTURES = Path(__file__).parent / "fixtures" / "encryption"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def run(name_or_text: str, **expect: object) -> Verdict:
    text = fixture(name_or_text) if name_or_text.endswith(".txt") else name_or_text
    return CHECKS["encryption-status"].run(text, dict(expect))  # type: ignore[arg-type]


def items(verdict: Verdict) -> list[str]:
    return [problem.item for problem in verdict.problems]


def test_every_fixture_is_parsed_and_listed_in_the_readme():
    readme = fixture("README.md")
    for path in sorted(FIXTURES.glob("*.txt")):
        assert f"`{path.name}`" in readme, path.name
        assert parse_encrypt_status(path.read_text()).mode is not None, path.name


# --- the parser -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "limit"), [("ipsec-1.13-docs.txt", 0xFFFFFFFF), ("ipsec-1.19-docs.txt", 2**64 - 1)])
def test_the_documented_ipsec_status(name, limit):
    status = parse_encrypt_status(fixture(name))
    assert (status.source, status.mode, status.msg) == ("encrypt-status", "IPsec", None)
    assert status.ipsec is not None
    assert status.ipsec.decryption_interfaces == ("eth0", "eth1", "eth2")
    assert (status.ipsec.keys_in_use, status.ipsec.max_seq, status.ipsec.seq_limit) == (4, 0x1E3, limit)
    assert (status.ipsec.errors, status.ipsec.xfrm_errors) == (0, {})
    assert status.interfaces == ()


def test_xfrm_counters_under_errors():
    status = parse_encrypt_status(fixture("ipsec-xfrm-errors-constructed.txt"))
    assert status.ipsec is not None
    # The non-zero counters of Cilium's xfrm_stat test fixture, and their sum.
    assert status.ipsec.xfrm_errors == {
        "XfrmInError": 2,
        "XfrmInNoStates": 225479,
        "XfrmInStateProtoError": 141222,
        "XfrmInNoPols": 203389,
        "XfrmOutNoStates": 36162,
        "XfrmOutStateProtoError": 1886,
    }
    assert status.ipsec.errors == 608140
    assert (status.ipsec.max_seq, status.ipsec.decryption_interfaces) == (0x1410, ("eth0",))


def test_wireguard_encrypt_status():
    status = parse_encrypt_status(fixture("wireguard-constructed.txt"))
    assert (status.source, status.mode, status.ipsec) == ("encrypt-status", "Wireguard", None)
    (interface,) = status.interfaces
    assert (interface.name, interface.public_key, interface.peers) == (
        "cilium_wg0",
        "DrAc2EloK45yqAcjhxerQKwoYUbLDjyrWgt9UXImbEY=",
        2,
    )
    assert status.peers == 2


@pytest.mark.parametrize(
    ("name", "key", "peers", "node_encryption"),
    [
        ("status-wireguard-1.13.3.txt", "HMfZu016CF/0EYMl0tACI3qeaT2TePs831EfJZmzdQw=", 1, None),
        ("status-wireguard-1.14.2.txt", "/yuqsZyG91AzVIkZ3AIq8qjQ0gGKQd6GWcRYh4LYpko=", 1, "Disabled"),
        ("status-wireguard-pr15833.txt", "GsIGt1Juo6p8gR93driyMD5FwFu2uOBBYGVsZtfQxho=", 1, None),
    ],
)
def test_the_status_line_of_real_agents(name, key, peers, node_encryption):
    status = parse_encrypt_status(fixture(name))
    assert (status.source, status.mode, status.node_encryption) == ("status", "Wireguard", node_encryption)
    (interface,) = status.interfaces
    assert (interface.name, interface.public_key, interface.port, interface.peers) == ("cilium_wg0", key, 51871, peers)


def test_a_full_status_output_keeps_kubectls_note_out_of_the_values():
    status = parse_encrypt_status(fixture("status-wireguard-1.14.2.txt"))
    assert any(line.startswith("Defaulted container") for line in status.unparsed)
    assert status.msg is None


@pytest.mark.parametrize("name", ["disabled-constructed.txt", "status-disabled-pr15833.txt"])
def test_disabled(name):
    status = parse_encrypt_status(fixture(name))
    assert (status.mode, status.ipsec, status.interfaces) == ("Disabled", None, ())


def test_the_agents_message_and_an_empty_mode():
    status = parse_encrypt_status(fixture("wireguard-msg-1.20-constructed.txt"))
    assert status.msg == 'interface "cilium_wg0": peer count mismatch (agent=2, kernel=1)'
    assert status.peers == 1
    down = parse_encrypt_status(fixture("agent-down-1.20-constructed.txt"))
    assert down.mode == "" and down.msg is not None and "cilium.sock" in down.msg


def test_text_without_an_encryption_line():
    status = parse_encrypt_status("error: unable to upgrade connection: container not found\n")
    assert status.mode is None and status.source is None
    assert status.first_line == "error: unable to upgrade connection: container not found"


# --- the check: passing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("ipsec-1.13-docs.txt", {"mode": "ipsec", "minKeys": 4, "maxXfrmErrors": 0}),
        ("ipsec-1.19-docs.txt", {"mode": "ipsec", "minKeys": 4, "maxXfrmErrors": 0}),
        ("wireguard-constructed.txt", {"mode": "wireguard", "peers": 2}),
        ("status-wireguard-1.14.2.txt", {"mode": "wireguard", "peers": 1}),
        ("status-wireguard-1.13.3.txt", {"mode": "wireguard", "peers": 1}),
        ("disabled-constructed.txt", {"mode": "disabled"}),
        ("status-disabled-pr15833.txt", {"mode": "disabled"}),
    ],
)
def test_matching_outputs_pass(name, expect):
    verdict = run(name, **expect)
    assert verdict.passed, verdict.problems


def test_the_figures_carry_what_was_seen():
    figures = run("ipsec-1.19-docs.txt").figures
    assert figures["mode"] == "IPsec"
    assert figures["ipsec"] == {
        "decryptionInterfaces": ["eth0", "eth1", "eth2"],
        "keysInUse": 4,
        "maxSeqNumber": 0x1E3,
        "seqLimit": 2**64 - 1,
        "errors": 0,
        "xfrmErrors": {},
    }
    assert run("status-wireguard-1.14.2.txt").figures["nodeEncryption"] == "Disabled"


# --- the check: one failing case per problem ----------------------------------------------------------------


def test_expected_wireguard_but_disabled():
    (problem,) = run("disabled-constructed.txt", mode="wireguard", peers=2).problems
    assert (problem.item, problem.expected, problem.seen) == ("encryption mode", "Wireguard", "Disabled")
    assert problem.fix is not None and 'enable-wireguard: "true"' in problem.fix
    assert "rollout restart ds/cilium" in problem.fix


def test_expected_disabled_but_encrypting():
    (problem,) = run("ipsec-1.19-docs.txt", mode="disabled").problems
    assert (problem.expected, problem.seen) == ("Disabled", "IPsec")
    assert problem.fix is not None and "still encrypts" in problem.fix


def test_expected_ipsec_but_wireguard():
    (problem,) = run("status-wireguard-1.14.2.txt", mode="ipsec").problems
    assert (problem.expected, problem.seen) == ("IPsec", "Wireguard")
    assert problem.fix is not None and "enable-ipsec" in problem.fix


def test_too_few_wireguard_peers():
    # 1.14.2 sample: 1 peer; a three-node cluster needs 2 on every node.
    (problem,) = run("status-wireguard-1.14.2.txt", mode="wireguard", peers=2).problems
    assert (problem.item, problem.seen) == ("WireGuard peers", "1")
    assert problem.fix is not None and "network.cilium.io/wg-pub-key" in problem.fix and "51871" in problem.fix


def test_wireguard_mode_without_the_interface():
    (problem,) = run("Encryption: Wireguard\n", mode="wireguard", peers=1).problems
    assert (problem.item, problem.seen) == ("WireGuard interface cilium_wg0", None)
    assert problem.fix is not None and "modprobe wireguard" in problem.fix
    assert "node agent-1" in problem.message("agent-1", "encryption-status")


def test_too_few_ipsec_keys():
    # docs sample: 4 keys; 4 nodes need 2 per remote node = 6.
    (problem,) = run("ipsec-1.13-docs.txt", mode="ipsec", minKeys=6).problems
    assert (problem.item, problem.seen) == ("IPsec keys in use", "4")
    assert problem.fix is not None and "cilium-ipsec-keys" in problem.fix


def test_ipsec_mode_without_its_state():
    (problem,) = run("Encryption: IPsec\n", mode="ipsec", minKeys=2).problems
    assert (problem.item, problem.seen) == ("IPsec state (Keys in use, Errors)", None)
    # A lone node has no XFRM state; without key expectations that is no problem.
    assert run("Encryption: IPsec\n", mode="ipsec").passed


def test_every_xfrm_error_is_named_with_its_documented_meaning():
    verdict = run("ipsec-xfrm-errors-constructed.txt", mode="ipsec", minKeys=4, maxXfrmErrors=0)
    by_item = {problem.item: problem for problem in verdict.problems}
    assert sorted(by_item) == [
        "XFRM counter XfrmInError",
        "XFRM counter XfrmInNoPols",
        "XFRM counter XfrmInNoStates",
        "XFRM counter XfrmInStateProtoError",
        "XFRM counter XfrmOutNoStates",
        "XFRM counter XfrmOutStateProtoError",
    ]
    no_states = by_item["XFRM counter XfrmInNoStates"]
    assert no_states.seen is not None and no_states.seen.startswith("225479 (")
    assert no_states.fix is not None and "rotate the IPsec key" in no_states.fix
    proto = by_item["XFRM counter XfrmInStateProtoError"]
    assert proto.fix is not None and "key id" in proto.fix
    # XfrmOutStateProtoError is not in the docs' table: named as unexplained, with a generic fix.
    assert "do not explain" in (by_item["XFRM counter XfrmOutStateProtoError"].seen or "")


def test_xfrm_errors_within_the_allowance_pass():
    assert run("ipsec-xfrm-errors-constructed.txt", mode="ipsec", maxXfrmErrors=608140).passed


def test_the_sequence_number_at_its_limit():
    text = fixture("ipsec-1.13-docs.txt").replace("0x1e3/0xffffffff", "0xffffffff/0xffffffff")
    (problem,) = run(text, mode="ipsec").problems
    assert (problem.item, problem.seen) == ("IPsec max sequence number", "0xffffffff")


def test_the_agents_message_is_a_problem():
    verdict = run("wireguard-msg-1.20-constructed.txt", mode="wireguard", peers=2)
    assert items(verdict) == ["agent message", "WireGuard peers"]
    assert verdict.problems[0].seen == 'interface "cilium_wg0": peer count mismatch (agent=2, kernel=1)'


def test_an_agent_that_does_not_answer():
    verdict = run("agent-down-1.20-constructed.txt", mode="ipsec")
    assert items(verdict) == ["agent message", "encryption mode"]
    assert verdict.problems[1].seen == "no mode (the agent gave none)"


def test_output_without_an_encryption_line():
    (problem,) = run("Error from server (NotFound): pods \"cilium-x\" not found\n", mode="wireguard").problems
    assert problem == Problem(
        "cilium-dbg encrypt status output",
        "with an 'Encryption: <mode>' line",
        'Error from server (NotFound): pods "cilium-x" not found',
        "run `cilium-dbg encrypt status` in the node's agent (`cilium encrypt status` on Cilium 1.13-1.14)",
    )


@pytest.mark.parametrize(
    "expect",
    [{"mode": "on"}, {"peers": -1}, {"minKeys": "2"}, {"maxXfrmErrors": True}, {"keys": 2}, ["mode"]],
)
def test_bad_expectations_are_refused(expect):
    with pytest.raises(ExpectationError):
        CHECKS["encryption-status"].run("Encryption: Disabled\n", expect)


def test_evaluate_is_the_registered_check():
    assert CHECKS["encryption-status"].evaluate is evaluate_encryption_status
