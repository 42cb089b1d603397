"""The generic Trainer: loop, evaluation, mixed precision, data parallelism, checkpoints, logs.

The Trainer does not know which method it runs: it calls the method (``Method.forward`` is its
``training_step``) and optimizes every trainable parameter of the method, the student's and the
method's own modules alike.

Exact resume: the data order is a function of (seed, epoch) and the augmentation randomness of
(seed, epoch, step) (a streamed random-resized-crop's of (seed, epoch, index)), so a checkpoint
that stores model, optimizer, scheduler, scaler and the position (epoch, step) continues
bit-identically on CPU, also from the middle of an epoch.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import Config, dump_toml, to_dict
from ..data import Augment, Dataset, make_loader
from ..data.loader import mix_seed
from ..errors import SpikeguideError
from ..methods import Method
from .budget import EpochCost, Plan, TimeBudget, run_seconds
from .checkpoint import FORMAT, PREVIOUS, save_checkpoint
from .compile import compile_engine
from .cudagraph import GraphedStep, use_cuda_graph
from .distributed import (
    AMP_DTYPES,
    DistInfo,
    all_reduce_sum,
    any_process,
    check_world_size,
    convert_sync_batchnorm,
    host_group,
)
from .meter import Reading, StepMeter
from .nonfinite import NonFiniteCounts, NonFiniteLoss, nonfinite_error
from .optim import build_optimizer, lr_factor
from .resume import read_resume_point
from .runlog import EpochRecord, RunLog, read_metrics
from .scoring import Scores, score_model

log = logging.getLogger("spikeguide")
# one line per epoch; the CLI shows it without -v (cli.py)
progress_log = logging.getLogger("spikeguide.progress")

@dataclass(frozen=True)
class StoppedAt:
    """Where a run stopped before its last epoch, its checkpoint written."""

    epoch: int  # the epoch in progress (0-based)
    step: int  # batches of it already trained
    signal: int | None  # the signal that stopped it; None for max_steps
    checkpoint: str


@dataclass(frozen=True)
class TrainSummary:
    """The outcome of :meth:`Trainer.fit` (and of :func:`spikeguide.train`)."""

    is_main: bool  # this process is the one that writes files (rank 0)
    best_top1: float
    last: EpochRecord | None  # the last finished epoch; None if stopped before the first ended
    stopped: StoppedAt | None = None
    run_dir: str = ""
    teacher_top1: float | None = None  # the teacher's test top-1, for runs that use a teacher


def firing_text(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.4f}"


class Trainer:
    """Trains ``method`` on ``train_set``, evaluating on ``test_set`` after every epoch (with a
    ``val_set``: on it after every epoch, on ``test_set`` after the last or as
    ``train.test_every_epoch`` says). ``teacher_spent_s``: the seconds the run of a teacher
    recipe trained in a share of ``train.time_budget`` recorded (:func:`run_seconds`)."""

    def __init__(self, cfg: Config, method: Method, train_set: Dataset, test_set: Dataset, *,
                 device: torch.device, dist: DistInfo = DistInfo(), val_set: Dataset | None = None,
                 teacher_spent_s: float | None = None):
        self.cfg = cfg
        self.device = device
        self.dist = dist
        check_world_size(cfg.data.batch_size, dist.world_size)
        if cfg.train.amp == "fp16" and device.type != "cuda":
            raise SpikeguideError("train.amp = 'fp16' needs CUDA; use 'bf16' on CPU")
        if cfg.train.sync_batchnorm and dist.enabled:
            convert_sync_batchnorm(method.student, device)
        self.method = method.to(device)
        # NHWC weights make every convolution (the first one's input included) run and output NHWC;
        # the neurons keep the layout
        if cfg.train.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.engine = (DistributedDataParallel(method, device_ids=[device.index] if
                                               device.type == "cuda" else None)
                       if dist.enabled else method)
        self.engine = compile_engine(self.engine, cfg.train.compile)
        self.run_dir = cfg.run_dir
        self.augment = Augment(**asdict(cfg.data.augment), mean=train_set.mean, std=train_set.std)
        # every process loads its slice of each global batch and augments it with its rows of
        # the whole batch's draws, so N processes train on exactly the inputs one process would see
        self.train_loader = make_loader(train_set, cfg.data.batch_size, shuffle=True,
                                        drop_last=True, seed=cfg.train.seed, device=device,
                                        rank=dist.rank, world_size=dist.world_size,
                                        random_crop=self.augment.sample_crop())
        self.test_loader = make_loader(test_set, cfg.data.eval_batch_size, shuffle=False,
                                       drop_last=False, device=device, rank=dist.rank,
                                       world_size=dist.world_size)
        self.val_loader = None if val_set is None else make_loader(
            val_set, cfg.data.eval_batch_size, shuffle=False, drop_last=False, device=device,
            rank=dist.rank, world_size=dist.world_size)
        self.data_info = {"num_classes": train_set.num_classes, "in_channels": train_set.in_channels,
                          "frame_shape": list(train_set.frame_shape),  # [C, H, W] of one input
                          "train": train_set.info, "test": test_set.info,
                          **({"val": val_set.info} if val_set is not None else {})}
        self.optimizer = build_optimizer(cfg.optim, method)
        # the epochs to train: train.epochs, or as many as fit train.time_budget (chosen once the
        # first steps are timed, then kept in every checkpoint)
        self.epochs = cfg.train.epochs
        budget_s = run_seconds(cfg, teacher_spent_s)
        if teacher_spent_s is not None and dist.is_main:
            log.info("the teacher's run spent %.0f s of its share of train.time_budget: this "
                     "run's budget is %.0f s", teacher_spent_s, budget_s)
        self.budget = None if budget_s is None else TimeBudget(budget_s)
        self.planned = self.budget is None
        self.replan_pending = False  # planned from the first steps: plan again after the epoch
        steps = len(self.train_loader)
        warmup = int(round(cfg.optim.warmup_epochs * steps))
        min_ratio = cfg.optim.min_lr / cfg.optim.lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, steps * self.epochs, warmup, cfg.optim.schedule, min_ratio),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp == "fp16")
        self.graphed = (GraphedStep(self._device_step, self.optimizer)
                        if use_cuda_graph(cfg, device, method, dist, self.optimizer) else None)
        self.epoch = 0  # the epoch in progress (or next to start)
        self.step = 0  # batches of that epoch already trained
        self.global_step = 0
        self.best_top1 = -math.inf
        self.epoch_stats = {"loss": 0.0, "correct": 0, "seen": 0}  # as of the meter's last read
        self.meter = StepMeter(device)
        self.nonfinite = NonFiniteCounts()  # what train.on_nonfinite did (training/nonfinite.py)
        self.stop_signal: int | None = None
        self.log: RunLog | None = None  # the first process's, while fit runs
        self.trained_lr = cfg.optim.lr
        self.stop_group = host_group(dist)
        # training seconds of earlier processes of this run (resumed) and when this fit began:
        # the log's elapsed_s counts the whole run, not one process
        self.elapsed_before = 0.0
        self.fit_start = time.time()

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": to_dict(self.cfg),
            "data": self.data_info,
            "spiking": self.method.student.spiking,  # rebuilding the model needs no method
            "model": self.method.student.state_dict(),
            "method": self.method.own_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "epochs": self.epochs if self.budget is not None and self.planned else None,
            "step": self.step,
            "global_step": self.global_step,
            "best_top1": self.best_top1,
            "epoch_stats": dict(self.epoch_stats),
            "elapsed_s": self.elapsed(),
            "threads": torch.get_num_threads(),  # a resume takes the same (float addition order)
            "nonfinite": asdict(self.nonfinite),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.student.load_state_dict(state["model"])
        self.method.load_own_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.replan_pending = False
        if state.get("epochs") is not None:  # the plan of a budgeted run is kept, not redone
            self.epochs, self.planned = state["epochs"], True
        self.global_step, self.best_top1 = state["global_step"], state["best_top1"]
        self.epoch_stats = dict(state["epoch_stats"])
        self.elapsed_before = state.get("elapsed_s", 0.0)  # absent in older checkpoints
        self.nonfinite = NonFiniteCounts(**state.get("nonfinite", {}))

    def save(self, name: str) -> Path:
        """Write a checkpoint (every process calls this: the meter is read first, so that a
        non-finite loss since the last read stops the run before weights are written)."""
        self._read()
        path = self.run_dir / f"{name}.pt"
        if self.dist.is_main:  # every rank holds the same weights: one writes them
            save_checkpoint(self.state_dict(), path,
                            previous=self.run_dir / PREVIOUS if name == "latest" else None)
        return path

    def _write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        header = "# resolved config of this run; data as loaded:\n" + "".join(
            f"#   {split}: {json.dumps(self.data_info[split])}\n" for split in ("train", "test")
        ) + f"# torch threads: {torch.get_num_threads()}\n"
        (self.run_dir / "config.toml").write_text(header + dump_toml(self.cfg))

    # ---------------------------------------------------------------- training

    def _autocast(self):
        dtype = AMP_DTYPES[self.cfg.train.amp]
        if dtype is None:
            return nullcontext()
        # a CUDA graph replays casts, so autocast must not cache them across steps
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=self.graphed is None)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step. Nothing here waits for the device: the loss, accuracy and finite
        check go to :attr:`meter`, read by :meth:`_read`."""
        gen = torch.Generator().manual_seed(mix_seed(self.cfg.train.seed, self.epoch, self.step))
        x = self.augment(x, gen, shard=(self.dist.rank, self.dist.world_size))
        (self.graphed or self._device_step)(x, y)
        self.trained_lr = self.optimizer.param_groups[0]["lr"]  # the lr of this step, for the log
        self.scheduler.step()
        self.meter.seen += len(y)
        self.step += 1
        self.global_step += 1

    def _device_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, backward, optimizer update and the meter's sums: device work only (what
        ``train.cuda_graph`` captures)."""
        with self._autocast():
            loss, logits = self.engine(x, y)
        if self.cfg.train.on_nonfinite == "skip" and not self._finite_everywhere(loss):
            self._skip_step(loss, logits, y)
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.meter.add(loss, logits, y)

    def _read(self) -> Reading:
        """Wait for the device and read the meter (summed over processes); a non-finite loss
        since the last read stops the run here, before anything is saved."""
        reading = self.meter.read(self.step, self.dist)
        if reading.nonfinite_at is not None:
            raise nonfinite_error(reading.nonfinite_loss, self.epoch, reading.nonfinite_at,
                                  str(self.run_dir))
        before = self.epoch_stats
        self.epoch_stats = {"loss": reading.loss_sum, "correct": reading.correct,
                            "seen": reading.seen}
        if reading.seen > before["seen"]:
            seen = reading.seen - before["seen"]
            loss = (reading.loss_sum - before["loss"]) / seen
            log.info("epoch %d step %d: train loss %.4f top1 %.2f over the last %d samples",
                      self.epoch + 1, self.step, loss,
                      100 * (reading.correct - before["correct"]) / seen, seen)
            if self.log is not None:  # TensorBoard's step curves: a point at every read
                self.log.write_step(self.global_step, loss, self.trained_lr)
        return reading

    def _finite_everywhere(self, loss: torch.Tensor) -> bool:
        """Whether this step's loss is finite on every process (a host sync: ``skip`` only)."""
        return all_reduce_sum([float(not torch.isfinite(loss.detach()))], self.dist)[0] == 0

    def _skip_step(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """``on_nonfinite = skip``: this step trains nothing and adds nothing to the epoch's
        sums: the meter counts it as a finite step of no samples (the caller counts its batch
        as seen: take it back)."""
        self.meter.add(loss.new_zeros(()), logits[:0], y[:0])
        self.meter.seen -= len(y)
        self.nonfinite.skipped += 1
        value = float(loss.detach())  # None: not finite on another process
        self._nonfinite_event("skip", None if math.isfinite(value) else value, self.epoch,
                              self.step, skipped=self.nonfinite.skipped)

    def _nonfinite_event(self, action: str, loss: float | None, epoch: int, step: int,
                         **details: Any) -> None:
        """One warning line and one ``metrics.jsonl`` line (rank 0) for each policy action."""
        if not self.dist.is_main:
            return
        event = {"event": "nonfinite", "action": action, "epoch": epoch + 1, "step": step,
                 "global_step": self.global_step,
                 "loss": None if loss is None else str(loss),  # "nan", "inf": JSON has neither
                 **details}
        self.log.event(event)
        log.warning("train.on_nonfinite = %s: %s", self.cfg.train.on_nonfinite,
                    " ".join(f"{k}={v}" for k, v in event.items() if k != "event"))

    def _recover(self, error: NonFiniteLoss) -> None:
        """``rollback`` within its budget: return to the last checkpoint with a smaller learning
        rate; otherwise log the stop and raise ``error``."""
        train = self.cfg.train
        rollbacks = self.nonfinite.rollbacks
        if train.on_nonfinite != "rollback" or rollbacks >= train.max_rollbacks:
            self._nonfinite_event("stop", error.event["loss"], error.event["epoch"],
                                  error.event["step"])
            if train.on_nonfinite == "rollback":
                raise nonfinite_error(error.event["loss"], error.event["epoch"],
                                      error.event["step"], str(self.run_dir),
                                      f" after {rollbacks} rollbacks (train.max_rollbacks)")
            raise error
        found_at = self.global_step
        point = read_resume_point(self.run_dir, self.device, self.dist)
        self.load_state_dict(point.state)
        self.nonfinite.rollbacks = rollbacks + 1
        factor = train.rollback_lr_factor
        self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
        self._nonfinite_event("rollback", error.event["loss"], error.event["epoch"],
                              error.event["step"], global_step=found_at,
                              rollbacks=self.nonfinite.rollbacks,
                              lr_factor=factor, resumed_epoch=self.epoch + 1,
                              resumed_step=self.step, checkpoint=str(point.path))

    def _should_stop(self, max_steps: int | None) -> bool:
        """After a step: whether to stop (a signal, ``max_steps``, the time budget's deadline);
        reads the meter every ``train.log_every`` steps."""
        if self.global_step % self.cfg.train.log_every == 0 or self.global_step == max_steps:
            self._read()
        # a signal to any process, or the deadline, stops all after this step; the all-reduce
        # runs on the host
        asked = self.stop_signal is not None or (self.budget is not None and self.budget.expired())
        return any_process(asked, self.dist, self.stop_group) or self.global_step == max_steps

    def _deadline_stop(self, max_steps: int | None) -> bool:
        """Whether a stop :meth:`_should_stop` asked for is the budget's deadline (no signal
        here, not ``max_steps``)."""
        return (self.budget is not None and self.stop_signal is None
                and self.global_step != max_steps)

    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT finish the current step, then training checkpoints and stops."""

        def request_stop(signum, frame):
            self.stop_signal = signum

        try:
            previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        except ValueError:  # not the main thread: leave signals alone
            previous = {}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def test(self) -> Scores:
        """The student's scores on the test split (each process scores its shard)."""
        return self.score(self.test_loader)

    def score(self, loader) -> Scores:
        return score_model(self.method.student, loader, self.augment.normalize,
                           reduce=lambda values: all_reduce_sum(values, self.dist))

    def _after_step(self) -> None:
        """A budgeted run's bookkeeping: the first steps timed, the epochs planned (at the end of
        the first epoch at the latest)."""
        if self.planned:
            return
        if self.device.type == "cuda":  # a probe step's time is its device work: wait for it
            torch.cuda.synchronize(self.device)
        if not self.budget.time_step() and self.step < len(self.train_loader):
            return
        self._adopt(self.budget.plan(self._epoch_cost(), self.cfg.train.epochs), "")
        # planned within an epoch whose every step this process timed (it began the epoch, no
        # rollback since): that epoch's measured pace plans again at its end (_end_epoch)
        self.replan_pending = (self.step < len(self.train_loader)
                               and len(self.budget.step_times) == self.step)

    def _epoch_cost(self) -> EpochCost:
        world = self.dist.world_size
        val = len(self.val_loader.dataset) if self.val_loader is not None else 0
        test = len(self.test_loader.dataset)
        every = test if val == 0 or self.cfg.train.test_every_epoch else 0
        return EpochCost(len(self.train_loader), self.cfg.data.batch_size // world,
                         (val + every) // world, (test - every) // world)

    def _adopt(self, plan: Plan, how: str) -> None:
        """Train ``plan``'s epochs (rank 0's, on every process), never fewer than the epoch in
        progress."""
        epochs = int(all_reduce_sum([plan.epochs if self.dist.is_main else 0], self.dist)[0])
        self.epochs, self.planned = max(self.epoch + 1, epochs), True
        if self.dist.is_main:
            log.info(how + plan.describe(self.budget.seconds, self.cfg.train.epochs))

    def fit(self, max_steps: int | None = None) -> TrainSummary:
        """Train to ``train.epochs``, or the epochs ``train.time_budget`` plans (or stop after
        ``max_steps`` global steps, or on a signal, with a checkpoint)."""
        if self.dist.is_main:
            self._write_config()
            self.log = RunLog(self.run_dir, self.epoch, self.global_step)
        every = self.cfg.train.checkpoint_every
        self.fit_start = time.time()
        if self.budget is not None:
            self.budget.restart(self.elapsed_before)
        last: EpochRecord | None = None
        show = None if self.cfg.train.progress and self.dist.is_main else True
        if self.cfg.train.on_nonfinite == "rollback" and not (self.run_dir / "latest.pt").exists():
            self.save("latest")  # something to roll back to
        try:
            with self._stop_on_signals():
                while self.epoch < self.epochs:
                    # a resumed epoch's sums so far: rank 0 holds them (the sums of all ranks)
                    stats = self.epoch_stats if self.dist.is_main else {}
                    self.meter.start_epoch(stats.get("loss", 0.0), stats.get("correct", 0),
                                           stats.get("seen", 0), self.step)
                    self.method.train()
                    self.train_loader.set_epoch(self.epoch)
                    bar = tqdm(self.train_loader.iter_from(self.step), total=len(self.train_loader),
                               initial=self.step, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                               leave=False, disable=show)
                    try:
                        for x, y in bar:
                            self._train_step(x, y)
                            if self.budget is not None:
                                self._after_step()
                            if self._should_stop(max_steps):
                                bar.close()
                                if self._deadline_stop(max_steps):
                                    self._stop_at_deadline()
                                    break
                                path = self.save("latest")
                                finished = read_metrics(self.run_dir)
                                return TrainSummary(
                                    self.dist.is_main, self.best_top1,
                                    finished[-1] if finished else None,
                                    StoppedAt(self.epoch, self.step, self.stop_signal, str(path)))
                            if (every and self.global_step % every == 0
                                    and self.step < len(self.train_loader)):
                                self.save("latest")
                        last = self._end_epoch(self.elapsed())
                    except NonFiniteLoss as error:
                        bar.close()
                        self._recover(error)
        finally:
            if self.dist.is_main:
                self.log.close()
        if last is None:  # resumed a run that had already finished
            last = read_metrics(self.run_dir)[-1]
        return TrainSummary(self.dist.is_main, self.best_top1, last)

    def _stop_at_deadline(self) -> None:
        """The budget is spent: the epoch in progress becomes the last (evaluated and
        checkpointed by its end like any other)."""
        log.warning("time budget of %.0f s spent during epoch %d (step %d of %d): this epoch "
                    "is the last (%d planned)", self.budget.seconds, self.epoch + 1, self.step,
                    len(self.train_loader), self.epochs)
        self.epochs, self.planned, self.replan_pending = self.epoch + 1, True, False

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.fit_start

    def _end_epoch(self, elapsed: float) -> EpochRecord:
        reading = self._read()  # on CUDA, after the epoch's device work: the budget's clock is true
        if self.replan_pending:
            self.replan_pending = False
            plan = self.budget.replan(self._epoch_cost(), self.cfg.train.epochs,
                                      len(self.train_loader))
            self._adopt(plan, "planned again from the first epoch's pace: ")
        loss, correct, seen = reading.loss_sum, reading.correct, reading.seen
        val = None if self.val_loader is None else self.score(self.val_loader)
        last = self.epoch + 1 >= self.epochs
        test = self.test() if val is None or last or self.cfg.train.test_every_epoch else None
        record = EpochRecord(epoch=self.epoch + 1, global_step=self.global_step,
                             lr=self.optimizer.param_groups[0]["lr"], train_loss=loss / seen,
                             train_top1=100 * correct / seen, test=test, elapsed_s=elapsed,
                             val=val)
        scores = val or test  # best.pt is chosen on validation where there is a split
        improved = scores.top1 > self.best_top1
        self.best_top1 = max(self.best_top1, scores.top1)
        self.epoch, self.step = self.epoch + 1, 0
        self.epoch_stats = {"loss": 0.0, "correct": 0, "seen": 0}
        self.meter.start_epoch()
        # this order keeps the log, best.pt and latest.pt consistent if killed in between:
        # a resume from the previous latest.pt redoes the epoch and rewrites both
        if self.dist.is_main:
            self.log.write(record)
        if improved:
            self.save("best")
        self.save("latest")
        progress_log.info("%s epoch %d/%d: train loss %.4f top1 %.2f | %s top1 %.2f (best %.2f)%s "
                          "| firing %s", self.cfg.name, self.epoch, self.epochs, record.train_loss,
                          record.train_top1, "test" if val is None else "val", scores.top1,
                          self.best_top1,
                          f" | test top1 {test.top1:.2f}" if val is not None and test is not None
                          else "", firing_text(scores.firing_rate))
        return record
