"""``allnc-train``: train one run from a YAML config (a click command, like ``nctools``).

    allnc-train --config cifar10_lt_r100_allnc --out runs/c10_r100_allnc --set optim.epochs=10
    allnc-train --out runs/c10_r100_allnc --resume          # continue a killed run

``--config`` takes a file path or the name of a bundled config (``allnc-train --list-configs``).
``--set KEY=VALUE`` may be repeated, and one ``--set`` may also take several ``KEY=VALUE`` in a row
(``--set optim.epochs=10 run.device=cpu``); long options may be abbreviated (``--print``).
Bad input (unknown option or key, wrong type, missing file, existing run, a run directory that
another run holds or that cannot be written, a full disk mid-run) prints one line on stderr and
exits with status 2; a diverged run (NaN loss) prints one line and exits with 1; an interrupted
one exits with 130. Progress goes to stderr, the final summary (one JSON line) to stdout, on rank 0
alone under torchrun. torch and the training loop are imported only to train, so ``--help`` is instant.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import click

from nctools import __version__
from nctools.errors import InputError, one_line
from nctools.extras import install_hint

__all__ = ["CONFIG_DIR", "bundled_configs", "cli", "find_config", "main"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PROG = "allnc-train"


def bundled_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_line(name: str, width: int = 0) -> str:
    """One line of ``--list-configs``: a bundled config's name (padded to ``width``), dataset,
    imbalance and method.

    The method is the one its generated header names (``...; method allnc without gbbn``: ablations
    and controls are told apart there), else its ``method.name``; split-file datasets bring their own
    (natural) imbalance, so ``data.imbalance_ratio`` is shown only for the others.

    >>> config_line("cifar10_lt_r100_allnc_no_p2p")
    'cifar10_lt_r100_allnc_no_p2p cifar10      ratio 100  allnc without p2p'
    """
    import yaml

    from .schema import DataConfig, MethodConfig

    text = find_config(name).read_text(encoding="utf-8")
    tree = yaml.safe_load(text) or {}
    data = {**vars(DataConfig()), **(tree.get("data") or {})}  # the keys a file leaves out keep their defaults
    header = text.splitlines()[0] if text.startswith("# ") else ""
    method = header.partition("; method ")[2] or (tree.get("method") or {}).get("name", MethodConfig().name)
    ratio = float(data["imbalance_ratio"])
    imbalance = "natural" if data["source"] == "splits" else "balanced" if ratio == 1 else f"ratio {ratio:g}"
    return f"{Path(name).stem:<{width}} {data['dataset']:<12} {imbalance:<10} {method}"


def find_config(name: str) -> Path:
    """A path as given, else a bundled config by name (with or without .yaml / a folder prefix)."""
    from .schema import ConfigError

    path = Path(name)
    if path.exists():  # a folder or a FIFO is read, and refused, as what it is
        return path
    bundled = CONFIG_DIR / (path.stem + ".yaml")
    if bundled.is_file():
        return bundled
    raise ConfigError(f"config file {name} does not exist and is not a bundled config (see --list-configs).")


# ---------------------------------------------------------------------------------------------
# Errors: one line on stderr and an exit status
# ---------------------------------------------------------------------------------------------

class Failure(click.ClickException):
    """``allnc-train: <message>`` on stderr (one line) and ``exit_code``."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"{PROG}: {self.format_message()}", file=file, err=file is None)


def _bad_input(err: BaseException) -> Failure:
    return Failure(f"error: {one_line(err)}", 2)


def _usage(err: click.UsageError) -> Failure:
    return Failure(f"error: {one_line(err)} (see {PROG} --help)", 2)


# What the trainer needs beyond the light core (the 'train' extra): module -> distribution.
_TRAIN_NEEDS = {"yaml": "PyYAML", "torchvision": "torchvision"}


def _check_train_extra() -> None:
    """The light core installs this command without the trainer's own dependencies: say which are
    missing and how to add them, in one line (exit 2), rather than a traceback."""
    from importlib.util import find_spec

    missing = [dist for module, dist in _TRAIN_NEEDS.items() if find_spec(module) is None]
    if missing:
        raise Failure(f"error: the trainer needs {' and '.join(missing)} (not installed here); "
                      f"{install_hint('train')}", 2)


# ---------------------------------------------------------------------------------------------
# The command line as argparse read it: --set a=1 b=2, abbreviated long options
# ---------------------------------------------------------------------------------------------

_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def _matches(token: str, kinds: dict[str, str]) -> list[str]:
    """The long options ``token`` (``--name`` or ``--name=value``) names: exactly, or as a prefix."""
    head = token.partition("=")[0]
    if head in kinds:
        return [head]
    return [name for name in kinds if name.startswith("--") and name.startswith(head)]


def _is_option(token: str, kinds: dict[str, str]) -> bool:
    """Whether argparse would read ``token`` as an option (it ends a run of values), not as a value."""
    if not token.startswith("-") or token == "-":
        return False
    if token == "--" or (token.startswith("--") and _matches(token, kinds)):
        return True
    return not _NEGATIVE_NUMBER.match(token) and " " not in token


