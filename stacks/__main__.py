"""``python -m stacks plan <stack> [--json]``: the effective plan of a stack, offline."""

from __future__ import annotations

import argparse
import sys

from stacks import plan, stackfile
from stacks.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    plan_cmd = commands.add_parser("plan", help="print the effective plan of a stack")
    plan_cmd.add_argument("stack", help="stack name (Pulumi.<stack>.yaml or stacks/examples/<stack>.yaml) or a file")
    plan_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    try:
        path = stackfile.locate(args.stack)
        name = args.stack if not args.stack.endswith(".yaml") else path.stem.removeprefix("Pulumi.")
        result = plan.build(name, stackfile.load(path))
    except (ConfigError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    sys.stdout.write(plan.to_json(result) if args.json else plan.to_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
