"""One error type for the whole server, rendered in the error format of the API a route belongs to:
OpenAI `{"error": {message, type, param, code}}`, Ollama `{"error": "..."}`, TEI `{"error", "error_type"}`."""
from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

# kind -> (TEI error_type, OpenAI error type)
_KINDS = {
    "validation": ("Validation", "invalid_request_error"),
    "too_long": ("Validation", "invalid_request_error"),
    "tokenizer": ("Tokenizer", "invalid_request_error"),
    "empty": ("Empty", "invalid_request_error"),
    "not_found": ("NotFound", "invalid_request_error"),
    "auth": ("Unauthorized", "authentication_error"),
    "forbidden": ("Forbidden", "permission_error"),
    "overloaded": ("Overloaded", "rate_limit_error"),
    "backend": ("Backend", "server_error"),
    "unhealthy": ("Unhealthy", "server_error"),
    "conflict": ("Conflict", "invalid_request_error"),
}


class APIError(Exception):
    """An error to send to the client: HTTP status, a message saying what was wrong and what to do,
    a kind (see _KINDS), and for OpenAI the offending param and a machine code."""

    def __init__(self, status: int, message: str, kind: str = "validation", *, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.param, self.code, self.headers = param, code, headers or {}


def api_of(path: str) -> str:
    """Which API's error format a path uses: 'openai', 'ollama' or 'tei' (also our own routes)."""
    if path.startswith("/v1/") or path == "/v1":
        return "openai"
    if path.startswith("/api/"):
        return "ollama"
    return "tei"


def error_body(api: str, err: APIError) -> dict[str, Any]:
    """The JSON body of `err` in `api`'s format."""
    tei_type, openai_type = _KINDS.get(err.kind, ("Validation", "invalid_request_error"))
    if api == "openai":
        return {"error": {"message": err.message, "type": openai_type, "param": err.param,
                          "code": err.code or (str(err.status) if err.status >= 500 else None)}}
    if api == "ollama":
        return {"error": err.message}
    return {"error": err.message, "error_type": tei_type}


class _ErrorJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: an error message that quotes the client's input (a model name,
    an id) may hold a lone surrogate, which has no UTF-8 form and made the plain JSONResponse fail with a 500.
    Parsed, the body is the same."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(path: str, err: APIError) -> JSONResponse:
    """A JSONResponse for `err` in the format of the API `path` belongs to (TEI reports model failures as 424)."""
    api = api_of(path)
    status = 424 if api == "tei" and err.kind == "backend" and err.status == 500 else err.status
    return _ErrorJSON(error_body(api, err), status_code=status, headers=err.headers)


# ------------------------------------------------------------------ schemas, for the OpenAPI document
class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error envelope."""
    error: OpenAIErrorDetail


class OllamaError(BaseModel):
    """Ollama's error body."""
    error: str


class TEIError(BaseModel):
    """TEI's error body (error_type: Validation, Tokenizer, Empty, Overloaded, Backend, Unhealthy, ...)."""
    error: str
    error_type: str


def error_responses(model: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status in codes documented with `model`."""
    text = {400: "Bad request", 401: "Missing or unknown API key", 403: "Key lacks the role or grant",
            404: "Not found", 409: "Conflict", 413: "Payload too large or input too long",
            422: "Invalid request body", 424: "Model failure", 429: "Queue full; retry after the Retry-After seconds",
            503: "Shutting down"}
    return {c: {"model": model, "description": text.get(c, "Error")} for c in codes}
