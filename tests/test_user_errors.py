"""Plausible mistakes of a new user: each is one line ``spikeguide: error: ...`` and exit code 2,
also under ``--nproc 2``.

``config`` cases are found when the recipe is read (under ``--nproc`` before torchrun starts);
``run`` cases inside the training processes, whose launcher turns a worker's error into that one
line. The other commands' cases run in one process.
"""

import pytest
import torch

from conftest import tiny_config, write_recipe
from spikeguide.cli import main


class Context:
    def __init__(self, tmp_path, finished):
        self.tmp = tmp_path
        self.recipe = str(write_recipe(tmp_path / "r.toml", tiny_config(tmp_path)))
        self.finished_recipe, self.finished_dir = finished

    def train(self, *argv):
        return ["train", self.recipe, *argv]

    def retrain(self, *argv):  # the finished run's own recipe
        return ["train", self.finished_recipe, *argv]


def not_a_dataset(ctx):
    (ctx.tmp / "layout" / "images").mkdir(parents=True)
    return ctx.train("--set", 'data.name="imagefolder"', "--set", "data.options={}", "--set",
                     f'data.root="{ctx.tmp / "layout"}"')


def bad_toml(ctx):
    (ctx.tmp / "bad.toml").write_text("[model\nname = 1")
    return ["train", str(ctx.tmp / "bad.toml")]


def corrupt_checkpoint(ctx):
    (ctx.tmp / "latest.pt").write_bytes(b"not a checkpoint")
    return ["eval", str(ctx.tmp / "latest.pt")]


