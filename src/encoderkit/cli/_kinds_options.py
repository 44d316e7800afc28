"""The CLI options for what a collection holds beyond dense vectors and how it is searched: `index create --kinds
--late-index`, `index add --late-chunking`, `search --mode sparse|late --modes --weights`. Checked before any model
loads; the Collection does the work (store/kinds.py)."""
from __future__ import annotations

import math
from typing import Any

KINDS = ("dense", "sparse", "late")
LISTS = ("vector", "keyword", "sparse", "late")  # what hybrid search can fuse


def add_create_options(p) -> None:
    p.add_argument("--kinds", metavar="LIST",
                   help="what the collection holds, comma-separated among dense, sparse, late (default: a SPLADE "
                        "model's sparse vectors, a ColBERT model's token vectors, else dense); 'late' with a plain "
                        "model stores its normalized token vectors for late interaction (MaxSim) without training")
    p.add_argument("--late-index", metavar="INDEX", help="what proposes late-interaction candidates: PLAID (default "
                                                          "in the embedded store: k-means centroids, ~4 sqrt(tokens)), "
                                                          "PLAID{K} (K centroids), or a FAISS token index: Flat "
                                                          "(PostgreSQL's default, the only one there), HNSW32")


def add_search_options(p) -> None:
    p.add_argument("--modes", metavar="LIST", help="lists hybrid fuses, comma-separated among vector, keyword, sparse, "
                                                   "late (default: every list the collection has)")
    p.add_argument("--weights", metavar="LIST", help="fusion weight per fused list: '0.7,0.3' in --modes order, or "
                                                     "'vector=0.7,late=0.3' (without --modes, fuses the lists named)")


def _names(value: str, allowed: tuple, flag: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(f"{flag} {value!r}: give a comma-separated list among {', '.join(allowed)}"
                         + (f" ({', '.join(repr(b) for b in bad)} is not one)" if bad else ""))
    return list(dict.fromkeys(names))


def create_kinds(args) -> list[str] | None:
    """--kinds as a list (None: the model's default), checked before the model loads."""
    return _names(args.kinds, KINDS, "--kinds") if args.kinds else None


def kinds_encoder(model: str, kinds: list[str] | None) -> Any:
    """The encoder a new collection is created with: given 'late' and a plain model (no multi-vector head), one that
    gives its own normalized token vectors (`token_late`); else the model's name, loaded by the collection."""
    if not kinds or "late" not in kinds:
        return model
    import encoderkit

    enc = encoderkit.load(model)
    if getattr(enc, "late", None) is None and getattr(enc, "sparse", None) is None:
        enc.token_late = True
    return enc


def _weight(text: str, flag: str) -> float:
    try:
        w = float(text)
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not a number") from None
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"{flag}: weights must be finite and >= 0, got {text}")
    return w


def search_options(args) -> dict:
    """mode, modes and weights for Collection.search from --mode / --modes / --weights (--modes or --weights alone
    imply --mode hybrid)."""
    modes = _names(args.modes, LISTS, "--modes") if args.modes else None
    weights: Any = None
    if args.weights:
        parts = [w.strip() for w in args.weights.split(",") if w.strip()]
        if parts and all("=" in w for w in parts):
            pairs = [w.split("=", 1) for w in parts]
            names = _names(",".join(n for n, _ in pairs), LISTS, "--weights")
            if len(names) != len(pairs):
                raise ValueError(f"--weights {args.weights!r} names a list twice")
            weights = {n.strip(): _weight(v, "--weights") for n, v in pairs}
        elif any("=" in w for w in parts) or not parts:
            raise ValueError(f"--weights {args.weights!r}: give numbers in --modes order ('0.7,0.3') or name=number "
                             "pairs ('vector=0.7,keyword=0.3'), not a mix")
        else:
            weights = [_weight(w, "--weights") for w in parts]
            if modes is None:
                raise ValueError("--weights as plain numbers needs --modes to say which list each weighs; or name "
                                 "them: --weights vector=0.7,keyword=0.3")
            if len(weights) != len(modes):
                raise ValueError(f"--weights gives {len(weights)} numbers for {len(modes)} --modes "
                                 f"({', '.join(modes)})")
    if isinstance(weights, dict) and modes is None:
        modes = list(weights)
    mode = args.mode
    if (modes is not None or weights is not None) and mode not in (None, "hybrid"):
        raise ValueError(f"--modes and --weights choose what hybrid search fuses; they do not go with --mode {mode}")
    if isinstance(weights, dict) and modes is not None and set(weights) - set(modes):
        raise ValueError(f"--weights names {', '.join(sorted(set(weights) - set(modes)))}, not among --modes "
                         f"{', '.join(modes)}")
    return {"mode": "hybrid" if modes is not None or weights is not None else mode, "modes": modes, "weights": weights}


def check_mode(col: Any, name: str, opts: dict) -> None:
    """A mode or fused list the collection cannot search: one line naming what it can."""
    have = col.modes()
    asked = [opts["mode"]] if opts["mode"] not in (None, "hybrid") else []
    asked += opts["modes"] or []
    missing = [m for m in asked if m not in have]
    if missing:
        raise ValueError(f"collection {name!r} cannot search by {missing[0]}: it holds {', '.join(col.kinds)} vectors, "
                         f"so its modes are {', '.join(have)}" + ("" if missing[0] not in ("sparse", "late") else
                         f"; create a collection with --kinds {'sparse' if missing[0] == 'sparse' else 'late'} "
                         "to search that way"))


def check_late_chunking(args) -> None:
    """--late-chunking needs chunks (not --chunk-tokens 0); --context-tokens needs --late-chunking."""
    if args.late_chunking and args.chunk_tokens == 0:
        raise ValueError("--late-chunking pools the chunks of long documents from one pass over each; it does not go "
                         "with --chunk-tokens 0 (no split)")
    if args.context_tokens is not None:
        if not args.late_chunking:
            raise ValueError("--context-tokens sets the window of --late-chunking's passes; add --late-chunking")
        if args.context_tokens < 16:
            raise ValueError(f"--context-tokens must be at least 16, got {args.context_tokens}")
        if args.chunk_tokens and args.chunk_tokens > args.context_tokens - 4:
            raise ValueError(f"--chunk-tokens {args.chunk_tokens} does not fit a {args.context_tokens}-token pass; "
                             "make chunks smaller than the context")


def context_encoder(model: str, tokens: int) -> Any:
    """The collection's model reading `tokens` tokens at once, for late chunking's passes; a ValueError when its
    positions hold fewer."""
    import encoderkit

    enc = encoderkit.load(model, max_length=tokens)
    if enc.max_length < tokens:
        raise ValueError(f"--context-tokens {tokens}: {model} reads at most {enc.max_length} tokens at once (its "
                         "position embeddings)")
    return enc
