"""The ``spikeguide`` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Any, Sequence

from . import __version__
from .errors import SpikeguideError, TrainingStopped


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table; floats get two decimals."""
    if not rows:
        return ""
    cols = list(rows[0])
    cells = [[f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def or_dash(value: Any) -> Any:
    """A table cell: the value, or ``-`` where there is none (an ANN's firing rate)."""
    return "-" if value is None else value


def strip_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` or ``name=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def resume_value(text: str) -> str:
    if text != "auto":
        raise argparse.ArgumentTypeError(f"expected 'auto' or nothing, got {text!r}")
    return text


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .commands.quickstart import run_quickstart

    runs = run_quickstart(args.out, args.set)
    rows = [{"model": f"{r.cfg.model.name} ({r.cfg.name.upper()})",
             "T": "-" if r.summary.last.test.firing_rate is None else r.cfg.model.T,
             "test top1 %": r.summary.last.test.top1, "best top1 %": r.summary.best_top1,
             "firing rate": or_dash(r.summary.last.test.firing_rate), "seconds": r.seconds}
            for r in runs if r.summary.last is not None]
    if rows:
        print(format_table(rows))
    print("runs written to: " + ", ".join(r.summary.run_dir for r in runs))
    stopped = runs[-1].summary.stopped
    if stopped is None:
        return 0
    print(f"spikeguide: {runs[-1].cfg.name} stopped by signal {stopped.signal} in epoch "
          f"{stopped.epoch + 1}; its row holds its last finished epoch", file=sys.stderr)
    return 128 + (stopped.signal or 0)


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training.run import train
    from .training.trainer import firing_text

    if args.allow_changes and not args.resume:
        raise SpikeguideError("--allow-changes applies to --resume only")
    cfg = load_config(args.recipe, args.set + (["data.options.download=true"] if args.download else []))
    if args.nproc != 1:
        from .training.distributed import check_world_size, launch

        # before torchrun starts: one line, not a traceback per process
        check_world_size(cfg.data.batch_size, args.nproc)
        argv = strip_option(strip_option(args.argv, "--nproc"), "--max-restarts")
        return launch(args.nproc, argv, args.max_restarts)
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite, max_steps=args.max_steps,
                    allow_changes=args.allow_changes)
    if not summary.is_main:
        return 0
    if summary.stopped is not None:
        stop = summary.stopped
        print(f"stopped at epoch {stop.epoch + 1} step {stop.step}; checkpoint {stop.checkpoint}\n"
              f"resume with: spikeguide train {cfg.run_dir / 'config.toml'} --resume")
        return 128 + stop.signal if stop.signal else 0
    test = summary.last.test
    best = "best" if summary.last.val is None else "best validation"
    print(f"finished {cfg.run_dir}: test top1 {test.top1:.2f}%, {best} {summary.best_top1:.2f}%, "
          f"mean firing rate {firing_text(test.firing_rate)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .commands.evaluate import evaluate_run

    ev = evaluate_run(args.run, args.set, "latest" if args.latest else "best", args.energy_batches)
    model, cfg, scores = ev.model, ev.cfg, ev.scores
    row = {"model": cfg.model.name, "spiking": model.spiking,
           "T": cfg.model.T if model.spiking else "-", "top1 %": scores.top1}
    if model.num_classes > 10:
        row["top5 %"] = scores.top5
    row["firing rate"] = or_dash(scores.firing_rate)
    print(format_table([row]))
    if ev.activity is not None:
        print(f"\nactivity and energy on {ev.activity.images} test images:\n")
        print(ev.activity.table())
        print(f"\nfiring rate per layer: {ev.plot}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from .commands.ablate import run_ablation

    out = run_ablation(args.recipe, args.T, args.variants, args.out, args.set, args.jobs,
                       args.seeds, args.kd_tau, args.kd_alpha)
    print((out / "ablation.md").read_text(), end="")
    print(f"tables written to {out / 'ablation.md'} and {out / 'ablation.csv'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .commands.export import export_run

    out = export_run(args.run, args.out, args.format, "latest" if args.latest else "best", args.dt,
                     tuple(args.frame_shape) if args.frame_shape else None)
    print(f"wrote {out}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .analysis.diagnose import (
        FLAG_FACTOR,
        diagnose,
        layer_rows,
        parse_sweep,
        recommend,
        summary_rows,
    )
    from .config import load_config

    cfg = load_config(args.recipe, args.set)
    widths = parse_sweep(args.sweep) if args.sweep else None
    reports, plot = diagnose(cfg, widths, batches=args.batches, steps=args.steps, out=args.out)
    print(f"||dLoss/d input current|| per spiking layer, mean of {args.batches} batch(es); "
          f"! = more than {FLAG_FACTOR:g}x larger or smaller than the first layer's")
    print(format_table(layer_rows(reports)) + "\n")
    print(format_table(summary_rows(reports)))
    if len(reports) > 1:
        best = recommend(reports)
        print(f"recommended: surrogate.width={best.width:g} (first/last {best.first_to_last:.3g}, "
              f"loss {best.loss_start:.4f} -> {best.loss_end:.4f})" if best else
              "no recommendation: the trial loss fell for no width (try more --steps or a lower lr)")
    print(f"plot: {plot} (data: {plot.with_name('diagnose.json')})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .analysis.report import report
    from .commands.evaluate import evaluate_run

    summary, plots = report(args.run)
    print(format_table([summary]))
    try:  # activity needs the checkpoint's model and the run's test data
        ev = evaluate_run(args.run, energy_batches=args.energy_batches)
    except SpikeguideError as e:
        print(f"activity and energy: skipped ({e})")
    else:
        if ev.activity is not None:
            a = ev.activity
            print(f"activity on {a.images} test images (best.pt): mean firing rate "
                  f"{a.firing_rate:.4f}; per image {a.acs:.4g} ACs + {a.macs:.4g} MACs = "
                  f"{a.energy_pj / 1e6:.4g} uJ, ANN twin {a.ann_energy_pj / 1e6:.4g} uJ "
                  "(per-layer table: spikeguide eval)")
            plots.append(ev.plot)
    print("plots: " + ", ".join(str(p) for p in plots))
    return 0


def import_modules(names: Sequence[str]) -> None:
    """``--import``: modules that register methods, neurons, models or datasets of their own."""
    if names and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise SpikeguideError(f"--import {name}: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeguide", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log the details (data loader, threads, teacher, resume); one line "
                             "per epoch is printed either way")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_set(p: argparse.ArgumentParser, example: str = "train.epochs=3") -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help=f"override a config field, e.g. --set {example} (repeatable)")
        add_import(p)

    def add_import(p: argparse.ArgumentParser) -> None:
        p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                       help="import MODULE first: a method, neuron, model or dataset registered "
                            "outside spikeguide (repeatable; the working directory is searched)")

    p = sub.add_parser("quickstart", help="train an ANN and an SNN on bundled digits (no data needed)")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: %(default)s)")
    add_set(p)
    p.set_defaults(fn=cmd_quickstart)

    p = sub.add_parser("train", help="train from a TOML recipe")
    p.add_argument("recipe")
    add_set(p)
    p.add_argument("--resume", nargs="?", const=True, default=False, type=resume_value,
                   metavar="auto", help="continue the run from its latest.pt; '--resume auto' "
                   "continues when the run directory holds a checkpoint and starts otherwise")
    p.add_argument("--allow-changes", nargs="+", default=[], metavar="KEY",
                   help="with --resume: config keys that may differ from the run's own, e.g. "
                        "train.epochs to extend a run (any other change is refused)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run")
    p.add_argument("--max-steps", type=int, default=None, help="stop (with a checkpoint) after N steps")
    p.add_argument("--download", action="store_true",
                   help="fetch missing data from its official source (checksums verified)")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine (launches torchrun)")
    p.add_argument("--max-restarts", type=int, default=3, metavar="N",
                   help="with --nproc: restart a failed process group up to N times, each time "
                        "from the last checkpoint (default: %(default)s)")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run directory or checkpoint on its test split")
    p.add_argument("run")
    p.add_argument("--latest", action="store_true", help="use latest.pt instead of best.pt")
    p.add_argument("--energy-batches", type=int, default=4, metavar="N",
                   help="test batches counted for activity and energy (default: %(default)s)")
    add_set(p, "model.T=8")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("export", help="write a run's SNN to a file for other tools (NIR) or a "
                                      "Hugging Face Hub-style folder")
    p.add_argument("run", help="a run directory or checkpoint")
    p.add_argument("--format", default="nir",
                   help="nir, or hub: config, safetensors weights and a model card "
                        "(default: %(default)s)")
    p.add_argument("--out", required=True,
                   help="the file (nir) or folder (hub) to write, e.g. model.nir")
    p.add_argument("--latest", action="store_true", help="use latest.pt instead of best.pt")
    p.add_argument("--dt", type=float, default=1.0,
                   help="time step of the NIR neurons (default: %(default)s; snnTorch's importer "
                        "expects 1e-4)")
    p.add_argument("--frame-shape", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="input shape of one frame, for checkpoints that do not record it")
    add_import(p)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("report", help="plot a run's curves to PNG and print its summary")
    p.add_argument("run")
    p.add_argument("--energy-batches", type=int, default=4, metavar="N",
                   help="test batches counted for activity and energy (default: %(default)s)")
    add_import(p)
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("diagnose", help="per-layer gradient flow and firing rates of a recipe's SNN; "
                                        "with --sweep, a surrogate width recommendation")
    p.add_argument("recipe")
    p.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...",
                   help="surrogate.width=0.1,0.5,2 or surrogate.steepness=10,2,0.5 (k = 1/width)")
    p.add_argument("--batches", type=int, default=2, help="training batches measured (default: 2)")
    p.add_argument("--steps", type=int, default=10,
                   help="trial-run steps per width on those batches; 0 skips it (default: 10)")
    p.add_argument("--out", default=None,
                   help="folder of the plot and data (default: OUT_DIR/NAME_diagnose)")
    add_set(p)
    p.set_defaults(fn=cmd_diagnose)

    p = sub.add_parser("ablate", help="the EnOF ablation of an enof recipe: all variants, each T")
    p.add_argument("recipe")
    p.add_argument("--T", type=int, nargs="+", default=None, metavar="T",
                   help="time steps, one column each (default: the recipe's model.T)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="train every cell with each seed; tables give mean +- std "
                        "(default: the recipe's train.seed)")
    p.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                   help="a subset of: baseline laf repact laf_repact kd (default: all)")
    p.add_argument("--out", default=None,
                   help="folder of the cells and tables (default: OUT_DIR/NAME_ablation)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N cells at once in N processes that share the torch threads "
                        "(default: 1)")
    p.add_argument("--kd-tau", type=float, default=None, metavar="TAU",
                   help="vanilla KD's temperature (default: the recipe's method.laf_tau)")
    p.add_argument("--kd-alpha", type=float, default=None, metavar="WEIGHT",
                   help="vanilla KD's weight (default: the recipe's method.laf_lambda)")
    add_set(p)
    p.set_defaults(fn=cmd_ablate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    # under torchrun the first process alone logs, so that each line appears once
    verbose = args.verbose and os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(message)s", stream=sys.stderr)
    if os.environ.get("RANK", "0") == "0":  # one line per epoch, -v or not
        logging.getLogger("spikeguide.progress").setLevel(logging.INFO)
    else:  # every process would say the same; errors reach the launcher (training/workers.py)
        logging.getLogger("spikeguide").setLevel(logging.ERROR)
    try:
        import_modules(args.imports)
        code = args.fn(args)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at exit
        return code
    except TrainingStopped as e:
        print(f"spikeguide: {e}", file=sys.stderr)
        return 128 + e.signum
    except SpikeguideError as e:
        from .training.workers import report_worker_error

        if not report_worker_error(str(e)):
            print(f"spikeguide: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:  # the reader went away (spikeguide eval RUN | head -3)
        # Python would report the broken pipe again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
