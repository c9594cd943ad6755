"""Solve assignment problems stored as raw f32 files with scipy and print the totals.

    lap_scipy_check.py FILE N SENSE [FILE N SENSE ...]

SENSE is "min" or "max". Prints one line per problem: the optimal total in f64, summed over
rows in row order, as repr() so that no digit is lost.
"""
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment


def solve(path, n, sense):
    cost = np.fromfile(path, dtype=np.float32)
    if cost.size != n * n:
        raise SystemExit(f"lap_scipy_check.py: '{path}' contains {cost.size} floats, "
                         f"expected {n * n}")
    cost = cost.reshape(n, n)
    rows, cols = linear_sum_assignment(cost, maximize=(sense == "max"))
    return float(np.sum(cost[rows, cols].astype(np.float64)))


def main(argv):
    args = argv[1:]
    if not args or len(args) % 3 != 0:
        raise SystemExit(__doc__)
    for k in range(0, len(args), 3):
        print(repr(solve(args[k], int(args[k + 1]), args[k + 2])))


if __name__ == "__main__":
    main(sys.argv)
