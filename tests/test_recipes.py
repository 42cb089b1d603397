from collections import Counter
from pathlib import Path

import pytest

from spikeguide.config import load_config, read_toml

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
RECIPES = sorted(RECIPE_DIR.rglob("*.toml"))


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


def test_fast_recipes_state_their_budget_machine_and_reference():
    fast = [p for p in RECIPES if p.parent.name == "fast"]
    students = [p for p in fast if load_config(p).method.name != "ann"]
    assert {p.stem for p in students} >= {"enof_resnet20_cifar10_t4", "enof_resnet19_cifar10_t1",
                                          "enof_resnet19_cifar10_t2", "ratebp_resnet18_cifar10_t4"}
    for path in students:
        cfg = load_config(path)
        assert cfg.train.time_budget is not None, path.name
        assert cfg.reference["designed_for"], path.name
        assert "top1" in cfg.reference and "source" in cfg.reference or "note" in cfg.reference
        if cfg.teacher.recipe is not None:
            assert cfg.teacher.budget_share is not None, path.name
    assert load_config(RECIPE_DIR / "fast" / "enof_resnet20_cifar10_t4.toml"
                       ).reference["top1"] == 94.74
    assert load_config(RECIPE_DIR / "fast" / "enof_resnet19_cifar10_t1.toml"
                       ).reference["top1"] == 95.37
