"""Independent check of ps-launch's validation metrics: scores a libsvm file (1-based ids) with
a saved-weights directory (fit.export_to) of a sparse 3-layer model (relu, relu, sigmoid) in
numpy float32, then AUC by midranks (Mann-Whitney) and log loss clipped to [1e-7, 1 - 1e-7].
Every id of the file must have a row in the export (filter the file first).

    /usr/bin/python3 tests/ref/eval_reference.py DIR FILE.svm
Compare with: ps-launch JOB.json --evaluate --set fit.init_from=DIR (data.validation = FILE)."""
import sys

import numpy as np

d, path = sys.argv[1], sys.argv[2]
keys = np.load(d + "/dense/kernel/keys.npy")
emb = np.load(d + "/dense/kernel/values.npy")
row = {int(k): i for i, k in enumerate(keys)}
b0 = np.load(d + "/dense/bias.npy")
W1, b1 = np.load(d + "/dense_1/kernel.npy"), np.load(d + "/dense_1/bias.npy")
W2, b2 = np.load(d + "/dense_2/kernel.npy"), np.load(d + "/dense_2/bias.npy")
ys, ps = [], []
for line in open(path):
    f = line.split()
    h = b0.copy()
    for e in f[1:]:
        i, x = e.split(":")
        h = h + np.float32(x) * emb[row[int(i) - 1]]
    h = np.maximum(np.maximum(h, 0) @ W1 + b1, 0)
    z = (h @ W2 + b2)[0]
    ys.append(float(f[0]))
    ps.append(1.0 / (1.0 + np.exp(-np.float64(z))))
y, p = np.array(ys), np.array(ps)
order = np.argsort(p, kind="mergesort")
s = p[order]
ranks = np.empty(len(p))
i = 0
while i < len(s):  # midranks: a run of equal scores shares the mean of its ranks
    j = i
    while j < len(s) and s[j] == s[i]:
        j += 1
    ranks[order[i:j]] = (i + j + 1) / 2.0
    i = j
pos = y > 0.5
npos, nneg = pos.sum(), (~pos).sum()
auc = (ranks[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg)
q = np.clip(p, 1e-7, 1 - 1e-7)
logloss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
print("n %d auc %.10f logloss %.10f accuracy %.10f" % (len(y), auc, logloss, np.mean((p > 0.5) == pos)))
