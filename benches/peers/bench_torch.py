#!/usr/bin/env python3
"""The workloads of `lstm-wgpu bench` in PyTorch, printing the same columns.

Workloads (as src/train/bench.rs defines them):
  ts    input 10, hidden 64, 2 layers, seq 20, batch 32, linear head on the
        last step (1 output), MSE, clip 1.0
  char  vocab 65, embedding 128, hidden 256, 2 layers, seq 64, batch 32, head
        on every step, cross-entropy, clip 5.0
  big   input 512, hidden 512, 2 layers, seq 128, batch 64, linear 512->512 on
        every step, MSE, clip 1.0
  deep  char with 4 layers, LayerNorm between layers and residual connections:
        h_l = LSTM_l(y_l); b_l = LN_l(h_l) for l < L-1, b_{L-1} = h_{L-1};
        y_{l+1} = b_l + y_l for l >= 1, y_1 = b_0; the head reads y_L
        (lstm-wgpu's Norm::Layer { last: false } with residual links)

One step: zero_grad, forward over the whole sequence (zero initial state),
loss, backward, clip_grad_norm_ over all parameters, AdamW (lr 1e-3, torch's
defaults otherwise), and on CUDA torch.cuda.synchronize() inside the timed
region. Data are synthetic from a fixed seed, on the device before timing.
With --precision f16-mixed (the counterpart of `lstm-wgpu bench --precision
f16-mixed`): forward and loss under torch.autocast(float16), and
torch.amp.GradScaler (scale, unscale_ before clip_grad_norm_, step, update);
master weights and optimizer state stay float32.

Columns: median ms/step over the timed steps, tokens/s (batch*seq per second),
GFLOP/s by the formula of src/train/bench.rs (every GEMM as 2mnk, see "FLOPs per
step" in docs/commands.md), peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: the
growth of the process's peak RSS over the run, a rough figure), the device
name. Dispatches and submits have no meaning here: printed as null/"-".

With --cell gru every nn.LSTM is an nn.GRU (the counterpart of
`lstm-wgpu bench --cell gru`; rows named <workload>-gru, GFLOPs with G = 3).

  python bench_torch.py --threads 2 --workload ts
  python bench_torch.py --device cuda --workload all --json
  python bench_torch.py --threads 2 --workload char --cell gru
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn


WORKLOADS = {
    # vocab/embed: token input through nn.Embedding; features: dense input.
    "ts": dict(vocab=None, embed=None, features=10, hidden=64, layers=2, seq=20,
               batch=32, outputs=1, every_step=False, clip=1.0, deep=False),
    "char": dict(vocab=65, embed=128, features=None, hidden=256, layers=2, seq=64,
                 batch=32, outputs=65, every_step=True, clip=5.0, deep=False),
    "big": dict(vocab=None, embed=None, features=512, hidden=512, layers=2, seq=128,
                batch=64, outputs=512, every_step=True, clip=1.0, deep=False),
    "deep": dict(vocab=65, embed=128, features=None, hidden=256, layers=4, seq=64,
                 batch=32, outputs=65, every_step=True, clip=5.0, deep=True),
}


def flops_per_step(w: dict, gates: int = 4) -> float:
    """src/train/bench.rs::flops_per_step: every GEMM as 2*m*n*k (gates: G)."""
    n = w["seq"] * w["batch"]
    h = w["hidden"]
    g = gates * h
    embedded = w["vocab"] is not None
    f = 0.0
    for l in range(w["layers"]):
        i = (w["embed"] if embedded else w["features"]) if l == 0 else h
        f += 2 * n * g * (i + h)  # forward: input GEMM + per-step recurrent products
        f += 2 * n * g * (i + h) + 2 * n * g * h  # dW_ih, dW_hh, per-step dh
        if l > 0 or embedded:
            f += 2 * n * g * i  # dX (not for dense input: it feeds nothing trainable)
    rows = n if w["every_step"] else w["batch"]
    return f + 3 * 2 * rows * h * w["outputs"]


class Net(nn.Module):
    def __init__(self, w: dict, cell: str = "lstm"):
        super().__init__()
        self.w = w
        h = w["hidden"]
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.embedding = nn.Embedding(w["vocab"], w["embed"]) if w["vocab"] else None
        inp = w["embed"] if w["vocab"] else w["features"]
        if w["deep"]:
            # One nn.LSTM per layer: LayerNorm and residual adds go between them.
            self.lstms = nn.ModuleList(
                rnn(inp if l == 0 else h, h) for l in range(w["layers"])
            )
            self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(w["layers"] - 1))
            self.lstm = None
        else:
            self.lstm = rnn(inp, h, w["layers"])
        self.head = nn.Linear(h, w["outputs"])

    def forward(self, x):
        y = self.embedding(x) if self.embedding is not None else x  # [T, B, I]
        if self.lstm is not None:
            y, _ = self.lstm(y)
        else:
            last = len(self.lstms) - 1
            for l, lstm in enumerate(self.lstms):
                hl, _ = lstm(y)
                b = self.norms[l](hl) if l < last else hl
                y = b + y if l >= 1 else b
        if not self.w["every_step"]:
            y = y[-1]  # [B, H]: the last step
        return self.head(y)


def make_data(w: dict, device, gen: torch.Generator):
    t, b = w["seq"], w["batch"]
    if w["vocab"]:
        x = torch.randint(0, w["vocab"], (t, b), generator=gen)
        y = torch.randint(0, w["vocab"], (t * b,), generator=gen)
    else:
        x = torch.rand((t, b, w["features"]), generator=gen) * 2 - 1
        shape = (t, b, w["outputs"]) if w["every_step"] else (b, w["outputs"])
        y = torch.rand(shape, generator=gen) * 2 - 1
    return x.to(device), y.to(device)


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def run(name: str, steps: int, warmup: int, device: torch.device, progress: bool,
        precision: str = "f32", cell: str = "lstm") -> dict:
    w = WORKLOADS[name]
    half = precision == "f16-mixed"
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    rss0 = peak_rss_mb()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    net = Net(w, cell).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = make_data(w, device, torch.Generator().manual_seed(1))
    ce, mse = nn.CrossEntropyLoss(), nn.MSELoss()
    scaler = torch.amp.GradScaler(device.type, enabled=half)
    times = []
    loss_v = float("nan")
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=half):
            out = net(x)
            loss = ce(out.reshape(-1, w["outputs"]), y) if w["vocab"] else mse(out, y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), w["clip"])
        scaler.step(opt)
        scaler.update()
        if cuda:
            torch.cuda.synchronize(device)
        el = time.perf_counter() - start
        loss_v = loss.item()  # after the clock: the sync above already waited
        if i >= warmup:
            times.append(el)
        if progress:
            tag = " (warm-up)" if i < warmup else ""
            print(f"{name}: step {i + 1}/{warmup + steps} {el * 1e3:.1f} ms, loss {loss_v:.4f}{tag}",
                  file=sys.stderr)
    med = statistics.median(times)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / (1024 * 1024)
        adapter = torch.cuda.get_device_name(device)
        path = "cudnn" if torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled else "cuda"
    else:
        # Growth of the peak RSS: 0 when an earlier workload already peaked
        # higher, so only meaningful for the first or largest workload.
        peak = peak_rss_mb() - rss0
        adapter = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                adapter = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        path = "cpu"
    fl = flops_per_step(w, 3 if cell == "gru" else 4)
    return {
        "workload": name if cell == "lstm" else f"{name}-{cell}",
        "ms_per_step": med * 1e3,
        "tokens_per_s": w["seq"] * w["batch"] / med,
        "dispatches_per_step": None,
        "submits_per_step": None,
        "gflops": fl / med / 1e9,
        "peak_mem_mb": peak,
        "adapter": adapter,
        "path": path,
        "precision": precision,
        "seq": w["seq"],
        "batch": w["batch"],
        "steps": steps,
        "warmup": warmup,
        "gflop_per_step": fl / 1e9,
        "last_loss": loss_v,
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if not cuda else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="all", help="ts, char, big, deep or all (default all)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--json", action="store_true", help="one JSON object per workload")
    ap.add_argument("--precision", default="f32", choices=["f32", "f16-mixed"],
                    help="f16-mixed: autocast(float16) and GradScaler")
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru"],
                    help="gru: nn.GRU in place of every nn.LSTM")
    a = ap.parse_args()
    if a.workload != "all" and a.workload not in WORKLOADS:
        ap.error(f"unknown workload {a.workload!r}; known: {', '.join(WORKLOADS)}, all")
    if a.steps < 1:
        ap.error("--steps must be at least 1")
    if a.warmup < 0:
        ap.error("--warmup must be >= 0")
    if a.threads is not None:
        if a.threads < 1:
            ap.error("--threads must be at least 1")
        torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device visible to torch")
    if a.precision == "f16-mixed" and a.device != "cuda":
        # oneDNN has no float16 LSTM primitive: autocast fails on the CPU.
        ap.error("--precision f16-mixed needs --device cuda (PyTorch's CPU LSTM has no float16 kernel)")
    device = torch.device(a.device)
    names = list(WORKLOADS) if a.workload == "all" else [a.workload]
    if not a.json:
        print(f"{'workload':<8} {'ms/step':>10} {'tokens/s':>10} {'disp/step':>10} {'submits':>8} "
              f"{'GFLOP/s':>8} {'peak MiB':>9}  {'path':<10} adapter", flush=True)
    for name in names:
        print(f"bench {name}: {a.warmup} warm-up + {a.steps} timed steps, "
              f"{flops_per_step(WORKLOADS[name]) / 1e9:.3f} GFLOP per step", file=sys.stderr)
        r = run(name, a.steps, a.warmup, device, progress=True, precision=a.precision,
                cell=a.cell)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['workload']:<8} {r['ms_per_step']:>10.1f} {r['tokens_per_s']:>10.0f} {'-':>10} {'-':>8} "
                  f"{r['gflops']:>8.2f} {r['peak_mem_mb']:>9.1f}  {r['path']:<10} {r['adapter']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
