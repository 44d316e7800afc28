import numpy as np
import pytest

from encoderkit.tasks.similar_pairs import most_similar_pairs


@pytest.mark.parametrize("n, block, top", [(50, 7, 5), (300, 64, 20), (301, 1024, 1)])
def test_equals_brute_force(n, block, top):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x[n // 2] = 3 * x[3] + 0.01  # a near-duplicate pair across blocks
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    i, j = np.triu_indices(n, 1)
    order = np.argsort(-s[i, j], kind="stable")[:top]
    expect = [(int(i[o]), int(j[o])) for o in order]
    got = most_similar_pairs(x, top, block=block)
    assert [(a, b) for _, a, b in got] == expect
    assert np.allclose([g[0] for g in got], s[i, j][order], atol=1e-5)
    assert got[0][1:] == (3, n // 2)


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 vectors"):
        most_similar_pairs(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="2-D"):
        most_similar_pairs(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        most_similar_pairs(np.array([[1.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="top must be"):
        most_similar_pairs(np.eye(3), 0)
    assert len(most_similar_pairs(np.eye(3), 10)) == 3  # only 3 pairs exist
