"""The ``spikeguide`` command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any, Sequence

from .errors import SpikeguideError

log = logging.getLogger("spikeguide")


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


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import run_quickstart

    rows = run_quickstart(args.out, args.set)
    runs = [r.pop("run") for r in rows]
    print(format_table(rows))
    print("runs written to: " + ", ".join(runs))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .runner import train

    cfg = load_config(args.recipe, args.set)
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite, max_steps=args.max_steps)
    if summary["stopped"]:
        print(f"stopped at epoch {summary['epoch'] + 1} step {summary['step']}; checkpoint "
              f"{summary['checkpoint']}\nresume with: spikeguide train "
              f"{cfg.run_dir / 'config.toml'} --resume")
        return 128 + summary["signal"] if summary["signal"] else 0
    print(f"finished {cfg.run_dir}: test top1 {summary['test_top1']:.2f}%, best "
          f"{summary['best_top1']:.2f}%, mean firing rate {summary['test_firing_rate']:.4f}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .config import apply_overrides, parse_config, to_dict
    from .data import Augment, InMemoryLoader
    from .metrics import evaluate
    from .runner import build_datasets, load_model
    from .train import resolve_device

    model, cfg, _ = load_model(args.run, prefer="latest" if args.latest else "best")
    if args.set:
        cfg = parse_config(apply_overrides(to_dict(cfg), args.set))
    _, test_set = build_datasets(cfg)
    device = resolve_device(cfg.train.device)
    loader = InMemoryLoader(test_set, cfg.data.eval_batch_size, shuffle=False, drop_last=False,
                            device=device)
    augment = Augment(mean=test_set.mean, std=test_set.std)
    result = evaluate(model.to(device), loader, augment.normalize)
    row = {"model": cfg.model.name, "spiking": model.spiking, "T": cfg.model.T if model.spiking
           else "-", "top1 %": result["top1"]}
    if model.num_classes > 10:
        row["top5 %"] = result["top5"]
    row["firing rate"] = result["firing_rate"] if model.spiking else "-"
    print(format_table([row]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeguide", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_set(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set train.epochs=3 (repeatable)")

    p = sub.add_parser("quickstart", help="train an ANN and an SNN on bundled digits (no data needed)")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: %(default)s)")
    add_set(p)
    p.set_defaults(fn=cmd_quickstart)

    p = sub.add_parser("train", help="train from a TOML recipe")
    p.add_argument("recipe")
    add_set(p)
    p.add_argument("--resume", action="store_true", help="continue the run from its latest.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run")
    p.add_argument("--max-steps", type=int, default=None, help="stop (with a checkpoint) after N steps")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run directory or checkpoint on its test split")
    p.add_argument("run")
    p.add_argument("--latest", action="store_true", help="use latest.pt instead of best.pt")
    add_set(p)
    p.set_defaults(fn=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s", stream=sys.stderr)
    try:
        return args.fn(args)
    except SpikeguideError as e:
        print(f"spikeguide: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