def argparse_style(args: list[str], kinds: dict[str, str]) -> list[str]:
    """Rewrite ``args`` into tokens click reads the way argparse read the original.

    ``kinds`` maps each option name to ``flag``, ``one`` (takes one value) or ``many`` (repeatable,
    and several values may follow one flag: ``--set a=1 b=2`` becomes ``--set=a=1 --set=b=2``).
    An unambiguous prefix of a long option stands for it (``--print`` -> ``--print-config``).
    Anything else (unknown options, stray values, what follows ``--``) is left for click to reject.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            out.extend(args[i - 1:])
            break
        names = _matches(token, kinds) if token.startswith("--") else []
        if len(names) > 1:
            raise click.UsageError(f"ambiguous option: {token.partition('=')[0]} could match {', '.join(names)}")
        if not names:
            out.append(token)
            continue
        name, (_, eq, value) = names[0], token.partition("=")
        if kinds[name] == "flag" or eq:  # a flag, or --name=value: exactly one value (click rejects a flag's)
            out.append(name + eq + value)
            continue
        values = []
        while i < len(args) and not _is_option(args[i], kinds) and (kinds[name] == "many" or not values):
            values.append(args[i])
            i += 1
        if not values:
            raise click.BadOptionUsage(name, f"Option '{name}' requires an argument.")
        out.extend(f"{name}={v}" for v in values)
    return out


class _Command(click.Command):
    """A command whose usage errors are one line (exit 2) and that reads argparse's call forms."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        kinds = {}
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                kind = "flag" if param.is_flag else "many" if param.multiple else "one"
                kinds.update((name, kind) for name in (*param.opts, *param.secondary_opts))
        try:
            return super().parse_args(ctx, argparse_style(list(args), kinds))
        except click.UsageError as err:
            raise _usage(err) from None


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

@click.command(name=PROG, cls=_Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", metavar="CONFIG", help="YAML config file, or the name of a bundled config.")
@click.option("--out", metavar="DIR", help="Run directory (created); e.g. runs/cifar10_lt_r100_allnc.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set optim.epochs=10 run.device=cpu (repeatable; "
                   "several KEY=VALUE may follow one --set).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--list-configs", is_flag=True,
              help="Print the bundled configs, one line each (name, dataset, imbalance, method), and exit.")
@click.option("--print-config", is_flag=True, help="Print the resolved config as YAML and exit.")
@click.version_option(__version__, "--version", prog_name=PROG)
def cli(config: str | None, out: str | None, overrides: tuple[str, ...], resume: bool, list_configs: bool,
        print_config: bool) -> int:
    """Long-tailed training with AllNC and its baselines; writes a feature dump, a checkpoint and
    run.json every epoch.

    \b
    allnc-train --list-configs
    allnc-train --config cifar10_lt_r100_allnc --out runs/c10_r100_allnc --set optim.epochs=10
    allnc-train --out runs/c10_r100_allnc --resume      continue a killed run

    Progress goes to stderr (bars only on a terminal), the summary (one JSON line) to stdout.
    Exit status: 0 success, 2 bad input (one line on stderr), 1 a diverged run (NaN loss),
    130 interrupted.
    """
    _check_train_extra()
    if list_configs:
        names = bundled_configs()
        click.echo("\n".join(config_line(name, max(map(len, names))) for name in names))
        return 0
    try:
        cfg = _resolve(config, out, list(overrides), resume, print_config)
        if print_config:
            import yaml

            from .schema import to_dict

            click.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False), nl=False)
            return 0
        from .train import TrainingDiverged, train  # heavy imports (torch) only when training

        try:
            record = train(cfg, out, resume=resume)
        except TrainingDiverged as exc:
            raise Failure(f"error: {one_line(exc)}", 1) from None
    except (InputError, OSError, ValueError) as exc:
        # Library errors become one line at the boundary (ConfigError, RunError, CheckpointError and
        # DumpError are InputErrors; OSError: a file system problem outside the run, e.g. an unreadable
        # config file).
        raise _bad_input(exc) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP (main turns them into interrupts)
        from nctools.interrupts import exit_status

        from .rundir import interrupted

        raise Failure(interrupted(Path(out), PROG, config), exit_status(exc)) from None
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone prints the summary
        return 0
    last = record["epochs"][-1] if record["epochs"] else {}
    click.echo(json.dumps({"out": str(out), "status": record["status"], "epoch": last.get("epoch"),
                           **{k: last.get(k) for k in ("eval_top1", "eval_many", "eval_medium", "eval_few")}}))
    return 0


_OUT_REQUIRED = "--out is required: the run directory to write (or, with --resume, to continue)."


def _resolve(config: str | None, out: str | None, overrides: list[str], resume: bool, print_config: bool):
    from .config import load_config
    from .schema import ConfigError

    if not out and not print_config:
        raise ConfigError(_OUT_REQUIRED)
    if config is None:
        if not resume:
            raise ConfigError("--config is required for a new run (a file or a bundled name; see --list-configs).")
        if not out:  # --print-config --resume: the config of the run in --out
            raise ConfigError(_OUT_REQUIRED)
        from .checkpoint import run_config  # resuming without --config: the run's own config

        cfg = run_config(Path(out))
        if overrides:
            from .config import resolve
            from .schema import to_dict

            cfg = resolve(to_dict(cfg), overrides)
        return cfg
    return load_config(find_config(config), overrides)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``allnc-train = allnc_train.cli:main``): returns the exit status.

    ``argv`` defaults to ``sys.argv[1:]``; errors are one line on stderr, never a raised SystemExit.
    """
    from nctools.interrupts import exit_status, quiet_broken_pipe, signals_as_interrupts

    try:
        with signals_as_interrupts():
            code = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.UsageError as err:  # raised outside parse_args (the command converts its own)
        _usage(err).show()
        return 2
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.Abort as err:  # an interrupt outside training (click turns it into Abort)
        click.echo(f"{PROG}: interrupted", err=True)
        return exit_status(err.__cause__ or KeyboardInterrupt())
    except BrokenPipeError:
        return quiet_broken_pipe()
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
