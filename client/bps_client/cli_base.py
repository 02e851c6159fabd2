"""What every `bpsc` command shares: its parser (--json, help text, an example) and its output
(the resource as JSON, or lines with the id last)."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any


def out(args: argparse.Namespace, resource: Any, lines: list[str]) -> None:
    """--json: the resource; else the human lines (the id last)."""
    if args.json:
        print(json.dumps(resource, indent=2))
    else:
        print("\n".join(lines))


def out_items(args: argparse.Namespace, items: Iterable[dict], line: Callable[[dict], str]) -> None:
    """A list, every page of it: --json, one JSON array; else a line per item as each page
    arrives (`bpsc jobs | head -1` reads the first page only)."""
    if args.json:
        print(json.dumps(list(items), indent=2))
        return
    for item in items:
        print(line(item))
        sys.stdout.flush()


def command(commands: Any, name: str, func: Any, help_text: str, example: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the resource as JSON instead of lines")
    parser = commands.add_parser(name, help=help_text, description=help_text, parents=[common],
                                 epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser
