"""``python -m weightgraft.demo`` (``make demo``): PyTorch weights into a Keras 3 twin, proven.

The story weightgraft exists for, in one run:

1. build a small CNN in PyTorch from a fixed seed (conv, batch norm, strided conv, a Linear
   after a flatten) and save its state dict with ``torch.save``;
2. build its Keras 3 twin, named differently, channels-last, and transplant the ``.pt`` file
   into it with no mapping: ``weightgraft.transplant`` matches the layers, transposes the
   kernels and permutes the Linear's rows for Keras's (H, W, C) flatten order, and writes a
   ``.weights.h5`` with a provenance record beside it;
3. verify: run both models on the same seeded random input, layer by layer;
4. print the transplant report, the verification, and the provenance of one tensor;
5. load the written file into a fresh Keras model with Keras's own ``load_weights`` and
   compare its predictions with PyTorch's.

The files stay in ``out/demo`` (``--out DIR`` to change) so that ``graft inspect`` and
``graft explain`` can be tried on them. ``--formats`` runs the format tour instead: the same
CNN written in every format weightgraft writes, each inspected.

Example:
    >>> from weightgraft.demo import main     # doctest: +SKIP
    >>> main(["--out", "/tmp/demo"])          # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .formats import formats, write_checkpoint

if TYPE_CHECKING:
    from rich.console import Console

SEED = 0
INPUT_HW = 8  # the demo CNN takes 8x8 RGB images


def torch_cnn(seed: int = SEED) -> Any:
    """The demo network in PyTorch, in eval mode, batch-norm statistics set from the seed."""
    from .frameworks import import_torch

    torch = import_torch("the demo")
    nn = torch.nn
    torch.manual_seed(seed)

    class CNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
            self.classifier = nn.Linear(16 * (INPUT_HW // 2) ** 2, 10)

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.classifier(torch.flatten(self.features(x), 1))

    model = CNN()
    bn = model.features[1]
    with torch.no_grad():  # trained-looking statistics, so that a lost BN would show
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


def keras_twin() -> Any:
    """The same network in Keras 3: channels-last, its own layer names, PyTorch's epsilon,
    and PyTorch's symmetric padding for the strided conv (Keras 'same' would pad 0/1)."""
    from .frameworks import import_keras

    keras = import_keras("the demo")
    L = keras.layers
    return keras.Sequential([
        keras.Input((INPUT_HW, INPUT_HW, 3)),
        L.Conv2D(8, 3, padding="same", name="conv1"),
        L.BatchNormalization(epsilon=1e-5, name="bn1"), L.ReLU(name="relu1"),
        L.ZeroPadding2D(1, name="pad2"), L.Conv2D(16, 3, strides=2, name="conv2"),
        L.ReLU(name="relu2"), L.Flatten(name="flatten"), L.Dense(10, name="classifier"),
    ], name="demo_cnn")


