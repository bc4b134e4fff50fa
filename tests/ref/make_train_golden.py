#!/usr/bin/python3
"""make_train_golden.py - writes tests/ref/train/: PyTorch reference runs of whole training jobs
(data, initial weights, and per case the epoch loss/accuracy and the final weights with their
AdaGrad state), for C tests that train the same jobs with ps-server/ps-worker and compare.

Run with the system interpreter (torch 1.13 + numpy live there; nothing else needs torch):
    /usr/bin/python3 tests/ref/make_train_golden.py          # writes tests/ref/train/ next to it
    /usr/bin/python3 tests/ref/make_train_golden.py -o DIR
The output is deterministic (fixed numpy seeds, torch on one thread) and committed.

Files (DIR = tests/ref/train):
  seed.csv        200 rows, header "x0,...,x19,label", 20 features x = k/256 (k integer in
                  [0, 256), exact in float32) then the label 0/1. Labels: Bernoulli(sigmoid(s)) of a
                  hidden logistic model s = 2 (x - 0.5) . v, v ~ N(0, 1) (numpy seed below).
  sparse.svm      200 rows of libsvm "label id:val ...": 3..8 distinct ids in 1..300 per row
                  (sorted), values k/8 for k in 1..16, labels Bernoulli(sigmoid(s)) of a hidden
                  model on the ids. One-based: id i is key i - 1 (the job's data.train.one_based).
  seed_init/      initial weights of the seed model, the saved-weights layout (below):
                  dense/kernel (20, 64), dense/bias (64,), dense_1/kernel (64, 1), dense_1/bias (1,)
  sparse_init/    initial weights of the sparse model: dense/kernel sparse layout, dim 8, one row
                  per key that occurs in sparse.svm (keys ascending, uint64), then dense/bias (8,),
                  dense_1/kernel (8, 1), dense_1/bias (1,).
                  Kernels are Glorot-uniform numpy draws, limit sqrt(6 / (fan_in + fan_out)) (the
                  sparse kernel's fan_in is num_ids = 300, as model.input.num_ids); biases are 0
                  except dense_1/bias = 0.05, so that a nonzero bias path is exercised.
  <case>/         the weights after the case's 3 epochs, same layout plus per table "accumulators"
                  (AdaGrad G, same shape as the values) and the "optimizer" block.
  golden.json     {"generator", "torch", "numpy", "cases": [...]}; each case:
                  name, model ("seed" | "sparse"), form ("keras" | "pytorch"), batch_size, epochs,
                  lr, epsilon, initial_accumulator_value, data (file name), init (dir name),
                  samples_per_epoch, steps_per_epoch, epoch_loss [epochs], epoch_accuracy,
                  evaluate {loss, accuracy}: the final weights scored on every row
                  [epochs], weights (dir name), min_abs_logit (smallest |z| of any sample
                  scored in the run: how far every accuracy decision is from the 0.5 tie; the
                  float64 rerun gives the same accuracies), sync_equivalent ([{workers,
                  batch_size}] that must give the same run, see below), job (the job-file keys
                  that describe the run, README "Job file"; paths relative to DIR; add
                  fit.init_from = init), bit_exact_note (what can and cannot match bit for bit).

Saved-weights layout: DIR/manifest.json =
  {"format": "ps-weights", "version": 1, "job_id": "golden", "seed": 0, "tables": [
    {"name": "dense/kernel", "dim": 64, "layout": "dense", "shape": [20, 64],
     "values": "dense/kernel.npy"[, "accumulators": "dense/kernel.acc.npy", "optimizer": {...}]},
    {"name": "dense/kernel", "dim": 8, "layout": "sparse", "rows": N,
     "keys": "dense/kernel/keys.npy", "values": "dense/kernel/values.npy"
     [, "accumulators": "dense/kernel/acc.npy", "optimizer": {...}]}, ...]}
  .npy by numpy.save: float32 '<f4' (values, accumulators), uint64 '<u8' (keys). Dense layout:
  row i of a kernel is input i; a bias is (dim,) and so is its accumulator. Sparse: keys (N,),
  values and accumulators (N, dim). optimizer = {"form", "rowwise": false, "learning_rate",
  "epsilon", "initial_accumulator_value", "lr_decay": 0, "weight_decay": 0}.

The model (what worker/mlp.c computes), all float32:
  seed:   h = relu(x @ K0 + b0) (20 -> 64); z = h @ K1 + b1 (64 -> 1); p = sigmoid(z).
  sparse: h[b] = relu(sum_i x_i K0[key_i] + b0) (torch.nn.EmbeddingBag(300, 8, mode="sum",
          sparse=True) with per_sample_weights = x, plus b0); then z, p as above (8 -> 1).
  loss:   binary cross-entropy on the logit, per sample max(z,0) - z*y + log1p(exp(-|z|)); the
          gradient is that of the batch MEAN (torch.nn.BCEWithLogitsLoss(), autograd).
  metrics: epoch_loss = (sum over the epoch's samples of the per-sample loss, each float32,
          summed in double) / samples; epoch_accuracy = #((sigmoid(z) > 0.5) == y) / samples;
          every sample scored with the weights current at its batch, before that batch's update
          (Keras' running figure at the end of the epoch). Written as Python doubles.
  batches: no shuffling (job: fit.shuffle false, fit.overlap false = sequential SGD). Batch j of
          batch size B is rows [jB, (j+1)B) in file order, the last one short (200 = 6*32 + 8,
          3*64 + 8, 128 + 72). One optimizer step per batch, 3 epochs.

AdaGrad (README "AdaGrad"), per coordinate, accumulate first:
  form "pytorch": the real torch.optim.Adagrad(lr=0.01) (eps 1e-10, G0 = 0, lr_decay 0, wd 0),
          all four tables in one optimizer. The sparse kernel gets torch's sparse-gradient path
          (EmbeddingBag sparse=True): grad.coalesce() (duplicate keys summed), then
          G[rows] = G[rows] + round(g*g) (unfused) and w[rows] = fmaf(-lr, g / (sqrt(G) + eps),
          w[rows]) (param.add_(sparse, alpha) is one FMA on an FMA CPU). The script checks every
          step bit for bit: dense tables against fmaf(g, g, G) and w + (-lr * g) / (sqrt(G) +
          eps) (torch's dense path = what server/adagrad.c does for every table), the sparse
          table against the sparse path just described, and prints how many sparse values the
          server's formula would round differently (~5%: a C run of the sparse pytorch cases
          can match only to rounding, even with a bit-exact forward/backward).
  form "keras" (Keras 3): lr 0.01, eps 1e-7, G0 = 0.1, numpy float32, unfused:
          G = G + g*g; w = w - (lr*g) / sqrt(G + eps), lr and eps cast to float32. The sparse
          kernel updates only the keys present in the batch (duplicates summed first, by the
          coalesce); a present key whose gradient is all zero is "updated" with no effect
          (G + 0, w - 0), exactly as a dense update of a zero row would be. The script checks
          every step against the same update in float64 (|diff| <= 1e-6) and prints how far a
          whole float64 run (model and optimizer) ends from the float32 one.

Multi-worker synchronous training: W workers with batch b each (worker R reads rows R, R+W, ...)
and the server applying the MEAN of the W workers' batch-mean gradients (a sparse row missing
from a worker's batch counts as a zero gradient from that worker; Keras form: a row is "present"
if any worker's batch has it) equal one worker with batch W*b over the same rows in the same
order - as long as every worker's shard has the same number of rows, so that the short last
batches also line up: 200 rows, W = 2 gives 100 per worker (batches 32,32,32,4 -> 64,64,64,8),
W = 4 gives 50 (32,18 -> 128,72). Hence the cases with batch 64 and 128 are the references for
2 x 32 and 4 x 32 (listed in each case's sync_equivalent). The equality is exact in real
arithmetic only: the C side averages in another order, so compare with a tolerance.

Float format: floats in golden.json are the repr() of the exact double (float32 values are written
as the equal double, e.g. 0.009999999776482582, so strtod + cast is exact; epoch_loss and
epoch_accuracy are doubles). lr/epsilon/initial_accumulator_value are the job's doubles.
"""
import argparse
import json
import math
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F

