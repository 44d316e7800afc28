"""encoderkit.evaluate: retrieval metrics (trec_eval / BEIR definitions), BEIR folders, STS correlation."""
from encoderkit.evaluate.metrics import evaluate, map_at_k, mrr_at_k, ndcg_at_k, per_query, recall_at_k

__all__ = ["evaluate", "ndcg_at_k", "recall_at_k", "mrr_at_k", "map_at_k", "per_query"]
