#!/usr/bin/python3
"""datagen_criteo.py - an independent implementation of `ps-datagen --format criteo` (the rules
in worker/datagen.c's comments, written again in Python without its code), for a golden file
that tests/test_e2e.c compares ps-datagen's output and printed scores with.

    /usr/bin/python3 tests/ref/datagen_criteo.py > tests/ref/datagen_criteo_golden.json

Writes the data set of ARGS to a temporary directory and prints JSON: the arguments, the
64-bit FNV-1a of each file, its rows and positives, its first line, and the Bayes-optimal
held-out logloss and AUC and the base-rate logloss. Needs only the standard library.
"""
import json
import math
import os
import tempfile

ARGS = {"rows": 3000, "ids": 2000, "alpha": 1.1, "base_rate": 0.3, "holdout": 0.25,
        "signal": 1.5, "seed": 11}
M64 = (1 << 64) - 1
ROW_SALT, HEX_SALT = 0x6a09e667f3bcc909, 0xbb67ae8584caa73b
W_SALT, LABEL_SALT = 0xa54ff53a5f1d36f1, 0x510e527fade682d1
INT_MISSING = [0.45, 0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0005, 0.04, 0.45, 0.04, 0.77, 0.22]
INT_SCALE = [1, 30, 8, 3, 5000, 40, 5, 6, 40, 0.3, 1, 0.5, 3]
CAT_MISSING = [0, 0, 0.03, 0.03, 0, 0, 0.12, 0, 0, 0, 0, 0.03, 0, 0, 0.03, 0, 0, 0.44, 0.44,
               0.03, 0.76, 0, 0.03, 0.44, 0.44, 0]


def mix64(x):
    x ^= x >> 30
    x = (x * 0xbf58476d1ce4e5b9) & M64
    x ^= x >> 27
    x = (x * 0x94d049bb133111eb) & M64
    return x ^ (x >> 31)


class Stream:
    """splitmix64: state += golden gamma, output mix64(state)."""

    def __init__(self, state):
        self.s = state & M64

    def u64(self):
        self.s = (self.s + 0x9e3779b97f4a7c15) & M64
        return mix64(self.s)

    def unit(self):
        return (self.u64() >> 11) * 2.0 ** -53

    def normal(self):
        u = 1.0 - self.unit()
        v = self.unit()
        return math.sqrt(-2.0 * math.log(u)) * math.cos(6.283185307179586 * v)


def vocab_sizes(ids):
    out = []
    for c in range(26):
        v = math.floor(4.0 * (ids / 16.0) ** (((7 * c) % 26) / 25.0) + 0.5)  # C round(), x > 0
        out.append(max(2, v))
    return out


def draw(a, cdfs, hex_seed, i):
    g = Stream(mix64(a["seed"] ^ ROW_SALT) ^ mix64(i + 1))
    ints, cats = [], []
    for c in range(13):
        miss, u, neg = g.unit(), g.unit(), g.unit()
        x = INT_SCALE[c] * ((1.0 - u) ** (-2.0 / 3.0) - 1.0)
        v = math.floor(min(x, 1e9))
        if c == 1 and neg < 0.15:
            v = -1 if neg < 0.12 else -2 if neg < 0.14 else -3
        ints.append(v if miss >= INT_MISSING[c] else None)
    for c in range(26):
        miss, u = g.unit(), g.unit()
        cdf = cdfs[c]
        target = u * cdf[-1]
        lo, hi = 0, len(cdf) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if cdf[mid] <= target:
                lo = mid + 1
            else:
                hi = mid
        col, rank = 14 + c, lo + 1
        h = mix64((hex_seed + (col << 40) + rank) & M64) >> 32
        cats.append(h if miss >= CAT_MISSING[c] else None)
    return ints, cats


def bucket(v):
    return math.floor(math.log(v) ** 2) if v > 2 else v


def weight(w_seed, col, key):
    return Stream(w_seed ^ mix64((key & M64) ^ mix64(col))).normal()


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & M64
    return h


def auc(scored):
    scored = sorted(scored)
    rank_sum, pos, i = 0.0, 0, 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        for k in range(i, j):
            if scored[k][1]:
                rank_sum += (i + 1 + j) / 2.0
                pos += 1
        i = j
    neg = len(scored) - pos
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def main():
    a = ARGS
    cdfs = []
    for v in vocab_sizes(a["ids"]):
        acc, cdf = 0.0, []
        for k in range(v):
            acc += (k + 1.0) ** -a["alpha"]
            cdf.append(acc)
        cdfs.append(cdf)
    hex_seed, w_seed = mix64(a["seed"] ^ HEX_SALT), mix64(a["seed"] ^ W_SALT)
    rows = [draw(a, cdfs, hex_seed, i) for i in range(a["rows"])]
    z = []
    for ints, cats in rows:
        s = 0.0
        for c, v in enumerate(ints):
            if v is not None:
                s += weight(w_seed, c + 1, bucket(v))
        for c, h in enumerate(cats):
            if h is not None:
                s += weight(w_seed, 14 + c, h)
        z.append(s)
    n = len(z)
    mean = 0.0
    for x in z:
        mean += x
    mean /= n
    var = 0.0
    for x in z:
        var += (x - mean) * (x - mean)
    sd = math.sqrt(var / n)
    z = [x * (a["signal"] / sd) for x in z]
    lo, hi = -50.0, 50.0
    for _ in range(100):
        b = (lo + hi) / 2
        m = 0.0
        for x in z:
            m += sigmoid(b + x)
        if m / n < a["base_rate"]:
            lo = b
        else:
            hi = b
    bias = (lo + hi) / 2
    n_test = int(n * a["holdout"])
    n_train = n - n_test
    labels = Stream(mix64(a["seed"] ^ LABEL_SALT))
    lines, test = [], []
    for i, (ints, cats) in enumerate(rows):
        p = sigmoid(bias + z[i])
        y = 1 if labels.unit() < p else 0
        fields = [str(y)] + ["" if v is None else str(v) for v in ints]
        fields += ["" if h is None else f"{h:08x}" for h in cats]
        lines.append("\t".join(fields) + "\n")
        if i >= n_train:
            test.append((p, y))
    files = {"train": lines[:n_train], "test": lines[n_train:]}
    out = {"args": a, "files": {}}
    with tempfile.TemporaryDirectory() as d:
        for name, part in files.items():
            path = os.path.join(d, name + ".tsv")
            with open(path, "w") as f:
                f.writelines(part)
            with open(path, "rb") as f:
                data = f.read()
            out["files"][name] = {"fnv1a64": f"{fnv1a64(data):016x}", "rows": len(part),
                                  "positives": sum(int(x[0]) for x in part),
                                  "first_line": part[0]}
    pos = sum(y for _, y in test)
    q = pos / n_test
    out["bayes_logloss"] = -sum(math.log(p) if y else math.log(1.0 - p) for p, y in test) / n_test
    out["bayes_auc"] = auc(test)
    out["base_rate_logloss"] = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
