#!/usr/bin/python3
"""fmnist_torch.py - the PyTorch 1.13 reference for examples/fashion_mnist.json.

Model: Linear(784, 256) + ReLU -> Linear(256, 10) + softmax, sparse categorical cross-entropy
(CrossEntropyLoss on the logits), torch.optim.Adagrad(lr=0.05) (PyTorch form), batch 128
reshuffled every epoch, Dense kernels Glorot-uniform and biases zero as ps initialises them.
Data: Fashion-MNIST's IDX files as Debian's dataset-fashion-mnist installs them
(/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz), pixels / 255
(the idx reader's rule). After each epoch: the test set's loss and accuracy; samples/s of the
training loop and of the whole process (reading included).

    /usr/bin/python3 tests/ref/fmnist_torch.py [--dir /usr/share/datasets/fashion-mnist]
        [--epochs 10] [--threads 1] [--init glorot|torch] [--g0 0.001] [--json tests/ref/examples/fmnist_torch.json]

Prints one line per epoch and, last,
    fmnist_torch best_epoch=<n> test_accuracy=<x> final_test_accuracy=<y>
"""
import argparse
import gzip
import json
import platform
import struct
import time

import numpy as np
import torch
from torch import nn

T_START = time.perf_counter()


def read_idx(path):
    """IDX (gzip or not): big-endian magic 0x00000803 (images) or 0x00000801 (labels)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    magic, n = struct.unpack(">II", data[:8])
    if magic == 0x803:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, np.uint8, n * rows * cols, 16).reshape(n, rows * cols)
    assert magic == 0x801, f"{path}: magic {magic:#x}"
    return np.frombuffer(data, np.uint8, n, 8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--g0", type=float, default=0.0,
                    help="Adagrad's initial_accumulator_value (the job file's G0)")
    ap.add_argument("--init", choices=["glorot", "torch"], default="glorot",
                    help="glorot: Glorot-uniform kernels, zero biases (ps's defaults); torch: "
                         "nn.Linear's own, U(+-1/sqrt(fan_in)) for kernels and biases")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    d = a.dir + "/"
    x = torch.from_numpy(read_idx(d + "train-images-idx3-ubyte.gz").astype(np.float32) / 255.0)
    y = torch.from_numpy(read_idx(d + "train-labels-idx1-ubyte.gz").astype(np.int64))
    xt = torch.from_numpy(read_idx(d + "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0)
    yt = torch.from_numpy(read_idx(d + "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    n = x.shape[0]
    print(f"data: {n} training and {xt.shape[0]} test images of {x.shape[1]} pixels", flush=True)

    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    for m in model if a.init == "glorot" else []:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    opt = torch.optim.Adagrad(model.parameters(), lr=a.lr, initial_accumulator_value=a.g0)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(a.seed)
    epochs, train_s = [], 0.0
    for e in range(1, a.epochs + 1):
        t = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        dt = time.perf_counter() - t
        train_s += dt
        with torch.no_grad():
            zt = model(xt)
            vl = float(loss_fn(zt, yt))
            va = float((zt.argmax(1) == yt).double().mean())
        epochs.append({"epoch": e, "loss": total / n, "val_loss": vl, "val_accuracy": va,
                       "train_seconds": dt, "samples_per_sec": n / dt})
        print(f"epoch {e}: loss {total / n:.4f} - val_loss {vl:.4f} - val_accuracy {va:.4f} - "
              f"{n / dt:.0f} samples/s (training loop)", flush=True)
    total_s = time.perf_counter() - T_START
    best = max(epochs, key=lambda r: r["val_accuracy"])
    summary = {
        "script": "tests/ref/fmnist_torch.py", "data": a.dir, "torch": torch.__version__,
        "threads": a.threads, "machine": platform.machine(),
        "model": "784-256 relu, 256-10 softmax", "init": ("glorot_uniform kernels, zero biases" if a.init == "glorot"
                 else "torch default: U(+-1/sqrt(fan_in)) kernels and biases"),
        "optimizer": "torch.optim.Adagrad", "lr": a.lr, "initial_accumulator_value": a.g0, "batch_size": a.batch, "seed": a.seed,
        "epochs": epochs, "best": {"epoch": best["epoch"], "val_accuracy": best["val_accuracy"]},
        "samples_per_sec_training_loop": a.epochs * n / train_s,
        "samples_per_sec_whole_process": a.epochs * n / total_s,
        "seconds_whole_process": total_s,
    }
    print(f"training loop {a.epochs * n / train_s:.0f} samples/s, whole process "
          f"{a.epochs * n / total_s:.0f} samples/s in {total_s:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
    print(f"fmnist_torch best_epoch={best['epoch']} test_accuracy={best['val_accuracy']:.4f} "
          f"final_test_accuracy={epochs[-1]['val_accuracy']:.4f}")


if __name__ == "__main__":
    main()
