"""Run configuration: dataclasses read from TOML recipes, validated with one-line errors.

A recipe is a TOML file whose tables mirror :class:`Config`. ``--set key=value`` overrides any
field (``--set train.epochs=3 --set method.tau=4``); an empty value unsets a field
(``--set teacher.recipe=``). An unknown key or a value of the wrong type
is a :class:`SpikeguideError` that names the key. The ``[method]`` table holds ``name`` plus the
options of that method, validated against the method's own ``Options`` dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import DATASETS, LOADERS, Augment
from .errors import SpikeguideError
from .methods import METHODS
from .models import MODELS
from .neurons import Surrogate, get_surrogate, neuron_factory, neuron_options
from .neurons.fuse_bn import check_fuse_bn
from .training.budget import check_budget
from .training.compile import COMPILE_MODES
from .training.cudagraph import CUDA_GRAPH
from .training.distributed import AMP_DTYPES
from .training.nonfinite import POLICIES
from .training.optim import OPTIMIZERS, SCHEDULES, WEIGHT_DECAY_ON

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ModelConfig:
    name: str = "resnet20"
    T: int = 4  # time steps for static input; event data brings T frames (data.options.frames)
    width: float = 1.0  # multiplies every channel count
    repact: bool = False  # EnOF's RepAct: the last spiking activation becomes ReLU
    options: dict = field(default_factory=dict)  # model-specific, e.g. {stem = "cifar"}


@dataclass
class NeuronConfig:
    kind: str = "lif"  # a registered neuron: lif | if | plif, or your own (docs/extending.md)
    # Constructor arguments of the LIF family. None: the neuron's default, filled in when the
    # config is read, so that the resolved config says what ran; a neuron that does not take
    # one leaves it unset.
    decay: float | None = None  # lif/plif: 0.5; if: 1
    threshold: float | None = None  # 1.0
    reset: str | None = None  # the neuron's own choices; LIF family: "hard" (default) | "soft"
    detach_reset: bool | None = None  # False
    backend: str | None = None  # auto | torch | fused | compiled | triton (see docs/speed.md)
    fuse_bn: str | bool = "auto"  # a batch norm before a neuron runs fused with it: auto | true | false
    options: dict = field(default_factory=dict)  # any other argument of the neuron's constructor

    def arguments(self) -> dict[str, Any]:
        """The neuron constructor's keyword arguments: the fields that are set, and the options."""
        named = {key: getattr(self, key) for key in NEURON_FIELDS if getattr(self, key) is not None}
        return {**named, **self.options}


NEURON_FIELDS = ("decay", "threshold", "reset", "detach_reset", "backend")


@dataclass
class SurrogateConfig:
    name: str = "atan"  # rectangle | triangle | sigmoid | atan | fast_sigmoid
    width: float | None = None  # None: the surrogate's default


@dataclass
class AugmentConfig:
    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    policy: str | None = None  # autoaugment | trivialaugment
    roll: int = 0  # event frames: random spatial roll in pixels
    # ImageNet's crop: a window of crop_scale of the area and crop_ratio aspect, resized to
    # data.options.crop; per sample in the streaming loader's workers, with the flip
    random_resized_crop: bool = False
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])


