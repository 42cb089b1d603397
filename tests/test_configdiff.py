import pytest

from spikeguide.config import parse_config, to_dict
from spikeguide.errors import SpikeguideError
from spikeguide.training.configdiff import check_resume_config, config_differences


def test_differences_leave_out_how_a_run_is_executed_and_name_the_rest():
    stored = to_dict(parse_config({"train": {"epochs": 2, "progress": True, "threads": 1}}))
    cfg = parse_config({"train": {"epochs": 3, "progress": False, "threads": 4},
                        "data": {"loader": "memory"}, "optim": {"lr": 0.5}})
    assert config_differences(stored, cfg) == ["optim.lr", "train.epochs"]
    assert check_resume_config(stored, cfg, ["train.epochs", "optim.lr"]) == ["optim.lr",
                                                                             "train.epochs"]
    with pytest.raises(SpikeguideError, match=r"differs in optim.lr; .*--allow-changes optim.lr "):
        check_resume_config(stored, cfg, ["train.epochs"])
    assert check_resume_config(stored, parse_config(stored)) == []
