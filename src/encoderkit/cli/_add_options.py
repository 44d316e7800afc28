"""Checks of `encoderkit index add`'s options, made before any model loads or file is read, and how model
names compare."""
from __future__ import annotations

from pathlib import Path


def same_model(a: str, b: str) -> bool:
    """Whether two model names mean the same model: aliases resolved (all-MiniLM-L6-v2 ==
    sentence-transformers/all-MiniLM-L6-v2), case-insensitive, folders compared as resolved paths."""
    from encoderkit.checkpoints.hub import canonical_name

    def key(m: str) -> str:
        p = Path(m).expanduser()
        return str(p.resolve()) if p.exists() else canonical_name(m).lower()
    return key(a) == key(b)


def ingest_options(args) -> str | None:
    """Check add's options before any model loads or file is read; the template to apply, or None."""
    if args.chunk_tokens is not None and args.chunk_tokens < 0:
        raise ValueError("--chunk-tokens must be 0 (no split) or more")
    if args.overlap < 0:
        raise ValueError("--overlap must be 0 or more")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.title_field and args.template:
        raise ValueError("give --title-field or --template, not both (--title-field F is --template '{F} {text}')")
    template = args.template
    if args.title_field:
        from encoderkit.io import title_template

        template = title_template(args.title_field)
    if template is not None:
        import string

        try:
            names = [n for _, n, _, _ in string.Formatter().parse(template) if n is not None]
        except ValueError as exc:
            raise ValueError(f"--template {template!r} is not a valid template ({exc}); write fields as {{name}}") from None
        if not names:
            raise ValueError(f"--template {template!r} names no field; write fields as {{name}}, e.g. '{{title}} {{text}}'")
    for p in args.paths:
        if not Path(p).expanduser().exists():
            raise FileNotFoundError(f"{p} does not exist")
    return template
