"""Run a Pulumi program under the mock engine and record everything it registers.

    from tests.mocks import run_program

    def program():
        cluster = K3sCluster("k3s", K3sClusterArgs(...))
        return {"kubeconfig": cluster.kubeconfig}

    rec = run_program(program)
    rec.named("k3s-server-server-1").inputs["create"]
    rec.outputs["kubeconfig"], rec.is_secret_output("kubeconfig")
    rec.warnings

Each ``run_program`` gets a fresh monitor and root stack, so runs are
independent. For every registered resource it records type, name, URN,
parent, dependencies (explicit ``depends_on`` and those carried by inputs),
per-property dependencies, resource options, the inputs with secrets
unwrapped, and which input paths were secret on the wire (the mock engine
receives them wrapped in Pulumi's secret signature). ``new_resource`` returns
the inputs as outputs, plus ``stdout`` for ``command:*:Command`` resources
chosen by :class:`ProgramMocks`'s ``command_stdout`` rules (defaults fit the
K3sCluster component), so ``apply`` chains resolve.

Outputs returned by the program (any nesting of dicts/lists of Outputs) and
the stack's ``pulumi.export``-ed values are resolved, with their secretness.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gc
import json
import logging
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tests.certs import fake_certificate

SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key

DEFAULT_PROJECT = "k3s-cilium"
DEFAULT_STACK = "test"

# Fake values that are easy to search for in recorded inputs.
FAKE_TOKEN = "K10fake-cluster-token::server:fake-password-3b7c"
# K3s's admin kubeconfig with a client certificate that expires long after any test runs.
FAKE_CERTIFICATE_EXPIRY = dt.datetime(2036, 1, 1, tzinfo=dt.UTC)
FAKE_CLIENT_CERTIFICATE = base64.b64encode(fake_certificate(FAKE_CERTIFICATE_EXPIRY).encode()).decode()
FAKE_KUBECONFIG = f"""\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: RkFLRS1DQQ==
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: {FAKE_CLIENT_CERTIFICATE}
    client-key-data: RkFLRS1LRVk=
"""
FAKE_PREFLIGHT = "kernel=6.8.0-45-generic os=ubuntu-24.04 arch=x86_64 k3s=absent"
# A server install's summary line, with its cluster CA's fingerprint.
FAKE_SERVER_INSTALL = "role=server k3s=v1.33.3+k3s1 action=installed ca=sha256:" + "c" * 64 + "\n"

# (regex searched in the resource name, stdout). First match wins.
StdoutRule = tuple[str, "str | Callable[[pulumi_mocks.MockResourceArgs], str]"]
DEFAULT_COMMAND_STDOUT: tuple[StdoutRule, ...] = (
    (r"-preflight-", FAKE_PREFLIGHT),
    (r"-kubeconfig-", FAKE_KUBECONFIG),
    (r"-token-", FAKE_TOKEN + "\n"),
    (r"^k3s-server-", FAKE_SERVER_INSTALL),
)


class ProgramMocks(pulumi_mocks.Mocks):
    """Outputs = inputs; ``stdout`` for commands from ``command_stdout``; extra per type from ``outputs``.

    ``outputs`` maps a resource type to a function of the MockResourceArgs
    returning extra output properties (merged over the inputs).
    """

    def __init__(
        self,
        command_stdout: tuple[StdoutRule, ...] = DEFAULT_COMMAND_STDOUT,
        outputs: Mapping[str, Callable[[pulumi_mocks.MockResourceArgs], dict[str, Any]]] | None = None,
        calls: Mapping[str, Callable[[pulumi_mocks.MockCallArgs], dict[str, Any]]] | None = None,
    ) -> None:
        self.command_stdout = command_stdout
        self.outputs = dict(outputs or {})
        self.calls = dict(calls or {})

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ.startswith("command:") and args.typ.endswith(":Command"):
            state["stdout"] = self._stdout(args)
            state["stderr"] = ""
        if args.typ in self.outputs:
            state.update(self.outputs[args.typ](args))
        # Deterministic ids: the same program yields the same inputs downstream.
        return f"{args.name}-id", state

    def _stdout(self, args: pulumi_mocks.MockResourceArgs) -> str:
        for pattern, answer in self.command_stdout:
            if re.search(pattern, args.name):
                return answer(args) if callable(answer) else answer
        return ""

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token in self.calls:
            return self.calls[args.token](args), None
        return {}, None


# --- records ----------------------------------------------------------------------------------


def unwrap_secrets(value: Any, path: str = "", found: set[str] | None = None) -> tuple[Any, set[str]]:
    """``value`` with Pulumi's secret wrappers removed, and the paths (``a.b[0]``) that were secret."""
    found = set() if found is None else found
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            found.add(path)
            inner, _ = unwrap_secrets(value.get("value"), path, found)
            return inner, found
        return {k: unwrap_secrets(v, f"{path}.{k}" if path else k, found)[0] for k, v in value.items()}, found
    if isinstance(value, list):
        return [unwrap_secrets(v, f"{path}[{i}]", found)[0] for i, v in enumerate(value)], found
    return value, found


