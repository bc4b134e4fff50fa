#!/usr/bin/python3
"""make_adagrad_golden.py - writes tests/ref/adagrad_golden.json, the AdaGrad reference values that
tests/test_adagrad.c compares bit for bit against server/adagrad.c.

Run with the system interpreter (torch 1.13 + numpy live there):
    /usr/bin/python3 tests/ref/make_adagrad_golden.py            # writes next to this script
    /usr/bin/python3 tests/ref/make_adagrad_golden.py -o out.json

Where the numbers come from:
  - form "pytorch", rowwise false: real torch.optim.Adagrad on a float32 tensor, param.grad set by
    hand, optimizer.step() (dense path, torch 1.13 _single_tensor_adagrad). On an AVX2/FMA CPU
    torch fuses grad + wd * param and sum + grad * grad into FMAs; check_discriminates() verifies
    that and that each case would catch a kernel which does not.
  - form "keras", rowwise false: numpy float32 emulation of Keras 3 Adagrad.update_step:
    lr = cast(lr, float32); acc += square(g); var -= (lr * g) / sqrt(acc + eps).
  - rowwise (either form): no library reference exists (FBGEMM row-wise AdaGrad keeps one
    accumulator per row, G += mean(g^2)), so numpy float32 in server/adagrad.c's operation order.

Float format: every float in the file is a float32 value written as the repr() of the equal
Python double (e.g. 0.10000000149011612), so strtod() gives that double exactly and the cast to
float is exact. (The shortest float32 string, "0.1", would go through double rounding.)
Steps are 1-based per row: expected_w[k] / expected_acc[k] hold the state after step k + 1.
"""
import argparse
import json
import os

import numpy as np
import torch

F32 = np.float32


def f32list(a):
    return [float(x) for x in np.asarray(a, dtype=F32).ravel()]


