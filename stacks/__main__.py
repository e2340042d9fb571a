"""``python -m stacks plan <stack> [--json]``: the effective plan of a stack, offline.

``python -m stacks docs [--write-readme]``: the configuration reference (README.md's generated block).
"""

from __future__ import annotations

import argparse
import sys

from stacks import docs, plan, stackfile
from stacks.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    plan_cmd = commands.add_parser("plan", help="print the effective plan of a stack")
    plan_cmd.add_argument("stack", help="stack name (Pulumi.<stack>.yaml or stacks/examples/<stack>.yaml) or a file")
    plan_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    docs_cmd = commands.add_parser("docs", help="print the configuration reference (markdown)")
    docs_cmd.add_argument(
        "--write-readme", action="store_true", help="replace the generated block in README.md instead of printing"
    )
    args = parser.parse_args(argv)

    if args.command == "docs":
        return _docs(args.write_readme)

    try:
        path = stackfile.locate(args.stack)
        name = args.stack if not args.stack.endswith(".yaml") else path.stem.removeprefix("Pulumi.")
        result = plan.build(name, stackfile.load(path), stackfile.secrets_set(path))
    except (ConfigError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    sys.stdout.write(plan.to_json(result) if args.json else plan.to_text(result))
    return 0


def _docs(write_readme: bool) -> int:
    if not write_readme:
        sys.stdout.write(docs.config_reference())
        return 0
    try:
        changed = docs.write_readme()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{docs.README}: {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
