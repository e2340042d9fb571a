"""k3s-install.sh downloads the K3s install script with wget when the host has no curl (item 2 of issue 11)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.components.test_k3s_scripts import STUB_CURL, TOKEN, Sandbox, make_config

TOOLS = ("bash", "sh", "awk", "cat", "cmp", "dirname", "install", "mkdir", "mktemp", "mv", "rm", "chmod", "touch",
         "sleep", "printf")


def test_installer_is_fetched_with_wget_when_curl_is_missing(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    (sandbox.bin / "curl").unlink()
    # The curl stub reads "-o <file>"; wget is called with "-O <file>".
    wget = STUB_CURL.replace('-o) out=$2', '-O) out=$2').replace("Stub curl", "Stub wget")
    (sandbox.bin / "wget").write_text(wget)
    (sandbox.bin / "wget").chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    sandbox.env["PATH"] = f"{sandbox.bin}:{tools}"
    result = sandbox.run(sandbox.install_script(make_config(), "agent-1"), stdin=TOKEN)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "role=agent k3s=v1.33.3+k3s1 action=installed\n"
    assert "installer version=v1.33.3+k3s1 exec=agent force=true" in sandbox.calls()
