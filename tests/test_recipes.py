from collections import Counter
from pathlib import Path

import pytest

from spikeguide.config import load_config, read_toml

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_recipe_parses_and_validates(path):
    load_config(path)


def test_recipes_write_distinct_run_directories():
    assert len(RECIPES) > 10
    assert not [p for p in RECIPES if "name" not in read_toml(p)], "every recipe names its run"
    run_dirs = Counter(str(load_config(p).run_dir) for p in RECIPES)
    assert not [d for d, c in run_dirs.items() if c > 1], "two recipes write the same run directory"


def test_every_teacher_recipe_exists_and_trains_the_students_ann_twin():
    root = Path(__file__).resolve().parents[1]
    for path in RECIPES:
        cfg = load_config(path)
        if cfg.teacher.recipe is None:
            continue
        teacher = load_config(root / cfg.teacher.recipe)
        assert teacher.method.name == "ann", path.name
        assert (teacher.model.name, teacher.model.width, teacher.model.options) == (
            cfg.model.name, cfg.model.width, cfg.model.options), path.name
