"""Prometheus text-format metrics, kept in process: requests by route and status, request latency,
batch sizes, queue depth and tokens processed. Thread-safe (the batch worker reports from its thread)."""
from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from typing import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    def __init__(self, buckets: tuple):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


def _labels(**kv: str) -> str:
    esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in kv.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


class Metrics:
    """Counters and histograms for the server; `render()` gives the /metrics page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)  # (method, route, status)
        self.latency: dict[str, _Histogram] = {}
        self.batch_inputs: dict[str, _Histogram] = {}
        self.batch_requests: dict[str, _Histogram] = {}
        self.batch_seconds: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, int] = defaultdict(int)
        self.rejected: dict[str, int] = defaultdict(int)
        self.queue_depth: dict[str, Callable[[], int]] = {}
        self.in_flight = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, str(status))] += 1
            self.latency.setdefault(route, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, model: str, inputs: int, requests: int, tokens: int, seconds: float) -> None:
        with self._lock:
            self.batch_inputs.setdefault(model, _Histogram(BATCH_BUCKETS)).observe(inputs)
            self.batch_requests.setdefault(model, _Histogram(BATCH_BUCKETS)).observe(requests)
            self.batch_seconds[model] += seconds
            self.tokens[model] += tokens

    def observe_rejected(self, model: str) -> None:
        with self._lock:
            self.rejected[model] += 1

    def render(self) -> str:
        """The metrics in Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []
        with self._lock:
            out += ["# HELP encoderkit_requests_total HTTP requests by method, route and status.",
                    "# TYPE encoderkit_requests_total counter"]
            for (m, r, s), n in sorted(self.requests.items()):
                out.append(f"encoderkit_requests_total{_labels(method=m, route=r, status=s)} {n}")
            out += ["# HELP encoderkit_requests_in_flight Requests being handled now.",
                    "# TYPE encoderkit_requests_in_flight gauge", f"encoderkit_requests_in_flight {self.in_flight}"]
            self._hist(out, "encoderkit_request_duration_seconds", "Request latency in seconds.", "route",
                       self.latency)
            self._hist(out, "encoderkit_batch_size", "Inputs per forward batch.", "model", self.batch_inputs)
            self._hist(out, "encoderkit_batch_requests", "Requests coalesced into one forward batch.", "model",
                       self.batch_requests)
            out += ["# HELP encoderkit_batch_seconds_total Time spent running batches.",
                    "# TYPE encoderkit_batch_seconds_total counter"]
            out += [f"encoderkit_batch_seconds_total{_labels(model=k)} {v:.6f}" for k, v in sorted(self.batch_seconds.items())]
            out += ["# HELP encoderkit_tokens_total Tokens processed by the model.", "# TYPE encoderkit_tokens_total counter"]
            out += [f"encoderkit_tokens_total{_labels(model=k)} {v}" for k, v in sorted(self.tokens.items())]
            out += ["# HELP encoderkit_rejected_total Requests refused because the queue was full.",
                    "# TYPE encoderkit_rejected_total counter"]
            out += [f"encoderkit_rejected_total{_labels(model=k)} {v}" for k, v in sorted(self.rejected.items())]
            depth = dict(self.queue_depth)
        out += ["# HELP encoderkit_queue_depth Inputs waiting for a batch.", "# TYPE encoderkit_queue_depth gauge"]
        out += [f"encoderkit_queue_depth{_labels(model=k)} {fn()}" for k, fn in sorted(depth.items())]
        return "\n".join(out) + "\n"

    @staticmethod
    def _hist(out: list[str], name: str, help_: str, label: str, hists: dict[str, _Histogram]) -> None:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        for key, h in sorted(hists.items()):
            cum = 0
            for b, c in zip(h.buckets, h.counts):
                cum += c
                out.append(f"{name}_bucket{_labels(**{label: key, 'le': repr(float(b))})} {cum}")
            out.append(f"{name}_bucket{_labels(**{label: key, 'le': '+Inf'})} {h.n}")
            out.append(f"{name}_sum{_labels(**{label: key})} {h.total:.6f}")
            out.append(f"{name}_count{_labels(**{label: key})} {h.n}")
