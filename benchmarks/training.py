"""Training throughput: an epoch through the project's `fit()` against a minimal loop written inline.

An epoch is what `fit()` does per epoch: a pass over CMNIST's 48,000 training images in batches of 256,
in a seeded random order, then the loss and accuracy on the 12,000 validation images. The baseline
does the same work as the shortest plain PyTorch loop: no DataLoader, no progress bar, no subgroup
metrics. Both start from the same weights (the project's model factory under the same seed), use the
same optimiser, built by `OptimisationCfg.build()` with its defaults (AdamW, lr 5e-5, in the fused
implementation that it chooses on CPUs and GPUs), batch size and batch order, and so end with the same
validation accuracy, printed side by side as a check that they did the same work.

The data: MNIST, coloured by `CMNISTDataModule` (read from its cache before timing starts); where
MNIST's files are not in the data folder, synthetic digits of the same shape (the same work). The
project holds the digits as grey uint8 and makes coloured floats of each batch as it forms it; the
baseline holds the coloured images as float32 in [0, 1], made once before timing starts, as a
hand-written loop would: the fastest way to form a batch, so the ratio includes whatever keeping the
images small costs.

One untimed pair warms up caches and allocators; then pairs are timed side by side in alternating
order (ours, baseline; baseline, ours; ...), and the figure is the median of the per-pair ratios,
which a drifting or busy machine shifts little (the times shown are the fastest of each, the least
disturbed). Target: at most 1.05. Exits with 1 if a model fails.

    .venv/bin/python benchmarks/training.py [--models fcn fcn512 cnn] [--repeats 5] [--threads N]
    .venv/bin/python benchmarks/training.py --device cuda [--mixed-precision]   # on a GPU machine
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from common import REPO, interleaved, machine, median_ratio, print_table, verdict

sys.path.insert(0, str(REPO))  # the project's `src` package, when run as `python benchmarks/training.py`

from src.data import Data, Split
from src.datasets.cmnist import CMNISTDataModule
from src.model import FcnFactory, ModelFactory, SimpleCNNFactory
from src.optimisation import OptimisationCfg
from src.training.loop import EVAL_BATCH_SIZE, TrainingState, fit

TARGET = 1.05
SEED = 42
MODELS: dict[str, ModelFactory] = {
    "fcn": FcnFactory(),  # the default model: 2352-2352-10
    "fcn512": FcnFactory(hidden_dim=512),
    "cnn": SimpleCNNFactory(),
}


@dataclass(frozen=True)
class Epoch:
    seconds: float
    val_acc: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs per model (default: 5)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--mixed-precision", action="store_true", help="bfloat16 autocast in both loops")
    parser.add_argument("--threads", type=int, help="PyTorch's CPU threads (default: one per core)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HYDRA_EXAMPLE_DATA", REPO / "data")))
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    opt = OptimisationCfg(epochs=1, mixed_precision=args.mixed_precision)
    data = CMNISTDataModule(root=args.data, download=False).build(seed=SEED)
    print(f"Device: {device_name(device)}; PyTorch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"One epoch: {len(data.train)} training and {len(data.val)} validation images ({data.source} digits),")
    print(f"batch {opt.batch_size}, optimiser {describe(initial_state(MODELS[args.models[0]], data, opt, device)[1])},")
    print(f"mixed precision {'on' if opt.mixed_precision else 'off'}.")
    print(f"Times: the fastest of {args.repeats}; ratio: the median over {args.repeats} interleaved pairs.\n")

    rows: list[list[str]] = []
    for name in args.models:
        factory = MODELS[name]
        floats = as_floats(data.train, device), as_floats(data.val, device)

        def ours(factory: ModelFactory = factory) -> Epoch:
            return project_epoch(factory, data, opt, device)

        def baseline(factory: ModelFactory = factory, floats: tuple[FloatSplit, FloatSplit] = floats) -> Epoch:
            return baseline_epoch(factory, data, floats, opt, device)

        interleaved(ours, baseline, 1)  # warm-up, not counted
        pairs = interleaved(ours, baseline, args.repeats)
        ratio = median_ratio([(a.seconds, b.seconds) for a, b in pairs])
        rows.append(
            [
                name,
                f"{min(a.seconds for a, _ in pairs):.2f} s",
                f"{min(b.seconds for _, b in pairs):.2f} s",
                f"{ratio:.3f}",
                f"<= {TARGET}",
                verdict(ratio <= TARGET),
                f"{pairs[0][0].val_acc:.4f} / {pairs[0][1].val_acc:.4f}",
            ]
        )
    print_table(["model", "fit()", "minimal loop", "ratio", "target", "result", "val/acc fit / loop"], rows)
    sys.exit(0 if all(row[5] == "PASS" for row in rows) else 1)


@dataclass(frozen=True)
class FloatSplit:
    """A split as a hand-written loop holds it: float32 images in [0, 1] and labels, on the device."""

    images: Tensor
    labels: Tensor


def as_floats(split: Split, device: torch.device) -> FloatSplit:
    split = split.to(device)
    return FloatSplit(images=split.batch(slice(None)), labels=split.labels)


def initial_state(
    factory: ModelFactory, data: Data, opt: OptimisationCfg, device: torch.device
) -> tuple[nn.Module, Optimizer, torch.Generator]:
    """The same initial weights, optimiser and batch order for both loops, as `run()` makes them."""
    torch.manual_seed(SEED)  # pyright: ignore[reportUnknownMemberType]
    model = factory.build(data.input_shape, out_dim=data.num_classes).to(device)
    return model, opt.build(model.parameters()), torch.Generator().manual_seed(SEED)


def project_epoch(factory: ModelFactory, data: Data, opt: OptimisationCfg, device: torch.device) -> Epoch:
    model, optimizer, generator = initial_state(factory, data, opt, device)
    state = TrainingState(model=model, optimizer=optimizer, generator=generator)
    start = time.perf_counter()
    fit(state, data, opt=opt, on_epoch_end=lambda _state: None, stop_requested=lambda: False)
    synchronize(device)
    return Epoch(time.perf_counter() - start, state.history[-1]["val/acc"])


def baseline_epoch(
    factory: ModelFactory, data: Data, floats: tuple[FloatSplit, FloatSplit], opt: OptimisationCfg, device: torch.device
) -> Epoch:
    """The minimal loop: index a batch, forward, backward, step; then the validation loss and accuracy."""
    train, val = floats
    model, optimizer, generator = initial_state(factory, data, opt, device)
    start = time.perf_counter()
    model.train()
    order = torch.randperm(len(train.labels), generator=generator).to(device)
    for i in range(0, len(order), opt.batch_size):
        batch = order[i : i + opt.batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt.mixed_precision):
            loss = F.cross_entropy(model(train.images[batch]), train.labels[batch])
        optimizer.zero_grad()
        loss.backward()  # pyright: ignore[reportUnknownMemberType]
        optimizer.step()  # pyright: ignore[reportUnknownMemberType]
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.inference_mode():
        for i in range(0, len(val.labels), EVAL_BATCH_SIZE):
            logits = model(val.images[i : i + EVAL_BATCH_SIZE])
            loss_sum += F.cross_entropy(logits, val.labels[i : i + EVAL_BATCH_SIZE], reduction="sum")
            correct += (logits.argmax(dim=1) == val.labels[i : i + EVAL_BATCH_SIZE]).sum()
    val_acc, _val_loss = correct.item() / len(val.labels), loss_sum.item() / len(val.labels)
    synchronize(device)
    return Epoch(time.perf_counter() - start, val_acc)


def describe(optimizer: Optimizer) -> str:
    """The optimiser's class and implementation, e.g. `AdamW (fused)`."""
    group = optimizer.param_groups[0]
    implementation = "fused" if group.get("fused") else "foreach" if group.get("foreach") else "PyTorch's default"
    return f"{type(optimizer).__name__} ({implementation})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return machine()


if __name__ == "__main__":
    main()
