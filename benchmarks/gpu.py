"""An epoch of the default model on a GPU: how far it is from the hardware's limit, and what brings it closer.

The default fcn (2352-2352-10) is small for a GPU: an epoch's matrix products (48,000 training images
forward and backward, 12,000 validation images forward; counted here by `torch.utils.flop_counter`) take
milliseconds at the rate of one large matrix product, measured here in float32 and bfloat16. Each step
of a few small kernels is bound by their launches and by Python instead. For each variant below:

- first epoch: seconds, including any compilation or graph capture (the cost of the variant);
- epoch: the median of the next epochs, and its ratio to `fit()`'s;
- training images per second, over the whole epoch (its validation included);
- GPU busy: the share of the epoch in which the GPU runs a kernel or a copy (torch.profiler's record of
  one more epoch, its intervals merged, over the epoch's time without the profiler);
- val/acc after the first epoch: the variants do the same work, so it should barely move.

Variants (each from the same initial weights, optimiser and batch order as the default run), by the
name that `--variants` takes:

    fit             fit(), the project's loop, as `python main.py` trains: the reference, always run
    minimal         benchmarks/training.py's baseline: the shortest plain PyTorch loop
    eval4096        fit(), evaluating in batches of 4,096 images instead of 256
    bf16            fit() in bfloat16 autocast (opt.mixed_precision=true)
    tf32            fit(), float32 matrix products in TF32 on the tensor cores (GPU only)
    cuda-graph      the minimal loop, each full batch's whole step (forward, backward, fused AdamW)
                    replayed from one captured CUDA graph: what kernel launches cost, at most (GPU only)
    compile         fit() with the model compiled by torch.compile (its default mode)
    compile-graphs  the same in torch.compile's mode="reduce-overhead", which replays CUDA graphs (GPU only)

A variant that fails prints its error in its row; the others still run. Without CUDA this script says
so and exits with 0; `--device cpu` measures the variants that need no GPU on the CPU instead.

    .venv/bin/python benchmarks/gpu.py [--epochs 6] [--device cuda] [--variants fit compile ...]
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from common import REPO, print_table
from training import MODELS, SEED, FloatSplit, as_floats, describe, device_name, initial_state, synchronize

sys.path.insert(0, str(REPO))  # the project's `src` package, when run as `python benchmarks/gpu.py`

import src.training.loop
from src.data import Data
from src.datasets.cmnist import CMNISTDataModule
from src.optimisation import OptimisationCfg
from src.training.loop import TrainingState, fit

Epoch = Callable[[], float]  # trains one more epoch; returns the validation accuracy
# In the order they run: the compiled ones, slowest to start, last.
VARIANTS = ["fit", "minimal", "eval4096", "bf16", "tf32", "cuda-graph", "compile", "compile-graphs"]


@dataclass(frozen=True)
class Variant:
    name: str
    start: Callable[[], Epoch]  # builds the variant's state, from the same seed
    eval_batch_size: int = src.training.loop.EVAL_BATCH_SIZE
    tf32: bool = False
    needs_cuda: bool = False


@dataclass(frozen=True)
class Result:
    first_s: float
    epoch_s: float
    busy: float | None  # None on the CPU
    val_acc: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per variant: the first, then the timed ones")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS, help="(default: all)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HYDRA_EXAMPLE_DATA", REPO / "data")))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("Skipped: CUDA is not available on this machine (run with --device cpu to measure the CPU).")
        return
    opt = OptimisationCfg(epochs=1)
    data = CMNISTDataModule(root=args.data, download=False).build(seed=SEED)
    floats = as_floats(data.train, device), as_floats(data.val, device)
    flop = _epoch_flop(data, opt, device)
    print(f"Device: {device_name(device)}; PyTorch {torch.__version__}")
    print(f"Model: the default fcn; optimiser {describe(initial_state(MODELS['fcn'], data, opt, device)[1])};")
    print(f"data: {len(data.train)} training and {len(data.val)} validation images ({data.source} digits).")
    print(f"Matrix products of an epoch: {flop / 1e12:.2f} TFLOP; at this device's rate for one large product,")
    for dtype in (torch.float32, torch.bfloat16):
        rate = _matmul_rate(device, dtype)
        name = str(dtype).removeprefix("torch.")
        print(f"  {name}: {rate / 1e12:.3g} TFLOP/s, so {flop / rate * 1e3:.3g} ms an epoch")
    print(f"Epochs: the first, then the median of {args.epochs - 1}.\n")

    def fit_variant(**changes: Any) -> Callable[[], Epoch]:
        return lambda: _fit_epochs(data, replace(opt, **changes), device)

    def compiled(**options: Any) -> Callable[[], Epoch]:
        return lambda: _fit_epochs(data, opt, device, compile_options=options)

    variants = {
        "fit": Variant("fit()", fit_variant()),
        "minimal": Variant("minimal loop", lambda: _minimal_epochs(data, floats, opt, device)),
        "eval4096": Variant("fit(), eval batch 4096", fit_variant(), eval_batch_size=4096),
        "bf16": Variant("fit(), bf16 autocast", fit_variant(mixed_precision=True)),
        "tf32": Variant("fit(), TF32", fit_variant(), tf32=True, needs_cuda=True),
        "compile": Variant("fit(), torch.compile", compiled()),
        "compile-graphs": Variant("fit(), compile + graphs", compiled(mode="reduce-overhead"), needs_cuda=True),
        "cuda-graph": Variant(
            "minimal loop, CUDA graph", lambda: _graphed_epochs(data, floats, opt, device), needs_cuda=True
        ),
    }
    rows: list[list[str]] = []
    reference: Result | None = None
    for key in ["fit", *(key for key in VARIANTS if key in args.variants and key != "fit")]:  # fit(): the reference
        variant = variants[key]
        if variant.needs_cuda and device.type != "cuda":
            continue
        try:
            result = _measure(variant, args.epochs, device)
        except Exception as error:  # one variant's failure is a figure too; the others still run
            message = f"{type(error).__name__}: {str(error).strip()}".splitlines()[0][:100]
            rows.append([variant.name, f"failed: {message}", *[""] * 5])
            print(" | ".join(rows[-1]), flush=True)
            continue
        reference = result if key == "fit" else reference
        rows.append(
            [
                variant.name,
                f"{result.first_s:.2f} s",
                f"{result.epoch_s:.3f} s",
                "" if reference is None else f"{result.epoch_s / reference.epoch_s:.2f}",
                f"{len(data.train) / result.epoch_s:,.0f}",
                "n/a" if result.busy is None else f"{result.busy:.0%}",
                f"{result.val_acc:.4f}",
            ]
        )
        # Each row as soon as it is measured: a run stopped by a time limit still shows it.
        print(" | ".join(rows[-1]), flush=True)
    print_table(["variant", "first epoch", "epoch", "vs fit()", "train images/s", "GPU busy", "val/acc"], rows)


@contextlib.contextmanager
def _settings(variant: Variant) -> Generator[None]:
    """The variant's global settings, for the duration of its epochs."""
    eval_batch_size, precision = src.training.loop.EVAL_BATCH_SIZE, torch.get_float32_matmul_precision()
    src.training.loop.EVAL_BATCH_SIZE = variant.eval_batch_size  # read by `evaluate()` at each call
    torch.set_float32_matmul_precision("high" if variant.tf32 else "highest")  # "high": TF32
    try:
        yield
    finally:
        src.training.loop.EVAL_BATCH_SIZE = eval_batch_size
        torch.set_float32_matmul_precision(precision)


