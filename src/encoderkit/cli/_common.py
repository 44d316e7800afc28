"""Small helpers shared by the CLI command modules."""
from __future__ import annotations

import json
import sys
from typing import Any

INVOKED: str | None = None  # the command being run ("" for none); None: build every command's full options


def builds(command: str) -> bool:
    """Whether `command`'s full options should be built now (always, unless another command is running)."""
    return INVOKED is None or INVOKED == command


def hidden_alias(parser, *flags: str, dest: str, **kw) -> None:
    """Old spellings of a flag (one spelling per flag across commands, issue 17): still accepted, never shown in
    --help. The visible flag sets the default; the alias only stores what it is given."""
    import argparse

    parser.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)


def add_json_flag(parser) -> None:
    """Every command that prints results takes --json."""
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def emit_json(obj: Any) -> None:
    """Write one JSON document to stdout."""
    json.dump(obj, sys.stdout, indent=2, default=_default)
    sys.stdout.write("\n")


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