def transplant_story(folder: Path, out: Console) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; returns the headline numbers."""
    from rich.rule import Rule

    from . import transplant, verify, view
    from .frameworks import import_torch
    from .report.transplant_view import report_summary, report_table
    from .report.verify_view import render_verify

    torch = import_torch("the demo")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "demo_cnn.pt"
    target_file = folder / "demo_cnn_keras.weights.h5"

    tmodel = torch_cnn()
    torch.save(tmodel.state_dict(), source)
    out.print(f"1. PyTorch {torch.__version__}: built the demo CNN (seed {SEED}) and saved "
              f"[bold]{source}[/]")

    kmodel = keras_twin()
    out.print("2. Keras 3: built its channels-last twin (conv1, bn1, conv2, classifier) and "
              "transplanted the .pt file into it, no mapping given:\n")
    report = transplant(source, kmodel, output=target_file)
    out.print(report_table(report))
    for line in report_summary(report):
        out.print("   " + line)

    out.print()
    out.print(Rule("3. verify: both models on the same seeded input, layer by layer",
                   align="left"))
    result = verify(view(tmodel, input_shape=(3, INPUT_HW, INPUT_HW)), kmodel, seed=SEED)
    out.print(render_verify(result))

    key = next(s.key for s in report.slots if s.key.startswith("classifier") and
               len(s.shape) == 2)
    record = json.loads(Path(report.provenance_path or "").read_text())
    out.print()
    out.print(Rule(f"4. provenance of {key} (from {Path(report.provenance_path or '').name})",
                   align="left"))
    out.print_json(data={"source": record["sources"][0], "tensor": record["tensors"][key]})

    out.print()
    out.print(Rule("5. the written file in a fresh Keras model (model.load_weights)",
                   align="left"))
    fresh = keras_twin()
    fresh.load_weights(target_file)
    x = np.random.default_rng(SEED + 1).standard_normal(
        (16, 3, INPUT_HW, INPUT_HW)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    got = np.asarray(fresh.predict(x.transpose(0, 2, 3, 1), verbose=0))
    diff = float(np.abs(got - expected).max())
    agree = int((got.argmax(1) == expected.argmax(1)).sum())
    out.print(f"   16 new random images: max |keras - pytorch| = {diff:.2e}; "
              f"predicted class agrees on {agree}/16")
    return {"verify_passed": result.passed, "outputs_max_abs": result.outputs_max_abs,
            "reload_max_abs": diff, "classes_agree": agree,
            "converted": report.totals["converted"], "copied": report.totals["copied"]}


# -- the format tour (``--formats``) ------------------------------------------------------

def write_all(folder: Path) -> list[tuple[Path, str]]:
    """Write the demo CNN in every writable format; returns (file, how it was written)."""
    from .frameworks import import_keras, import_torch

    torch = import_torch("the demo")
    ck = view(torch_cnn(), input_shape=(3, INPUT_HW, INPUT_HW)).as_checkpoint()
    built_by = f"PyTorch {torch.__version__}"
    written: list[tuple[Path, str]] = []
    for name, suffix in (("safetensors", ".safetensors"), ("numpy", ".npz"),
                         ("pytorch", ".pt")):
        if not any(m.NAME == name and hasattr(m, "write") for m in formats()):
            continue
        path = folder / f"demo_cnn{suffix}"
        write_checkpoint(ck, path, metadata={"demo": "weightgraft"} if suffix != ".pt" else None)
        written.append((path, f"weightgraft writer, weights from {built_by}"))
    keras = import_keras("the demo")
    keras_path = folder / "demo_cnn.weights.h5"
    keras_twin().save_weights(keras_path)
    written.append((keras_path, f"Keras {keras.__version__} ({keras.backend.backend()} "
                                "backend), model.save_weights"))
    return written


def view(model: Any, **options: Any) -> Any:
    from .modelview import view as make_view

    return make_view(model, **options)


def format_tour(folder: Path, out: Console) -> None:
    from rich.rule import Rule

    from .inspection import inspect
    from .report.inspect_view import render

    folder.mkdir(parents=True, exist_ok=True)
    files = write_all(folder)
    out.print(f"[bold]weightgraft format tour[/]: one small CNN written as {len(files)} files, "
              "each inspected without loading its tensors.\n")
    for path, how in files:
        out.print(Rule(f"[bold]{path}[/]  [dim]{how}[/]", align="left"))
        render(inspect(path), out)
        out.print()


def main(argv: list[str] | None = None, console: Console | None = None) -> int:
    """Run the demo; returns 0 when the transplant verified, 1 otherwise."""
    from .cli.common import console as make_console

    parser = argparse.ArgumentParser(prog="python -m weightgraft.demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="folder for the files the demo writes (default out/demo)")
    parser.add_argument("--formats", action="store_true",
                        help="write the CNN in every format and inspect each instead")
    args = parser.parse_args(argv)
    out = console or make_console()
    if args.formats:
        format_tour(args.out, out)
        return 0
    out.print("[bold]weightgraft demo[/]: PyTorch weights into a Keras 3 model with no "
              "hand-written mapping, then proof.\n")
    numbers = transplant_story(args.out, out)
    ok = numbers["verify_passed"] and numbers["reload_max_abs"] < 1e-5
    out.print()
    out.print(("[bold green]OK[/]" if ok else "[bold red]FAILED[/]")
              + f": {numbers['converted']} tensors converted, {numbers['copied']} copied; "
              f"verify {'passed' if numbers['verify_passed'] else 'failed'} "
              f"(outputs max |diff| {numbers['outputs_max_abs']:.1e}).")
    out.print(f"Next: [bold]graft inspect {args.out}/demo_cnn.pt[/], "
              f"[bold]graft explain {args.out}/demo_cnn_keras.weights.h5[/], "
              "[bold]python -m weightgraft.demo --formats[/].")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
