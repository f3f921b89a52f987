"""Training-step time of a FreeNet against the equal-parameter one-hidden-layer MLP.

Both models train on the same random batch (784 inputs, 10 classes, Adam) in the same process,
their steps interleaved, so that load from other processes hits both alike; the tables give the
median of the per-repetition ratios. Graphs are the dense initial one and a random one with 10%
of the possible edges (the MLP is matched to each graph's effective parameters).

Every repetition runs every step once at each thread count (one thread, then torch's default),
so the thread counts are interleaved too. The tables:

1. the steps at the default thread count (FreeNet, MLP, their ratio, the 10% graph and the graph
   with no edges against the dense step, and the graph with no edges against an MLP with k
   hidden units: the floor, what such a FreeNet computes);
2. one thread and the default side by side: the ratios to the MLP, and each model's thread
   scaling (its step at one thread over its step at the default count);
3. the graph kernel alone (forward and backward of the neurons, nothing else) of the 10% graph
   against the dense one;
4. NCAM/NCIM (:func:`freenets.coactivation`) against one inference pass over the same data, and
   a FreeEvolve step from the packed firing (as the rule takes it) against the same step from
   the two matrices.

Each row carries the load average when it was measured.

With ``--device cuda`` (or ``mps``) the models, batches and statistics live there, and every
timed call waits for the device to finish; thread counts then only move the host's share.

Usage::

    python benchmarks/step_time.py                  # k in 30, 100, 300, 1000; batch 128 and 1024
    python benchmarks/step_time.py --quick          # a short run
    python benchmarks/step_time.py --device cuda    # on a GPU
    python benchmarks/step_time.py --sparse-grad    # FreeNets with sparse_grad=True, EdgeAdam
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
from freenets.errors import ConfigError
from freenets.kernels import choose_method, dag_activations, structure
from freenets.rules.freeevolve import FreeEvolveRule, _sample_values, decisions
from freenets.training.config import resolve_device
from freenets.training.optim import EdgeAdam

IN_FEATURES, OUT_FEATURES = 784, 10
DEVICE = torch.device("cpu")  # set by --device


def _sync() -> None:
    """Wait for the device, so that a timed call includes its work (CUDA runs asynchronously)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    elif DEVICE.type == "mps":
        torch.mps.synchronize()


SPARSE_GRAD = False  # set by --sparse-grad


def freenet(k: int, density: float, generator: torch.Generator) -> FreeNet:
    """A FreeNet whose graph keeps each possible edge with probability ``density``."""
    model = FreeNet(IN_FEATURES, k, OUT_FEATURES, generator=generator, sparse_grad=SPARSE_GRAD)
    if density < 1.0:
        keep = torch.rand(k, k, generator=generator) < density
        with torch.no_grad():
            model.mask.copy_(keep & graph.dense_mask(k))
    return model.to(DEVICE)


def mlp(params: int) -> nn.Module:
    """Linear-ReLU-Linear with as many parameters as ``params`` (whole neurons)."""
    hidden = matching_width(IN_FEATURES, OUT_FEATURES, params).hidden
    layers = [nn.Linear(IN_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, OUT_FEATURES)]
    return nn.Sequential(*layers).to(DEVICE)


def mlp_hidden(k: int) -> nn.Module:
    """Linear-ReLU-Linear with ``k`` hidden units: what a FreeNet without edges computes."""
    layers = [nn.Linear(IN_FEATURES, k), nn.ReLU(), nn.Linear(k, OUT_FEATURES)]
    return nn.Sequential(*layers).to(DEVICE)


