"""`encoderkit classify`: zero-shot classification of images (CLIP / SigLIP models) or texts (text encoders)."""
from __future__ import annotations

from encoderkit.cli._common import add_json_flag, emit_json, hidden_alias


def register(sub) -> None:
    p = sub.add_parser("classify", help="zero-shot classify images (with a CLIP/SigLIP model) or texts among labels")
    p.add_argument("inputs", nargs="+", help="image files (image-text model) or texts (text encoder)")
    p.add_argument("-m", "--model", required=True, help="model folder or name (CLIP / SigLIP, or any text encoder)")
    p.add_argument("--labels", required=True, help='comma-separated labels, e.g. "a photo of a cat,a photo of a dog"')
    p.add_argument("--template", default="{}", help="label template, e.g. 'a photo of a {}' (default: the label itself)")
    p.add_argument("-k", dest="top_k", type=int, default=1, metavar="K", help="show the k best labels per input (default 1)")
    hidden_alias(p, "--top-k", dest="top_k", type=int)  # the spelling before issue 17
    p.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass (default 32)")
    add_json_flag(p)
    p.set_defaults(func=run_classify)


def run_classify(args) -> int:
    from encoderkit.tasks.zero_shot import ZeroShotClassifier

    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    if len(labels) < 2:
        raise ValueError(f"--labels needs at least two comma-separated labels, got {args.labels!r}")
    if args.top_k < 1:
        raise ValueError(f"-k must be at least 1, got {args.top_k}")
    clf = ZeroShotClassifier.from_pretrained(args.model, template=args.template)
    res = clf(args.inputs, labels, batch_size=args.batch_size)
    top = res.top(min(args.top_k, len(labels)))
    if args.json:
        emit_json({"model": str(args.model), "labels": labels,
                   "results": [{"input": str(x), "label": t[0][0], "score": t[0][1],
                                "top": [{"label": lab, "score": s} for lab, s in t]} for x, t in zip(args.inputs, top)]})
        return 0
    for x, t in zip(args.inputs, top):
        print(f"{x}\t" + "\t".join(f"{lab} ({s:.3f})" for lab, s in t))
    return 0
