#!/usr/bin/python3
"""ctr_torch.py - the PyTorch 1.13 reference for examples/ctr.json and examples/criteo.json.

The model of those job files: an embedding bag of 16 (the sum of the rows of a row's features
plus a bias of 16, linear: our sparse first Dense layer), Linear(16, 64) + ReLU,
Linear(64, 1) + sigmoid, binary cross-entropy (on the logit, as ps does), torch.optim.Adagrad
(PyTorch form: G0 = 0, eps = 1e-10), batch 256 reshuffled every epoch. Initial values as the
job files ask: embedding rows N(0, 0.01^2), Dense kernels Glorot-uniform, biases zero.

Data (made by examples/make_data.sh, or `ps-datagen PREFIX [--format criteo]`):
  libsvm: PREFIX.train.svm / PREFIX.test.svm, every id its own row (value 1).
  criteo: PREFIX.train.tsv / PREFIX.test.tsv, each non-empty field hashed exactly as the criteo
          reader does: key(col, bytes) = mix64(fnv1a64(bytes) ^ mix64(0x9e3779b97f4a7c15 * col)),
          col 1..13 for I1..I13 (bytes: the decimal text of b = v > 2 ? floor(ln(v)^2) : v) and
          14..39 for C1..C26 (bytes: the hex string as written). Keys are then renumbered
          0..n-1 for the embedding (a bijection: the model is the same).
A grid of learning rates, each trained for up to --epochs epochs from the same initial weights;
after each epoch the held-out logloss and exact AUC (ties averaged) are printed. The best
(lr, epochs) by held-out logloss is the one the job file uses.

    /usr/bin/python3 tests/ref/ctr_torch.py data/ctr [--format libsvm|criteo] \
        [--lr 0.01 0.03 0.1] [--epochs 5] [--threads 1] [--json tests/ref/examples/ctr_torch.json]

Prints one line per (lr, epoch) and, last,
    ctr_torch best_lr=<lr> best_epochs=<n> val_logloss=<x> val_auc=<y>
"""
import argparse
import json
import math
import platform
import time

import numpy as np
import torch
from torch import nn

T_START = time.perf_counter()
M64 = (1 << 64) - 1


def mix64(x):
    """splitmix64's finalizer (common/hash.h ps_mix64)."""
    x ^= x >> 30
    x = (x * 0xbf58476d1ce4e5b9) & M64
    x ^= x >> 27
    x = (x * 0x94d049bb133111eb) & M64
    return x ^ (x >> 31)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & M64
    return h


def criteo_key(col, text):
    return mix64(fnv1a64(text.encode()) ^ mix64((0x9e3779b97f4a7c15 * col) & M64))


def bucket(v):
    return math.floor(math.log(v) ** 2) if v > 2 else v


def read_libsvm(path):
    labels, keys, offsets = [], [], [0]
    with open(path) as f:
        for line in f:
            tok = line.split()
            labels.append(int(tok[0]))
            keys.extend(int(t.split(":")[0]) for t in tok[1:])
            offsets.append(len(keys))
    return np.array(labels, np.float32), np.array(keys, np.uint64), np.array(offsets, np.int64)


