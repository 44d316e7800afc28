"""encoderkit's Encoder as an MTEB model: mteb's EncoderProtocol (`encode(DataLoader, task_metadata=..., hf_split=...,
hf_subset=..., prompt_type=...)`), prompts chosen by task name / task type / query-or-document as mteb orders them.

    import mteb
    from encoderkit.integrations.mteb import MTEBEncoder
    model = MTEBEncoder("all-MiniLM-L6-v2")            # or MTEBEncoder(encoderkit.load(...))
    mteb.evaluate(model, mteb.get_tasks(tasks=["SciFact"]))

Needs the `mteb` package (pip install mteb); importing this module without it raises an ImportError saying so."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

try:
    import mteb  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - exercised only without mteb
    raise ImportError("encoderkit.integrations.mteb needs the mteb package: pip install mteb") from exc
from mteb.models.abs_encoder import AbsEncoder, get_prompt_name
from mteb.models.model_meta import ModelMeta, ScoringFunction

log = logging.getLogger(__name__)
_PREFIX = "encoderkit/"  # MTEB wants "org/name": a bare name such as all-MiniLM-L6-v2 gets this prefix


def _meta(encoder: Any, name: str, revision: str | None) -> ModelMeta:
    """The ModelMeta mteb records with each result: name, size, width, token limit, similarity."""
    fn = str(encoder.similarity_fn or "cosine").lower()
    sim = {"cosine": ScoringFunction.COSINE, "dot": ScoringFunction.DOT_PRODUCT,
           "dot_product": ScoringFunction.DOT_PRODUCT, "euclidean": ScoringFunction.EUCLIDEAN,
           "manhattan": ScoringFunction.MANHATTAN}.get(fn)
    if sim is None:
        raise ValueError(f"{name}: similarity {fn!r} has no MTEB scoring function (cosine, dot, euclidean, manhattan)")
    return ModelMeta.create_empty(overwrites=dict(
        loader=MTEBEncoder, name=name if "/" in name else _PREFIX + name, revision=revision,
        n_parameters=encoder.num_parameters(), max_tokens=encoder.max_length, embed_dim=encoder.dim,
        similarity_fn_name=sim, framework=["PyTorch"], modalities=["text"], open_weights=True))


class MTEBEncoder(AbsEncoder):
    """An encoderkit Encoder seen by mteb. prompts: {key: prompt text}, keys as mteb reads them ("query",
    "document", a task type such as "Retrieval" or "STS", a task name, or "TaskName-query"); default: the
    checkpoint's own prompts (sentence-transformers' config_sentence_transformers.json)."""

    def __init__(self, model_name: Any = "all-MiniLM-L6-v2", revision: str | None = None, *,
                 device: str | None = None, prompts: dict[str, str] | None = None, batch_size: int = 32,
                 normalize: bool | None = None, **load_options: Any):
        import encoderkit

        if isinstance(model_name, str):
            if model_name.startswith(_PREFIX):  # the name this wrapper gave a bare model name (ModelMeta.load_model)
                model_name = model_name[len(_PREFIX):]
            enc = encoderkit.load(model_name, **({"device": device} if device else {}), **load_options)
            name = model_name
        elif isinstance(model_name, encoderkit.Encoder):
            enc, name = model_name, model_name.name or "encoderkit-model"
        else:
            raise TypeError(f"MTEBEncoder takes a model name, a folder or an encoderkit Encoder, "
                            f"got {type(model_name).__name__}")
        if enc.modality != "text":
            raise ValueError(f"{name} reads {enc.modality} inputs; MTEBEncoder wraps text encoders")
        self.model, self.batch_size, self.normalize = enc, batch_size, normalize
        # not checked against mteb's task registry: a key may name a custom task (such as beir_task's)
        self.model_prompts = (dict(prompts) if prompts is not None else dict(enc.prompts)) or None
        self.mteb_model_meta = _meta(enc, str(name), revision)

    def prompt_for(self, task_metadata: Any, prompt_type: Any) -> str | None:
        """The prompt text mteb's priority order picks for this task and side, or None."""
        key = get_prompt_name(self.model_prompts, task_metadata, prompt_type)
        return self.model_prompts[key] if key else None

    def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str,
               prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """(n, dim) float32 vectors of every text in mteb's DataLoader of {"text": [...]} batches, in order."""
        texts: list[str] = []
        for batch in inputs:
            if "text" not in batch:
                raise ValueError(f"{task_metadata.name}: MTEBEncoder reads text, the batch has {sorted(batch)}")
            texts.extend(batch["text"])
        prompt = self.prompt_for(task_metadata, prompt_type)
        side = getattr(prompt_type, "value", None)
        log.info("mteb %s (%s, %s): %d texts, prompt %r", task_metadata.name, hf_subset, side, len(texts), prompt)
        if not texts:
            return np.zeros((0, self.model.dim), np.float32)
        opts = {"batch_size": int(kwargs.get("batch_size") or self.batch_size),
                "progress": bool(kwargs.get("show_progress_bar", False)), "task": side}
        if self.normalize is not None:
            opts["normalize"] = self.normalize
        out = self.model.encode(texts, prompt=prompt, **opts)
        return np.asarray(out, dtype=np.float32)


