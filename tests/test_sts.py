"""STS Benchmark test split with all-MiniLM-L6-v2: Spearman of cosine vs gold (real data). About 1-2 min
on a free 2-core CPU (2,700 short sentences)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import data_path
from encoderkit.evaluate.sts import load_sts, spearman

MTEB_SPEARMAN = 0.8203


def test_load_and_spearman_units(tmp_path):
    f = tmp_path / "sts.csv"
    f.write_text('g\tf\t2012\t1\t5.000\tA "quoted" man.\tA man.\n'
                 "g\tf\t2012\t2\t1.5\tx\ty\tsource-a\tsource-b\n", encoding="utf-8")
    s1, s2, gold = load_sts(f)
    assert s1 == ['A "quoted" man.', "x"] and s2 == ["A man.", "y"] and gold.tolist() == [5.0, 1.5]
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)
    (tmp_path / "bad.csv").write_text("g\tf\t2012\t1\tfive\ta\tb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv:1: score 'five'"):
        load_sts(tmp_path / "bad.csv")


@pytest.mark.slow
def test_sts_b_spearman_matches_mteb():
    import encoderkit
    from encoderkit.evaluate.sts import evaluate_sts

    path = data_path("stsbenchmark", "sts-test.csv")
    res = evaluate_sts(path, encoderkit.load("all-MiniLM-L6-v2"))
    assert res["pairs"] == 1379
    assert abs(res["spearman"] - MTEB_SPEARMAN) <= 0.005, res
