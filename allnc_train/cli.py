"""``allnc-train``: train one run from a YAML config.

    allnc-train --config cifar10_lt_r100_allnc --out runs/c10_r100_allnc --set optim.epochs=10
    allnc-train --out runs/c10_r100_allnc --resume          # continue a killed run

``--config`` takes a file path or the name of a bundled config (``allnc-train --list-configs``).
Bad input (unknown key, wrong type, missing file, existing run) prints one line on stderr and
exits with status 2; a diverged run (NaN loss) prints one line and exits with 1. Progress goes to
stderr, the final summary (one JSON line) to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"allnc-train: error: {message} (see allnc-train --help)\n")


def bundled_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def find_config(name: str) -> Path:
    """A path as given, else a bundled config by name (with or without .yaml / a folder prefix)."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / (path.stem + ".yaml")
    if bundled.is_file():
        return bundled
    raise ConfigError(f"config file {name} does not exist and is not a bundled config (see --list-configs).")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="allnc-train", description="Long-tailed training with AllNC and its baselines; writes a "
                "feature dump, a checkpoint and run.json every epoch.")
    p.add_argument("--config", help="YAML config file, or the name of a bundled config")
    p.add_argument("--out", help="run directory (created); e.g. runs/cifar10_lt_r100_allnc")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.epochs=10 run.device=cpu (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--list-configs", action="store_true", help="print the bundled configs and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_configs:
        print("\n".join(bundled_configs()))
        return 0
    overrides = [o for group in args.overrides for o in group]
    try:
        cfg = _resolve(args, overrides)
        if args.print_config:
            import yaml

            from .config import to_dict

            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        from .train import RunError, TrainingDiverged, train  # heavy imports (torch) only when training

        try:
            record = train(cfg, args.out, resume=args.resume)
        except RunError as exc:
            raise ConfigError(str(exc)) from None
        except TrainingDiverged as exc:
            print(f"allnc-train: error: {exc}", file=sys.stderr)
            return 1
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        # Library errors become one line at the boundary (DumpError is a ValueError too).
        print(f"allnc-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"allnc-train: interrupted; continue with: allnc-train --out {args.out} --resume", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone prints the summary
        return 0
    last = record["epochs"][-1] if record["epochs"] else {}
    print(json.dumps({"out": str(args.out), "status": record["status"], "epoch": last.get("epoch"),
                      **{k: last.get(k) for k in ("eval_top1", "eval_many", "eval_medium", "eval_few")}}))
    return 0


def _resolve(args, overrides: list[str]):
    from .config import load_config

    if not args.out and not args.print_config:
        raise ConfigError("--out is required: the run directory to write (or, with --resume, to continue).")
    if args.config is None:
        if not args.resume:
            raise ConfigError("--config is required for a new run (a file or a bundled name; see --list-configs).")
        from .train import stored_config  # resuming without --config: the run's own config

        try:
            cfg = stored_config(Path(args.out))
        except RuntimeError as exc:
            raise ConfigError(str(exc)) from None
        if overrides:
            from .config import resolve, to_dict

            cfg = resolve(to_dict(cfg), overrides)
        return cfg
    return load_config(find_config(args.config), overrides)


if __name__ == "__main__":
    sys.exit(main())