def beir_task(folder: Any, split: str = "test", *, name: str | None = None, query_ids: Any = None,
              doc_ids: Any = None) -> Any:
    """An mteb retrieval task reading a local BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) with
    encoderkit's reader: no download. query_ids / doc_ids keep a subset (the judged documents of the kept
    queries must be in doc_ids). Main score NDCG@10, as mteb reports BEIR tasks."""
    from pathlib import Path

    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    from encoderkit.evaluate.beir import load_beir

    folder = Path(folder).expanduser()
    data = subset_beir(load_beir(folder, split), query_ids, doc_ids)
    task_name = name or f"Local{folder.name.title().replace('-', '').replace('_', '')}"

    class BeirFolderTask(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=task_name, description=f"BEIR folder {folder} ({split} split), read by encoderkit",
            dataset={"path": str(folder), "revision": "local"}, type="Retrieval", category="t2t",
            modalities=["text"], eval_splits=[split], eval_langs=["eng-Latn"], main_score="ndcg_at_10",
            reference=None, date=None, domains=None, task_subtypes=None, license=None,
            annotations_creators=None, dialect=None, sample_creation=None, bibtex_citation=None)

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            """Hand mteb the folder's corpus, queries and judgments (no network)."""
            if self.data_loaded:
                return
            from datasets import Dataset

            corpus = Dataset.from_dict({"id": list(data.corpus),
                                        "title": [(d.get("title") or "") for d in data.corpus.values()],
                                        "text": [d.get("text", "") for d in data.corpus.values()]})
            queries = Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())})
            self.dataset = {"default": {split: {"corpus": corpus, "queries": queries, "top_ranked": None,
                                                "relevant_docs": {q: dict(r) for q, r in data.qrels.items()}}}}
            self.data_loaded = True

    return BeirFolderTask()


def subset_beir(data: Any, query_ids: Any = None, doc_ids: Any = None) -> Any:
    """A BeirData restricted to query_ids and doc_ids (None keeps all); a ValueError names a kept query whose
    judged documents were dropped or an id that is not in the folder."""
    from encoderkit.evaluate.beir import BeirData

    qids = list(data.queries) if query_ids is None else [str(q) for q in query_ids]
    dids = list(data.corpus) if doc_ids is None else list(dict.fromkeys(str(d) for d in doc_ids))
    for q in qids:
        if q not in data.queries:
            raise ValueError(f"query {q!r} has no judgments in this split")
    for d in dids:
        if d not in data.corpus:
            raise ValueError(f"document {d!r} is not in the corpus")
    keep = set(dids)
    for q in qids:
        lost = [d for d in data.qrels[q] if d not in keep]
        if lost:
            raise ValueError(f"query {q!r} is judged on document {lost[0]!r}, which the subset drops")
    return BeirData({d: data.corpus[d] for d in dids}, {q: data.queries[q] for q in qids},
                    {q: data.qrels[q] for q in qids})
