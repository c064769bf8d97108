"""Writing a transplanted model to files native to its framework, with its provenance.

- ``.weights.h5`` / ``.keras`` (Keras target): written by Keras itself (``save_weights`` /
  ``save``), so ``model.load_weights`` accepts it;
- ``.pt`` / ``.pth`` / ``.bin`` (PyTorch target): ``torch.save(model.state_dict())``, which
  ``load_state_dict(strict=True)`` accepts;
- ``.safetensors``: the slots by key, with the provenance record in ``__metadata__``;
- anything else goes through ``weightgraft.write_checkpoint`` (the format registry).

Every file is written under a temporary name in the same folder and renamed; every output but
safetensors gets ``<output>.provenance.json`` beside it.

Example:
    >>> write_output(view(model), "out.pt", record)         # doctest: +SKIP
    'out.pt.provenance.json'
"""

from __future__ import annotations

import os
from pathlib import Path

from .atomic import atomic_output
from .errors import WeightgraftError
from .modelview import ModelView
from .provenance import SAFETENSORS_KEY, ProvenanceRecord, sidecar_path


def write_output(tview: ModelView, output: str | os.PathLike[str],
                 record: ProvenanceRecord) -> str | None:
    """Write ``tview``'s current weights to ``output``; return the sidecar path (if any)."""
    path = Path(output)
    name = path.name.lower()
    if name.endswith(".safetensors"):
        _write_safetensors(tview, path, record)
        return None
    if name.endswith(".weights.h5") or name.endswith(".keras"):
        if tview.framework != "keras":
            raise WeightgraftError(f"{path.name} is a Keras file, but the target is a "
                                   f"{tview.framework} model", path=path,
                                   fix="write .pt/.pth or .safetensors for a PyTorch target")
        suffix = ".weights.h5" if name.endswith(".weights.h5") else ".keras"
        with atomic_output(path, suffix=suffix) as tmp:
            if suffix == ".keras":
                tview.model.save(str(tmp))
            else:
                tview.model.save_weights(str(tmp), overwrite=True)
    elif name.endswith((".pt", ".pth", ".bin")) and tview.framework == "torch":
        from .frameworks import import_torch

        torch = import_torch("writing a PyTorch state dict")
        with atomic_output(path, suffix=path.suffix) as tmp:
            torch.save(tview.model.state_dict(), str(tmp))
    else:
        from .formats import write_checkpoint

        write_checkpoint(tview.as_checkpoint(), path)
    side = sidecar_path(path)
    record.save(side)
    return str(side)


def _write_safetensors(tview: ModelView, path: Path, record: ProvenanceRecord) -> None:
    metadata = {SAFETENSORS_KEY: record.to_json(), "format": "pt" if tview.framework == "torch"
                else "np"}
    with atomic_output(path, suffix=".safetensors") as tmp:
        if tview.framework == "torch":
            from safetensors.torch import save_file

            state = {k: v.detach().contiguous() for k, v in tview.model.state_dict().items()}
            save_file(_untie(state), str(tmp), metadata=metadata)
        else:
            from safetensors.numpy import save_file as save_np

            save_np({k: tview.read(k) for k in tview.slots}, str(tmp), metadata=metadata)


def _untie(state: dict) -> dict:
    """safetensors refuses tensors sharing storage; tied weights get their own copy."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone() if ptr in seen else v
        if ptr != -1:
            seen.add(ptr)
    return out