def _measure(variant: Variant, epochs: int, device: torch.device) -> Result:
    with _settings(variant):
        epoch = variant.start()
        first_s, val_acc = _timed_epoch(epoch, device)
        times = [_timed_epoch(epoch, device)[0] for _ in range(epochs - 1)]
        busy = None
        if device.type == "cuda":
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
                epoch()
                synchronize(device)
            busy = _busy_seconds(profiler) / statistics.median(times)
    return Result(first_s=first_s, epoch_s=statistics.median(times), busy=busy, val_acc=val_acc)


def _timed_epoch(epoch: Epoch, device: torch.device) -> tuple[float, float]:
    synchronize(device)
    start = time.perf_counter()
    val_acc = epoch()
    synchronize(device)
    return time.perf_counter() - start, val_acc


def _busy_seconds(profiler: profile) -> float:
    """Seconds in which the GPU ran a kernel, a copy or a fill: the profiler's device intervals, merged."""
    events = cast(list[Any], profiler.events())  # of `FunctionEvent`, which has no type hints
    intervals = sorted(
        (event.time_range.start, event.time_range.end) for event in events if event.device_type.name == "CUDA"
    )
    busy, end = 0.0, float("-inf")
    for start, stop in intervals:
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return busy / 1e6  # microseconds


def _fit_epochs(
    data: Data, opt: OptimisationCfg, device: torch.device, compile_options: dict[str, Any] | None = None
) -> Epoch:
    model, optimizer, generator = initial_state(MODELS["fcn"], data, opt, device)
    if compile_options is not None:
        model = cast(torch.nn.Module, torch.compile(model, **compile_options))
    state = TrainingState(model=model, optimizer=optimizer, generator=generator)

    def epoch() -> float:
        # `fit()` trains until `opt.epochs` are done: one more each time.
        fit(state, data, opt=replace(opt, epochs=state.epoch + 1), on_epoch_end=_ignore, stop_requested=_never)
        return state.history[-1]["val/acc"]

    return epoch