def walk_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a nested value (dict keys included), with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                yield child + "#key", key
            yield from walk_strings(item, child)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from walk_strings(item, f"{path}[{index}]")


_BUNDLED_FUNCTION = re.compile(r"^k3s_cilium_([a-z0-9_]+)\(\) \{\n", re.MULTILINE)
_DISPATCH = '}\n"k3s_cilium_${1//-/_}"; exit\n'


def unbundle(stdin: str) -> tuple[dict[str, str], str]:
    """The scripts of a bundle on a remote command's stdin by name, and what follows them."""
    end = stdin.index(_DISPATCH)
    functions, rest = stdin[: end + 2], stdin[end + len(_DISPATCH) :]
    starts = list(_BUNDLED_FUNCTION.finditer(functions))
    scripts = {}
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        body_end = following.start() if following else len(functions)
        scripts[match[1].replace("_", "-")] = functions[match.end() : body_end].removesuffix("}\n")
    return scripts, rest


def _covered(path: str, secret_paths: frozenset[str]) -> bool:
    """Whether ``path`` is a secret path or lies inside one."""
    return any(
        path == secret or path.startswith(secret + ".") or path.startswith(secret + "[") or secret == ""
        for secret in secret_paths
    )


@dataclass(frozen=True, repr=False)
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    dependencies: tuple[str, ...]
    property_dependencies: dict[str, tuple[str, ...]]
    inputs: dict[str, Any]
    secret_paths: frozenset[str]
    options: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # the full inputs would drown a failing assertion
        return f"<{self.type} {self.name}>"

    def is_secret(self, path: str) -> bool:
        """Whether the input at ``path`` (``connection.privateKey``, ``stdin``) was sent as a secret."""
        return _covered(path, self.secret_paths)

    def plain_strings(self) -> Iterator[tuple[str, str]]:
        """Every input string that was NOT inside a secret, with its path."""
        for path, text in walk_strings(self.inputs):
            if not self.is_secret(path.removesuffix("#key")):
                yield path, text

    def script(self, role: str = "create") -> str:
        """The script a remote command's ``role`` (create, update, delete) runs: its command line names
        a script of the bundle on stdin."""
        name = self.inputs[role].rsplit(" -- ", 1)[1]
        scripts, _ = unbundle(self.inputs["stdin"])
        return scripts[name]

    def stdin_data(self) -> str:
        """What a remote command's stdin holds after its scripts (a token, a file); "" if nothing."""
        return unbundle(self.inputs["stdin"])[1]

    def identity(self) -> tuple[str, dict[str, Any], list[str], dict[str, Any]]:
        """What must be identical when the same program runs twice."""
        return (self.urn, self.inputs, sorted(self.secret_paths), self.options)


