"""The `encoderkit` command line: every module in this package that defines
`register(subparsers)` contributes its subcommands (found at start-up, no central list)."""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand module's commands attached."""
    parser = argparse.ArgumentParser(prog="encoderkit", description="Build, load, train and use neural encoders.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse argv and run the chosen command; errors become one readable line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `encoderkit info | head`
        sys.stderr.close()
        return 0
    except (ValueError, TypeError, KeyError, RuntimeError, OSError) as exc:  # OSError: also too-long paths
        if args.verbose:
            raise
        print(f"encoderkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
