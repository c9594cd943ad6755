#!/bin/sh
# The assignment solver's optimum against scipy.optimize.linear_sum_assignment on random,
# integer, tied, planted-permutation and +-1e30 matrices up to n = 2048, both senses.
# test_lap does the work in its "scipy" mode; this script skips when scipy is missing.
py=${SYMPHONY_PYTHON:-/usr/bin/python3}
if ! "$py" -c 'import numpy, scipy.optimize' 2>/dev/null; then
    echo "skipped: $py cannot import numpy and scipy.optimize (Debian: python3-scipy)"
    exit 77
fi
exec "${SYMPHONY_BUILD:-build}/tests/test_lap" scipy
