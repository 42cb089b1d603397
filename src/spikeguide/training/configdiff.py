"""Which keys of a run's config differ from another config: what a resume or a reused run
directory must refuse unless the user allows it.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..config import Config, parse_config, to_dict
from ..errors import SpikeguideError

# keys that change how a run is executed or shown, not what it learns (a resume's thread count
# has its own rule and warning: training/threads.py)
IGNORED = ("train.progress", "train.threads", "data.loader", "data.ram_share", "data.gpu_share")


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(stored: dict, cfg: Config) -> list[str]:
    """The dotted keys whose values differ between the raw config ``stored`` (a run's
    ``config.toml`` or checkpoint) and ``cfg``. Both are resolved first, so that a field added
    since that run compares by its default."""
    old, new = (flatten(to_dict(c)) for c in (parse_config(stored), cfg))
    return sorted(k for k in old.keys() | new.keys()
                  if old.get(k) != new.get(k) and k not in IGNORED)


def check_resume_config(stored: dict, cfg: Config, allow_changes: Iterable[str] = ()) -> list[str]:
    """Refuse to resume a run whose config ``stored`` differs from ``cfg`` in keys not in
    ``allow_changes``; returns the allowed keys that do differ."""
    allowed = set(allow_changes)
    differ = config_differences(stored, cfg)
    refused = [k for k in differ if k not in allowed]
    if refused:
        hint = " ".join(refused)
        raise SpikeguideError(
            f"cannot resume {str(cfg.run_dir)!r} with another config: it differs in "
            f"{', '.join(refused)}; resume with the run's own config.toml, or allow the change "
            f"with --allow-changes {hint} (Python: allow_changes=[...]) if it is safe "
            "(train.epochs extends a run)"
        )
    return differ
