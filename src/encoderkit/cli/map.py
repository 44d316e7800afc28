"""`encoderkit map NAME -o map.png`: the 2-D projection of a collection (the web page's map) as a static
PNG, coloured by a metadata field, optionally with a query and its top hits marked."""
from __future__ import annotations

import sys

from encoderkit.cli._common import add_json_flag, emit_json


def register(sub) -> None:
    p = sub.add_parser("map", help="draw a collection's embedding space as a PNG: UMAP (PCA without umap-learn), "
                                   "clusters coloured and labelled by their keywords")
    p.add_argument("name", help="collection name (under --store or $ENCODERKIT_HOME/collections), its folder, or a "
                                "postgresql://...?collection=NAME URL")
    p.add_argument("-o", "--output", default="map.png", help="PNG to write (default map.png)")
    p.add_argument("--store", default=None, metavar="DIR|URL",
                   help="folder holding the collections (default $ENCODERKIT_HOME/collections), or a PostgreSQL "
                        "database: postgresql://user@host:port/db, as for `encoderkit index`")
    p.add_argument("--method", default="auto", choices=["auto", "umap", "pca"],
                   help="projection: auto (default: umap when umap-learn is installed, else pca), umap, pca")
    p.add_argument("--color", default=None, metavar="FIELD",
                   help="colour points by this metadata field instead of by cluster")
    p.add_argument("--no-clusters", action="store_true",
                   help="do not look for clusters (one colour, or --color's)")
    p.add_argument("--query", default=None, help="mark this query and its top hits on the map")
    p.add_argument("-k", type=int, default=10, help="hits to mark with --query (default 10)")
    p.add_argument("--limit", type=int, default=5000, help="at most this many documents (a seeded sample beyond)")
    p.add_argument("--labels", action="store_true", help="write each point's id next to it (small collections)")
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG (default 150)")
    add_json_flag(p)
    p.set_defaults(func=_run_map)


def _run_map(args) -> int:
    from encoderkit.cli.index import _database_errors

    return _database_errors(run_map)(args)  # NAME may be a collection URL; database errors as one line


def run_map(args) -> int:
    from pathlib import Path

    from encoderkit.cli.index import _open, _pg
    from encoderkit.tasks.projection import map_collection

    if args.limit <= 0 or args.k <= 0:
        raise ValueError("--limit and -k must be positive")
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--output must end in .png, got {out.name!r}")
    if _pg(args) is None:
        from encoderkit.store.collection import DB_NAME, collection_path

        path = collection_path(args.name, args.store)
        if not (path / DB_NAME).is_file():
            raise FileNotFoundError(f"no collection at {path}; check the name (and --store), or create it first")
        title = path.name
    else:
        title = args.name
    with _open(args) as coll:
        cmap = map_collection(coll, limit=args.limit, method=args.method, clusters=not args.no_clusters)
        query_xy, hit_ids = None, []
        if args.query is not None:
            if not args.query.strip():
                raise ValueError("--query is empty; give the text to place on the map")
            qv = coll.embed([args.query])
            query_xy = cmap.projection.transform(qv)[0]
            hits = coll.search(args.query, args.k, vector=qv[0], group_by_document=False)  # the map's points are chunks
            hit_ids = [h.id for h in hits]
    if args.color and all(_field(m, args.color) is None for m in cmap.metadatas):
        known = sorted({k for m in cmap.metadatas for k in m})
        raise ValueError(f"no document has the metadata field {args.color!r}; "
                         f"fields here: {', '.join(known) or 'none'} (or leave out --color to colour by cluster)")
    out.parent.mkdir(parents=True, exist_ok=True)
    legend = draw_map(cmap, out, color=args.color, query=args.query, query_xy=query_xy, hit_ids=hit_ids,
                      labels=args.labels, dpi=args.dpi, title=title)
    report = {"output": str(out), "collection": title, "method": cmap.projection.method,
              "points": len(cmap.ids), "documents": cmap.total,
              "explained_variance": cmap.projection.explained_variance, "color": args.color, "legend": legend,
              "clusters": [c.to_dict() for c in cmap.topics], "note": cmap.note, "seconds": round(cmap.seconds, 2),
              "query": None if query_xy is None else {"text": args.query, "x": float(query_xy[0]),
                                                      "y": float(query_xy[1]), "hits": hit_ids}}
    if args.json:
        emit_json(report)
    else:
        if cmap.note:
            print(f"note: {cmap.note}", file=sys.stderr)
        shown = f"{len(cmap.ids)} of {cmap.total}" if cmap.total > len(cmap.ids) else str(cmap.total)
        found = f", {len(cmap.topics)} clusters" if cmap.topics else ""
        print(f"wrote {out} ({shown} documents, {cmap.projection.method}{found}, {cmap.seconds:.1f} s)", file=sys.stdout)
        for c in cmap.topics:
            print(f"  {c.id + 1:>2}. {c.label} ({c.size})")
    return 0