def read_criteo(path, cache):
    """cache: (col, field text) -> key, shared by both files (most fields repeat)."""
    labels, keys, offsets = [], [], [0]
    with open(path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            assert len(fields) == 40, f"{path}: {len(fields)} fields"
            labels.append(int(fields[0]))
            for col in range(1, 40):
                text = fields[col]
                if text == "":
                    continue
                k = cache.get((col, text))
                if k is None:
                    b = str(bucket(int(text))) if col <= 13 else text
                    k = cache[(col, text)] = criteo_key(col, b)
                keys.append(k)
            offsets.append(len(keys))
    return np.array(labels, np.float32), np.array(keys, np.uint64), np.array(offsets, np.int64)


def auc_of(p, y):
    """Exact ROC AUC (Mann-Whitney), tied scores sharing their mean rank."""
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    _, first, counts = np.unique(ps, return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0  # ranks first+1 .. first+count
    ranks = np.repeat(mean_rank, counts)
    pos = ys.sum()
    neg = len(ys) - pos
    return float((ranks[ys == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


class CTRModel(nn.Module):
    def __init__(self, num_ids, dim=16, hidden=64):
        super().__init__()
        self.emb = nn.EmbeddingBag(num_ids, dim, mode="sum", sparse=True)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        nn.init.normal_(self.emb.weight, 0.0, 0.01)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, ids, offsets):
        h = self.emb(ids, offsets) + self.bias
        return self.fc2(torch.relu(self.fc1(h))).squeeze(1)  # logits


def batch_of(idx, keys, offsets):
    """CSR rows idx -> (flat ids, bag offsets) for EmbeddingBag."""
    starts, ends = offsets[idx], offsets[idx + 1]
    lens = ends - starts
    flat = np.concatenate([keys[s:e] for s, e in zip(starts, ends)])
    bag = np.zeros(len(idx), np.int64)
    np.cumsum(lens[:-1], out=bag[1:])
    return torch.from_numpy(flat), torch.from_numpy(bag)


def evaluate(model, keys, offsets, y):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(y), 8192):
            idx = np.arange(i, min(i + 8192, len(y)))
            out.append(model(*batch_of(idx, keys, offsets)))
    z = torch.cat(out).double()
    yt = torch.from_numpy(y).double()
    loss = float(nn.functional.binary_cross_entropy_with_logits(z, yt))
    model.train()
    return loss, auc_of(torch.sigmoid(z).numpy(), y.astype(np.int64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prefix")
    ap.add_argument("--format", choices=["libsvm", "criteo"], default="libsvm")
    ap.add_argument("--lr", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    if a.format == "libsvm":
        ytr, ktr, otr = read_libsvm(a.prefix + ".train.svm")
        yte, kte, ote = read_libsvm(a.prefix + ".test.svm")
    else:
        cache = {}
        ytr, ktr, otr = read_criteo(a.prefix + ".train.tsv", cache)
        yte, kte, ote = read_criteo(a.prefix + ".test.tsv", cache)
    uniq, inv = np.unique(np.concatenate([ktr, kte]), return_inverse=True)
    ktr, kte = inv[:len(ktr)].astype(np.int64), inv[len(ktr):].astype(np.int64)
    read_s = time.perf_counter() - t0
    n = len(ytr)
    print(f"data: {n} training rows, {len(yte)} held-out rows, {len(uniq)} distinct keys, "
          f"{len(ktr) / n:.1f} per row, read in {read_s:.1f} s", flush=True)

    runs = []
    for lr in a.lr:
        torch.manual_seed(a.seed)
        model = CTRModel(len(uniq))
        opt = torch.optim.Adagrad(model.parameters(), lr=lr)
        loss_fn = nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(a.seed)
        epochs, train_s = [], 0.0
        for e in range(1, a.epochs + 1):
            t = time.perf_counter()
            perm = torch.randperm(n, generator=gen).numpy()
            total = 0.0
            for i in range(0, n, a.batch):
                idx = perm[i:i + a.batch]
                ids, bag = batch_of(idx, ktr, otr)
                opt.zero_grad()
                loss = loss_fn(model(ids, bag), torch.from_numpy(ytr[idx]))
                loss.backward()
                opt.step()
                total += float(loss) * len(idx)
            dt = time.perf_counter() - t
            train_s += dt
            vl, va = evaluate(model, kte, ote, yte)
            epochs.append({"epoch": e, "loss": total / n, "val_logloss": vl, "val_auc": va,
                           "train_seconds": dt, "samples_per_sec": n / dt})
            print(f"lr {lr:g} epoch {e}: loss {total / n:.4f} - val_logloss {vl:.4f} - "
                  f"val_auc {va:.4f} - {n / dt:.0f} samples/s (training loop)", flush=True)
        runs.append({"lr": lr, "epochs": epochs, "train_seconds": train_s})

    best_run, best = min(((r, ep) for r in runs for ep in r["epochs"]),
                         key=lambda t: t[1]["val_logloss"])
    total_s = time.perf_counter() - T_START
    samples = sum(len(r["epochs"]) for r in runs) * n
    train_s = sum(r["train_seconds"] for r in runs)
    summary = {
        "script": "tests/ref/ctr_torch.py", "data": a.prefix, "format": a.format,
        "torch": torch.__version__, "threads": a.threads, "machine": platform.machine(),
        "train_rows": n, "test_rows": len(yte), "distinct_keys": len(uniq),
        "model": "EmbeddingBag(sum, 16, sparse) + bias 16 (linear), 16-64 relu, 64-1 sigmoid",
        "init": "embedding N(0, 0.01^2), kernels glorot_uniform, biases 0",
        "optimizer": "torch.optim.Adagrad", "batch_size": a.batch, "seed": a.seed,
        "runs": runs,
        "best": {"lr": best_run["lr"], "epochs": best["epoch"],
                 "val_logloss": best["val_logloss"], "val_auc": best["val_auc"]},
        "samples_per_sec_training_loop": samples / train_s,
        "samples_per_sec_whole_process": samples / total_s,
        "seconds_whole_process": total_s,
    }
    print(f"training loop {samples / train_s:.0f} samples/s, whole process (reading, "
          f"{len(runs)} runs, evaluation) {samples / total_s:.0f} samples/s in {total_s:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
    print(f"ctr_torch best_lr={best_run['lr']:g} best_epochs={best['epoch']} "
          f"val_logloss={best['val_logloss']:.6f} val_auc={best['val_auc']:.6f}")


if __name__ == "__main__":
    main()
