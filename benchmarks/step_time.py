"""Training-step time of a FreeNet against the equal-parameter one-hidden-layer MLP.

Both models train on the same random batch (784 inputs, 10 classes, Adam) in the same process,
their steps interleaved, so that load from other processes hits both alike; the table gives the
median of the per-repetition ratios. Graphs are the dense initial one and a random one with 10%
of the possible edges (the MLP is matched to each graph's effective parameters). The last table
times NCAM/NCIM (:func:`freenets.coactivation`) against one inference pass over the same data.

Usage::

    python benchmarks/step_time.py            # k in 30, 100, 300, 1000; batch 128 and 1024
    python benchmarks/step_time.py --quick    # a short run
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from freenets import FreeNet, coactivation, graph
from freenets.baselines import matching_width

IN_FEATURES, OUT_FEATURES = 784, 10


def freenet(k: int, density: float, generator: torch.Generator) -> FreeNet:
    """A FreeNet whose graph keeps each possible edge with probability ``density``."""
    model = FreeNet(IN_FEATURES, k, OUT_FEATURES, generator=generator)
    if density < 1.0:
        keep = torch.rand(k, k, generator=generator) < density
        with torch.no_grad():
            model.mask.copy_(keep & graph.dense_mask(k))
    return model


def mlp(params: int) -> nn.Module:
    """Linear-ReLU-Linear with as many parameters as ``params`` (whole neurons)."""
    hidden = matching_width(IN_FEATURES, OUT_FEATURES, params).hidden
    return nn.Sequential(nn.Linear(IN_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, OUT_FEATURES))


def train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, fused: bool
) -> Callable[[], None]:
    # fused=True is what `freenets train` uses (freenets.training.loop.adam); None is torch's default.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def interleaved(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each step, the steps run in turn (order rotated every repetition)."""
    for step in steps.values():  # warm-up: compilation, allocator, optimiser state
        step()
        step()
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def step_table(
    ks: list[int], batches: list[int], repeats: int, seed: int, fused: bool
) -> list[str]:
    rows = [
        "| k | batch | graph | FreeNet ms | MLP ms | FreeNet / MLP | 10% / dense step "
        "| no edges / dense step |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    generator = torch.Generator().manual_seed(seed)
    for k in ks:
        for batch in batches:
            x = torch.randn(batch, IN_FEATURES, generator=generator)
            y = torch.randint(0, OUT_FEATURES, (batch,), generator=generator)
            models = {"dense": freenet(k, 1.0, generator), "10%": freenet(k, 0.1, generator)}
            steps = {}
            for name, model in models.items():
                steps[name] = train_step(model, x, y, fused)
                steps[f"mlp {name}"] = train_step(mlp(model.effective_params()), x, y, fused)
            # The floor of any graph kernel: the encoder, decoder and Adam of a graph with no
            # edges. A sparse step cannot be cheaper than this.
            steps["no edges"] = train_step(freenet(k, 0.0, generator), x, y, fused)
            times = interleaved(steps, repeats)
            for name in models:
                versus_dense = [
                    f"{median_ratio(times[other], times['dense']):.2f}" if name == "10%" else ""
                    for other in ("10%", "no edges")
                ]
                rows.append(
                    f"| {k} | {batch} | {name} | {statistics.median(times[name]) * 1e3:.2f} "
                    f"| {statistics.median(times['mlp ' + name]) * 1e3:.2f} "
                    f"| {median_ratio(times[name], times['mlp ' + name]):.2f} "
                    f"| {' | '.join(versus_dense)} |"
                )
            print(rows[-2], rows[-1], sep="\n", flush=True)
    return rows


def stats_table(k: int, samples: int, repeats: int, seed: int) -> list[str]:
    """NCAM/NCIM over ``samples`` inputs against one inference pass over them."""
    generator = torch.Generator().manual_seed(seed)
    model = freenet(k, 1.0, generator).eval()
    data = torch.randn(samples, IN_FEATURES, generator=generator)

    @torch.no_grad()
    def inference() -> None:
        for start in range(0, samples, 1024):
            model(data[start : start + 1024])

    coactivation(model, data[:2048])  # load the compiled kernels before measuring memory
    inference()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = interleaved({"stats": lambda: coactivation(model, data), "infer": inference}, repeats)
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return [
        "| k | samples | NCAM/NCIM s | inference s | ratio | peak RSS growth MiB |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {k} | {samples} | {statistics.median(times['stats']):.2f} "
        f"| {statistics.median(times['infer']):.2f} "
        f"| {median_ratio(times['stats'], times['infer']):.2f} | {rss_growth:.0f} |",
    ]


def machine() -> str:
    """CPU model, cores and load, for the record."""
    name = platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{name}, {os.cpu_count()} cores, load average {load}"


def _numbers(text: str) -> list[int]:
    return [int(item) for item in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="k in 30, 100; batch 128; fewer runs")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repetitions")
    parser.add_argument(
        "--unfused-adam", action="store_true", help="torch's default Adam instead of fused"
    )
    parser.add_argument("--no-stats", action="store_true", help="skip the NCAM/NCIM table")
    parser.add_argument("--ks", type=_numbers, default=None, help="neuron counts, e.g. 100,1000")
    parser.add_argument("--batches", type=_numbers, default=None, help="batch sizes, e.g. 128")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        ks, batches, repeats, stats_k, samples = [30, 100], [128], 20, 100, 6000
    else:
        ks, batches, repeats, stats_k, samples = [30, 100, 300, 1000], [128, 1024], 100, 1000, 60000
    repeats = args.repeats or repeats
    ks, batches = args.ks or ks, args.batches or batches
    optimizer = "Adam (torch's default, for-loop)" if args.unfused_adam else "Adam(fused=True)"
    print(
        f"{machine()}\ntorch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{optimizer}, {repeats} interleaved repetitions\n",
        flush=True,
    )
    rows = step_table(ks, batches, repeats, args.seed, not args.unfused_adam)
    print("\n" + "\n".join(rows) + "\n")
    if not args.no_stats:
        print("\n".join(stats_table(stats_k, samples, max(3, repeats // 10), args.seed)))
    print(f"\nload average at the end: {machine().rsplit('load average ', 1)[1]}")


if __name__ == "__main__":
    main()