@dataclass
class DataConfig:
    name: str = "digits"
    root: str | None = None
    options: dict = field(default_factory=dict)  # passed to the dataset builder
    # auto | memory | stream; auto keeps the decoded splits in memory while they fit within
    # ram_share of the RAM (all processes on the machine) and gpu_share of the GPU's memory
    loader: str = "auto"
    ram_share: float = 0.5
    gpu_share: float = 0.25
    train_subset: int | None = None  # class-balanced subset of the training split
    test_subset: int | None = None
    # held out of the training split (class-balanced, seeded by val_seed) to choose settings on:
    # scored every epoch, and the test split only at the end (train.test_every_epoch: every epoch)
    val_split: int | None = None
    val_seed: int = 0
    batch_size: int = 64
    eval_batch_size: int = 256
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    # all: every parameter; weights: the weights of convolutions and linear layers only (none on
    # batch norm, biases or neuron parameters), as the rate-BP paper's official code
    weight_decay_on: str = "all"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"  # cosine | constant; stepped every iteration
    warmup_epochs: float = 0.0  # linear warm-up from 0
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    label_smoothing: float = 0.0
    amp: str = "none"  # none | bf16 | fp16 (fp16 on CUDA only)
    grad_clip: float | None = None  # max gradient norm
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch; 0: per epoch only
    sync_batchnorm: bool = False  # with several processes: BN statistics over the global batch
    channels_last: bool = False  # NHWC image activations (faster convolutions; docs/speed.md)
    progress: bool = True  # progress bars (only shown on a terminal)
    # read the loss, accuracy and finite-loss check off the device every N steps (docs/speed.md)
    log_every: int = 50
    # capture the training step as a CUDA graph: auto | true | false (docs/speed.md; not yet
    # run on a GPU, hence off by default)
    cuda_graph: str = "false"
    threads: int = 0  # torch threads; 0: the CPUs free to this process (training/threads.py)
    compile: str = "none"  # none | default | max-autotune | reduce-overhead (torch.compile's modes)
    # a non-finite loss: stop | skip | rollback (training/nonfinite.py); rollback returns to the
    # last checkpoint with the learning rate times rollback_lr_factor, at most max_rollbacks times
    on_nonfinite: str = "stop"
    rollback_lr_factor: float = 0.5
    max_rollbacks: int = 3
    # "8m", "2h", "90s" or seconds: the first steps are timed and the epochs (at most
    # train.epochs) chosen so that the schedule ends within it (training/budget.py)
    time_budget: str | float | None = None
    test_every_epoch: bool = False  # with data.val_split: score the test split every epoch too


@dataclass
class TeacherConfig:
    checkpoint: str | None = None  # an ANN checkpoint or run directory
    recipe: str | None = None  # the teacher's recipe, trained first when no checkpoint exists
    init_student: bool = False  # initialize the SNN with the teacher's weights
    # with train.time_budget: the share of it the teacher recipe trains in (the student the rest)
    budget_share: float | None = None
    # overrides of the teacher recipe, as --set takes them: teacher.set.train.epochs=1
    set: dict = field(default_factory=dict)


@dataclass
class MethodConfig:
    name: str = "bptt"
    options: Any = None  # the method's Options dataclass instance


