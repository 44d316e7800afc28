"""`encoderkit train RECIPE`, and the commands that use a run folder: `reconstruct`, `anomaly`, `probe`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from encoderkit.cli._common import add_json_flag, builds, emit_json, hidden_alias


def register(subparsers) -> None:
    """Add train / reconstruct / anomaly / probe. The recipes (which import torch) are built only when `train`
    is the command being run, so `encoderkit --help` stays fast."""
    p = subparsers.add_parser("train", help="train an encoder with a named recipe; writes a run folder "
                                            "(`encoderkit train --help` lists the recipes)")
    if builds("train"):
        from encoderkit.train.recipes import recipes

        rsub = p.add_subparsers(dest="recipe", metavar="RECIPE")
        for name, recipe in recipes().items():
            rp = rsub.add_parser(name, help=recipe.help, description=recipe.help)
            recipe.add_arguments(rp)
            add_json_flag(rp)
            rp.set_defaults(func=_train, recipe_run=recipe.run)
    p.set_defaults(func=lambda a: _no_recipe(p))

    r = subparsers.add_parser("reconstruct", help="reconstruct inputs with a trained autoencoder run")
    r.add_argument("run", help="run folder written by `encoderkit train`")
    r.add_argument("input", help="inputs: .npy / .npz / .pt / IDX file / MNIST folder")
    r.add_argument("-o", "--output", dest="out", metavar="FILE", help="write the reconstructions here (.npy)")
    hidden_alias(r, "--out", dest="out")  # the spelling before issue 17
    r.add_argument("--png", help="write a grid of originals (top) and reconstructions (bottom) here")
    r.add_argument("--limit", type=int, help="use only the first N inputs")
    add_json_flag(r)
    r.set_defaults(func=_reconstruct)

    a = subparsers.add_parser("anomaly", help="score inputs as anomalous against a run's training data")
    a.add_argument("run", help="run folder")
    a.add_argument("data", help="inputs to score")
    a.add_argument("--method", choices=["reconstruction", "knn"], default="reconstruction",
                   help="score by reconstruction error or by distance to the k nearest normal examples")
    a.add_argument("--train-data", help="normal data for the threshold / k-NN (default: the run's own training data)")
    a.add_argument("--quantile", type=float, default=0.95, help="threshold = this quantile of normal scores")
    a.add_argument("--k", type=int, default=5, help="neighbours for --method knn")
    a.add_argument("--normal", type=int, nargs="+", help="labels counted as normal, for AUROC (default: the run's --digits)")
    a.add_argument("--limit", type=int, help="score only the first N inputs")
    a.add_argument("--scores", help="write all scores here (.npy)")
    add_json_flag(a)
    a.set_defaults(func=_anomaly)

    q = subparsers.add_parser("probe", help="linear-probe (and k-NN) accuracy of a run's frozen features")
    q.add_argument("run", help="run folder")
    q.add_argument("data", help="labelled data: MNIST folder or .npz with X and y")
    q.add_argument("--holdout", type=int, help="the last N examples are the test set (MNIST folder: 2000; else 20%%)")
    q.add_argument("--knn", type=int, default=20, help="also report k-NN accuracy with this k (0 = skip)")
    q.add_argument("--limit", type=int, help="use only the first N training examples")
    add_json_flag(q)
    q.set_defaults(func=_probe)


def _no_recipe(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _train(args: argparse.Namespace) -> int:
    if not getattr(args, "out", None):
        raise ValueError("give the folder to write: -o/--output DIR")
    summary = args.recipe_run(args)
    if args.json:
        emit_json(summary)
    else:
        print("\n".join(summary_lines(summary)))
    return 0


def summary_lines(summary: dict, indent: str = "") -> list[str]:
    """A training summary as people read it (issue 17: `train clip` printed raw dicts and `None`): one `key: value`
    line each, nested dicts as indented lines, numbers to 4 significant digits (counts with separators), lists
    comma-separated; a value that is None (not measured) is left out."""
    def fmt(v) -> str:
        if isinstance(v, bool) or v is None:
            return str(v).lower() if isinstance(v, bool) else "–"
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, (list, tuple)):
            return ", ".join(fmt(x) for x in v)
        return str(v)

    lines = []
    for k, v in summary.items():
        if v is None:
            continue
        if isinstance(v, dict):
            lines.append(f"{indent}{k}:")
            lines.extend(summary_lines(v, indent + "  ") if v else [f"{indent}  (none)"])
        else:
            lines.append(f"{indent}{k}: {fmt(v)}")
    return lines


def _load_inputs(run, path: str, limit: int | None = None):
    from encoderkit.datasets import load_array

    X, y = load_array(path)
    if limit:
        X, y = X[:limit], (y[:limit] if y is not None else None)
    return run.inputs(X), y


def _features(model, x):
    out = model.encode(x)
    return out[0] if isinstance(out, tuple) else out


def _reconstruct(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from encoderkit.train.run import load_run

    run = load_run(args.run)
    if not hasattr(run.model, "reconstruct"):
        raise ValueError(f"the {run.info['model_type']} in {args.run} does not reconstruct inputs")
    x, _ = _load_inputs(run, args.input, args.limit)
    torch.manual_seed(0)
    with torch.no_grad():
        rec = torch.cat([run.model.reconstruct(x[s:s + 512]) for s in range(0, len(x), 512)])
    err = (rec - x).pow(2).flatten(1).mean(1).numpy()
    if args.out:
        np.save(args.out, rec.numpy())
    if args.png:
        _save_grid(x[:8], rec[:8], args.png)
    result = {"run": args.run, "n": len(x), "mse": float(err.mean()), "mse_per_example": err.tolist(),
              "out": args.out, "png": args.png}
    if args.json:
        emit_json(result)
    else:
        print(f"reconstructed {len(x)} inputs: mean squared error {err.mean():.6f}"
              + (f"; wrote {args.out}" if args.out else "") + (f"; wrote {args.png}" if args.png else ""))
    return 0


def _save_grid(x, rec, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(x)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.6), squeeze=False)
    for i in range(n):
        for row, img in enumerate((x[i], rec[i])):
            a = img.reshape(-1, *img.shape[-2:])[0] if img.dim() > 1 else img.reshape(int(img.numel() ** 0.5), -1)
            axes[row][i].imshow(a.clamp(0, 1).numpy(), cmap="gray")
            axes[row][i].axis("off")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def _run_training_inputs(run):
    """The normal data a run was trained on, rebuilt from its config.json (source, holdout, digits)."""
    import numpy as np

    from encoderkit.datasets import load_array
    from encoderkit.datasets.mnist import binarize

    d = run.info.get("data", {})
    if not d.get("source") or not Path(d["source"]).exists():
        raise FileNotFoundError("the run's training data is not available; pass --train-data")
    X, y = load_array(d["source"])
    n = len(X) - int(d.get("holdout", 0))
    X, y = X[:n], (y[:n] if y is not None else None)
    if d.get("digits"):
        X = X[np.isin(y, d["digits"])]
    x = run.inputs(X)
    if d.get("binarized"):
        x = x.new_tensor(binarize(x.numpy(), int(run.info.get("train_config", {}).get("seed", 0))))
    return x


def _anomaly(args: argparse.Namespace) -> int:
    import numpy as np

    from encoderkit.datasets import load_array
    from encoderkit.tasks.anomaly import auroc, detect
    from encoderkit.train.run import load_run

    run = load_run(args.run)
    x, y = _load_inputs(run, args.data, args.limit)
    if args.train_data:
        train_x = run.inputs(load_array(args.train_data)[0])
    else:
        train_x = _run_training_inputs(run)
    encode = (lambda b: _features(run.model, b)) if args.method == "knn" else None
    res = detect(run.model, train_x, x, method=args.method, quantile=args.quantile, k=args.k, encode=encode)
    out = {"run": args.run, "method": res.method, "n": len(x), "threshold": res.threshold,
           "n_flagged": int(res.flagged.sum()), "mean_score": float(res.scores.mean())}
    normal = args.normal or run.info.get("data", {}).get("digits")
    if normal is not None and y is not None:
        is_anom = ~np.isin(y, normal)
        if 0 < is_anom.sum() < len(is_anom):
            out["auroc"] = auroc(res.scores, is_anom)
            out["normal_labels"] = list(normal)
    if args.scores:
        np.save(args.scores, res.scores)
    if args.json:
        emit_json({**out, "scores": res.scores.tolist()})
    else:
        print(f"{out['n_flagged']} of {len(x)} inputs flagged as anomalous (method {res.method}, "
              f"threshold {res.threshold:.6g} = {args.quantile:.0%} quantile of normal scores)"
              + (f"; AUROC {out['auroc']:.4f} (normal labels {out['normal_labels']})" if "auroc" in out else ""))
    return 0


def _probe(args: argparse.Namespace) -> int:
    import torch

    from encoderkit.tasks.probe import extract_features, knn_accuracy, linear_probe
    from encoderkit.train.run import load_run

    run = load_run(args.run)
    x, y = _load_inputs(run, args.data)
    if y is None:
        raise ValueError(f"{args.data} has no labels; a probe needs an MNIST folder or an .npz with X and y")
    holdout = args.holdout if args.holdout is not None else (2000 if Path(args.data).is_dir() else len(x) // 5)
    if not 0 < holdout < len(x):
        raise ValueError(f"--holdout {holdout} must leave both train and test examples (have {len(x)})")
    n = len(x) - holdout
    tr = slice(0, min(n, args.limit) if args.limit else n)
    torch.manual_seed(0)
    feats = extract_features(lambda b: _features(run.model, b), x, progress=not args.json)
    raw = x.flatten(1).numpy()
    out = {"run": args.run, "train": tr.stop, "test": holdout, "feature_dim": int(feats.shape[1]),
           "linear_probe_accuracy": linear_probe(feats[tr], y[tr], feats[n:], y[n:]),
           "raw_pixel_linear_probe_accuracy": linear_probe(raw[tr], y[tr], raw[n:], y[n:])}
    if args.knn:
        out[f"knn{args.knn}_accuracy"] = knn_accuracy(feats[tr], y[tr], feats[n:], y[n:], k=args.knn)
    if args.json:
        emit_json(out)
    else:
        for k, v in out.items():
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from encoderkit.cli import main

    sys.exit(main())
