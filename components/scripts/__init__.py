"""Remote shell scripts as templates.

Each ``<name>.sh`` beside this file is a complete bash script that reads its
parameters from UPPER_CASE variables. ``render`` puts a block of shell-quoted
assignments right after the ``set`` line, so the body never contains a value
that was not quoted, and shellcheck can read both the template and the result.

A script with a long wait has a ``# @progress`` line too, replaced by
``progress.bash`` (``progress_start``/``progress_stop``: a line on stderr at
least once a minute saying what it waits for), labelled with the script's name.
A ``# @include <name>`` line is replaced by ``<name>.bash`` (functions that
several scripts share, such as ``download``): the rendered script stays whole,
with nothing to source on the host.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Mapping
from importlib import resources

ScriptValue = str | int | bool

_PARAM_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# A quoted value may hold anything but NUL (bash cannot store it) and other
# control characters, which have no business in a parameter and hide content
# from a reviewer reading the rendered command in `pulumi preview`.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_PARAMS_MARKER = "# @params"
_PROGRESS_MARKER = "# @progress"
_INCLUDE = re.compile(r"^# @include ([a-z0-9-]+)$", re.MULTILINE)


class ScriptParamError(ValueError):
    """A parameter that cannot be passed to a remote script safely."""


# Package data, read once: a 200-node stack renders about 3,000 scripts.
@functools.cache
def template(name: str) -> str:
    """The raw text of ``components/scripts/<name>.sh``."""
    return resources.files(__package__).joinpath(f"{name}.sh").read_text()


def _shell_value(value: ScriptValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@functools.cache
def _library(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.bash").read_text().rstrip()


def render(name: str, params: Mapping[str, ScriptValue] | None = None) -> str:
    """Render a script with its parameters assigned at the ``# @params`` line."""
    body = template(name)
    if _PARAMS_MARKER not in body:
        raise ScriptParamError(f"script {name}.sh has no '{_PARAMS_MARKER}' line")
    lines = []
    for key, value in sorted((params or {}).items()):
        if not _PARAM_NAME.match(key):
            raise ScriptParamError(f"script {name}.sh: parameter name {key!r} must be UPPER_CASE")
        text = _shell_value(value)
        if _UNSAFE.search(text):
            raise ScriptParamError(
                f"script {name}.sh: parameter {key} contains a control character; "
                "only printable text and newlines can be passed to a remote script"
            )
        lines.append(f"{key}={shlex.quote(text)}")
    body = _INCLUDE.sub(lambda match: _library(match[1]), body)
    if _PROGRESS_MARKER in body:  # before the values go in: none of them can hold the marker then
        body = body.replace(_PROGRESS_MARKER, f"PROGRESS_LABEL={shlex.quote(name)}\n{_library('progress')}", 1)
    return body.replace(_PARAMS_MARKER, "\n".join(lines) if lines else ":", 1)
