#!/usr/bin/env python3
"""Step-for-step comparison of `lstm-wgpu train --task text` with PyTorch.

1. Builds the character model of `lstm-wgpu train` in PyTorch
   (nn.Embedding(V, E) -> nn.LSTM(E, H, L) -> nn.Linear(H, V) on every step)
   from a seed and saves its initial weights as f32 safetensors with
   lstm-wgpu's names (`embedding.weight`, `lstm.weight_ih_l0`, ...,
   `head.weight`, `head.bias`).
2. Runs `lstm-wgpu train --init INIT --metrics M ...` from those weights.
3. Trains the same model from the same weights in PyTorch (float32, CPU) over
   the same windows: vocabulary = sorted distinct characters of the whole
   file; validation = the last round(n * val_fraction) tokens; both splits
   batchified like PyTorch's word_language_model example (validation with
   the training batch size, as `train` does); windows in stream order,
   wrapping around each epoch; hidden state carried (detached) from window
   to window and reset to zero at the first window of every epoch;
   cross-entropy averaged over all positions; clip_grad_norm_ over all
   parameters; the torch.optim optimizer; validation over the whole
   validation split with its own carried state (zero at its first window),
   averaged per position.
4. Prints the per-step losses (and gradient norms) side by side, the maximum
   |dloss| over all steps, the validation losses, the largest difference of
   the final weights, and wall time and tokens/s of both.

Only the standard library, torch, numpy and safetensors are needed. Run from
anywhere; paths default to the repository this file lives in. See README.md
next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
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

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------
# Data: the semantics of src/data/ (TextData / TextStreams)
# ---------------------------------------------------------------------------


def read_text(path: Path) -> str:
    # Bytes, not open(): no newline translation. A leading BOM is dropped.
    s = path.read_bytes().decode("utf-8")
    return s[1:] if s.startswith("\ufeff") else s


def val_count(n: int, frac: float) -> int:
    # Rust's f64::round rounds half away from zero (Python's round() is
    # banker's rounding).
    return min(n, int(math.floor(n * frac + 0.5)))


def batchify(data: torch.Tensor, bsz: int) -> torch.Tensor:
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    return data.view(bsz, -1).t().contiguous()  # [nbatch, bsz]


def get_batch(source: torch.Tensor, i: int, bptt: int):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len]


def num_windows(source: torch.Tensor, bptt: int) -> int:
    return len(range(0, source.size(0) - 1, bptt))


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


class CharLSTM(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int, layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state):
        out, state = self.lstm(self.embedding(x), state)
        return self.head(out), state


def zero_state(layers: int, batch: int, hidden: int):
    z = torch.zeros(layers, batch, hidden)
    return (z, z.clone())


def lr_at(args, step: int, total: int) -> float:
    """src/train/lr.rs, `step` 1-based."""
    s = max(step, 1)
    base = args.lr
    if args.schedule == "cosine":
        w = args.warmup
        if s <= w:
            return base * s / w
        a = max(w, 1)
        if s >= total or total <= a:
            return base if s == a else 0.0
        return 0.0 + (base - 0.0) * (1.0 + math.cos(math.pi * (s - a) / (total - a))) / 2.0
    if args.schedule == "step":
        return base * args.gamma ** ((s - 1) // max(args.step_size, 1))
    return base


def make_optimizer(args, params):
    kw = {"lr": args.lr}
    if args.weight_decay is not None:
        kw["weight_decay"] = args.weight_decay
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=args.momentum, **kw)
    if args.optimizer == "adam":
        return torch.optim.Adam(params, **kw)
    # adamw / amsgrad: torch.optim defaults (weight decay 1e-2 unless given).
    return torch.optim.AdamW(params, amsgrad=args.optimizer == "amsgrad", **kw)


def evaluate(model, val, args) -> float:
    model.eval()
    total, n = 0.0, 0
    state = zero_state(args.layers, args.batch, args.hidden)
    with torch.no_grad():
        for i in range(0, val.size(0) - 1, args.seq_len):
            x, y = get_batch(val, i, args.seq_len)
            logits, state = model(x, state)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            total += float(loss) * x.size(0)
            n += x.size(0)
    model.train()
    return total / n


def train_torch(model, train, val, args):
    params = list(model.parameters())
    opt = make_optimizer(args, params)
    nw = num_windows(train, args.seq_len)
    max_norm = args.clip_norm if args.clip_norm is not None else float("inf")
    rows, vals = [], []
    tokens = 0
    state = None
    t0 = time.perf_counter()
    for k in range(args.steps):
        w = k % nw
        if w == 0:
            state = zero_state(args.layers, args.batch, args.hidden)
        else:
            state = tuple(s.detach() for s in state)
        x, y = get_batch(train, w * args.seq_len, args.seq_len)
        ts = time.perf_counter()
        lr = lr_at(args, k + 1, args.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        logits, state = model(x, state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()
        dt = time.perf_counter() - ts
        tokens += x.numel()
        step = k + 1
        rows.append({"step": step, "loss": loss.item(), "grad_norm": gn.item(), "window": w, "t": x.size(0), "secs": dt})
        if val is not None and (step % args.val_every == 0 or step == args.steps):
            vals.append((step, evaluate(model, val, args)))
    secs = time.perf_counter() - t0
    return rows, vals, secs, tokens


# ---------------------------------------------------------------------------
# lstm-wgpu
# ---------------------------------------------------------------------------


def default_bin() -> Path | None:
    cands = [REPO / "target" / "release" / "lstm-wgpu", REPO / "target" / "debug" / "lstm-wgpu"]
    cands = [c for c in cands if c.exists()]
    # The newest build: a stale release binary should not win over a fresh dev one.
    return max(cands, key=lambda p: p.stat().st_mtime) if cands else None


def run_rust(args, corpus: Path, init: Path, work: Path):
    metrics = work / "metrics.jsonl"
    ckpt = work / "rust.safetensors"
    cmd = [
        str(args.bin), "train",
        "--data", str(corpus), "--task", "text", "--init", str(init), "--deterministic-order",
        "--embed", str(args.embed), "--hidden", str(args.hidden), "--layers", str(args.layers),
        "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--steps", str(args.steps),
        "--optimizer", args.optimizer, "--lr", repr(args.lr),
        "--val-fraction", repr(args.val_fraction), "--val-every", str(args.val_every),
        "--schedule", args.schedule,
        "--metrics", str(metrics), "--checkpoint", str(ckpt), "--no-progress",
    ]
    if args.clip_norm is not None:
        cmd += ["--clip-norm", repr(args.clip_norm)]
    if args.weight_decay is not None:
        cmd += ["--weight-decay", repr(args.weight_decay)]
    if args.optimizer == "sgd":
        cmd += ["--momentum", repr(args.momentum)]
    if args.schedule == "cosine":
        cmd += ["--warmup", str(args.warmup)]
    if args.schedule == "step":
        cmd += ["--step-size", str(args.step_size), "--gamma", repr(args.gamma)]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"lstm-wgpu exited with {p.returncode}")
    rows, vals = [], []
    for line in metrics.read_text().splitlines():
        r = json.loads(line)
        if "val_loss" in r:
            vals.append((r["step"], r["val_loss"]))
        elif "loss" in r:
            rows.append(r)
    final = {}
    for line in p.stdout.splitlines():
        if line.startswith("final:"):
            toks = line.split()
            for key in ("time", "tokens/s"):
                if key in toks:
                    v = toks[toks.index(key) + 1]
                    final[key] = float(v.rstrip("s"))
    return rows, vals, wall, final, p.stderr, ckpt


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=None, help="lstm-wgpu binary (default: the newer of target/release and target/debug)")
    ap.add_argument("--corpus", type=Path, nargs="+", default=[REPO / "README.md"],
                    help="UTF-8 text file(s); several are concatenated into a temporary corpus (default: the repo's README.md)")
    ap.add_argument("--corpus-rev", default=None, metavar="REV",
                    help="read the --corpus paths (relative to the repo) at this git revision (`git show REV:PATH`), "
                         "so that the corpus does not change while the working tree does")
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--optimizer", choices=["adam", "adamw", "amsgrad", "sgd"], default="adam")
    ap.add_argument("--lr", type=float, default=None, help="default: 0.1 for sgd, 3e-3 otherwise (as lstm-wgpu)")
    ap.add_argument("--weight-decay", type=float, default=None,
                    help="default: not passed to either side (lstm-wgpu's and torch.optim's defaults are compared)")
    ap.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    ap.add_argument("--clip-norm", type=float, default=1.0, help="negative: no clipping")
    ap.add_argument("--schedule", choices=["constant", "cosine", "step"], default="constant")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--step-size", type=int, default=100)
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed of the initial weights")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--every", type=int, default=10, help="print every k-th step (and epoch starts)")
    ap.add_argument("--tol", type=float, default=None,
                    help="exit 1 when max |dloss| exceeds this (default: report only)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep init, metrics and checkpoint here (default: a temp dir, removed)")
    args = ap.parse_args()
    if args.lr is None:
        args.lr = 0.1 if args.optimizer == "sgd" else 3e-3
    if args.clip_norm is not None and args.clip_norm < 0:
        args.clip_norm = None
    if args.bin is None:
        args.bin = default_bin()
        if args.bin is None:
            raise SystemExit("no target/{release,debug}/lstm-wgpu: run `cargo build` or pass --bin")

    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lstm-peer-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.corpus_rev is not None:
            corpus = work / "corpus.txt"
            parts = []
            for p in args.corpus:
                rel = p.resolve().relative_to(REPO) if p.is_absolute() else p
                parts.append(subprocess.run(["git", "-C", str(REPO), "show", f"{args.corpus_rev}:{rel.as_posix()}"],
                                            check=True, capture_output=True).stdout)
            corpus.write_bytes(b"".join(parts))
        elif len(args.corpus) == 1:
            corpus = args.corpus[0].resolve()
        else:
            corpus = work / "corpus.txt"
            corpus.write_text("".join(read_text(p) for p in args.corpus), encoding="utf-8", newline="")

        # Data.
        text = read_text(corpus)
        chars = sorted(set(text))
        idx = {c: i for i, c in enumerate(chars)}
        ids = torch.tensor([idx[c] for c in text], dtype=torch.long)
        n_val = val_count(len(ids), args.val_fraction)
        train = batchify(ids[: len(ids) - n_val], args.batch)
        val = batchify(ids[len(ids) - n_val :], args.batch) if n_val > 0 else None
        nw = num_windows(train, args.seq_len)
        v = len(chars)

        # Model and its initial weights.
        torch.manual_seed(args.seed)
        model = CharLSTM(v, args.embed, args.hidden, args.layers)
        init = work / "init.safetensors"
        save_file({k: t.detach().to(torch.float32).contiguous() for k, t in model.state_dict().items()}, str(init))
        n_params = sum(p.numel() for p in model.parameters())
        sha = hashlib.sha256(corpus.read_bytes()).hexdigest()[:16]
        src = " + ".join(str(p) for p in args.corpus) + (f" @ {args.corpus_rev}" if args.corpus_rev else "")
        print(f"corpus {src} (sha256 {sha}..., {len(text)} chars, vocab {v}): train {len(ids) - n_val} tokens -> "
              f"[{train.size(0)} x {args.batch}], {nw} windows/epoch "
              f"(last {train.size(0) - 1 - (nw - 1) * args.seq_len} steps); val {n_val} tokens"
              + (f" -> [{val.size(0)} x {args.batch}]" if val is not None else ""))
        print(f"model: E={args.embed} H={args.hidden} L={args.layers}, {n_params} params; B={args.batch} T={args.seq_len} "
              f"steps={args.steps} optimizer={args.optimizer} lr={args.lr} wd={args.weight_decay or 'default'} "
              f"clip={args.clip_norm} schedule={args.schedule} seed={args.seed}")

        # lstm-wgpu.
        r_rows, r_vals, r_wall, r_final, r_err, ckpt = run_rust(args, corpus, init, work)
        # PyTorch.
        t_rows, t_vals, t_secs, t_tokens = train_torch(model, train, val, args)

        if len(r_rows) != len(t_rows):
            print(f"WARNING: lstm-wgpu logged {len(r_rows)} steps, PyTorch ran {len(t_rows)}")
        n = min(len(r_rows), len(t_rows))
        dl = [abs(r_rows[i]["loss"] - t_rows[i]["loss"]) for i in range(n)]
        dg = [abs(r_rows[i]["grad_norm"] - t_rows[i]["grad_norm"]) / max(t_rows[i]["grad_norm"], 1e-12) for i in range(n)]
        print()
        print(f"{'step':>6} {'win':>4} {'T':>3}  {'lstm-wgpu':>10} {'torch':>10} {'|dloss|':>9}   {'gnorm wgpu':>10} {'gnorm torch':>11}")
        for i in range(n):
            t = t_rows[i]
            short = t["t"] != args.seq_len
            if t["step"] % args.every == 0 or t["window"] == 0 or short or i == n - 1:
                mark = "  <- epoch start (state reset)" if t["window"] == 0 and i > 0 else ""
                mark = "  <- last, short window of the epoch" if short else mark
                print(f"{t['step']:>6} {t['window']:>4} {t['t']:>3}  {r_rows[i]['loss']:>10.6f} {t['loss']:>10.6f} {dl[i]:>9.2e}   "
                      f"{r_rows[i]['grad_norm']:>10.5f} {t['grad_norm']:>11.5f}{mark}")
        worst = max(range(n), key=lambda i: dl[i]) if n else 0
        first_bad = next((i + 1 for i in range(n) if dl[i] > 1e-3), None)
        print()
        print(f"max |dloss| over {n} steps: {dl[worst]:.3e} (step {worst + 1}); mean {sum(dl) / max(n, 1):.3e}; "
              f"first step with |dloss| > 1e-3: {first_bad or 'none'}")
        print(f"max relative |d grad_norm|: {max(dg) if dg else float('nan'):.3e}")
        print("validation loss:")
        tv = dict(t_vals)
        for s, rv in r_vals:
            tvs = tv.get(s, float("nan"))
            print(f"  step {s:>6}: lstm-wgpu {rv:.6f}  torch {tvs:.6f}  |d| {abs(rv - tvs):.2e}")
        if len(r_vals) != len(t_vals):
            print(f"WARNING: lstm-wgpu validated {len(r_vals)} times, PyTorch {len(t_vals)} times")

        # Final weights (the checkpoint written at the end).
        rw = load_np(str(ckpt))
        worst_w = (0.0, "")
        for name, t in model.state_dict().items():
            d = float(np.max(np.abs(rw[name] - t.detach().numpy())))
            if d > worst_w[0]:
                worst_w = (d, name)
        print(f"final weights: max |dw| {worst_w[0]:.3e} ({worst_w[1]})")

        r_secs = r_final.get("time", float("nan"))
        # Per-step times: torch's measured around each step; lstm-wgpu's from
        # its cumulative tokens_per_s (elapsed = tokens so far / rate; a
        # step that validated includes the validation). The median is robust
        # to other load on the machine.
        r_step, cum, prev = [], 0, 0.0
        for i, r in enumerate(r_rows):
            cum += t_rows[i]["t"] * args.batch if i < len(t_rows) else 0
            el = cum / r["tokens_per_s"] if r.get("tokens_per_s") else float("nan")
            r_step.append(el - prev)
            prev = el
        med = lambda v: sorted(v)[len(v) // 2] if v else float("nan")
        r_med, t_med = med(r_step), med([t["secs"] for t in t_rows])
        tok = args.batch * args.seq_len
        print()
        print("time (lavapipe is a CPU Vulkan driver for correctness: orientation only)")
        print(f"  lstm-wgpu: {r_secs:.2f}s training loop (process {r_wall:.2f}s), "
              f"{r_final.get('tokens/s', float('nan')):.0f} tokens/s; median step {r_med * 1e3:.1f} ms = {tok / r_med:.0f} tokens/s")
        print(f"  torch    : {t_secs:.2f}s training loop ({args.threads} threads), {t_tokens / t_secs:.0f} tokens/s; median step {t_med * 1e3:.1f} ms = {tok / t_med:.0f} tokens/s")
        if args.tol is not None and (not n or dl[worst] > args.tol):
            raise SystemExit(1)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
