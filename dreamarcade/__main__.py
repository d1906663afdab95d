"""``python -m dreamarcade list``: print the catalog of env ids."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamarcade", description="dreamarcade command line")
    sub = parser.add_subparsers(dest="command")
    lst = sub.add_parser("list", help="print every env id, what it is, the extra it needs and whether it is installed")
    lst.add_argument("--markdown", action="store_true", help="print the catalog as a Markdown table (for the README)")
    args = parser.parse_args(argv)
    if args.command == "list":
        from dreamarcade.registry import format_catalog, markdown_catalog

        print(markdown_catalog() if args.markdown else format_catalog())
        return 0
    parser.print_help(sys.stderr)  # no command: a usage error (exit 2); --help exits 0 through argparse
    return 2


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)
