#!/usr/bin/python3
"""score_export.py - held-out logloss and exact AUC of a ps job's saved weights, computed in
numpy from the export (fit.export_to) alone: a check on the job's own val_* figures, and the
AUC of a job run before the worker printed val_auc.

    /usr/bin/python3 tests/ref/score_export.py JOB.json DIR TEST_FILE [--format libsvm|criteo]

The model is the job file's (a sparse first layer, then Dense layers with their activations,
a sigmoid output). Keys a held-out row has that the export lacks (never trained) read as the
servers would serve them: the first layer's initializer (zeros or normal, server/init.c's
counter-based draw, reimplemented here) for the job's seed.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ctr_torch import M64, auc_of, mix64, read_criteo, read_libsvm  # noqa: E402

G = 0x9e3779b97f4a7c15


def init_row(spec, seed, table, key, dim):
    """server/init.c for zeros / constant / normal, from its documented formulas."""
    kind = spec.get("type", "zeros")
    if kind == "zeros":
        return np.zeros(dim, np.float32)
    if kind == "constant":
        return np.full(dim, spec.get("value", 0.0), np.float32)
    assert kind == "normal", f"init {kind}: not reimplemented here"
    row_seed = mix64(seed ^ mix64(key ^ mix64((G * (table + 1)) & M64)))
    out = np.empty(dim, np.float32)
    for j in range(dim):
        r = mix64((row_seed + G * j) & M64)
        u1 = 1.0 - (r >> 11) * 2.0 ** -53
        u2 = (mix64(r ^ G) >> 11) * 2.0 ** -53
        out[j] = spec.get("stddev", 0.05) * math.sqrt(-2.0 * math.log(u1)) * math.cos(
            6.283185307179586 * u2)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("job")
    ap.add_argument("dir")
    ap.add_argument("test")
    ap.add_argument("--format", choices=["libsvm", "criteo"], default="libsvm")
    a = ap.parse_args()
    job = json.load(open(a.job))
    seed = job.get("seed", 0)
    layers = job["model"]["layers"]
    init = job["model"]["input"].get("init", {"type": "glorot_uniform"})
    if a.format == "libsvm":
        y, keys, offsets = read_libsvm(a.test)
        keys = keys - np.uint64(1)  # one_based
    else:
        y, keys, offsets = read_criteo(a.test, {})
    d = a.dir + "/"
    tkeys = np.load(d + "dense/kernel/keys.npy")
    tvals = np.load(d + "dense/kernel/values.npy")
    dim = tvals.shape[1]
    pos = np.searchsorted(tkeys, keys)
    pos_c = np.minimum(pos, len(tkeys) - 1)
    found = tkeys[pos_c] == keys
    rows = np.empty((len(keys), dim), np.float32)
    rows[found] = tvals[pos_c[found]]
    cache = {}
    for i in np.nonzero(~found)[0]:
        k = int(keys[i])
        if k not in cache:
            cache[k] = init_row(init, seed, 0, k, dim)
        rows[i] = cache[k]
    # sum of rows per sample, in float64 (the order differs from the worker's anyway)
    h = np.add.reduceat(rows.astype(np.float64), offsets[:-1], axis=0)
    empty = offsets[1:] == offsets[:-1]
    h[empty] = 0.0
    for li, layer in enumerate(layers):
        name = "dense" if li == 0 else f"dense_{li}"
        if li > 0:
            h = h @ np.load(d + name + "/kernel.npy").astype(np.float64)
        h = h + np.load(d + name + "/bias.npy").astype(np.float64)
        act = layer.get("activation", "linear")
        if act == "relu":
            h = np.maximum(h, 0.0)
        elif act == "tanh":
            h = np.tanh(h)
        elif act == "sigmoid":
            assert li == len(layers) - 1, "sigmoid inside: not handled"
        else:
            assert act == "linear", act
    z = h[:, 0]
    loss = float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))
    p = 1.0 / (1.0 + np.exp(-z))
    print(f"score_export val_logloss={loss:.6f} val_auc={auc_of(p, y.astype(np.int64)):.6f} "
          f"rows={len(y)} unseen_keys={len(cache)}")


if __name__ == "__main__":
    main()
