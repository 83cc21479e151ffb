#!/usr/bin/env python3
"""`lstm-wgpu train --dataset NAME` against PyTorch, on every built-in dataset.

For each dataset (text, copy, sine, mackey-glass, adding) with the main job's
defaults (hidden 64, 2 layers, embedding 32, batch 16, seq 32 for text/copy
and 24 for series, Adam lr 3e-3, no clipping, 200 steps, validation every 50
steps and at the end, 10 % validation, data seed 0):

1. `lstm-wgpu train --dataset NAME --dump-data FILE` writes the data the run
   trains and validates on: the generated text (UTF-8), the series (CSV) or
   every training step's batch and the validation batches (safetensors, copy
   and adding).
2. The same model is built in PyTorch (`torch.manual_seed(seed)`):
   text/copy `nn.Embedding(V, E) -> nn.LSTM(E, H, L) -> nn.Linear(H, V)` on
   every step with cross-entropy over all positions; series/adding
   `nn.LSTM(F, H, L) -> nn.Linear(H, k)` on the last (valid) step with MSE.
   Its initial weights are saved as safetensors with lstm-wgpu's names.
3. `lstm-wgpu train --dataset NAME --init INIT --metrics M --checkpoint C
   --no-progress` (plus `--deterministic-order` with `--order
   deterministic`) trains from them.
4. PyTorch (float32, CPU, `--threads` threads) trains the same model from
   the same weights over the same batches in the same order, with the same
   state handling and validation as `src/run/` (data.rs, validation.rs):
   - text: PyTorch's word_language_model batchify/get_batch over the dumped
     text (the code of train_torch.py), state carried (detached) between
     windows and reset at each epoch start; validation over the whole
     validation split with a carried state, averaged per position;
   - copy/adding: batch k of the dump at step k + 1, zero initial state;
     validation = the mean of the 4 dumped validation batches' losses;
   - sine/mackey-glass: the dumped CSV, z-scored with the mean and
     population std of the training rows (f64, summed in row order as Rust
     does, then cast to f32), sliding windows of T rows predicting the next
     value; training windows in the epoch's order (`--order shuffled`, the
     default and the main job's: the seeded permutation of src/data/
     re-implemented below, SplitMix64 + Fisher-Yates; `--order
     deterministic`: 0, 1, 2, ...), batches of B, the last partial batch
     dropped; validation = the mean over all full validation batches in
     order.
5. Prints, per dataset and then as a table: final train loss, final
   validation loss, best validation loss, wall time (the training loop with
   its validations) and tokens/s of both, the largest |dloss| over all
   steps, the largest |d val loss| and the largest |dw| of the final
   weights.

Needs torch, numpy and safetensors (see README.md next to this file).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.numpy import load_file as load_np
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_torch import (  # noqa: E402  (shared with the text replay)
    REPO,
    CharLSTM,
    batchify,
    default_bin,
    evaluate,
    get_batch,
    num_windows,
    read_text,
    val_count,
    zero_state,
)

DATASETS = ["text", "copy", "sine", "mackey-glass", "adding"]
SERIES = {"sine", "mackey-glass", "adding"}


# ---------------------------------------------------------------------------
# src/data/: SplitMix64 (rng::Rng), derive_seed and WindowSet::order
# ---------------------------------------------------------------------------

M64 = (1 << 64) - 1


class DataRng:
    def __init__(self, seed: int):
        self.state = seed & M64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return (self.next_u64() * n) >> 64

    def shuffle(self, v: list) -> None:
        for i in range(len(v) - 1, 0, -1):
            j = self.below(i + 1)
            v[i], v[j] = v[j], v[i]


def derive_seed(seed: int, stream: int) -> int:
    r = DataRng(seed ^ ((stream * 0xD1B54A32D192ED03) & M64))
    return r.next_u64() ^ stream


def window_order(n: int, shuffle_seed: int | None, epoch: int) -> list[int]:
    v = list(range(n))
    if shuffle_seed is not None:
        DataRng(derive_seed(shuffle_seed, epoch)).shuffle(v)
    return v


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


class SeriesLSTM(nn.Module):
    """nn.LSTM(F, H, L) -> nn.Linear(H, k) on the last (valid) step."""

    def __init__(self, features: int, hidden: int, layers: int, outputs: int):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, layers)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x, lengths=None):
        out, _ = self.lstm(x)  # zero initial state
        if lengths is None:
            last = out[-1]
        else:
            # The LSTM is causal: the outputs at valid steps do not depend on
            # the padding after them, so this equals pack_padded_sequence.
            last = out[lengths - 1, torch.arange(out.size(1))]
        return self.head(last)


# ---------------------------------------------------------------------------
# Data sources: (batch of step k, validation batches), from the dump
# ---------------------------------------------------------------------------


class TextSource:
    kind = "lm"

    def __init__(self, path: Path, a):
        text = read_text(path)
        self.chars = sorted(set(text))
        idx = {c: i for i, c in enumerate(self.chars)}
        ids = torch.tensor([idx[c] for c in text], dtype=torch.long)
        n_val = val_count(len(ids), a.val_fraction)
        self.train = batchify(ids[: len(ids) - n_val], a.batch)
        self.val = batchify(ids[len(ids) - n_val :], a.batch) if n_val else None
        self.nw = num_windows(self.train, a.seq_len)
        self.vocab = len(self.chars)
        self.a = a
        self.desc = (f"{len(text)} chars, vocab {self.vocab}, train [{self.train.size(0)} x {a.batch}] "
                     f"= {self.nw} windows/epoch, val {n_val} tokens")

    def step(self, k: int):
        w = k % self.nw
        x, y = get_batch(self.train, w * self.a.seq_len, self.a.seq_len)
        return x, y, None, w == 0  # reset the carried state at epoch starts

    def validate(self, model) -> float | None:
        return None if self.val is None else evaluate(model, self.val, self.a)


class CopySource:
    kind = "lm"

    def __init__(self, path: Path, a):
        d = load_np(str(path))
        self.x, self.y = torch.from_numpy(d["train.inputs"]), torch.from_numpy(d["train.targets"])
        self.vx, self.vy = torch.from_numpy(d["val.inputs"]), torch.from_numpy(d["val.targets"])
        self.vocab = int(max(self.x.max(), self.y.max(), self.vx.max(), self.vy.max())) + 1
        # src/data/ CopyTask: blank, 8 symbols, delimiter = 10 ids; the
        # dump holds the delimiter, so the max id + 1 is the vocabulary.
        self.desc = (f"{self.x.size(0)} training batches [T={self.x.size(1)}, B={self.x.size(2)}], "
                     f"{self.vx.size(0)} validation batches, vocab {self.vocab}")

    def step(self, k: int):
        return self.x[k], self.y[k], None, True

    def validate(self, model) -> float:
        model.eval()
        with torch.no_grad():
            ls = []
            for i in range(self.vx.size(0)):
                logits, _ = model(self.vx[i], None)
                ls.append(float(nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), self.vy[i].reshape(-1))))
        model.train()
        return sum(ls) / len(ls)


class AddingSource:
    kind = "reg"

    def __init__(self, path: Path, a):
        d = load_np(str(path))
        self.x, self.y = torch.from_numpy(d["train.inputs"]), torch.from_numpy(d["train.targets"])
        self.vx, self.vy = torch.from_numpy(d["val.inputs"]), torch.from_numpy(d["val.targets"])
        self.lens = torch.from_numpy(d["train.lengths"]) if "train.lengths" in d else None
        self.vlens = torch.from_numpy(d["val.lengths"]) if "val.lengths" in d else None
        self.features, self.outputs = self.x.size(3), self.y.size(2)
        self.desc = (f"{self.x.size(0)} training batches [T={self.x.size(1)}, B={self.x.size(2)}, F=2], "
                     f"{self.vx.size(0)} validation batches" + (", variable lengths" if self.lens is not None else ""))

    def step(self, k: int):
        return self.x[k], self.y[k], None if self.lens is None else self.lens[k], True

    def validate(self, model) -> float:
        model.eval()
        with torch.no_grad():
            ls = []
            for i in range(self.vx.size(0)):
                p = model(self.vx[i], None if self.vlens is None else self.vlens[i])
                ls.append(float(nn.functional.mse_loss(p, self.vy[i])))
        model.train()
        return sum(ls) / len(ls)


class SeriesSource:
    """src/data/ SeriesDataset over the dumped CSV (univariate or not)."""

    kind = "reg"

    def __init__(self, path: Path, a, shuffle_seed: int | None):
        lines = [l for l in path.read_text().splitlines() if l.strip()]
        names = lines[0].split(",")
        cols = np.array([[float(v) for v in l.split(",")] for l in lines[1:]], dtype=np.float64)  # [N, C]
        # The dump holds the features and then the target unless it is a
        # feature; the built-in series are univariate (feature = target).
        feats, target = cols, cols[:, -1]
        n = cols.shape[0]
        n_train = n - val_count(n, a.val_fraction)

        def stats(col):
            # ColumnStats::fit: sequential f64 sums, population std.
            m = 0.0
            for v in col[:n_train]:
                m += float(v)
            m /= n_train
            var = 0.0
            for v in col[:n_train]:
                var += (float(v) - m) * (float(v) - m)
            s = math.sqrt(var / n_train)
            if math.isnan(s) or s <= 1e-12 * max(abs(m), 1.0):
                s = 1.0
            return m, s

        xs = []
        for j in range(feats.shape[1]):
            m, s = stats(feats[:, j])
            xs.append(((feats[:, j] - m) / s).astype(np.float32))
        tm, ts = stats(target)
        self.xz = torch.from_numpy(np.stack(xs, axis=1))  # [N, F]
        self.yz = torch.from_numpy(((target - tm) / ts).astype(np.float32))  # [N]
        t, k, b = a.seq_len, a.horizon, a.batch
        self.t, self.k, self.b = t, k, b
        self.n_train_windows = n_train + 1 - t - k
        self.val_starts = range(n_train - t, n + 1 - t - k) if n_train < n else range(0)
        self.nb = self.n_train_windows // b
        self.shuffle_seed = shuffle_seed
        self._orders: dict[int, list[int]] = {}
        self.features, self.outputs = feats.shape[1], k
        self.desc = (f"{n} rows ({', '.join(names)}), train {n_train} rows = {self.n_train_windows} windows = "
                     f"{self.nb} batches/epoch, val {n - n_train} rows = {len(self.val_starts)} windows; "
                     f"order {'shuffled (seed %d)' % shuffle_seed if shuffle_seed is not None else 'deterministic'}")

    def build(self, starts):
        idx = torch.tensor(list(starts))
        tt = torch.arange(self.t)
        x = self.xz[idx[None, :] + tt[:, None]]  # [T, B, F]
        y = self.yz[idx[:, None] + self.t + torch.arange(self.k)[None, :]]  # [B, k]
        return x, y

    def step(self, k: int):
        epoch, i = divmod(k, self.nb)
        if epoch not in self._orders:
            self._orders = {epoch: window_order(self.n_train_windows, self.shuffle_seed, epoch)}
        w = self._orders[epoch][i * self.b : (i + 1) * self.b]
        x, y = self.build(w)  # training windows start at row 0
        return x, y, None, True

    def validate(self, model) -> float | None:
        nvb = len(self.val_starts) // self.b
        if nvb == 0:
            return None
        model.eval()
        ls = []
        with torch.no_grad():
            for i in range(nvb):
                x, y = self.build(self.val_starts[i * self.b : (i + 1) * self.b])
                ls.append(float(nn.functional.mse_loss(model(x), y)))
        model.train()
        return sum(ls) / len(ls)


# ---------------------------------------------------------------------------


def common_flags(a, name: str) -> list[str]:
    f = ["--dataset", name, "--hidden", str(a.hidden), "--layers", str(a.layers), "--batch", str(a.batch),
         "--seq-len", str(a.seq_len), "--steps", str(a.steps), "--seed", str(a.data_seed),
         "--val-every", str(a.val_every), "--val-fraction", repr(a.val_fraction), "--lr", repr(a.lr)]
    if name in ("text", "copy"):
        f += ["--embed", str(a.embed)]
    if a.order == "deterministic":
        f += ["--deterministic-order"]
    return f


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"lstm-wgpu exited with {p.returncode}")
    return p


def run_rust(a, name: str, init: Path, work: Path):
    metrics, ckpt = work / f"{name}.metrics.jsonl", work / f"{name}.ckpt.safetensors"
    metrics.unlink(missing_ok=True)
    cmd = [str(a.bin), "train", *common_flags(a, name), "--init", str(init),
           "--metrics", str(metrics), "--checkpoint", str(ckpt), "--no-progress"]
    t0 = time.perf_counter()
    p = run(cmd)
    wall = time.perf_counter() - t0
    rows, vals = [], []
    for line in metrics.read_text().splitlines():
        r = json.loads(line)
        (vals.append((r["step"], r["val_loss"])) if "val_loss" in r else rows.append(r))
    final = next((l for l in p.stdout.splitlines() if l.startswith("final:")), "")
    toks = final.split()
    get = lambda key: float(toks[toks.index(key) + 1].rstrip("s")) if key in toks else float("nan")
    return {"losses": [r["loss"] for r in rows], "grad_norms": [r["grad_norm"] for r in rows], "vals": vals,
            "secs": get("time"), "tokens_per_s": get("tokens/s"), "process_secs": wall, "final_line": final,
            "ckpt": ckpt}


def train_torch(a, src, model):
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=a.lr)  # the main job: Adam, constant lr, no clipping
    losses, gns, vals = [], [], []
    tokens, state = 0, None
    t0 = time.perf_counter()
    for k in range(a.steps):
        x, y, lens, reset = src.step(k)
        opt.zero_grad(set_to_none=True)
        if src.kind == "lm":
            state = zero_state(a.layers, a.batch, a.hidden) if reset or state is None else tuple(s.detach() for s in state)
            logits, state = model(x, state)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        else:
            loss = nn.functional.mse_loss(model(x, lens), y)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, float("inf"))  # the norm only (lstm-wgpu logs it)
        opt.step()
        tokens += x.size(0) * x.size(1)
        losses.append(loss.item())
        gns.append(gn.item())
        step = k + 1
        if step % a.val_every == 0 or step == a.steps:
            v = src.validate(model)
            if v is not None:
                vals.append((step, v))
    secs = time.perf_counter() - t0
    return {"losses": losses, "grad_norms": gns, "vals": vals, "secs": secs, "tokens_per_s": tokens / secs}


def one(a, name: str, work: Path) -> dict:
    print(f"\n=== {name} ===", flush=True)
    ext = {"text": "txt", "sine": "csv", "mackey-glass": "csv"}.get(name, "safetensors")
    dump = work / f"{name}.data.{ext}"
    run([str(a.bin), "train", *common_flags(a, name), "--dump-data", str(dump)])
    if name == "text":
        src = TextSource(dump, a)
    elif name == "copy":
        src = CopySource(dump, a)
    elif name == "adding":
        src = AddingSource(dump, a)
    else:
        src = SeriesSource(dump, a, None if a.order == "deterministic" else a.data_seed)
    print(f"data: {src.desc}")

    torch.manual_seed(a.seed)
    if src.kind == "lm":
        model = CharLSTM(src.vocab, a.embed, a.hidden, a.layers)
    else:
        model = SeriesLSTM(src.features, a.hidden, a.layers, src.outputs)
    init = work / f"{name}.init.safetensors"
    save_file({k: t.detach().to(torch.float32).contiguous() for k, t in model.state_dict().items()}, str(init))
    print(f"model: {sum(p.numel() for p in model.parameters())} params; init {', '.join(model.state_dict())}")

    r = run_rust(a, name, init, work)
    t = train_torch(a, src, model)

    n = min(len(r["losses"]), len(t["losses"]))
    if len(r["losses"]) != len(t["losses"]):
        print(f"WARNING: lstm-wgpu logged {len(r['losses'])} steps, PyTorch ran {len(t['losses'])}")
    dl = [abs(r["losses"][i] - t["losses"][i]) for i in range(n)]
    worst = max(range(n), key=lambda i: dl[i]) if n else 0
    print(f"{'step':>6} {'lstm-wgpu':>11} {'torch':>11} {'|dloss|':>9}")
    for i in range(n):
        if i == 0 or (i + 1) % a.every == 0 or i == n - 1:
            print(f"{i + 1:>6} {r['losses'][i]:>11.6f} {t['losses'][i]:>11.6f} {dl[i]:>9.2e}")
    tv = dict(t["vals"])
    dv = [abs(v - tv.get(s, float("nan"))) for s, v in r["vals"]]
    for s, v in r["vals"]:
        print(f"  val step {s:>5}: lstm-wgpu {v:.6f}  torch {tv.get(s, float('nan')):.6f}")
    if len(r["vals"]) != len(t["vals"]):
        print(f"WARNING: lstm-wgpu validated {len(r['vals'])} times, PyTorch {len(t['vals'])} times")
    rw = load_np(str(r["ckpt"]))
    dw = max(float(np.max(np.abs(rw[k] - v.detach().numpy()))) for k, v in model.state_dict().items())
    res = {
        "dataset": name,
        "order": a.order if name in ("sine", "mackey-glass") else "-",
        "steps": n,
        "max_dloss": dl[worst] if n else float("nan"),
        "max_dloss_step": worst + 1,
        "max_dval": max(dv) if dv else float("nan"),
        "max_dw": dw,
    }
    for side, d in (("wgpu", r), ("torch", t)):
        res[side] = {
            "final_train": d["losses"][-1],
            "final_val": d["vals"][-1][1] if d["vals"] else float("nan"),
            "best_val": min(v for _, v in d["vals"]) if d["vals"] else float("nan"),
            "secs": d["secs"],
            "tokens_per_s": d["tokens_per_s"],
        }
    res["wgpu"]["final_line"] = r["final_line"]
    print(f"max |dloss| {res['max_dloss']:.2e} (step {res['max_dloss_step']}), max |dval| {res['max_dval']:.2e}, "
          f"max |dw| {dw:.2e}")
    for side in ("wgpu", "torch"):
        s = res[side]
        print(f"  {side:>5}: final train {s['final_train']:.5f}  final val {s['final_val']:.5f}  "
              f"best val {s['best_val']:.5f}  {s['secs']:.1f} s  {s['tokens_per_s']:.0f} tokens/s")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", nargs="+", default=["all"], choices=DATASETS + ["all"])
    ap.add_argument("--bin", type=Path, default=None,
                    help="lstm-wgpu binary (default: target/release/lstm-wgpu, else the debug one)")
    ap.add_argument("--order", choices=["shuffled", "deterministic"], default="shuffled",
                    help="series window order: shuffled per epoch with the data seed (the main job's default, "
                         "replayed here) or --deterministic-order on both sides")
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=None, help="default: 32 for text/copy, 24 for the series (as lstm-wgpu)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--data-seed", type=int, default=0, help="lstm-wgpu --seed: the generated data and the shuffle")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed of the initial weights")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--every", type=int, default=25, help="print every k-th step")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--workdir", type=Path, default=None, help="keep dumps, inits, metrics and checkpoints here")
    a = ap.parse_args()
    a.horizon = 1
    if a.bin is None:
        rel = REPO / "target" / "release" / "lstm-wgpu"
        a.bin = rel if rel.exists() else default_bin()
        if a.bin is None:
            raise SystemExit("no target/{release,debug}/lstm-wgpu: run `cargo build --release` or pass --bin")
    names = DATASETS if "all" in a.dataset else a.dataset
    torch.set_num_threads(a.threads)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="lstm-builtin-"))
    work.mkdir(parents=True, exist_ok=True)
    seq_default = a.seq_len
    print(f"lstm-wgpu: {a.bin}; torch {torch.__version__}, {a.threads} threads")
    results = []
    try:
        for name in names:
            a.seq_len = seq_default if seq_default is not None else (24 if name in SERIES else 32)
            results.append(one(a, name, work))
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n| dataset | final train loss (lstm-wgpu / PyTorch) | final val loss | best val loss | time | tokens/s | max \\|Δ train loss\\| |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        w, t = r["wgpu"], r["torch"]
        print(f"| `{r['dataset']}` | {w['final_train']:.5f} / {t['final_train']:.5f} | {w['final_val']:.5f} / {t['final_val']:.5f} "
              f"| {w['best_val']:.5f} / {t['best_val']:.5f} | {w['secs']:.0f} s / {t['secs']:.1f} s "
              f"| {w['tokens_per_s']:.0f} / {t['tokens_per_s']:.0f} | {r['max_dloss']:.1e} |")
    if a.json is not None:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