F32 = np.float32
N_ROWS = 200
SEED_IN, SEED_HIDDEN = 20, 64
SPARSE_IDS, SPARSE_HIDDEN = 300, 8
EPOCHS = 3
LR = 0.01
FORMS = {  # form: (epsilon, initial_accumulator_value), as the job's doubles
    "keras": (1e-7, 0.1),
    "pytorch": (1e-10, 0.0),
}
DATA_SEED = 20240611
# Picked among seeds 1..11: every case's accuracy moves off a constant prediction and the
# smallest |logit| of any scored sample stays ~1e-4 (accuracy decisions far from rounding).
INIT_SEED = 8


# ---------------------------------------------------------------- data and initial weights

def sigmoid64(s):
    return 1.0 / (1.0 + np.exp(-s))


def make_seed_data(rng):
    k = rng.integers(0, 256, (N_ROWS, SEED_IN))
    x = (k / 256.0).astype(F32)                      # exact
    v = rng.standard_normal(SEED_IN)
    s = 2.0 * (x.astype(np.float64) - 0.5) @ v
    y = (rng.random(N_ROWS) < sigmoid64(s)).astype(F32)
    return x, y


def write_seed_csv(path, x, y):
    with open(path, "w") as f:
        f.write(",".join([f"x{i}" for i in range(SEED_IN)] + ["label"]) + "\n")
        for row, lab in zip(x, y):
            f.write(",".join(repr(float(a)) for a in row) + f",{int(lab)}\n")


