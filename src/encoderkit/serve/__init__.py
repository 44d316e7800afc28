"""encoderkit.serve: an HTTP server for embeddings, reranking and collection search that speaks the OpenAI,
Ollama and TEI APIs. `create_app(ServeConfig(...))` gives the ASGI app; `run(config)` serves it (uvicorn)."""
from __future__ import annotations

__all__ = ["ServeConfig", "create_app", "run"]


def __getattr__(name: str):
    # Lazy: importing encoderkit.serve does not import FastAPI or torch until something is used.
    if name == "ServeConfig":
        from encoderkit.serve.state import ServeConfig

        return ServeConfig
    if name in ("create_app", "run"):
        from encoderkit.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'encoderkit.serve' has no attribute {name!r}")