def _field(meta: dict, field: str):
    cur = meta
    for part in field.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def draw_map(cmap, out, *, color: str | None = None, query: str | None = None, query_xy=None,
             hit_ids: list[str] | None = None, labels: bool = False, dpi: int = 150, title: str = "") -> list[str]:
    """Write the scatter PNG; returns the legend entries (category values, or the numeric range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xy = cmap.coords
    fig, ax = plt.subplots(figsize=(10, 6), dpi=dpi)
    legend: list[str] = []
    show_legend, legend_title = bool(hit_ids), None
    values = [_field(m, color) for m in cmap.metadatas] if color else None
    if values is not None and any(v is not None for v in values) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None):
        num = np.array([np.nan if v is None else float(v) for v in values])
        ok = ~np.isnan(num)
        sc = ax.scatter(xy[ok, 0], xy[ok, 1], c=num[ok], cmap="viridis", s=30, alpha=0.85, edgecolors="white",
                        linewidths=0.4)
        if not ok.all():  # documents without the field: grey, not invisible
            ax.scatter(xy[~ok, 0], xy[~ok, 1], s=30, color="#bab0ac", label=f"(missing {color})")
            show_legend = True
        fig.colorbar(sc, ax=ax, label=color)
        legend = [f"{np.nanmin(num):g}..{np.nanmax(num):g}"]
    elif values is not None:
        from collections import Counter

        show_legend, legend_title = True, color
        counts = Counter("(missing)" if v is None else str(v) for v in values)
        top = [v for v, _ in counts.most_common(10)]
        palette = plt.get_cmap("tab10")
        keys = ["(missing)" if v is None else str(v) for v in values]
        for i, cat in enumerate(top + (["other"] if len(counts) > len(top) else [])):
            mask = np.array([(k == cat) if cat != "other" else (k not in top) for k in keys])
            ax.scatter(xy[mask, 0], xy[mask, 1], s=30, alpha=0.85, label=f"{cat} ({int(mask.sum())})",
                       color=palette(i) if cat != "other" else "#bab0ac", edgecolors="white", linewidths=0.4)
            legend.append(cat)
    elif cmap.clusters is not None and cmap.topics:
        show_legend, legend_title = True, "clusters (top keywords)"
        legend = draw_clusters(ax, cmap)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=30, alpha=0.85, color="#4e79a7", edgecolors="white", linewidths=0.4)
    if hit_ids:
        pos = {i: n for n, i in enumerate(cmap.ids)}
        idx = [pos[h] for h in hit_ids if h in pos]
        ax.scatter(xy[idx, 0], xy[idx, 1], s=70, facecolors="none", edgecolors="black", linewidths=1.4,
                   label="top hits")
    if show_legend:
        ax.legend(title=legend_title, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if query_xy is not None:
        ax.scatter([query_xy[0]], [query_xy[1]], marker="*", s=320, color="#e8262d", edgecolors="white",
                   linewidths=1.0, zorder=5)
        ax.annotate(query if len(query or "") <= 40 else query[:40] + "…", (query_xy[0], query_xy[1]),
                    textcoords="offset points", xytext=(10, 6), fontsize=9, color="#8a1c1c", weight="bold")
    if labels:
        for (x, y), i in zip(xy, cmap.ids):
            ax.annotate(i, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6, color="#333")
    p = cmap.projection
    sub = (f"PCA: axes explain {100 * p.explained_variance[0]:.0f}% and {100 * p.explained_variance[1]:.0f}% of "
           "the variance" if p.method == "pca" else p.method.upper())
    shown = f"{len(cmap.ids)} of {cmap.total}" if cmap.total > len(cmap.ids) else f"{cmap.total}"
    ax.set_title(f"{title}: {shown} documents — {sub}", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return legend


def draw_clusters(ax, cmap) -> list[str]:
    """Points coloured by cluster (grey: in no cluster), each cluster's label written at its centre; returns
    the legend entries."""
    import matplotlib.pyplot as plt
    import numpy as np

    xy, labels = cmap.coords, cmap.clusters
    palette = plt.get_cmap("tab20")
    noise = labels < 0
    if noise.any():
        ax.scatter(xy[noise, 0], xy[noise, 1], s=18, color="#c8c8c8", label=f"no cluster ({int(noise.sum())})")
    legend = []
    for c in cmap.topics:
        mask = labels == c.id
        color = palette((2 * c.id) % 20 + (c.id // 10) % 2)
        ax.scatter(xy[mask, 0], xy[mask, 1], s=24, alpha=0.85, color=color, edgecolors="white", linewidths=0.3,
                   label=f"{c.id + 1}. {c.label} ({c.size})")
        cx, cy = np.median(xy[mask], axis=0)
        ax.annotate(c.label, (cx, cy), ha="center", va="center", fontsize=7, weight="bold", color="#222",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": color, "alpha": 0.8})
        legend.append(c.label)
    return legend
