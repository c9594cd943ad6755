"""Benchmark matrices for the assignment solver, and scipy's time on them.

    lap_scipy.py gen KIND N FILE [SEED]   write an N x N raw f32 matrix of KIND to FILE
    lap_scipy.py solve FILE N [min|max]   time scipy.optimize.linear_sum_assignment on it

KIND is one of
    uniform        independent U(0, 1) entries
    planted-clear  correlation matrix A^T B / tokens of z-scored activations, where
                   B = A[:, perm] + noise with noise std 0.3, so that each true pair has
                   by far the largest correlation of its row
    planted-noisy  the same with noise std 20 (true pairs correlate at about 0.05, about
                   twice the standard deviation of a chance correlation over 2048 tokens)
solve prints "seconds=S total=T": the time of linear_sum_assignment alone and the total.
"""
import sys
import time

import numpy as np

TOKENS = 2048


def zscore(x):
    x = x - x.mean(axis=0, keepdims=True)
    return x / x.std(axis=0, keepdims=True)


def planted(n, noise, rng):
    a = zscore(rng.standard_normal((TOKENS, n), dtype=np.float32))
    perm = rng.permutation(n)
    b = a[:, perm] + noise * rng.standard_normal((TOKENS, n), dtype=np.float32)
    b = zscore(b)
    return (a.T @ b) / np.float32(TOKENS)


def generate(kind, n, seed):
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.random((n, n), dtype=np.float32)
    if kind == "planted-clear":
        return planted(n, 0.3, rng)
    if kind == "planted-noisy":
        return planted(n, 20.0, rng)
    raise SystemExit(f"lap_scipy.py: unknown kind '{kind}'; use uniform, planted-clear "
                     "or planted-noisy")


def solve(path, n, sense):
    from scipy.optimize import linear_sum_assignment

    cost = np.fromfile(path, dtype=np.float32)
    if cost.size != n * n:
        raise SystemExit(f"lap_scipy.py: '{path}' contains {cost.size} floats, "
                         f"expected {n * n}")
    cost = cost.reshape(n, n)
    start = time.perf_counter()
    rows, cols = linear_sum_assignment(cost, maximize=(sense == "max"))
    seconds = time.perf_counter() - start
    total = float(np.sum(cost[rows, cols], dtype=np.float64))
    print(f"seconds={seconds:.3f} total={total!r}")


def main(argv):
    if len(argv) >= 5 and argv[1] == "gen":
        seed = int(argv[5]) if len(argv) > 5 else 1
        generate(argv[2], int(argv[3]), seed).astype(np.float32).tofile(argv[4])
    elif len(argv) >= 4 and argv[1] == "solve":
        solve(argv[2], int(argv[3]), argv[4] if len(argv) > 4 else "max")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
