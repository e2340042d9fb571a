"""README.md: the quick start commands, the stacks and files it names, tiers and features, internal links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stacks import stackfile
from stacks.config import FEATURE_NAMES, TIERS
from stacks.docs import END, START

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# The README without the generated reference: what a person wrote.
PROSE = README.split(START)[0] + README.split(END)[1]

MAIN_JOB = "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/python -m stacks plan dev"
TEST_JOB = "./run-tests.sh"


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README has no section '## {title}'"
    return match[1]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_quick_start_has_exactly_the_two_commands():
    assert shell_blocks(section("Quick start")) == [MAIN_JOB + "\n", TEST_JOB + "\n"]


def test_quick_start_files_exist():
    assert (ROOT / "requirements.txt").is_file()
    assert (ROOT / "run-tests.sh").stat().st_mode & 0o111, "run-tests.sh must be executable"


def _named_stacks() -> set[str]:
    names = set(re.findall(r"python -m stacks plan ([a-z0-9][a-z0-9-]*)", README))
    names |= set(re.findall(r"stacks/examples/([a-z0-9][a-z0-9-]*)\.yaml", README))
    created = set(re.findall(r"^cp \S+ Pulumi\.([a-z0-9-]+)\.yaml$", README, flags=re.MULTILINE))
    names |= set(re.findall(r"Pulumi\.([a-z0-9][a-z0-9-]*)\.yaml", README)) - created
    return names


def test_every_stack_the_readme_names_exists():
    names = _named_stacks()
    assert {"dev", "ha-performance", "extreme"} <= names
    for name in sorted(names):
        stackfile.locate(name)  # raises FileNotFoundError


@pytest.mark.parametrize("example", sorted(p.stem for p in (ROOT / "stacks" / "examples").glob("*.yaml")))
def test_every_example_stack_is_described(example):
    assert f"stacks/examples/{example}.yaml" in section("Example stacks")


def test_readme_mentions_every_tier_and_feature():
    for tier in TIERS:
        assert f"`{tier}`" in PROSE, f"tier {tier} is not explained outside the generated reference"
    for name in FEATURE_NAMES:
        assert name in README, name


def test_referenced_repository_files_exist():
    paths = set(re.findall(r"`((?:stacks|components|verification|tests|\.github/workflows|\.ci)/[\w./-]+)`", README))
    paths |= {f".github/workflows/{name}" for name in re.findall(r"`(\w+\.yml)`", README)}
    assert ".github/workflows/preview.yml" in paths and ".github/workflows/deploy.yml" in paths
    for path in sorted(paths):
        assert (ROOT / path).exists(), path


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_internal_links_point_at_headings():
    anchors = {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", README, flags=re.MULTILINE)}
    for target in re.findall(r"\]\(#([^)]+)\)", README):
        assert target in anchors, target


def test_sections_a_newcomer_needs():
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    for needed in (
        "Quick start",
        "Prerequisites",
        "First real deploy",
        "State and secrets",
        "Tiers, features and configuration reference",
        "Components and outputs",
        "Verification",
        "Rollback",
        "Troubleshooting",
        "Tests and benchmarks",
        "Project layout",
    ):
        assert needed in headings, needed


def test_first_deploy_walks_through_the_pulumi_commands():
    steps = section("First real deploy")
    for command in (
        "pulumi stack init dev --secrets-provider passphrase",
        "pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519",
        "pulumi preview",
        "pulumi up",
        "pulumi stack output kubeconfig --show-secrets > kubeconfig",
    ):
        assert command in steps, command


def test_rollback_covers_four_procedures_with_estimates():
    rollback = section("Rollback")
    procedures = re.findall(r"^\*\*\d\. (.+?)\*\*$", rollback, flags=re.MULTILINE)
    assert len(procedures) == 4, procedures
    assert rollback.count("*Duration*") == 4 and rollback.count("*What is disrupted*") == 4
    assert "estimates" in rollback and "nothing here was run against real hosts" in rollback


def test_troubleshooting_names_the_k3s_api_load_balancer():
    troubleshooting = section("Troubleshooting")
    assert "127.0.0.1:6444" in troubleshooting
    assert "best-effort" in troubleshooting and "features.xdp: false" in troubleshooting
