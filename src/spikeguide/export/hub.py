"""A trained run as a Hugging Face Hub-style model folder, and back.

The folder holds what the Hub's model repositories hold, readable without the training run:

* ``model.safetensors``: the model's weights (``safetensors``; ``pip install spikeguide[hub]``);
* ``config.toml``: the run's resolved config (its recipe), and ``spikeguide.json``: what
  rebuilding the model needs beyond it (classes, input channels and shape, whether it spikes);
* ``README.md``: a model card with the recipe, the test accuracy and the firing rate.

Pushing it is the Hub's own tooling (``huggingface-cli upload REPO FOLDER``); nothing here uses
the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Config, dump_toml, parse_config, read_toml
from ..errors import SpikeguideError
from ..models import SpikingNet, checked_weights
from ..training.build import build_model, load_model
from ..training.checkpoint import find_checkpoint
from ..training.runlog import read_metrics

WEIGHTS, CONFIG, META, CARD = "model.safetensors", "config.toml", "spikeguide.json", "README.md"


def safetensors_torch():
    try:
        import safetensors.torch
    except ImportError:
        raise SpikeguideError("the hub folder format needs safetensors: pip install "
                              "'spikeguide[hub]' (or safetensors)") from None
    return safetensors.torch


def is_hub_folder(path: str | Path) -> bool:
    return (Path(path) / WEIGHTS).is_file() and (Path(path) / META).is_file()


def save_hub_folder(run: str | Path, out: str | Path, prefer: str = "best") -> Path:
    """Write the model of the run directory or checkpoint ``run`` to the folder ``out``."""
    model, cfg, ckpt = load_model(str(run), prefer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    safetensors_torch().save_file(weights, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / CONFIG).write_text(dump_toml(cfg))
    meta = {key: ckpt["data"][key] for key in ("num_classes", "in_channels", "frame_shape")
            if key in ckpt["data"]}
    meta.update(spiking=model.spiking, epoch=ckpt["epoch"], library="spikeguide")
    (out / META).write_text(json.dumps(meta, indent=1) + "\n")
    run_dir = find_checkpoint(run, prefer).parent
    (out / CARD).write_text(model_card(cfg, model, meta, read_metrics(run_dir)))
    return out


def model_card(cfg: Config, model: SpikingNet, meta: dict[str, Any], records: list) -> str:
    kind = f"spiking, T = {cfg.model.T}" if model.spiking else "ANN"
    tag = "spiking-neural-network" if model.spiking else "ann"
    lines = ["---", "library_name: spikeguide", "tags:", f"- {tag}", f"- {cfg.method.name}",
             "---", "", f"# {cfg.name}", "",
             f"A {cfg.model.name} (width {cfg.model.width:g}, {kind}) trained with spikeguide's "
             f"`{cfg.method.name}` method on `{cfg.data.name}` ({meta.get('num_classes')} "
             f"classes, input {meta.get('frame_shape')}).", ""]
    if records:
        best = max(records, key=lambda r: r.test.top1)
        last = records[-1]
        rate = "-" if last.test.firing_rate is None else f"{last.test.firing_rate:.4f}"
        lines += ["| test top-1 (last epoch) | test top-1 (best) | mean firing rate | epochs |",
                  "|---|---|---|---|",
                  f"| {last.test.top1:.2f} % | {best.test.top1:.2f} % (epoch {best.epoch}) | "
                  f"{rate} | {last.epoch} |", "",
                  "Measured by the training run on its test split (`metrics.jsonl`).", ""]
    else:
        lines += ["No finished epoch was logged: accuracy not measured.", ""]
    lines += ["## Use", "", "```python", "import spikeguide", "",
              "model, config = spikeguide.load_run(\"THIS_FOLDER\")", "```", "",
              "## Recipe", "", "```toml", dump_toml(cfg).rstrip(), "```", ""]
    return "\n".join(lines)


def load_hub_folder(folder: str | Path) -> tuple[SpikingNet, Config]:
    """The model and config of a folder :func:`save_hub_folder` wrote."""
    folder = Path(folder)
    if not is_hub_folder(folder):
        raise SpikeguideError(f"{str(folder)!r} is not a spikeguide hub folder (it needs {WEIGHTS} "
                              f"and {META})")
    meta = json.loads((folder / META).read_text())
    cfg = parse_config(read_toml(folder / CONFIG))
    model = build_model(cfg, meta["num_classes"], meta["in_channels"], meta["spiking"])
    weights = safetensors_torch().load_file(str(folder / WEIGHTS))
    model.load_state_dict(checked_weights(model, weights, str(folder / WEIGHTS)))
    return model.eval(), cfg
