"""Training and inference throughput of every registered model on this CPU.

    .venv/bin/python -m bench.speed.train_throughput [--models resnet deep_cnn] [--repeats 5]
    .venv/bin/python -m bench.speed.train_throughput --models --configs configs/resnet18h.yaml --full-bf16

Training: images/s of one optimiser step (forward + backward + Adam) at batch 64 and 128 (and a
config's own batch size), fp32 and bf16 autocast, channels_last on and off. `--configs` adds the
models of training configs (their `model` + `model_args`), named by the file. Inference: faces/s at
batch 1 and 64 (fp32, eval mode, no_grad). Median of --repeats timed runs after one warm-up.
GFLOP/s counts the forward FLOPs from torch's FlopCounterMode, x3 for a training step.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from itertools import product
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ferkit.models import create_model, list_models
from ferkit.training.config import load_config


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


def train_rate(make: Callable[[], torch.nn.Module], batch: int, bf16: bool, channels_last: bool,
               repeats: int) -> float:
    model = make().train()
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


def infer_rate(make: Callable[[], torch.nn.Module], batch: int, repeats: int) -> float:
    model = make().eval().to(memory_format=torch.channels_last)
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
    parser.add_argument("--configs", nargs="*", default=[], type=Path,
                        help="training configs whose model (and batch size) to time as well")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    # (label, model factory, batch sizes): registered models at their defaults, then configs' models
    models = [(name, partial(create_model, name), (64, 128)) for name in args.models]
    for path in args.configs:
        config = load_config(path)
        models.append((path.stem, partial(create_model, config.model, **config.model_args),
                       tuple(sorted({64, 128, config.batch_size}))))
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {args.threads} threads, {cpu},"
          f" CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| model | params | fwd MFLOP/face | batch | precision | channels_last | train img/s "
          "| train GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, make, batches in models:
        model = make()
        params = sum(p.numel() for p in model.parameters())
        flops = forward_flops(model)
        for batch, bf16, cl in product(batches, (False, True), (True, False)):
            if bf16 and not args.full_bf16 and (batch, cl) != (64, True):
                continue  # emulated bf16 is ~15x slower without AVX512-BF16: one configuration tells it
            rate = train_rate(make, batch, bf16, cl, args.bf16_repeats if bf16 else args.repeats)
            print(f"| {name} | {params:,} | {flops / 1e6:.0f} | {batch} | {'bf16' if bf16 else 'fp32'} "
                  f"| {'on' if cl else 'off'} | {rate:.0f} | {rate * 3 * flops / 1e9:.1f} |", flush=True)
    print()
    print("| model | inference batch | faces/s (fp32) | GFLOP/s |")
    print("|---|---|---|---|")
    for name, make, _ in models:
        flops = forward_flops(make())
        for batch in (1, 64):
            rate = infer_rate(make, batch, args.repeats)
            print(f"| {name} | {batch} | {rate:.0f} | {rate * flops / 1e9:.1f} |", flush=True)


if __name__ == "__main__":
    main()