def make_sparse_data(rng):
    """rows: list of (keys int64 sorted, vals float32); keys = libsvm id - 1."""
    v = rng.standard_normal(SPARSE_IDS)
    rows, y = [], []
    for _ in range(N_ROWS):
        n = int(rng.integers(3, 9))
        keys = np.sort(rng.choice(SPARSE_IDS, n, replace=False)).astype(np.int64)
        vals = (rng.integers(1, 17, n) / 8.0).astype(F32)   # exact
        s = float(vals.astype(np.float64) @ v[keys]) - 0.3
        rows.append((keys, vals))
        y.append(1.0 if rng.random() < sigmoid64(s) else 0.0)
    return rows, np.array(y, dtype=F32)


def write_svm(path, rows, y):
    with open(path, "w") as f:
        for (keys, vals), lab in zip(rows, y):
            f.write(f"{int(lab)} " + " ".join(f"{k + 1}:{repr(float(x))}"
                                              for k, x in zip(keys, vals)) + "\n")


def glorot(rng, fan_in, fan_out, shape):
    lim = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-lim, lim, shape).astype(F32)


def make_init(rng, model, present_keys=None):
    """Ordered dict name -> array (sparse kernel: the full (num_ids, dim) matrix; only the rows
    of present_keys are ever saved or used)."""
    if model == "seed":
        return {"dense/kernel": glorot(rng, SEED_IN, SEED_HIDDEN, (SEED_IN, SEED_HIDDEN)),
                "dense/bias": np.zeros(SEED_HIDDEN, F32),
                "dense_1/kernel": glorot(rng, SEED_HIDDEN, 1, (SEED_HIDDEN, 1)),
                "dense_1/bias": np.full(1, 0.05, F32)}
    k0 = np.zeros((SPARSE_IDS, SPARSE_HIDDEN), F32)
    k0[present_keys] = glorot(rng, SPARSE_IDS, SPARSE_HIDDEN, (len(present_keys), SPARSE_HIDDEN))
    return {"dense/kernel": k0,
            "dense/bias": np.zeros(SPARSE_HIDDEN, F32),
            "dense_1/kernel": glorot(rng, SPARSE_HIDDEN, 1, (SPARSE_HIDDEN, 1)),
            "dense_1/bias": np.full(1, 0.05, F32)}


