#!/bin/sh
# Elementwise kernel throughput per variant (scalar, avx2, avx512) at n = 4096 and 11008.
# BENCH_KERNELS_SECONDS sets the minimum time per measurement (default 0.2 s).
set -eu
exec "$SYMPHONY_BUILD/bench/bench_kernels" "${BENCH_KERNELS_SECONDS:-0.2}"
