"""schemathesis against /openapi.json of a live server: no 5xx on generated requests, and every response
(status code, content type, headers, body) matches the schema the server publishes."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from encoderkit.serve.app import create_app  # noqa: E402
from encoderkit.serve.metrics import Metrics  # noqa: E402
from encoderkit.serve.models import EmbeddingModel, ModelRegistry  # noqa: E402
from encoderkit.serve.state import ServeConfig  # noqa: E402
from encoderkit.serve.testing import LiveServer  # noqa: E402
from test_serve_clients import shared_encoder  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    cfg = ServeConfig(store=str(tmp_path_factory.mktemp("store")))
    metrics = Metrics()
    reg = ModelRegistry()
    reg.add(EmbeddingModel("all-MiniLM-L6-v2", shared_encoder(), cfg.limits, metrics))
    with LiveServer(create_app(cfg, registry=reg, metrics=metrics)) as srv:
        yield srv


@pytest.mark.slow  # ~60 s here: every operation, up to 10 generated requests each
def test_api_matches_its_schema(live):
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    failures, n_ops, n_calls = [], 0, [0]
    for result in schema.get_all_operations():
        op = result.ok()
        n_ops += 1

        @given(case=op.as_strategy())
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            n_calls[0] += 1
            # every default check except positive_data_acceptance: a schema cannot say "at most 256 tokens"
            # or "a token id below this model's vocabulary size", so some schema-valid requests are rightly refused
            case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])

        try:
            check()
        except BaseException as exc:  # noqa: B036 - collect every operation's failure, then report them together
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    assert n_ops >= 20 and n_calls[0] >= n_ops
    assert not failures, "\n\n".join(failures)
