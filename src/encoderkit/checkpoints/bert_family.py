"""Checkpoint formats of the BERT family (BERT, MiniLM, RoBERTa, XLM-RoBERTa, CamemBERT, ELECTRA,
ALBERT, DistilBERT): config parsing and the tensor-name maps between Hugging Face files and models/bert.py."""
from __future__ import annotations

from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.models.bert import BertConfig, BertModel

_COMMON_HEADS = ("pooler.", "cls.", "lm_head.", "classifier.", "qa_outputs.", "discriminator_predictions.",
                 "generator_predictions.", "generator_lm_head.", "predictions.", "sop_classifier.",
                 "vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "pre_classifier.")


def parse_bert_config(c: dict) -> BertConfig:
    """Hugging Face config.json (bert / roberta / xlm-roberta / camembert / electra / albert) -> BertConfig."""
    mt = c.get("model_type", "bert")
    pet = c.get("position_embedding_type", "absolute")
    if pet != "absolute":
        raise CheckpointError(f"config.json: position_embedding_type={pet!r} is not supported for {mt} (only 'absolute')")
    try:
        cfg = BertConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
            hidden_act=c.get("hidden_act", "gelu"), max_position_embeddings=c.get("max_position_embeddings", 512),
            type_vocab_size=c.get("type_vocab_size", 2), layer_norm_eps=c.get("layer_norm_eps", 1e-12),
            pad_token_id=c.get("pad_token_id", 0) if c.get("pad_token_id") is not None else 0,
            embedding_size=c.get("embedding_size") if mt in ("electra", "albert") else None,
            roberta_positions=mt in ("roberta", "xlm-roberta", "camembert"),
            num_hidden_groups=c.get("num_hidden_groups", 1), inner_group_num=c.get("inner_group_num", 1),
            share_layers=mt == "albert", dropout=c.get("hidden_dropout_prob", 0.1),
            attention_dropout=c.get("attention_probs_dropout_prob", 0.1), model_type=mt,
        )
    except KeyError as exc:
        raise CheckpointError(f"config.json for model_type {mt!r} lacks the field {exc.args[0]!r}") from None
    if cfg.embedding_size == cfg.hidden_size:
        cfg.embedding_size = None
    return cfg


def parse_distilbert_config(c: dict) -> BertConfig:
    """DistilBERT's config.json uses its own names (dim, n_layers, n_heads, hidden_dim)."""
    try:
        return BertConfig(
            vocab_size=c["vocab_size"], hidden_size=c["dim"], num_layers=c["n_layers"], num_heads=c["n_heads"],
            intermediate_size=c["hidden_dim"], hidden_act=c.get("activation", "gelu"),
            max_position_embeddings=c.get("max_position_embeddings", 512), type_vocab_size=0, layer_norm_eps=1e-12,
            pad_token_id=c.get("pad_token_id", 0) or 0, dropout=c.get("dropout", 0.1),
            attention_dropout=c.get("attention_dropout", 0.1), model_type="distilbert",
        )
    except KeyError as exc:
        raise CheckpointError(f"config.json for model_type 'distilbert' lacks the field {exc.args[0]!r}") from None


def _wb(ours: str, theirs: str) -> dict[str, str]:
    return {f"{ours}.weight": f"{theirs}.weight", f"{ours}.bias": f"{theirs}.bias"}


def _qkv(ours: str, q: str, k: str, v: str) -> dict[str, tuple]:
    return {f"{ours}.weight": (f"{q}.weight", f"{k}.weight", f"{v}.weight"),
            f"{ours}.bias": (f"{q}.bias", f"{k}.bias", f"{v}.bias")}