@dataclass(repr=False)
class Recorded:
    resources: list[Registration]
    stack_urn: str
    outputs: Any = None
    secret_outputs: frozenset[str] = frozenset()
    exports: dict[str, Any] = field(default_factory=dict)
    secret_exports: frozenset[str] = frozenset()
    logs: list[tuple[int, str]] = field(default_factory=list)
    # register_outputs of components (and the stack), by URN, with their secret paths
    component_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    component_secret_outputs: dict[str, frozenset[str]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<Recorded {len(self.resources)} resources>"

    # lookups

    def named(self, name: str) -> Registration:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}; names: {sorted(r.name for r in self.resources)}")
        return matches[0]

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def matching(self, pattern: str) -> list[Registration]:
        """Resources whose name matches the regex ``pattern`` (searched, not anchored)."""
        return [r for r in self.resources if re.search(pattern, r.name)]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.resources if r.urn == urn)

    def children_of(self, parent: Registration) -> list[Registration]:
        return [r for r in self.resources if r.parent == parent.urn]

    @property
    def warnings(self) -> list[str]:
        return [message for level, message in self.logs if level == logging.WARNING]

    def is_secret_output(self, path: str) -> bool:
        return _covered(path, self.secret_outputs)

    # dependency graph (between recorded resources; the root stack is left out)

    def depends_on(self, resource: Registration, other: Registration) -> bool:
        """Direct dependency of ``resource`` on ``other``."""
        return other.urn in resource.dependencies

    def longest_chain(self, start: Registration, end: Registration) -> int | None:
        """Resources on the longest dependency path from ``end`` back to ``start`` (both counted), or None."""
        known = {r.urn: r for r in self.resources}
        memo: dict[str, int | None] = {}

        def longest(urn: str) -> int | None:
            if urn == start.urn:
                return 1
            if urn in memo:
                return memo[urn]
            memo[urn] = None  # cycle guard
            best = None
            for dep in known[urn].dependencies:
                if dep in known:
                    length = longest(dep)
                    if length is not None and (best is None or length + 1 > best):
                        best = length + 1
            memo[urn] = best
            return best

        return longest(end.urn)

    def snapshot(self) -> list[tuple[str, dict[str, Any], list[str], dict[str, Any]]]:
        """Every resource's identity, sorted: equal for two runs of the same program."""
        return sorted((r.identity() for r in self.resources), key=lambda item: item[0])


# --- the monitor ----------------------------------------------------------------------------


def depends_transitively(rec: Recorded, resource: Registration, target: Registration) -> bool:
    """Whether ``resource`` waits for ``target``, directly or through other resources."""
    return rec.longest_chain(target, resource) is not None