@dataclass
class Config:
    name: str = "run"
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    reference: dict = field(default_factory=dict)  # published results this recipe targets

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the value (ints widened to float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except SpikeguideError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SpikeguideError(f"config key {key!r} must be a table, got {value!r}")
        return from_dict(tp, value, key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise SpikeguideError(f"config key {key!r} must be a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict):
            raise SpikeguideError(f"config key {key!r} must be a table, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Any or (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise SpikeguideError(
        f"config key {key!r} must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
    )


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types name the key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in hints:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {(prefix + '.' if prefix else '') + close[0]!r}?)" if close else ""
            raise SpikeguideError(f"unknown config key {full!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def _parse_method(raw: Any) -> MethodConfig:
    if not isinstance(raw, dict):
        raise SpikeguideError(f"config key 'method' must be a table, got {raw!r}")
    raw = dict(raw)
    name = _coerce(raw.pop("name", MethodConfig.name), str, "method.name")
    options_cls = METHODS.get(name).Options
    return MethodConfig(name, from_dict(options_cls, raw, "method"))


def parse_config(data: dict) -> Config:
    data = dict(data)
    method = _parse_method(data.pop("method", {}))
    cfg = from_dict(Config, data)
    cfg.method = method
    validate(cfg)
    return cfg


def parse_value(text: str) -> Any:
    """A ``--set`` value: any TOML value (``3``, ``0.1``, ``true``, ``[1, 2]``, ``"s"``), or the
    bare text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merge(*tables: dict) -> dict:
    """Nested tables merged left to right: later values win, sub-tables merge key by key."""
    out: dict = {}
    for table in tables:
        for key, value in table.items():
            out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides (dotted keys) to a raw recipe dict, in place."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SpikeguideError(f"--set expects key=value, got {item!r}")
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpikeguideError(f"--set {key}: {part!r} is not a table")
        if text.strip():
            node[leaf] = parse_value(text.strip())
        else:  # key= unsets the field: its default applies
            node.pop(leaf, None)
    return data


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SpikeguideError(f"recipe {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpikeguideError(f"recipe {str(path)!r} is not valid TOML: {e}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a recipe (or start from the defaults) and apply ``key=value`` overrides."""
    data = read_toml(path) if path is not None else {}
    return parse_config(apply_overrides(data, list(overrides or [])))


def to_dict(cfg: Config) -> dict:
    """The config as plain data (None fields dropped, as TOML has no null)."""

    def clean(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: clean(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                    if getattr(obj, f.name) is not None}
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if v is not None}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    data = clean(cfg)
    method = data.pop("method")
    data["method"] = {"name": method["name"], **method.get("options", {})}
    return data


def dump_toml(cfg: Config) -> str:
    import tomli_w

    return tomli_w.dumps(to_dict(cfg))


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

CHOICES = {
    "optim.name": tuple(OPTIMIZERS),
    "optim.schedule": SCHEDULES,
    "optim.weight_decay_on": WEIGHT_DECAY_ON,
    "data.loader": LOADERS,
    "train.amp": tuple(AMP_DTYPES),
    "train.cuda_graph": CUDA_GRAPH,
    "train.compile": COMPILE_MODES,
    "train.on_nonfinite": POLICIES,
}


def _get(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config) -> None:
    """Value checks beyond types; each failure is one line naming the key. Fills the unset
    ``[neuron]`` fields with the neuron's defaults."""
    for key, choices in CHOICES.items():
        if _get(cfg, key) not in choices:
            raise SpikeguideError(f"{key} must be one of {choices}, got {_get(cfg, key)!r}")
    for key, low in [("model.T", 1), ("train.epochs", 1), ("data.batch_size", 1),
                     ("data.eval_batch_size", 1), ("train.checkpoint_every", 0),
                     ("train.threads", 0), ("train.log_every", 1), ("train.max_rollbacks", 0)]:
        if _get(cfg, key) < low:
            raise SpikeguideError(f"{key} must be >= {low}, got {_get(cfg, key)}")
    for key in ("optim.lr", "model.width"):
        if not _get(cfg, key) > 0:
            raise SpikeguideError(f"{key} must be positive, got {_get(cfg, key)}")
    for key in ("data.ram_share", "data.gpu_share", "train.rollback_lr_factor"):
        if not 0 < _get(cfg, key) <= 1:
            raise SpikeguideError(f"{key} must be in (0, 1], got {_get(cfg, key)}")
    for key in ("data.train_subset", "data.test_subset", "data.val_split"):
        if _get(cfg, key) is not None and _get(cfg, key) < 1:
            raise SpikeguideError(f"{key} must be >= 1, got {_get(cfg, key)}")
    check_budget(cfg)
    MODELS.get(cfg.model.name)
    resolve_neuron(cfg.neuron, get_surrogate(cfg.surrogate.name, cfg.surrogate.width))
    cfg.neuron.fuse_bn = check_fuse_bn(cfg.neuron.fuse_bn)
    DATASETS.get(cfg.data.name)
    Augment(**dataclasses.asdict(cfg.data.augment))  # checks the augmentation's values


def resolve_neuron(n: NeuronConfig, surrogate: Surrogate) -> None:
    """Fill the unset fields of ``[neuron]`` with the neuron's defaults and let the neuron's own
    constructor check the values; an option it does not take is a one-line error."""
    clash = sorted(set(n.options) & {f.name for f in dataclasses.fields(NeuronConfig)})
    if clash:
        raise SpikeguideError(f"neuron.options.{clash[0]}: set it as neuron.{clash[0]}")
    defaults = neuron_options(n.kind)
    for key in NEURON_FIELDS:
        default = defaults.get(key, inspect.Parameter.empty)
        if getattr(n, key) is None and default is not inspect.Parameter.empty:
            setattr(n, key, default)
    neuron_factory(n.kind, n.arguments(), surrogate)()