def bert_key_map(cfg: BertConfig) -> dict:
    """Our names -> Hugging Face names (relative to the backbone prefix) for every family in models/bert.py."""
    m: dict = {"embeddings.word.weight": "embeddings.word_embeddings.weight",
               "embeddings.position.weight": "embeddings.position_embeddings.weight"}
    if cfg.type_vocab_size > 0:
        m["embeddings.token_type.weight"] = "embeddings.token_type_embeddings.weight"
    m.update(_wb("embeddings.norm", "embeddings.LayerNorm"))
    if cfg.embedding_size and cfg.embedding_size != cfg.hidden_size:
        proj = {"electra": "embeddings_project", "albert": "encoder.embedding_hidden_mapping_in"}.get(cfg.model_type)
        if proj is None:
            raise CheckpointError(f"{cfg.model_type}: embedding_size != hidden_size is only defined for ELECTRA and ALBERT")
        m.update(_wb("embeddings.project", proj))
    n_distinct = cfg.num_hidden_groups * cfg.inner_group_num if cfg.share_layers else cfg.num_layers
    for i in range(n_distinct):
        o = f"encoder.layers.{i}"
        if cfg.model_type == "albert":
            t = f"encoder.albert_layer_groups.{i // cfg.inner_group_num}.albert_layers.{i % cfg.inner_group_num}"
            m.update(_qkv(f"{o}.attn.qkv", f"{t}.attention.query", f"{t}.attention.key", f"{t}.attention.value"))
            m.update(_wb(f"{o}.attn.o", f"{t}.attention.dense") | _wb(f"{o}.ln1", f"{t}.attention.LayerNorm"))
            m.update(_wb(f"{o}.ffn.fc1", f"{t}.ffn") | _wb(f"{o}.ffn.fc2", f"{t}.ffn_output"))
            m.update(_wb(f"{o}.ln2", f"{t}.full_layer_layer_norm"))
        elif cfg.model_type == "distilbert":
            t = f"transformer.layer.{i}"
            m.update(_qkv(f"{o}.attn.qkv", f"{t}.attention.q_lin", f"{t}.attention.k_lin", f"{t}.attention.v_lin"))
            m.update(_wb(f"{o}.attn.o", f"{t}.attention.out_lin") | _wb(f"{o}.ln1", f"{t}.sa_layer_norm"))
            m.update(_wb(f"{o}.ffn.fc1", f"{t}.ffn.lin1") | _wb(f"{o}.ffn.fc2", f"{t}.ffn.lin2"))
            m.update(_wb(f"{o}.ln2", f"{t}.output_layer_norm"))
        else:
            t = f"encoder.layer.{i}"
            a = f"{t}.attention"
            m.update(_qkv(f"{o}.attn.qkv", f"{a}.self.query", f"{a}.self.key", f"{a}.self.value"))
            m.update(_wb(f"{o}.attn.o", f"{a}.output.dense") | _wb(f"{o}.ln1", f"{a}.output.LayerNorm"))
            m.update(_wb(f"{o}.ffn.fc1", f"{t}.intermediate.dense") | _wb(f"{o}.ffn.fc2", f"{t}.output.dense"))
            m.update(_wb(f"{o}.ln2", f"{t}.output.LayerNorm"))
    return m


def classifier_key_map(cfg: BertConfig, prefix: str) -> tuple[dict, str]:
    """Key map (absolute names) of a *ForSequenceClassification head, and its style for SequenceClassificationHead."""
    mt = cfg.model_type
    if mt in ("roberta", "xlm-roberta", "camembert", "electra"):
        return _wb("head.dense", "classifier.dense") | _wb("head.out", "classifier.out_proj"), (
            "electra" if mt == "electra" else "roberta")
    if mt == "distilbert":
        return _wb("head.dense", "pre_classifier") | _wb("head.out", "classifier"), "distilbert"
    pooler = f"{prefix}pooler" if mt == "albert" else f"{prefix}pooler.dense"
    return _wb("head.dense", pooler) | _wb("head.out", "classifier"), "bert"


def bert_to_hf_config(cfg: BertConfig) -> dict:
    """BertConfig -> a config.json that transformers' AutoModel builds the same network from."""
    if cfg.position_embedding_type != "absolute":
        raise CheckpointError(f"a BERT with {cfg.position_embedding_type} positions has no Hugging Face {cfg.model_type} "
                              "equivalent (its config only knows a learned position table); keep it as an encoderkit "
                              "run folder, which encoderkit.load opens")
    if cfg.model_type == "distilbert":
        d = {"model_type": "distilbert", "architectures": ["DistilBertModel"], "vocab_size": cfg.vocab_size,
             "dim": cfg.hidden_size, "n_layers": cfg.num_layers, "n_heads": cfg.num_heads,
             "hidden_dim": cfg.intermediate_size, "activation": cfg.hidden_act,
             "max_position_embeddings": cfg.max_position_embeddings, "pad_token_id": cfg.pad_token_id,
             "dropout": cfg.dropout, "attention_dropout": cfg.attention_dropout}
    else:
        arch = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel",
                "camembert": "CamembertModel", "electra": "ElectraModel", "albert": "AlbertModel"}[cfg.model_type]
        d = {"model_type": cfg.model_type, "architectures": [arch], "vocab_size": cfg.vocab_size,
             "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
             "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size,
             "hidden_act": cfg.hidden_act, "max_position_embeddings": cfg.max_position_embeddings,
             "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
             "pad_token_id": cfg.pad_token_id, "hidden_dropout_prob": cfg.dropout,
             "attention_probs_dropout_prob": cfg.attention_dropout, "position_embedding_type": "absolute"}
        if cfg.embedding_size:
            d["embedding_size"] = cfg.embedding_size
        if cfg.model_type == "albert":
            d.update(num_hidden_groups=cfg.num_hidden_groups, inner_group_num=cfg.inner_group_num,
                     embedding_size=cfg.emb_size)
    return {**cfg.extra, **d}


_bert = Family("BERT family", parse_bert_config, BertModel, bert_key_map, "embeddings.word_embeddings.weight",
               bert_to_hf_config, ignore_prefixes=_COMMON_HEADS)
register(("bert", "roberta", "xlm-roberta", "camembert", "electra", "albert"), _bert)
register("distilbert", Family("BERT family", parse_distilbert_config, BertModel, bert_key_map,
                              "embeddings.word_embeddings.weight", bert_to_hf_config, ignore_prefixes=_COMMON_HEADS))