def run_torch(c):
    """The real optimizer: returns (ws, accs), one row per step."""
    p = torch.tensor(c["w0"], dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adagrad([p], lr=c["lr"], lr_decay=c["lr_decay"],
                              weight_decay=c["weight_decay"], eps=c["eps"],
                              initial_accumulator_value=c["initial_accumulator_value"])
    ws, accs = [], []
    for g in c["grads"]:
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        ws.append(f32list(p.detach().numpy()))
        accs.append(f32list(opt.state[p]["sum"].numpy()))
    return ws, accs


def run_keras(c):
    """Keras 3 update_step in numpy float32 (keras/src/optimizers/adagrad.py)."""
    w = np.array(c["w0"], dtype=F32)
    acc = np.full(c["dim"], c["initial_accumulator_value"], dtype=F32)
    lr, eps = F32(c["lr"]), F32(c["eps"])
    ws, accs = [], []
    for g in c["grads"]:
        g = np.array(g, dtype=F32)
        acc = acc + np.square(g)
        w = w - (lr * g) / np.sqrt(acc + eps)
        ws.append(f32list(w))
        accs.append(f32list(acc))
    return ws, accs


def fma32(a, b, c):
    """float32 fused multiply-add: a*b is exact in double; the sum is rounded once to double and
    then to float32. The double rounding can differ from a true fmaf() only in rare ties, and
    check_discriminates() below is a self-check, not a source of expected values."""
    return (np.float64(a) * np.float64(b) + np.float64(c)).astype(F32)


def run_torch_emulated(c, fused_wd, fused_acc):
    """torch's dense update in numpy float32, with or without FMA in the two multiply-adds."""
    w = np.array(c["w0"], dtype=F32)
    acc = np.full(c["dim"], c["initial_accumulator_value"], dtype=F32)
    eps, wd = F32(c["eps"]), F32(c["weight_decay"])
    ws, accs = [], []
    for step, g in enumerate(c["grads"], start=1):
        g = np.array(g, dtype=F32)
        neg_clr = F32(-(c["lr"] / (1 + (step - 1) * c["lr_decay"])))
        if c["weight_decay"] != 0:
            g = fma32(wd, w, g) if fused_wd else g + wd * w
        acc = fma32(g, g, acc) if fused_acc else acc + g * g
        w = w + (neg_clr * g) / (np.sqrt(acc) + eps)
        ws.append(f32list(w))
        accs.append(f32list(acc))
    return ws, accs


def check_discriminates(c, ws, accs):
    """torch 1.13's CPU kernels (AVX2 build, GCC contracts a + b*c) compute
    grad.add(param, alpha=wd) as fma(wd, param, grad) and addcmul_(g, g) as fma(g, g, sum).
    Require every torch case to catch a kernel that rounds either product first."""
    def n_diff(other):
        return sum(a != b for x, y in zip((ws, accs), other) for r, s in zip(x, y)
                   for a, b in zip(r, s))
    if n_diff(run_torch_emulated(c, True, True)) != 0:
        raise SystemExit(f"{c['name']}: this torch does not round as fma(wd, w, g) and "
                         "fma(g, g, sum) (a CPU without FMA?), but server/adagrad.c does")
    n_acc = n_diff(run_torch_emulated(c, True, False))
    n_wd = n_diff(run_torch_emulated(c, False, True)) if c["weight_decay"] != 0 else None
    if n_acc == 0 or n_wd == 0:
        raise SystemExit(f"{c['name']}: would not catch an unfused kernel; change its inputs")
    return n_acc, n_wd


def run_rowwise(c):
    """server/adagrad.c's rowwise order, one float32 op at a time (sum left to right)."""
    dim = c["dim"]
    w = np.array(c["w0"], dtype=F32)
    acc = F32(c["initial_accumulator_value"])
    eps, wd = F32(c["eps"]), F32(c["weight_decay"])
    ws, accs = [], []
    for step, g in enumerate(c["grads"], start=1):
        g = np.array(g, dtype=F32)
        if c["form"] == "keras":
            lr = F32(c["lr"])
        else:
            clr = c["lr"] / (1 + (step - 1) * c["lr_decay"])   # Python double, as torch
            neg_clr = F32(-clr)
            if wd != 0:
                g = g + wd * w                                   # from w before this step
        s = F32(0)
        for x in g:
            s = F32(s + x * x)
        acc = F32(acc + s / F32(dim))
        if c["form"] == "keras":
            w = w - (lr * g) / np.sqrt(acc + eps)
        else:
            w = w + (neg_clr * g) / (np.sqrt(acc) + eps)
        ws.append(f32list(w))
        accs.append([float(acc)])
    return ws, accs


# Gradient rows are N(0, scale^2) float32 draws; coordinates 0 and 1 carry the edge cases: zeros,
# signs, large (1e15: g^2 = 1e30 still finite) and tiny (1e-20: g^2 underflows to 0; 1e-39 is
# subnormal) magnitudes. The other coordinates stay ordinary so that rounding order shows.
def cases():
    rng = np.random.default_rng(20240601)
    edges = {(0, 0): 0.0, (1, 0): 0.0, (0, 1): -3.5, (1, 1): -1e15, (2, 1): 1e-20,
             (3, 0): 1e-39, (3, 1): 0.0}
    out = []

    def add(name, form, dim, steps, lr, eps, g0, lr_decay=0.0, wd=0.0, rowwise=False, scale=1.0):
        gs = (scale * rng.standard_normal((steps, dim))).astype(F32)
        for (s, i), v in edges.items():
            gs[s, i] = v
        out.append(dict(name=name, form=form, lr=lr, eps=eps, initial_accumulator_value=g0,
                        lr_decay=lr_decay, weight_decay=wd, rowwise=rowwise, dim=dim,
                        w0=f32list(rng.uniform(-1, 1, dim)), grads=[f32list(r) for r in gs]))

    add("torch_defaults", "pytorch", 4, 6, 0.01, 1e-10, 0.0)
    add("torch_lr0.01_g0.1", "pytorch", 5, 5, 0.01, 1e-10, 0.1)
    add("torch_lr_decay", "pytorch", 3, 6, 0.05, 1e-10, 0.0, lr_decay=0.1)
    # Gradients near wd * w, so that fma(wd, w, g) and g + round(wd * w) can differ.
    add("torch_weight_decay", "pytorch", 6, 5, 0.01, 1e-10, 0.0, wd=0.05, scale=0.05)
    add("torch_lr_decay_weight_decay", "pytorch", 8, 5, 0.1, 1e-10, 0.1, lr_decay=0.1, wd=0.05,
        scale=0.1)
    add("keras_defaults", "keras", 4, 5, 0.001, 1e-7, 0.1)
    add("keras_lr0.1", "keras", 7, 4, 0.1, 1e-7, 0.1)
    add("rowwise_pytorch", "pytorch", 5, 4, 0.01, 1e-10, 0.0, lr_decay=0.1, wd=0.05,
        rowwise=True)
    add("rowwise_keras", "keras", 6, 4, 0.001, 1e-7, 0.1, rowwise=True)

    # lr, eps, g0, lr_decay and wd stay Python doubles, as the C config holds them.
    for c in out:
        if c["rowwise"]:
            c["expected_w"], c["expected_acc"] = run_rowwise(c)
        elif c["form"] == "pytorch":
            c["expected_w"], c["expected_acc"] = run_torch(c)
            n_acc, n_wd = check_discriminates(c, c["expected_w"], c["expected_acc"])
            print(f"{c['name']}: {n_acc} values differ from an unfused addcmul"
                  + (f", {n_wd} from an unfused weight-decay add" if n_wd else ""))
        else:
            c["expected_w"], c["expected_acc"] = run_keras(c)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default=os.path.join(os.path.dirname(__file__) or ".",
                                                        "adagrad_golden.json"))
    args = ap.parse_args()
    doc = {"generator": "tests/ref/make_adagrad_golden.py", "torch": torch.__version__,
           "numpy": np.__version__, "cases": cases()}
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {len(doc['cases'])} cases, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