# name: (argv from the context, what the line says, where it is found)
CASES = {
    "missing data folder": (lambda c: c.train("--set", 'data.name="cifar10"', "--set",
                                              "data.options={}", "--set",
                                              f'data.root="{c.tmp / "nowhere"}"'),
                            "no data found at data.root", "run"),
    "relative data folder": (lambda c: c.train("--set", 'data.name="cifar10"', "--set",
                                               "data.options={}", "--set", 'data.root="nowhere"'),
                             "data.root 'nowhere' (relative to the working directory", "run"),
    "wrong dataset layout": (not_a_dataset, "layout", "run"),
    "config typo": (lambda c: c.train("--set", "train.epoch=3"), "did you mean 'train.epochs'",
                    "config"),
    "T = 0": (lambda c: c.train("--set", "model.T=0"), "model.T must be >= 1", "config"),
    "negative batch size": (lambda c: c.train("--set", "data.batch_size=-8"),
                            "data.batch_size must be >= 1", "config"),
    "unknown model": (lambda c: c.train("--set", 'model.name="resnet2O"'), "unknown model",
                      "config"),
    "no such recipe": (lambda c: ["train", str(c.tmp / "nope.toml")], "does not exist", "config"),
    "recipe is not TOML": (bad_toml, "is not valid TOML", "config"),
    "--set without =": (lambda c: c.train("--set", "train.epochs"), "--set expects key=value",
                        "config"),
    "unknown method": (lambda c: c.train("--set", 'method.name="enfo"'), "did you mean 'enof'",
                       "config"),
    "unknown neuron": (lambda c: c.train("--set", 'neuron.kind="lf"'), "did you mean 'lif'",
                       "config"),
    "unknown surrogate": (lambda c: c.train("--set", 'surrogate.name="atn"'),
                          "did you mean 'atan'", "config"),
    "unknown optimizer": (lambda c: c.train("--set", 'optim.name="adam"'),
                          "optim.name must be one of", "config"),
    "zero learning rate": (lambda c: c.train("--set", "optim.lr=0"), "optim.lr must be positive",
                           "config"),
    "text for a number": (lambda c: c.train("--set", 'train.epochs="three"'),
                          "'train.epochs' must be int", "config"),
    "share above 1": (lambda c: c.train("--set", "data.ram_share=2"),
                      "data.ram_share must be in (0, 1]", "config"),
    "unknown dataset": (lambda c: c.train("--set", 'data.name="cifar"'), "did you mean 'cifar10'",
                        "config"),
    "unknown method option": (lambda c: c.train("--set", "method.tau=4"),
                              "unknown config key 'method.tau'", "config"),
    "neuron field as option": (lambda c: c.train("--set", "neuron.options.decay=0.5"),
                               "set it as neuron.decay", "config"),
    "unknown augment policy": (lambda c: c.train("--set", 'data.augment.policy="foo"'),
                               "unknown policy 'foo'", "config"),
    "empty subset": (lambda c: c.train("--set", "data.train_subset=0"),
                     "data.train_subset must be >= 1", "config"),
    "scalar for a list": (lambda c: c.train("--set", "optim.betas=1"),
                          "'optim.betas' must be a list", "config"),
    "batch not divisible by processes": (lambda c: c.train("--nproc", "3"),
                                         "must be divisible by the 3 processes", "config"),
    "no processes": (lambda c: c.train("--nproc", "0"), "--nproc must be >= 1", "config"),
    "allow-changes without resume": (lambda c: c.train("--allow-changes", "train.epochs"),
                                     "applies to --resume only", "config"),
    "unknown dataset option": (lambda c: c.train("--set", "data.options.colour=1"),
                               "has no option 'colour'", "run"),
    "unknown model option": (lambda c: c.train("--set", 'model.options.stem="x"'),
                             "has no option(s) ['stem']", "run"),
    "fp16 on CPU": (lambda c: c.train("--set", 'train.amp="fp16"'), "needs CUDA", "run"),
    "nothing to resume": (lambda c: c.train("--resume"), "nothing to resume", "run"),
    "run exists": (lambda c: c.retrain(), "already holds a run", "run"),
    "resume with another config": (lambda c: c.retrain("--resume", "--set", "model.T=6"),
                                   "differs in model.T", "run"),
    "method without teacher": (lambda c: c.train("--set", 'method.name="kd"'),
                               "needs a teacher", "run"),
    "teacher is not there": (lambda c: c.train("--set", 'method.name="kd"', "--set",
                                               f'teacher.checkpoint="{c.tmp / "gone"}"'),
                             "teacher.checkpoint '", "run"),
    "a spiking teacher": (lambda c: c.train("--set", 'method.name="kd"', "--set",
                                            f'teacher.checkpoint="{c.finished_dir}"'),
                          "is a spiking model", "run"),
    "missing teacher recipe": (lambda c: c.train("--set", 'method.name="kd"', "--set",
                                                 'teacher.recipe="nowhere.toml"'),
                               "teacher.recipe 'nowhere.toml' does not exist", "run"),
    "teacher.set typo": (lambda c: c.train("--set", 'method.name="kd"', "--set",
                                           f'teacher.recipe="{c.finished_recipe}"', "--set",
                                           "teacher.set.train.epoch=1"),
                         "with teacher.set: unknown config key 'train.epoch'", "run"),
    "eval override of training": (lambda c: ["eval", str(c.finished_dir), "--set",
                                             "train.epochs=3"], "cannot apply --set train.epochs",
                                  "other"),
    "eval of a corrupt checkpoint": (corrupt_checkpoint, "latest.pt", "other"),
    "eval of nothing": (lambda c: ["eval", str(c.tmp / "nowhere")], "does not exist", "other"),
    "export format": (lambda c: ["export", str(c.finished_dir), "--out", str(c.tmp / "m.onnx"),
                                 "--format", "onnx"], "unknown export format 'onnx'", "other"),
    "report of a folder without a run": (lambda c: ["report", str(c.tmp)], "no metrics.jsonl",
                                         "other"),
}
CUDA_ONLY_ERRORS = {"fp16 on CPU"}
OWN_NPROC = {"batch not divisible by processes", "no processes"}
# under --nproc 2 a "run" case starts torchrun: these few run in the default suite, the rest
# with -m slow
NPROC_DEFAULT = {"missing data folder", "resume with another config"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from spikeguide.config import load_config
    from spikeguide.training.run import train

    tmp = tmp_path_factory.mktemp("finished")
    recipe = write_recipe(tmp / "done.toml", tiny_config(tmp, name="done", train={"epochs": 1}))
    train(load_config(recipe))
    return str(recipe), tmp / "runs" / "done"


def check_one_line(capsys, argv, says):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert err.startswith("spikeguide: error: ") and len(err.strip().splitlines()) == 1, err
    assert says in err, err


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_and_exit_code_2(tmp_path, capsys, finished, case):
    if case in CUDA_ONLY_ERRORS and torch.cuda.is_available():
        pytest.skip("not a mistake where CUDA is available")
    argv, says, _ = CASES[case]
    check_one_line(capsys, argv(Context(tmp_path, finished)), says)


def nproc_params():
    for case, (_, _, where) in CASES.items():
        if where == "other" or case in OWN_NPROC:
            continue
        marks = [pytest.mark.slow] if where == "run" and case not in NPROC_DEFAULT else []
        yield pytest.param(case, marks=marks, id=case)


@pytest.mark.parametrize("case", list(nproc_params()))
def test_a_mistake_is_one_line_and_exit_code_2_under_two_processes(tmp_path, capsys, finished,
                                                                   case):
    if case in CUDA_ONLY_ERRORS and torch.cuda.is_available():
        pytest.skip("not a mistake where CUDA is available")
    argv, says, _ = CASES[case]
    check_one_line(capsys, [*argv(Context(tmp_path, finished)), "--nproc", "2"], says)
