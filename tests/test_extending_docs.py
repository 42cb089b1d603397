"""docs/extending.md's Python snippets run as they stand, and what they register trains."""

import re
from pathlib import Path

import pytest

from conftest import tiny_config
from spikeguide.config import parse_config
from spikeguide.data import DATASETS
from spikeguide.methods import METHODS
from spikeguide.models import MODELS

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_the_extension_guide_snippets_run_and_train(tmp_path, monkeypatch):
    from spikeguide.training.run import train

    snippets = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(snippets) == 3
    # the other tests of the guide register the same names: this test gets registries of its own
    for registry in (METHODS, DATASETS, MODELS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    for registry, name in [(METHODS, "toy_hinge"), (DATASETS, "toy_bars"), (MODELS, "toy_net")]:
        registry._entries.pop(name, None)
    for code in snippets:
        exec(compile(code, str(PAGE), "exec"), {"__name__": "extending_snippet"})
    cfg = parse_config(tiny_config(tmp_path, model={"name": "toy_net", "width": 1.0},
                                   data={"name": "toy_bars", "options": {"size": 8},
                                         "batch_size": 32},
                                   method={"name": "toy_hinge", "margin": 0.5}))
    summary = train(cfg, max_steps=2)
    assert summary.stopped is not None and summary.stopped.step == 2
    with pytest.raises(Exception, match="method.margin must be positive"):
        parse_config(tiny_config(tmp_path, method={"name": "toy_hinge", "margin": 0}))