def train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, fused: bool
) -> Callable[[], None]:
    # fused=True is what `freenets train` uses (freenets.training.loop.adam); None is torch's default.
    kind = EdgeAdam if isinstance(model, FreeNet) and model.sparse_grad else torch.optim.Adam
    optimizer = kind(model.parameters(), lr=1e-3, fused=fused or None)

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def interleaved(
    steps: dict[str, Callable[[], None]], repeats: int, threads: list[int]
) -> dict[tuple[str, int], list[float]]:
    """Seconds per call of each step at each thread count, ``(name, threads)`` -> times.

    Each repetition runs every step once at each thread count, the order of the steps rotated
    every repetition.
    """
    default = torch.get_num_threads()
    names = list(steps)
    times: dict[tuple[str, int], list[float]] = {(n, t): [] for n in names for t in threads}
    try:
        for count in threads:  # warm-up: compilation, allocator, optimiser state, thread pools
            torch.set_num_threads(count)
            for step in steps.values():
                step()
                step()
        for repeat in range(repeats):
            shift = repeat % len(names)
            for count in threads:
                torch.set_num_threads(count)
                for name in names[shift:] + names[:shift]:
                    _sync()
                    start = time.perf_counter()
                    steps[name]()
                    _sync()
                    times[name, count].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(default)
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def load() -> str:
    """The 1-minute load average, as ``uptime`` shows it."""
    return f"{os.getloadavg()[0]:.1f}"