def _minimal_epochs(
    data: Data, floats: tuple[FloatSplit, FloatSplit], opt: OptimisationCfg, device: torch.device
) -> Epoch:
    """benchmarks/training.py's minimal loop, one epoch after another on the same state."""
    train, val = floats
    model, optimizer, generator = initial_state(MODELS["fcn"], data, opt, device)

    def epoch() -> float:
        model.train()
        order = torch.randperm(len(train.labels), generator=generator).to(device)
        for i in range(0, len(order), opt.batch_size):
            batch = order[i : i + opt.batch_size]
            loss = F.cross_entropy(model(train.images[batch]), train.labels[batch])
            optimizer.zero_grad()
            loss.backward()  # pyright: ignore[reportUnknownMemberType]
            optimizer.step()  # pyright: ignore[reportUnknownMemberType]
        return _val_acc(model, val)

    return epoch


def _graphed_epochs(
    data: Data, floats: tuple[FloatSplit, FloatSplit], opt: OptimisationCfg, device: torch.device
) -> Epoch:
    """The minimal loop with each full batch's whole training step replayed from one captured CUDA graph
    (PyTorch's "whole network capture"); the last, smaller batch of an epoch is an ordinary step."""
    train, val = floats
    # `capturable`: the optimiser keeps its step count on the GPU, where a graph can update it.
    opt = replace(opt, optimizer_kwargs={"capturable": True})
    model, optimizer, generator = initial_state(MODELS["fcn"], data, opt, device)
    size = opt.batch_size
    images, labels = train.images[:size].clone(), train.labels[:size].clone()  # the graph's input buffers

    def step() -> None:
        F.cross_entropy(model(images), labels).backward()  # pyright: ignore[reportUnknownMemberType]
        optimizer.step()  # pyright: ignore[reportUnknownMemberType]

    # A few steps on a side stream before capture (CUDA graphs ask for it), then undone: the weights
    # back to their initial values, AdamW's state (its averages and step count) back to zeros.
    initial = [parameter.detach().clone() for parameter in model.parameters()]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for parameter, value in zip(model.parameters(), initial, strict=True):
            parameter.copy_(value)
        for parameter_state in optimizer.state.values():
            for tensor in parameter_state.values():
                tensor.zero_()
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()

    def epoch() -> float:
        model.train()
        order = torch.randperm(len(train.labels), generator=generator).to(device)
        full = len(order) - len(order) % size
        for i in range(0, full, size):
            torch.index_select(train.images, 0, order[i : i + size], out=images)
            torch.index_select(train.labels, 0, order[i : i + size], out=labels)
            graph.replay()
        if full < len(order):  # into the gradients that the graph writes, zeroed first
            optimizer.zero_grad(set_to_none=False)
            rest = order[full:]
            loss = F.cross_entropy(model(train.images[rest]), train.labels[rest])
            loss.backward()  # pyright: ignore[reportUnknownMemberType]
            optimizer.step()  # pyright: ignore[reportUnknownMemberType]
        return _val_acc(model, val)

    return epoch


@torch.inference_mode()
def _val_acc(model: torch.nn.Module, val: FloatSplit) -> float:
    model.eval()
    size = src.training.loop.EVAL_BATCH_SIZE
    correct = sum(
        (model(val.images[i : i + size]).argmax(dim=1) == val.labels[i : i + size]).sum()
        for i in range(0, len(val.labels), size)
    )
    return float(correct) / len(val.labels)


def _epoch_flop(data: Data, opt: OptimisationCfg, device: torch.device) -> float:
    """The floating-point operations of an epoch's matrix products: one training step and one evaluation
    batch counted, then scaled to the epoch's images."""
    model, _optimizer, _generator = initial_state(MODELS["fcn"], data, opt, device)
    images = data.train.to(device).batch(torch.arange(opt.batch_size, device=device))
    with FlopCounterMode(display=False) as counter:
        loss = F.cross_entropy(model(images), data.train.labels[: opt.batch_size].to(device))
        loss.backward()  # pyright: ignore[reportUnknownMemberType]
    training = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(images)
    evaluation = counter.get_total_flops()
    return (training * len(data.train) + evaluation * len(data.val)) / opt.batch_size


def _matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP per second of an 8192-wide square matrix product (2048 on the CPU), on random numbers."""
    size = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    for _ in range(3):
        _ = a @ b
    times: list[float] = []
    for _ in range(10):
        times.append(_timed_epoch(lambda: float((a @ b)[0, 0]), device)[0])
    return 2 * size**3 / statistics.median(times)


def _ignore(_state: TrainingState) -> None:
    pass


def _never() -> bool:
    return False


if __name__ == "__main__":
    sys.exit(main())
