#!/usr/bin/python3
"""torch_seed.py - PyTorch 1.13 reference throughput for the seed model, single-threaded.

Model: Linear(20, 64) + ReLU -> Linear(64, 1) + Sigmoid, BCE loss, torch.optim.Adagrad(lr=0.01),
batch 32 over 1000 x 20 uniform random inputs with random 0/1 labels, reshuffled every epoch
(Keras fit's default; the last batch of each epoch holds 8 samples). Only the training loop is
timed: model and optimizer construction and a throwaway warm-up run are not.

    /usr/bin/python3 tests/bench/torch_seed.py [--epochs 50] [--repeats 5]

Prints one line per run, the last run's final epoch loss, and then, last, the machine-parseable
    torch_seed samples_per_sec_median=<number>
"""
import argparse
import statistics
import time

import torch
from torch import nn

N_SAMPLES, N_FEATURES, HIDDEN = 1000, 20, 64


def make_model():
    return nn.Sequential(nn.Linear(N_FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1),
                         nn.Sigmoid())


def train(model, x, y, epochs, batch, lr, gen):
    """Runs the training loop; returns (seconds, mean loss of the last epoch per sample)."""
    opt = torch.optim.Adagrad(model.parameters(), lr=lr)
    loss_fn = nn.BCELoss()
    n = x.shape[0]
    epoch_loss = float("nan")
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)   # BCELoss averages over the batch
        epoch_loss = total / n
    return time.perf_counter() - t0, epoch_loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.epochs < 1 or args.repeats < 1 or args.batch < 1:
        ap.error("--epochs, --repeats and --batch must be >= 1")

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(N_SAMPLES, N_FEATURES, generator=gen)
    y = torch.randint(0, 2, (N_SAMPLES, 1), generator=gen).float()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {N_SAMPLES} x "
          f"{N_FEATURES}, batch {args.batch}, {args.epochs} epochs, {args.repeats} runs")

    train(make_model(), x, y, 1, args.batch, args.lr, gen)   # warm-up: allocator, dispatch caches
    rates, loss = [], float("nan")
    for r in range(args.repeats):
        torch.manual_seed(args.seed + r)   # same init per run index, whatever ran before
        model = make_model()
        secs, loss = train(model, x, y, args.epochs, args.batch, args.lr, gen)
        rates.append(args.epochs * N_SAMPLES / secs)
        print(f"run {r + 1}/{args.repeats}: {secs:.3f} s, {rates[-1]:.1f} samples/s, "
              f"final epoch loss {loss:.6f}")
    print(f"torch_seed final_epoch_loss={loss:.6f}")
    print(f"torch_seed samples_per_sec_median={statistics.median(rates):.1f}")


if __name__ == "__main__":
    main()
