"""Shared test fixtures: where the real evaluation data lives, and skipping when it is absent; plus what lets
the suite run in parallel (`make test` = pytest-xdist, 2 workers, --dist loadgroup):

- each xdist worker runs torch (and OpenMP / MKL / OpenBLAS, inherited by the subprocesses tests start) with
  ONE thread, so two workers do not oversubscribe the 2 cores; ENCODERKIT_TEST_THREADS=N overrides.
  A test that changes torch's thread count gets it back afterwards (serial runs too).
- every test module runs on one worker (its module-scoped fixtures are built once), except the groups named in
  GROUPS below: long trainings split off their module, and the two SciFact modules joined (one encode).
- groups are sent longest first: durations from tests/xdist_durations.json, updated by those the last runs
  recorded in pytest's cache (.pytest_cache/v/encoderkit/group_seconds); refresh the file from that cache entry
  after adding long tests.
- the SciFact vectors (tests/scifact_fixtures.py) are kept under .pytest_cache/d/encoderkit unless
  ENCODERKIT_TEST_CACHE says otherwise; ENCODERKIT_HOME is a fresh temporary folder per process."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ENCODERKIT_DATA", REPO.parent / "shared" / "data"))
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1"... in an xdist worker, None otherwise
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
if WORKER:  # before torch / faiss / numpy start their thread pools in this process
    for _v in _THREAD_VARS:
        os.environ[_v] = os.environ.get("ENCODERKIT_TEST_THREADS", "1")
_GROUP_SECONDS = "encoderkit/group_seconds"


def data_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the calling test with a reason when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real evaluation data not found at {p} (set ENCODERKIT_DATA or place ../shared/data beside the repo)")
    return p


def bulk_compute() -> str:
    """The compute for a test's bulk encode of real documents whose claim is a retrieval figure with a margin, not
    a vector's last digits: "bf16" where the CPU multiplies bfloat16 natively (AMX-BF16 / AVX512-BF16: about 3x
    fp32 on 256-token texts, cosine >= 0.9999 to fp32), the fastest exact engine ("auto") elsewhere. Tests that
    compare with a published figure to four decimals (tests/scifact_fixtures.py) stay exact."""
    from encoderkit.compute.int8 import cpu_flags

    return "bf16" if {"amx_bf16", "avx512_bf16"} & cpu_flags() else "auto"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("ENCODERKIT_TEST_CACHE"):  # the SciFact vectors: computed once, reused by every worker
        cache = getattr(config, "cache", None)
        folder = cache.mkdir("encoderkit") if cache is not None else REPO / ".pytest_cache" / "d" / "encoderkit"
        os.environ["ENCODERKIT_TEST_CACHE"] = str(folder)
    if WORKER:
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session", autouse=True)
def _encoderkit_home(tmp_path_factory):
    """Collections named without a path go to a per-process temporary ENCODERKIT_HOME, never ~/.encoderkit."""
    old = os.environ.get("ENCODERKIT_HOME")
    if old is None:
        os.environ["ENCODERKIT_HOME"] = str(tmp_path_factory.mktemp("encoderkit-home"))
    yield
    if old is None:
        os.environ.pop("ENCODERKIT_HOME", None)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that calls torch.set_num_threads (one thread for small training runs) does not leak it."""
    import torch

    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


