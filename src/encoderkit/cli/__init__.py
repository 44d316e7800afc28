"""The `encoderkit` command line: every module in this package that defines
`register(subparsers)` contributes its subcommands (found at start-up, no central list)."""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors can quote any argument: the message is written as one printable line
    (a line break in a quoted argument stays one line; a lone surrogate from an undecodable byte in argv is written
    as an escape such as \\udcff instead of failing on a strict UTF-8 stream)."""

    def error(self, message: str):
        super().error(one_line(message))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand module's commands attached. `command`: the command about to run (""
    for none, e.g. `encoderkit --help`); commands whose options are expensive to build (train imports torch for
    its recipes) build them only when they are the one running. None builds everything."""
    from encoderkit import __version__
    from encoderkit.cli import _common

    _common.INVOKED = command
    parser = Parser(prog="encoderkit", description="Build, load, train and use neural encoders.")
    parser.add_argument("--version", action="version", version=f"encoderkit {__version__}",
                        help="print the version and exit")
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


def one_line(text: str) -> str:
    """`text` as one printable line: line breaks, other control and format characters and lone surrogates (all of
    which a message may quote from the user's input) written as escapes such as \\r or \\ud800."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def main(argv: list[str] | None = None) -> int:
    """Parse argv and run the chosen command; errors become one readable line and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(next((a for a in argv if not a.startswith("-")), ""))
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
        print(f"encoderkit {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
