"""RoPE inverse frequencies as transformers computes them (float32 base frequencies, then
the linear or llama3 rope_scaling rule), written with numpy from the published formulas.

usage: rope_reference.py THETA HEAD_DIM TYPE FACTOR LOW HIGH ORIGINAL
Prints head_dim / 2 values, one per line.
"""
import math
import sys

import numpy as np

theta, dim = float(sys.argv[1]), int(sys.argv[2])
kind = sys.argv[3]
factor, low, high, original = (float(v) for v in sys.argv[4:8])

exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
inv = 1.0 / (theta ** exponent.astype(np.float64))

if kind == "linear":
    inv = inv / factor
elif kind == "llama3":
    low_wavelen = original / low
    high_wavelen = original / high
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    inv = np.where(medium, smoothed, scaled)

for v in inv.astype(np.float32):
    print(repr(float(v)))
