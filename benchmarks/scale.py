"""FreeNets of growing k at an equal edge count: the graph kernel's time and a step's peak memory.

Three graphs of about 500,000 edges: k = 1000 dense, k = 3162 at 10% and k = 10,000 at 1% of
the k(k-1)/2 possible edges (random, strictly lower-triangular). For each, with the weight's
gradient dense (the default) and sparse (``sparse_grad=True``, with
:class:`~freenets.training.optim.EdgeAdam` keeping Adam's moments on the edges alone):

1. the graph kernel alone: forward and backward of the neurons (``dag_activations``, batch 128),
   the method ``"auto"`` chooses; median of the repetitions, all six interleaved in one process,
   and each against the dense k = 1000 kernel (dense gradient) of the same repetition; its rate
   counts three multiply-adds per edge and sample (forward, dL/dz, dL/dW);
2. a training step (784 inputs, 10 classes, cross-entropy, Adam or EdgeAdam, batch 128): its
   median time and the whole process's peak resident memory, each configuration in a process of
   its own (``VmHWM``: model, mask, optimiser, and torch itself);
3. one FreeEvolve step over 10,000 samples (statistics, graph and record), from the packed
   firing as the rule takes it and from the two (k, k) matrices: time and peak memory, each in
   a process of its own.

Usage::

    python benchmarks/scale.py            # 40 repetitions
    python benchmarks/scale.py --quick    # 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from freenets import FreeNet, coactivation, graph
from freenets.kernels import choose_method, dag_activations, structure
from freenets.rules.freeevolve import FreeEvolveRule, _sample_values, decisions
from freenets.training.optim import EdgeAdam, adam

IN_FEATURES, OUT_FEATURES, BATCH = 784, 10, 128
STATS_SAMPLES = 10_000
GRAPHS = ((1000, 1.0), (3162, 0.1), (10000, 0.01))


def random_mask(k: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """A strictly lower-triangular bool mask with ``density`` of the k(k-1)/2 edges, drawn
    without a k x k random matrix (positions in the triangle, then their rows and columns)."""
    possible = k * (k - 1) // 2
    if density >= 1.0:
        return torch.ones(k, k, dtype=torch.bool).tril_(-1)
    want = round(density * possible)
    picked = torch.unique(torch.randint(possible, (int(want * 1.2) + 16,), generator=generator))
    picked = picked[torch.randperm(picked.numel(), generator=generator)[:want]]
    rows = ((1 + torch.sqrt(1 + 8 * picked.double())) / 2).floor().long()
    rows -= (rows * (rows - 1) // 2 > picked).long()  # rounding of the square root
    cols = picked - rows * (rows - 1) // 2
    mask = torch.zeros(k, k, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def kernel_times(repetitions: int) -> list[dict]:
    """Forward and backward of the neurons for every graph and gradient, interleaved."""
    generator = torch.Generator().manual_seed(0)
    cases = []
    for k, density in GRAPHS:
        mask = random_mask(k, density, generator)
        weight = (torch.randn(k, k, generator=generator) * 0.01).requires_grad_()
        z = torch.randn(BATCH, k, generator=generator).requires_grad_()
        method = choose_method(structure(mask), z.device, z.dtype)
        for sparse in (False, True):
            cases.append({"k": k, "density": density, "sparse_grad": sparse, "method": method,
                          "edges": int(mask.sum()), "args": (z, weight, mask), "times": []})  # fmt: skip
    for repetition in range(repetitions + 1):  # the first is a warm-up
        for case in cases:
            z, weight, mask = case["args"]
            weight.grad = z.grad = None
            start = time.perf_counter()
            h = dag_activations(z, weight, mask, sparse_grad=case["sparse_grad"])
            h.backward(torch.ones_like(h))
            elapsed = time.perf_counter() - start
            if repetition:
                case["times"].append(elapsed)
    base = cases[0]["times"]
    for case in cases:
        case["ms"] = statistics.median(case["times"]) * 1e3
        case["ratio"] = statistics.median(t / b for t, b in zip(case["times"], base, strict=True))
        # Each edge: a multiply-add per sample forward, two backward (dL/dz and dL/dW).
        case["gmacs"] = 3 * BATCH * case["edges"] / (case["ms"] * 1e-3) / 1e9
        del case["args"], case["times"]
    return cases


def step_child(k: int, density: float, sparse: bool, repetitions: int) -> None:
    """One configuration's training steps, in this process; prints its numbers as JSON."""
    generator = torch.Generator().manual_seed(0)
    model = FreeNet(IN_FEATURES, k, OUT_FEATURES, generator=generator, sparse_grad=sparse)
    model.mask.copy_(random_mask(k, density, generator))
    others = [p for name, p in model.named_parameters() if name != "weight"]
    groups = [{"params": others}, {"params": [model.weight]}]
    optimizer = adam(groups, 1e-3, EdgeAdam if sparse else torch.optim.Adam)
    x = torch.randn(BATCH, IN_FEATURES, generator=generator)
    y = torch.randint(OUT_FEATURES, (BATCH,), generator=generator)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for repetition in range(repetitions + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        if repetition:
            times.append(time.perf_counter() - start)
    print(json.dumps({"ms": statistics.median(times) * 1e3, "peak_mib": peak_mib()}))


def peak_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` where Linux has it (``ru_maxrss``
    keeps the peak of the process that started this one), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def stats_child(k: int, density: float, packed: bool) -> None:
    """One FreeEvolve step (epsilon 0.25, over STATS_SAMPLES inputs, the graph and the round's
    record), from the packed firing (as the rule takes it) or from the two (k, k) matrices;
    prints its time and this process's peak memory as JSON."""
    generator = torch.Generator().manual_seed(0)
    model = FreeNet(IN_FEATURES, k, OUT_FEATURES, generator=generator)
    model.mask.copy_(random_mask(k, density, generator))
    data = torch.randn(STATS_SAMPLES, IN_FEATURES, generator=generator)

    def step(inputs: torch.Tensor) -> None:
        if packed:
            FreeEvolveRule(0.25).step(model, inputs)
        else:
            ncam, ncim = coactivation(model, inputs)
            decisions(model.mask, ncam, ncim, 0.25)
            absent = graph.lower_triangle(k) & ~model.mask
            _sample_values(ncim[model.mask], 5000), _sample_values(ncam[absent], 5000)

    step(data[:BATCH])  # compiled code loaded, the graph's structure built
    start = time.perf_counter()
    step(data)
    elapsed = time.perf_counter() - start
    print(json.dumps({"seconds": elapsed, "peak_mib": peak_mib()}))


def stats_runs() -> list[dict]:
    rows = []
    for k, density in GRAPHS:
        for packed in (False, True):
            command = [sys.executable, __file__, "--stats-child", f"{k},{density},{int(packed)}"]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append({"k": k, "density": density, "packed": packed,
                         **json.loads(done.stdout.strip().splitlines()[-1])})  # fmt: skip
    return rows


def step_runs(repetitions: int) -> list[dict]:
    rows = []
    for k, density in GRAPHS:
        for sparse in (False, True):
            command = [sys.executable, __file__, "--child", f"{k},{density},{int(sparse)}",
                       "--repetitions", str(repetitions)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append({"k": k, "density": density, "sparse_grad": sparse,
                         **json.loads(done.stdout.strip().splitlines()[-1])})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions instead of 40")
    parser.add_argument("--repetitions", type=int, default=None, help="override the count")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stats-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repetitions = args.repetitions or (5 if args.quick else 40)
    if args.child:
        k, density, sparse = args.child.split(",")
        step_child(int(k), float(density), bool(int(sparse)), repetitions)
        return
    if args.stats_child:
        k, density, packed = args.stats_child.split(",")
        stats_child(int(k), float(density), bool(int(packed)))
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, "
          f"{repetitions} repetitions, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("\n| k | density | edges | method | weight gradient | kernel ms | / dense k=1000 |"
          " G edge-MACs/s |")  # fmt: skip
    print("|---:|---:|---:|---|---|---:|---:|---:|")
    for case in kernel_times(repetitions):
        kind = "sparse" if case["sparse_grad"] else "dense"
        print(f"| {case['k']} | {case['density']:.0%} | {case['edges']:,} | {case['method']} | "
              f"{kind} | {case['ms']:.2f} | {case['ratio']:.2f} | {case['gmacs']:.1f} |")  # fmt: skip
    print("\n| k | density | weight gradient, optimiser | step ms | peak memory MiB |")
    print("|---:|---:|---|---:|---:|")
    for row in step_runs(max(5, repetitions // 4)):
        kind = "sparse, EdgeAdam" if row["sparse_grad"] else "dense, Adam"
        print(f"| {row['k']} | {row['density']:.0%} | {kind} | {row['ms']:.1f} | "
              f"{row['peak_mib']:,.0f} |")  # fmt: skip
    print(f"\n| k | density | FreeEvolve step over {STATS_SAMPLES:,} samples | seconds |"
          " peak memory MiB |")  # fmt: skip
    print("|---:|---:|---|---:|---:|")
    for row in stats_runs():
        kind = "packed firing (the rule)" if row["packed"] else "NCAM and NCIM matrices"
        print(f"| {row['k']} | {row['density']:.0%} | {kind} | {row['seconds']:.2f} | "
              f"{row['peak_mib']:,.0f} |")  # fmt: skip
    print(f"\n# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