def _options(request: Any) -> dict[str, Any]:
    return {
        "delete_before_replace": bool(request.deleteBeforeReplace),
        "additional_secret_outputs": sorted(request.additionalSecretOutputs),
        "replace_on_changes": sorted(request.replaceOnChanges),
        "ignore_changes": sorted(request.ignoreChanges),
        "protect": bool(request.protect),
        "retain_on_delete": bool(request.retainOnDelete),
        "provider": request.provider,
        "deleted_with": request.deletedWith,
    }


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A MockMonitor that keeps a :class:`Registration` for every resource registered."""

    def __init__(self, mocks: pulumi_mocks.Mocks, record: bool = True) -> None:
        super().__init__(mocks)
        self.record = record
        self.registrations: list[Registration] = []
        self.component_outputs: dict[str, dict[str, Any]] = {}
        self.component_secret_outputs: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:  # gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type == "pulumi:pulumi:Stack" or not self.record:
            return response
        raw = rpc.deserialize_properties(request.object)
        inputs, secret_paths = unwrap_secrets(raw)
        registered = self.resources.get(response.urn)
        outputs, _ = unwrap_secrets(dict(registered.state) if registered else {})
        record = Registration(
            type=request.type,
            name=request.name,
            urn=response.urn,
            parent=request.parent,
            custom=bool(request.custom),
            dependencies=tuple(sorted(request.dependencies)),
            property_dependencies={
                key: tuple(sorted(deps.urns)) for key, deps in sorted(request.propertyDependencies.items())
            },
            inputs=inputs,
            secret_paths=frozenset(secret_paths),
            options=_options(request),
            outputs=outputs,
        )
        with self._lock:
            self.registrations.append(record)
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        outputs, secret_paths = unwrap_secrets(rpc.deserialize_properties(request.outputs))
        with self._lock:
            self.component_outputs[request.urn] = outputs
            self.component_secret_outputs[request.urn] = frozenset(secret_paths)
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


class _LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


async def _resolve(value: Any, path: str, secrets: set[str]) -> Any:
    if isinstance(value, pulumi.Output):
        resolved = await value.future(with_unknowns=True)
        if await value.is_secret():
            secrets.add(path)
        return await _resolve(resolved, path, secrets)
    if isinstance(value, dict):
        return {k: await _resolve(v, f"{path}.{k}" if path else str(k), secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [await _resolve(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    if asyncio.isfuture(value) or asyncio.iscoroutine(value):
        return await _resolve(await value, path, secrets)
    return value


def run_program(
    program: Callable[[], Any],
    mocks: pulumi_mocks.Mocks | None = None,
    *,
    project: str = DEFAULT_PROJECT,
    stack: str = DEFAULT_STACK,
    preview: bool = False,
    config: Mapping[str, Any] | None = None,
    secret_config: tuple[str, ...] = (),
    record: bool = True,
) -> Recorded:
    """Run ``program`` under fresh mocks; return what it registered and its resolved return value.

    ``record=False`` keeps no registrations (Pulumi's own mock monitor alone): for timing the program.

    ``config`` holds stack config by full key (``"k3s-cilium:tier"``); non-string
    values are JSON-encoded as the CLI would. ``secret_config`` names secret keys.
    Exceptions raised by the program (or by an apply) propagate.
    """
    monitor = RecordingMonitor(mocks or ProgramMocks(), record)
    recorder = _LogRecorder()
    logger = logging.getLogger(f"tests.mocks.{id(recorder)}")
    logger.propagate = False
    # The SDK's debug lines (several per resource) are not what tests look at.
    logger.setLevel(logging.INFO)
    logger.addHandler(recorder)

    pulumi.runtime.set_all_config(
        {key: value if isinstance(value, str) else json.dumps(value) for key, value in (config or {}).items()},
        list(secret_config),
    )
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks=monitor.mocks, project=project, stack=stack, preview=preview, logger=logger,
                             monitor=monitor)
    settings.SETTINGS.outputs.clear()
    root = settings.get_root_resource()

    result: dict[str, Any] = {}
    collector_thresholds = gc.get_threshold()
    interrupt_handler = signal.getsignal(signal.SIGINT)

    async def body() -> None:
        value = program()
        secrets: set[str] = set()
        result["outputs"] = await _resolve(value, "", secrets)
        result["secret_outputs"] = frozenset(secrets)
        exported: set[str] = set()
        result["exports"] = await _resolve(dict(getattr(root, "outputs", {}) or {}), "", exported)
        result["secret_exports"] = frozenset(exported)

    try:
        _sync_await(run_pulumi_func(body))
        # Warnings attached to a resource are sent once its URN resolves, in a task of their own.
        _sync_await(asyncio.sleep(0))
    finally:
        logger.removeHandler(recorder)
        # __main__.py tunes the collector for its one run per process; a test process runs
        # hundreds of programs, whose garbage must stay collectable.
        gc.unfreeze()
        gc.set_threshold(*collector_thresholds)
        gc.enable()
        # ...and its SIGINT handler is for the program's own process, not the test runner's.
        signal.signal(signal.SIGINT, interrupt_handler)

    stack_urn = _sync_await(root.urn.future()) if root is not None else None
    return Recorded(
        resources=sorted(monitor.registrations, key=lambda r: r.urn),
        stack_urn=stack_urn or "",
        outputs=result.get("outputs"),
        secret_outputs=result.get("secret_outputs", frozenset()),
        exports=result.get("exports", {}),
        secret_exports=result.get("secret_exports", frozenset()),
        logs=list(recorder.records),
        component_outputs=dict(monitor.component_outputs),
        component_secret_outputs=dict(monitor.component_secret_outputs),
    )