def write_weights(d, model, tables, present_keys, acc=None, optimizer=None):
    """tables/acc: name -> array (the sparse kernel as the full matrix); saved in our layout."""
    if os.path.exists(d):
        shutil.rmtree(d)
    entries = []
    for name, w in tables.items():
        os.makedirs(os.path.join(d, os.path.dirname(name)), exist_ok=True)
        if model == "sparse" and name == "dense/kernel":
            os.makedirs(os.path.join(d, name), exist_ok=True)
            e = {"name": name, "dim": SPARSE_HIDDEN, "layout": "sparse",
                 "rows": int(len(present_keys)), "keys": f"{name}/keys.npy",
                 "values": f"{name}/values.npy"}
            np.save(os.path.join(d, e["keys"]), present_keys.astype("<u8"))
            np.save(os.path.join(d, e["values"]), np.ascontiguousarray(w[present_keys], "<f4"))
            if acc is not None:
                e["accumulators"] = f"{name}/acc.npy"
                np.save(os.path.join(d, e["accumulators"]),
                        np.ascontiguousarray(acc[name][present_keys], "<f4"))
        else:
            e = {"name": name, "dim": int(w.shape[-1]), "layout": "dense",
                 "shape": [int(s) for s in w.shape], "values": f"{name}.npy"}
            np.save(os.path.join(d, e["values"]), np.ascontiguousarray(w, "<f4"))
            if acc is not None:
                e["accumulators"] = f"{name}.acc.npy"
                np.save(os.path.join(d, e["accumulators"]), np.ascontiguousarray(acc[name], "<f4"))
        if optimizer is not None:
            e["optimizer"] = optimizer
        entries.append(e)
    man = {"format": "ps-weights", "version": 1, "job_id": "golden", "seed": 0, "tables": entries}
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(man, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------- training

def fma32(a, b, c):
    """float32 fmaf via double (a*b exact in double; rare double-rounding ties aside)."""
    d = np.float64
    return (np.asarray(a, d) * np.asarray(b, d) + np.asarray(c, d)).astype(F32)


class Model:
    def __init__(self, model, init, dtype):
        self.model = model
        self.names = list(init)
        self.p = {n: torch.tensor(init[n].astype(np.float64), dtype=dtype).requires_grad_()
                  for n in self.names}

    def params(self):
        return [self.p[n] for n in self.names]

    def logits(self, batch):
        p = self.p
        if self.model == "seed":
            h = torch.relu(batch["x"] @ p["dense/kernel"] + p["dense/bias"])
        else:
            e = F.embedding_bag(batch["keys"], p["dense/kernel"], batch["offsets"], mode="sum",
                                sparse=True, per_sample_weights=batch["vals"])
            h = torch.relu(e + p["dense/bias"])
        return (h @ p["dense_1/kernel"] + p["dense_1/bias"]).reshape(-1)


def batches(model, data, bs, dtype):
    n = N_ROWS
    for lo in range(0, n, bs):
        hi = min(lo + bs, n)
        if model == "seed":
            x, y = data
            yield {"x": torch.tensor(x[lo:hi].astype(np.float64), dtype=dtype),
                   "y": torch.tensor(y[lo:hi].astype(np.float64), dtype=dtype)}
        else:
            rows, y = data
            keys = np.concatenate([r[0] for r in rows[lo:hi]])
            vals = np.concatenate([r[1] for r in rows[lo:hi]]).astype(np.float64)
            offs = np.cumsum([0] + [len(r[0]) for r in rows[lo:hi]])[:-1]
            yield {"keys": torch.tensor(keys), "offsets": torch.tensor(offs),
                   "vals": torch.tensor(vals, dtype=dtype),
                   "y": torch.tensor(y[lo:hi].astype(np.float64), dtype=dtype)}


def grad_of(p):
    """(rows or None, values) of p.grad as numpy; sparse grads coalesced (rows ascending)."""
    g = p.grad
    if g.is_sparse:
        g = g.coalesce()
        return g._indices()[0].numpy().copy(), g._values().detach().numpy().copy()
    return None, g.detach().numpy().copy()


class Stats:
    def __init__(self):
        self.steps = 0
        self.sparse_values = 0
        self.sparse_fused_diff = 0     # sparse values where the server's fused formula differs
        self.keras_max_f64_diff = 0.0
        self.zero_grad_rows = 0        # present sparse rows whose gradient is all zero


def train(model, form, bs, data, init, dtype, stats=None):
    """Runs EPOCHS epochs; returns (epoch_loss, epoch_acc, weights, accumulators, min |z| of
    every sample scored)."""
    torch.manual_seed(0)
    m = Model(model, init, dtype)
    npdt = F32 if dtype == torch.float32 else np.float64
    eps, g0 = FORMS[form]
    if form == "pytorch":
        opt = torch.optim.Adagrad(m.params(), lr=LR, eps=eps, initial_accumulator_value=g0)
    else:
        acc = {n: np.full(init[n].shape, g0, npdt) for n in m.names}
        lr_t, eps_t = npdt(LR), npdt(eps)
    losses, accs, margin = [], [], math.inf
    for _ in range(EPOCHS):
        loss_sum, correct, seen = 0.0, 0, 0
        for b in batches(model, data, bs, dtype):
            for p in m.params():
                p.grad = None
            z = m.logits(b)
            y = b["y"]
            with torch.no_grad():   # the C formula, per sample, summed in double
                per = torch.clamp(z, min=0) - z * y + torch.log1p(torch.exp(-z.abs()))
                loss_sum += float(per.double().sum())
                correct += int(((torch.sigmoid(z) > 0.5).to(dtype) == y).sum())
                seen += len(y)
                margin = min(margin, float(z.abs().min()))
            loss = torch.nn.BCEWithLogitsLoss()(z, y)
            if dtype == torch.float32:
                assert abs(float(loss) - float(per.double().mean())) < 1e-6
            loss.backward()
            with torch.no_grad():
                if form == "pytorch":
                    step_pytorch(m, opt, eps, dtype, stats)
                else:
                    step_keras(m, acc, lr_t, eps_t, dtype, stats)
        losses.append(loss_sum / seen)
        accs.append(correct / seen)
    w = {n: m.p[n].detach().numpy().copy() for n in m.names}
    if form == "pytorch":
        a = {n: opt.state[m.p[n]]["sum"].numpy().copy() for n in m.names}
    else:
        a = acc
    return losses, accs, w, a, margin


def evaluate(model, data, w, dtype):
    """Loss and accuracy of weights w over every row (forward only, as `ps-launch --evaluate`):
    the same per-sample formula as the epoch figures."""
    m = Model(model, w, dtype)
    loss_sum, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for b in batches(model, data, 32, dtype):
            z, y = m.logits(b), b["y"]
            per = torch.clamp(z, min=0) - z * y + torch.log1p(torch.exp(-z.abs()))
            loss_sum += float(per.double().sum())
            correct += int(((torch.sigmoid(z) > 0.5).to(dtype) == y).sum())
            seen += len(y)
    return loss_sum / seen, correct / seen


def step_pytorch(m, opt, eps, dtype, stats):
    check = dtype == torch.float32 and stats is not None
    if check:
        before = {n: (m.p[n].detach().numpy().copy(),
                      opt.state[m.p[n]]["sum"].numpy().copy() if m.p[n] in opt.state
                      else np.zeros(m.p[n].shape, F32), grad_of(m.p[n])) for n in m.names}
    opt.step()
    if not check:
        return
    stats.steps += 1
    neg_clr, e = F32(-LR), F32(eps)
    for n in m.names:
        w, G, (rows, g) = before[n]
        got_w = m.p[n].detach().numpy()
        got_G = opt.state[m.p[n]]["sum"].numpy()
        if rows is None:     # dense path: addcmul (FMA) and addcdiv, as server/adagrad.c
            G = fma32(g, g, G)
            w = w + (neg_clr * g) / (np.sqrt(G) + e)
        else:                # sparse path: coalesce, G += g^2, w = fmaf(-lr, g / std, w)
            Gr = G[rows] + g * g
            std = np.sqrt(Gr) + e
            wr = fma32(neg_clr, g / std, w[rows])   # add_(sparse, alpha): one fmaf
            Gf = fma32(g, g, G[rows])
            wf = w[rows] + (neg_clr * g) / (np.sqrt(Gf) + e)
            stats.sparse_values += Gr.size + wr.size
            stats.sparse_fused_diff += int(np.sum(Gf != Gr) + np.sum(wf != wr))
            stats.zero_grad_rows += int(np.sum(np.all(g == 0, axis=1)))
            G, w = G.copy(), w.copy()
            G[rows], w[rows] = Gr, wr
        if not (np.array_equal(got_w, w) and np.array_equal(got_G, G)):
            raise SystemExit(f"{n}: torch.optim.Adagrad step differs from its emulation")


def step_keras(m, acc, lr, eps, dtype, stats):
    check = dtype == torch.float32 and stats is not None
    for n in m.names:
        rows, g = grad_of(m.p[n])
        w = m.p[n].detach().numpy()        # shares memory with the parameter
        if rows is None:
            rows = slice(None)
        elif check:
            stats.zero_grad_rows += int(np.sum(np.all(g == 0, axis=1)))
        G0, w0 = acc[n][rows], w[rows]
        G1 = G0 + g * g
        w1 = w0 - (lr * g) / np.sqrt(G1 + eps)
        if check:
            g64 = g.astype(np.float64)
            G64 = G0.astype(np.float64) + g64 * g64
            w64 = w0.astype(np.float64) - (LR * g64) / np.sqrt(G64 + float(eps))
            d = max(float(np.max(np.abs(G64 - G1))), float(np.max(np.abs(w64 - w1))))
            if d > 1e-6:
                raise SystemExit(f"{n}: keras float32 step is {d} away from float64")
            stats.keras_max_f64_diff = max(stats.keras_max_f64_diff, d)
        acc[n][rows] = G1
        w[rows] = w1
    if check:
        stats.steps += 1


# ---------------------------------------------------------------- cases

def optimizer_block(form):
    eps, g0 = FORMS[form]
    return {"form": form, "rowwise": False, "learning_rate": LR, "epsilon": eps,
            "initial_accumulator_value": g0, "lr_decay": 0, "weight_decay": 0}


def job_of(model, form, bs, data_file):
    eps, g0 = FORMS[form]
    j = {"job_id": "golden", "seed": 0, "cluster": {"workers": 1},
         "optimizer": {"name": "adagrad", "form": form, "learning_rate": LR, "epsilon": eps,
                       "initial_accumulator_value": g0},
         "fit": {"epochs": EPOCHS, "batch_size": bs, "shuffle": False, "overlap": False}}
    if model == "seed":
        j["model"] = {"input_dim": SEED_IN,
                      "layers": [{"units": SEED_HIDDEN, "activation": "relu"},
                                 {"units": 1, "activation": "sigmoid"}],
                      "loss": "binary_crossentropy"}
        j["data"] = {"train": {"format": "csv", "path": data_file, "label_name": "label"}}
    else:
        j["model"] = {"input": {"type": "sparse", "num_ids": SPARSE_IDS},
                      "layers": [{"units": SPARSE_HIDDEN, "activation": "relu"},
                                 {"units": 1, "activation": "sigmoid"}],
                      "loss": "binary_crossentropy"}
        j["data"] = {"train": {"format": "libsvm", "path": data_file, "one_based": True}}
    return j


def max_abs(a, b):
    return max(float(np.max(np.abs(a[n].astype(np.float64) - b[n]))) for n in a)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default=os.path.join(os.path.dirname(__file__) or ".", "train"))
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)

    rng = np.random.default_rng(DATA_SEED)
    seed_data = make_seed_data(rng)
    sparse_data = make_sparse_data(rng)
    write_seed_csv(os.path.join(out, "seed.csv"), *seed_data)
    write_svm(os.path.join(out, "sparse.svm"), *sparse_data)
    present = np.unique(np.concatenate([r[0] for r in sparse_data[0]]))

    irng = np.random.default_rng(INIT_SEED)
    inits = {"seed": make_init(irng, "seed"), "sparse": make_init(irng, "sparse", present)}
    write_weights(os.path.join(out, "seed_init"), "seed", inits["seed"], None)
    write_weights(os.path.join(out, "sparse_init"), "sparse", inits["sparse"], present)
    datas = {"seed": (seed_data, "seed.csv"), "sparse": (sparse_data, "sparse.svm")}
    print(f"seed.csv: {int(seed_data[1].sum())}/{N_ROWS} positive; sparse.svm: "
          f"{int(sparse_data[1].sum())}/{N_ROWS} positive, {len(present)} distinct keys, "
          f"{sum(len(r[0]) for r in sparse_data[0])} entries")

    plan = [("seed", f, b) for f in ("keras", "pytorch") for b in (32, 64, 128)] + \
           [("sparse", f, b) for f in ("keras", "pytorch") for b in (32, 64)]
    cases = []
    for model, form, bs in plan:
        name = f"{model}_{form}_b{bs}"
        data, data_file = datas[model]
        init = inits[model]
        stats = Stats()
        losses, accs, w, a, margin = train(model, form, bs, data, init, torch.float32, stats)
        l64, accs64, w64, acc64, _ = train(model, form, bs, data, init, torch.float64)
        if accs64 != accs:
            raise SystemExit(f"{name}: a prediction flips between float32 and float64")
        if model == "sparse":   # keys never present keep their initial value and G0
            absent = np.setdiff1d(np.arange(SPARSE_IDS), present)
            assert np.array_equal(w["dense/kernel"][absent], init["dense/kernel"][absent])
        write_weights(os.path.join(out, name), model, w, present, a, optimizer_block(form))
        eps, g0 = FORMS[form]
        sync = [{"workers": bs // 32 // k, "batch_size": 32 * k}
                for k in (1, 2) if bs // 32 // k >= 2]
        note = ("torch float32 through its own matmul/sum order; a C run agrees to float32 "
                "rounding accumulated over the run, not bit for bit.")
        if form == "pytorch" and model == "sparse":
            note += (" The sparse kernel used torch's sparse Adagrad path: G + round(g*g) and "
                     "w = fmaf(-lr, g/std, w); server/adagrad.c uses the dense path's "
                     "fmaf(g, g, G) and w + (-lr*g)/std, so ~5% of its values round "
                     "differently per step.")
        cases.append({
            "name": name, "model": model, "form": form, "batch_size": bs, "epochs": EPOCHS,
            "lr": LR, "epsilon": eps, "initial_accumulator_value": g0,
            "data": data_file, "init": f"{model}_init",
            "samples_per_epoch": N_ROWS, "steps_per_epoch": -(-N_ROWS // bs),
            "epoch_loss": losses, "epoch_accuracy": accs, "weights": name,
            "min_abs_logit": margin, "sync_equivalent": sync,
            "evaluate": dict(zip(("loss", "accuracy"),
                                 evaluate(model, data, w, torch.float32))),
            "job": job_of(model, form, bs, data_file),
            "bit_exact_note": note})
        print(f"{name:22s} loss {' '.join(f'{x:.6f}' for x in losses)}  acc "
              f"{' '.join(f'{x:.3f}' for x in accs)}")
        msg = f"{'':22s} {stats.steps} steps checked"
        if form == "keras":
            msg += f"; f32 step vs f64 step max |diff| {stats.keras_max_f64_diff:.2e}"
        else:
            msg += "; torch.optim.Adagrad == emulation bit for bit"
            if stats.sparse_values:
                msg += (f"; sparse path vs fused server formula: {stats.sparse_fused_diff}/"
                        f"{stats.sparse_values} values differ")
        if model == "sparse":
            msg += f"; {stats.zero_grad_rows} present rows with all-zero gradient"
        print(msg + f"; min |z| {margin:.2e}")
        print(f"{'':22s} whole run f32 vs f64: loss max |diff| "
              f"{max(abs(p - q) for p, q in zip(losses, l64)):.2e}, weights "
              f"{max_abs(w, w64):.2e}, accumulators {max_abs(a, acc64):.2e}")

    doc = {"generator": "tests/ref/make_train_golden.py", "torch": torch.__version__,
           "numpy": np.__version__, "cases": cases}
    path = os.path.join(out, "golden.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    verify(out, doc)
    total = sum(os.path.getsize(os.path.join(r, fn)) for r, _, fs in os.walk(out) for fn in fs)
    print(f"wrote {out}: {len(cases)} cases, {total} bytes")


def verify(out, doc):
    """Reads back every manifest and .npy the way a test would."""
    dirs = ["seed_init", "sparse_init"] + [c["weights"] for c in doc["cases"]]
    for d in dirs:
        with open(os.path.join(out, d, "manifest.json")) as f:
            man = json.load(f)
        for t in man["tables"]:
            v = np.load(os.path.join(out, d, t["values"]))
            assert v.dtype == np.dtype("<f4"), (d, t["name"])
            if t["layout"] == "sparse":
                k = np.load(os.path.join(out, d, t["keys"]))
                assert k.dtype == np.dtype("<u8") and k.shape == (t["rows"],)
                assert np.all(np.diff(k.astype(np.int64)) > 0)
                assert v.shape == (t["rows"], t["dim"])
            else:
                assert list(v.shape) == t["shape"] and v.shape[-1] == t["dim"]
            if "accumulators" in t:
                acc = np.load(os.path.join(out, d, t["accumulators"]))
                assert acc.dtype == np.dtype("<f4") and acc.shape == v.shape
            assert np.all(np.isfinite(v))


if __name__ == "__main__":
    main()
