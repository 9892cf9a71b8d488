"""Training and inference throughput of every registered model on this CPU.

    .venv/bin/python bench/train_throughput.py [--models resnet deep_cnn] [--repeats 5]

Training: images/s of one optimiser step (forward + backward + Adam) at batch 64 and 128,
fp32 and bf16 autocast, channels_last on and off. Inference: faces/s at batch 1 and 64 (fp32,
eval mode, no_grad). Median of --repeats timed runs after one warm-up. GFLOP/s counts the
forward FLOPs from torch's FlopCounterMode, x3 for a training step (forward + backward).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from itertools import product

import torch
from torch.utils.flop_counter import FlopCounterMode

from ferkit.models import create_model, list_models


def forward_flops(model: torch.nn.Module) -> int:
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 1, 48, 48))
    return counter.get_total_flops()


def median_seconds(step, repeats: int) -> float:
    step()  # warm-up (oneDNN primitive creation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_rate(name: str, batch: int, bf16: bool, channels_last: bool, repeats: int) -> float:
    model = create_model(name).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, 1, 48, 48).contiguous(memory_format=fmt)
    y = torch.randint(0, 8, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch / median_seconds(step, repeats)


def infer_rate(name: str, batch: int, repeats: int) -> float:
    model = create_model(name).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, 48, 48).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.no_grad():
            model(x)

    return batch / median_seconds(step, repeats * (10 if batch == 1 else 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list_models())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16-repeats", type=int, default=1,
                        help="bf16 is emulated (slow) on CPUs without AVX512-BF16: fewer repeats")
    parser.add_argument("--full-bf16", action="store_true",
                        help="time bf16 in every batch/memory-format configuration (slow here)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {args.threads} threads, {cpu},"
          f" CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| model | params | fwd MFLOP/face | batch | precision | channels_last | train img/s "
          "| train GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        flops = forward_flops(model)
        for batch, bf16, cl in product((64, 128), (False, True), (True, False)):
            if bf16 and not args.full_bf16 and (batch, cl) != (64, True):
                continue  # emulated bf16 is ~15x slower here: one configuration tells the story
            rate = train_rate(name, batch, bf16, cl, args.bf16_repeats if bf16 else args.repeats)
            print(f"| {name} | {params:,} | {flops / 1e6:.0f} | {batch} | {'bf16' if bf16 else 'fp32'} "
                  f"| {'on' if cl else 'off'} | {rate:.0f} | {rate * 3 * flops / 1e9:.1f} |", flush=True)
    print()
    print("| model | inference batch | faces/s (fp32) | GFLOP/s |")
    print("|---|---|---|---|")
    for name in args.models:
        flops = forward_flops(create_model(name))
        for batch in (1, 64):
            rate = infer_rate(name, batch, args.repeats)
            print(f"| {name} | {batch} | {rate:.0f} | {rate * flops / 1e9:.1f} |", flush=True)


if __name__ == "__main__":
    main()