# --- scheduling under xdist --------------------------------------------------------------------------------------
# `--dist loadgroup` runs each group below on ONE worker; any other test goes with its module (a module's fixtures -
# a trained model, a live server, one Chromium - are built once). The groups are decided here, by node id, in the
# xdist controller: pytest-xdist 3.8 groups by `xdist_group` marks by rewriting `item._nodeid`, which pytest 9 no
# longer reads, so those marks would do nothing. Longest prefix wins.
GROUPS = {
    # the SciFact vectors (tests/scifact_fixtures.py): encoded once, by the worker that runs both modules
    "tests/test_scifact.py": "scifact",
    "tests/test_scifact_pgvector.py": "scifact",
    # long trainings that share nothing with their module's other tests: each may run beside another one
    "tests/test_cli_encode.py::test_demo_answers_questions_from_stdlib_docstrings": "cli_demo",
    "tests/test_clip_mnist.py::test_dual_encoder_trained_on_mnist_classifies_zero_shot[clip]": "clip_mnist_clip",
    "tests/test_clip_mnist.py::test_dual_encoder_trained_on_mnist_classifies_zero_shot[siglip]": "clip_mnist_siglip",
    "tests/test_mnist_results.py::test_vae_negative_elbo_and_importance_sampled_nll": "mnist_vae",  # (the AE and DAE tests share plain_ae)
    "tests/test_mnist_results.py::test_one_class_anomaly_auroc": "mnist_anomaly",
    "tests/test_mnist_results.py::test_mae_frozen_encoder_linear_probe": "mnist_mae",
    "tests/test_ssl_results.py::test_simclr_frozen_features": "ssl_simclr",
    "tests/test_ssl_results.py::test_dino_frozen_features": "ssl_dino",
    "tests/test_text_pretraining.py::test_mlm_beats_most_frequent_token": "pretrain_mlm",
    "tests/test_text_pretraining.py::test_electra_discriminator_learns_to_spot_replacements": "pretrain_electra",
}


def group_of(nodeid: str) -> str:
    best = max((p for p in GROUPS if nodeid == p or nodeid.startswith((p + "::", p + "["))), key=len, default=None)
    return GROUPS[best] if best else nodeid.split("::", 1)[0]


def _group_seconds(config) -> dict:
    """Group -> seconds: tests/xdist_durations.json (committed), updated by what runs here recorded in the cache."""
    import json

    f = REPO / "tests" / "xdist_durations.json"
    seconds = json.loads(f.read_text()) if f.exists() else {}
    cache = getattr(config, "cache", None)
    seconds.update(cache.get(_GROUP_SECONDS, {}) if cache is not None else {})
    return seconds


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown (and never called) without pytest-xdist
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """LoadScopeScheduling with GROUPS as the scopes, sent longest first (LPT) so that no long group starts
        last; a group not timed yet counts 30 s, ties keep file order."""

        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

        def schedule(self) -> None:
            assert self.collection_is_completed
            if self.collection is not None:
                for node in self.nodes:
                    self._reschedule(node)
                return
            if not self._check_nodes_have_same_collection():
                self.log("**Different tests collected, aborting run**")
                return
            self.collection = list(next(iter(self.registered_collections.values())))
            if not self.collection:
                return
            units: dict = {}
            for nodeid in self.collection:
                units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            seconds = _group_seconds(self.config)
            for g in sorted(units, key=lambda g: -seconds.get(g, 30.0)):
                self.workqueue[g] = units[g]
            for _ in range(max(0, len(self.nodes) - len(self.workqueue))):  # more workers than work
                self.assigned_work.popitem()[0].shutdown()
            for node in self.nodes:
                self._assign_work_unit(node)
            for node in self.nodes:
                self._reschedule(node)
            if not self.workqueue:
                for node in self.nodes:
                    node.shutdown()

    return GroupScheduling(config, log)


_durations: dict = {}


def pytest_runtest_logreport(report) -> None:
    if WORKER is None and getattr(report, "node", None) is not None:  # xdist controller: reports from workers
        g = group_of(report.nodeid)
        _durations[g] = _durations.get(g, 0.0) + report.duration


def pytest_sessionfinish(session) -> None:
    cache = getattr(session.config, "cache", None)
    opt = session.config.option  # a run filtered by -m / -k times only part of some groups: not recorded
    if WORKER is None and _durations and cache is not None and not opt.markexpr and not opt.keyword:
        old = cache.get(_GROUP_SECONDS, {})
        cache.set(_GROUP_SECONDS, {**old, **{g: round(s, 1) for g, s in _durations.items()}})
