#!/usr/bin/python3
"""ctr_liblinear.py - the LIBLINEAR reference for examples/ctr_logreg.json (logistic regression
on the sparse ids).

For each C of a small grid: `liblinear-train -s 7 -c C -B 1` (L2-regularised logistic
regression, dual solver, with a bias feature) on PREFIX.train.svm, then `liblinear-predict -b 1`
on PREFIX.test.svm; prints the held-out logloss and exact AUC (ties averaged) of the predicted
probabilities and the wall time of train + predict. Debian: apt-get install liblinear-tools
(/usr/bin/liblinear-train, /usr/bin/liblinear-predict). numpy only.

    /usr/bin/python3 tests/ref/ctr_liblinear.py data/ctr [--c 0.03 0.1 0.3 1]
        [--json tests/ref/examples/ctr_liblinear.json]

Prints one line per C and, last,
    ctr_liblinear best_c=<C> val_logloss=<x> val_auc=<y> seconds=<t>
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np


def auc_of(p, y):
    """Exact ROC AUC (Mann-Whitney), tied scores sharing their mean rank."""
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    _, first, counts = np.unique(ps, return_index=True, return_counts=True)
    ranks = np.repeat(first + (counts + 1) / 2.0, counts)
    pos = ys.sum()
    neg = len(ys) - pos
    return float((ranks[ys == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prefix")
    ap.add_argument("--c", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    train, test = a.prefix + ".train.svm", a.prefix + ".test.svm"
    y = np.array([int(line.split(None, 1)[0]) for line in open(test)], np.int64)
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "liblinear-tools"],
                             capture_output=True, text=True).stdout
    runs = []
    with tempfile.TemporaryDirectory() as d:
        model, pred = os.path.join(d, "model"), os.path.join(d, "pred")
        for c in a.c:
            t = time.perf_counter()
            subprocess.run(["liblinear-train", "-q", "-s", "7", "-c", str(c), "-B", "1", train,
                            model], check=True)
            t_train = time.perf_counter() - t
            subprocess.run(["liblinear-predict", "-b", "1", test, model, pred], check=True,
                           stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - t
            with open(pred) as f:
                header = f.readline().split()  # "labels 1 0": the order of the columns
                col = 1 + header[1:].index("1")
                p = np.array([float(line.split()[col]) for line in f])
            pc = np.clip(p, 1e-15, 1 - 1e-15)
            loss = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
            auc = auc_of(p, y)
            runs.append({"c": c, "val_logloss": loss, "val_auc": auc,
                         "train_seconds": t_train, "seconds": seconds})
            print(f"C {c:g}: val_logloss {loss:.4f} - val_auc {auc:.4f} - train {t_train:.1f} s,"
                  f" train + predict {seconds:.1f} s", flush=True)
    best = min(runs, key=lambda r: r["val_logloss"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"script": "tests/ref/ctr_liblinear.py", "data": a.prefix,
                       "liblinear_tools": version, "solver": "-s 7 -B 1 (L2 logistic, dual)",
                       "runs": runs, "best": best}, f, indent=1)
            f.write("\n")
    print(f"ctr_liblinear best_c={best['c']:g} val_logloss={best['val_logloss']:.6f} "
          f"val_auc={best['val_auc']:.6f} seconds={best['seconds']:.2f}")


if __name__ == "__main__":
    main()