def step_tables(
    ks: list[int], batches: list[int], repeats: int, seed: int, fused: bool, threads: list[int]
) -> tuple[list[str], list[str]]:
    """Table 1 (the default thread count, the last of ``threads``) and table 2 (all counts)."""
    top = threads[-1]
    first = [
        "| k | batch | graph | FreeNet ms | MLP ms | FreeNet / MLP | 10% / dense step "
        "| no edges / dense step | no edges / MLP with k hidden | load |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratio_columns = " | ".join(f"FreeNet / MLP, {t} thr" for t in threads)
    second = [
        f"| k | batch | graph | {ratio_columns} | FreeNet {threads[0]} / {top} thr "
        f"| MLP {threads[0]} / {top} thr | FreeNet scaling / MLP's | load |",
        "|---:|---:|---|" + "---:|" * (len(threads) + 4),
    ]
    generator = torch.Generator().manual_seed(seed)
    for k in ks:
        for batch in batches:
            x = torch.randn(batch, IN_FEATURES, generator=generator).to(DEVICE)
            y = torch.randint(0, OUT_FEATURES, (batch,), generator=generator).to(DEVICE)
            models = {"dense": freenet(k, 1.0, generator), "10%": freenet(k, 0.1, generator)}
            steps = {}
            for name, model in models.items():
                steps[name] = train_step(model, x, y, fused)
                steps[f"mlp {name}"] = train_step(mlp(model.effective_params()), x, y, fused)
            # The floor of any graph kernel: the encoder, decoder and Adam of a graph with no
            # edges. A sparse step cannot be cheaper than this.
            steps["no edges"] = train_step(freenet(k, 0.0, generator), x, y, fused)
            steps["mlp k hidden"] = train_step(mlp_hidden(k), x, y, fused)
            times = interleaved(steps, repeats, threads)
            now = load()
            for name in models:
                ours, theirs = times[name, top], times["mlp " + name, top]
                versus_dense = [
                    f"{median_ratio(times[other, top], times['dense', top]):.2f}"
                    if name == "10%"
                    else ""
                    for other in ("10%", "no edges")
                ]
                floor = median_ratio(times["no edges", top], times["mlp k hidden", top])
                versus_dense.append(f"{floor:.2f}" if name == "10%" else "")
                first.append(
                    f"| {k} | {batch} | {name} | {statistics.median(ours) * 1e3:.2f} "
                    f"| {statistics.median(theirs) * 1e3:.2f} | {median_ratio(ours, theirs):.2f} "
                    f"| {' | '.join(versus_dense)} | {now} |"
                )
                ratios = " | ".join(
                    f"{median_ratio(times[name, t], times['mlp ' + name, t]):.2f}" for t in threads
                )
                scaling = median_ratio(times[name, threads[0]], ours)
                scaling_mlp = median_ratio(times["mlp " + name, threads[0]], theirs)
                second.append(
                    f"| {k} | {batch} | {name} | {ratios} | {scaling:.2f} | {scaling_mlp:.2f} "
                    f"| {scaling / scaling_mlp:.2f} | {now} |"
                )
                print(first[-1], second[-1], sep="\n", flush=True)
    return first, second


def _kernel(
    z: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, grad_h: torch.Tensor
) -> Callable[[], None]:
    def run() -> None:
        h = dag_activations(z, weight, mask, sparse_grad=SPARSE_GRAD)
        torch.autograd.grad(h, (z, weight), grad_h)

    return run


def _products(z: torch.Tensor, weight: torch.Tensor, grad_h: torch.Tensor) -> Callable[[], None]:
    """A linear layer's three products in a training step, on the kernel's shapes."""

    def run() -> None:
        torch.mm(z, weight.t())
        torch.mm(grad_h, weight)
        torch.mm(grad_h.t(), z)
        _sync()

    return run


def kernel_table(
    ks: list[int], batches: list[int], repeats: int, seed: int, threads: list[int]
) -> list[str]:
    """Forward and backward of the neurons alone: the 10% graph against the dense one, and each
    one's rate beside the matrix product's on the same shapes.

    A kernel's rate counts three multiply-adds per edge and sample (the forward, dL/dz and
    dL/dW); the product's is the three products a linear layer of ``(k, k)`` weights does in a
    training step (``z W^T``, ``g W`` and ``g^T z``), ``3 B k^2`` multiply-adds.
    """
    rows = [
        "| k | batch | threads | dense ms | 10% ms | 10% / dense | 10% method "
        "| dense G MAC/s | 10% G MAC/s | product G MAC/s | load |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    generator = torch.Generator().manual_seed(seed)
    for k in ks:
        for batch in batches:
            z = torch.randn(batch, k, generator=generator).to(DEVICE).requires_grad_(True)
            weight = (torch.randn(k, k, generator=generator) / k**0.5).to(DEVICE)
            weight.requires_grad_(True)
            grad_h = torch.randn(batch, k, generator=generator).to(DEVICE)
            masks = {"dense": graph.dense_mask(k, device=DEVICE)}
            tenth = (torch.rand(k, k, generator=generator) < 0.1).to(DEVICE)
            masks["10%"] = tenth & masks["dense"]

            kernels = {name: _kernel(z, weight, mask, grad_h) for name, mask in masks.items()}
            kernels["product"] = _products(z.detach(), weight.detach(), grad_h)
            times = interleaved(kernels, repeats, threads)
            now = load()
            method = choose_method(structure(masks["10%"]), z.device, z.dtype)
            work = {name: 3 * batch * graph.n_edges(mask) for name, mask in masks.items()}
            work["product"] = 3 * batch * k * k
            for count in threads:
                dense, tenth = times["dense", count], times["10%", count]
                rates = " | ".join(
                    f"{work[name] / statistics.median(times[name, count]) / 1e9:.1f}"
                    for name in ("dense", "10%", "product")
                )
                rows.append(
                    f"| {k} | {batch} | {count} | {statistics.median(dense) * 1e3:.3f} "
                    f"| {statistics.median(tenth) * 1e3:.3f} | {median_ratio(tenth, dense):.2f} "
                    f"| {method} | {rates} | {now} |"
                )
                print(rows[-1], flush=True)
    return rows


def stats_table(k: int, samples: int, repeats: int, seed: int) -> list[str]:
    """NCAM/NCIM over ``samples`` inputs against one inference pass over them."""
    generator = torch.Generator().manual_seed(seed)
    model = freenet(k, 1.0, generator).eval()
    data = torch.randn(samples, IN_FEATURES, generator=generator).to(DEVICE)

    @torch.no_grad()
    def inference() -> None:
        for start in range(0, samples, 1024):
            model(data[start : start + 1024])

    coactivation(model, data[:2048])  # load the compiled kernels before measuring memory
    inference()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    threads = [torch.get_num_threads()]
    times = interleaved(
        {"stats": lambda: coactivation(model, data), "infer": inference}, repeats, threads
    )
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    stats, infer = times["stats", threads[0]], times["infer", threads[0]]
    rows = [
        "| k | samples | threads | NCAM/NCIM s | inference s | ratio | peak RSS growth MiB | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {k} | {samples} | {threads[0]} | {statistics.median(stats):.2f} "
        f"| {statistics.median(infer):.2f} | {median_ratio(stats, infer):.2f} "
        f"| {rss_growth:.0f} | {load()} |",
    ]
    return rows + freeevolve_step_table(model, data, repeats, threads)


def freeevolve_step_table(
    model: FreeNet, data: torch.Tensor, repeats: int, threads: list[int]
) -> list[str]:
    """A FreeEvolve step (epsilon 0.25, the graph and the round's record) from the packed
    firing, as the rule takes it, against the same step from the two (k, k) matrices."""
    k = model.n_neurons

    def from_matrices() -> None:
        ncam, ncim = coactivation(model, data)
        mask = model.mask.cpu()
        decisions(mask, ncam, ncim, 0.25)
        absent = graph.lower_triangle(k) & ~mask
        _sample_values(ncim[mask], 5000), _sample_values(ncam[absent], 5000)

    rule = FreeEvolveRule(0.25)
    times = interleaved(
        {"matrices": from_matrices, "packed": lambda: rule.step(model, data)}, repeats, threads
    )
    matrices, packed = times["matrices", threads[0]], times["packed", threads[0]]
    return [
        "",
        "| k | graph | FreeEvolve step from the matrices s | from the packed firing s | ratio |",
        "|---:|---|---:|---:|---:|",
        f"| {k} | {model.n_edges} edges | {statistics.median(matrices):.2f} "
        f"| {statistics.median(packed):.2f} | {median_ratio(packed, matrices):.2f} |",
    ]


def machine() -> str:
    """CPU model, cores and load, for the record."""
    name = platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    averages = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{name}, {os.cpu_count()} cores, load average {averages}"


def _numbers(text: str) -> list[int]:
    return [int(item) for item in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="k in 30, 100; batch 128; fewer runs")
    parser.add_argument(
        "--threads",
        type=_numbers,
        default=None,
        help="thread counts, interleaved, the last one the 'default' of tables 1 and 4 "
        "(default: 1 and torch's default)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repetitions")
    parser.add_argument(
        "--unfused-adam", action="store_true", help="torch's default Adam instead of fused"
    )
    parser.add_argument("--no-stats", action="store_true", help="skip the NCAM/NCIM table")
    parser.add_argument("--no-kernel", action="store_true", help="skip the graph-kernel table")
    parser.add_argument("--ks", type=_numbers, default=None, help="neuron counts, e.g. 100,1000")
    parser.add_argument("--batches", type=_numbers, default=None, help="batch sizes, e.g. 128")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")
    parser.add_argument(
        "--sparse-grad",
        action="store_true",
        help="FreeNets with sparse_grad=True, trained by EdgeAdam (moments on the edges alone)",
    )
    args = parser.parse_args()
    global DEVICE, SPARSE_GRAD
    SPARSE_GRAD = args.sparse_grad
    try:
        DEVICE = resolve_device(args.device)
    except ConfigError as error:
        parser.error(str(error))
    threads = args.threads or sorted({1, torch.get_num_threads()})
    if args.quick:
        ks, batches, repeats, stats_k, samples = [30, 100], [128], 20, 100, 6000
    else:
        ks, batches, repeats, stats_k, samples = [30, 100, 300, 1000], [128, 1024], 60, 1000, 60000
    repeats = args.repeats or repeats
    ks, batches = args.ks or ks, args.batches or batches
    optimizer = "Adam (torch's default, for-loop)" if args.unfused_adam else "Adam(fused=True)"
    if args.sparse_grad:
        optimizer += "; FreeNets: sparse weight gradient, EdgeAdam"
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else DEVICE.type
    print(
        f"{machine()}\ntorch {torch.__version__}, device {where}, threads {threads}, "
        f"{optimizer}, {repeats} interleaved repetitions\n",
        flush=True,
    )
    first, second = step_tables(ks, batches, repeats, args.seed, not args.unfused_adam, threads)
    print("\n" + "\n".join(first) + "\n\n" + "\n".join(second) + "\n", flush=True)
    if not args.no_kernel:
        rows = kernel_table([k for k in ks if k >= 100], batches, repeats, args.seed, threads)
        print("\n" + "\n".join(rows) + "\n", flush=True)
    if not args.no_stats:
        torch.set_num_threads(threads[-1])
        print("\n".join(stats_table(stats_k, samples, max(3, repeats // 10), args.seed)))
    print(f"\nload average at the end: {machine().rsplit('load average ', 1)[1]}")


if __name__ == "__main__":
    main()
