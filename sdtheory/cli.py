"""What the scripts in ``simulations/`` share: argument types (``argparse.ArgumentTypeError``: argparse names
the flag, exit status 2), the entry point :func:`run_main` (Ctrl-C: one line, status 130; an
:class:`sdtheory.io.OutputWriteError`: one line, status 1)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from . import io as sio
from ._validation import MAX_NUM_ROUNDS, check_cd
from .noise import canonical_kind

__all__ = [
    "CACHE_ENV",
    "add_data_arguments",
    "dataset_or_exit",
    "run_parameters",
    "enable_compilation_cache",
    "interrupted",
    "output_dir_or_exit",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_WRITTEN",
    "cd_pairs",
    "correlation",
    "exit_script",
    "float_in",
    "int_at_least",
    "interruptible",
    "noise_kind",
    "num_rounds_type",
    "run_main",
]

#: Exit status of a script stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: Exit status of a script whose outputs could not be written or committed.
EXIT_NOT_WRITTEN = 1
#: Environment variable naming a directory for JAX's persistent compilation cache (opt-in, scripts only).
CACHE_ENV = "SDTHEORY_COMPILATION_CACHE"


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default: ``$SDTHEORY_COMPILATION_CACHE``); return
    the directory, or ``None`` when none is set. For scripts: importing ``sdtheory`` never changes JAX's config."""
    path = path or os.environ.get(CACHE_ENV) or None
    if path is None:
        return None
    import jax

    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def run_main(main, prog: str, argv=None) -> int:
    """Call a script's ``main(argv)``; return its exit status (a non-int return means 0). A ``KeyboardInterrupt``
    or :class:`sdtheory.io.OutputWriteError` is printed as ``<prog>: <message>`` (the module docstring)."""
    global _ctrl_c_pending
    enable_compilation_cache()
    _ctrl_c_pending = False
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _on_ctrl_c)
    unraisable = sys.unraisablehook
    sys.unraisablehook = _quiet_lost_ctrl_c
    try:
        rc = main(argv)
    except (KeyboardInterrupt, sio.OutputWriteError) as exc:  # the message says what is kept, and where
        with contextlib.suppress(OSError, ValueError):  # stderr closed: the exit status still tells
            print(f"{prog}: {' '.join(str(exc).split()) or 'interrupted'}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_NOT_WRITTEN
    finally:
        sys.unraisablehook = unraisable
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


_ctrl_c_pending = False  # set by a Ctrl-C during run_main; interruptible() raises it again if it was lost


def _on_ctrl_c(signum, frame):
    """``KeyboardInterrupt``, remembered: Python discards one raised in a gc callback (JAX has one)."""
    global _ctrl_c_pending
    _ctrl_c_pending = True
    raise KeyboardInterrupt


def _quiet_lost_ctrl_c(unraisable):
    """No "Exception ignored" traceback for a lost Ctrl-C (:func:`interruptible` raises it again)."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def interruptible(callback):
    """``callback`` (a progress or per-chunk callback), then ``KeyboardInterrupt`` if a Ctrl-C was lost meanwhile."""

    def call(*args, **kwargs):
        out = callback(*args, **kwargs)
        if _ctrl_c_pending:
            raise KeyboardInterrupt
        return out

    return call


def exit_script(main, prog: str) -> NoReturn:
    """A script's ``__main__`` entry: :func:`run_main`, then exit with its status; after Ctrl-C with
    ``os._exit(130)`` once the streams are flushed (a normal teardown can crash while XLA still compiles)."""
    rc = run_main(main, prog)
    if rc == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(rc)
    sys.exit(rc)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: x)`` only where it says something: not for a ``None`` default or an off switch."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def int_at_least(lo: int, *, at_most: int | None = None, why: str | None = None):
    """An integer ``>= lo`` (and ``<= at_most`` when given; ``why`` explains that bound)."""

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        if at_most is not None and v > at_most:
            raise argparse.ArgumentTypeError(f"must be <= {at_most}" + (f" ({why})" if why else "") + f", got {v}")
        return v

    return parse


def num_rounds_type(lo: int = 1):
    """A round count ``R`` in ``[lo, MAX_NUM_ROUNDS]`` (the library's one bound, ``10**5``)."""
    return int_at_least(lo, at_most=MAX_NUM_ROUNDS, why="every round 0..R-1 is computed and kept")


def float_in(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False):
    """A finite float in ``[lo, hi]`` (``lo_open``/``hi_open`` exclude the ends)."""

    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
            lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(f"must lie in {lb}{lo:g}, {hi:g}{rb}, got {v:g}")
        return v

    return parse


def correlation(text: str) -> float:
    """A ``--c``/``--d`` value in ``(-1, 1)`` (the block model's rule needs the class sizes: checked later)."""
    return float_in(-1.0, 1.0, lo_open=True, hi_open=True)(text)


def noise_kind(text: str) -> str:
    """A noise family name or alias, canonicalised (use with ``choices=sdtheory.noise.KINDS``)."""
    try:
        return canonical_kind(text)
    except (ValueError, TypeError):
        return text  # argparse then reports it against the choices


def cd_pairs(text: str) -> list:
    """``"c,d;c,d;..."`` -> a list of distinct ``(c, d)`` pairs, each with ``-1 < d < c < 1`` (the rest of
    the block model's rule needs the class sizes)."""
    pairs = []
    for item in text.split(";"):
        try:
            c, d = (float(v) for v in item.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected pairs "c,d;c,d;...", got {item!r} in {text!r}') from None
        try:
            pairs.append(check_cd(c, d))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"pair {item!r}: {exc}") from None
    if len(set(pairs)) != len(pairs):
        raise argparse.ArgumentTypeError(f"(c, d) pairs must not repeat, got {text!r}")
    return pairs


def output_dir_or_exit(parser, path, *, outputs):
    """``io.check_output_dir`` before any computation; a bad ``--out`` is an argparse error (exit 2)."""
    try:
        return sio.check_output_dir(path, outputs=outputs)
    except sio.OutputDirError as exc:
        parser.error(f"argument --out: {exc}")


def interrupted(out, checkpoint, saved, what: str) -> KeyboardInterrupt:
    """The one-line message of a Ctrl-C: whether ``out`` changed and what ``checkpoint`` (a file or the work
    area) keeps of the ``saved`` pieces (``what``: "chunk" or "cell"); without it, the outputs were committed."""
    if saved and not checkpoint.exists():  # Ctrl-C right after the commit
        return KeyboardInterrupt(f"interrupted after the outputs in {out} were complete")
    kept = f"{len(saved)} finished {what}(s) are kept in {checkpoint}: rerun with --resume to continue"
    return KeyboardInterrupt(f"interrupted; {out} was not changed; {kept if saved else 'nothing was kept'}")


# The data flags and loading of the real-data scripts (real_data.py, smoothing.py)


def add_data_arguments(parser, *, datasets: dict) -> None:
    """``--dataset`` (``datasets``: name -> help) or ``--features``, ``--relu-dim``, ``--no-center``,
    ``--test-fraction``."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--dataset",
        choices=tuple(datasets),
        default=next(iter(datasets)),
        help="; ".join(f"{name}: {text}" for name, text in datasets.items()),
    )
    src.add_argument(
        "--features",
        type=Path,
        default=None,
        help="your own features: .npz with features/labels[/test_features/test_labels], "
        "or stem.npy + stem.labels.npy (see sdtheory.data)",
    )
    parser.add_argument("--relu-dim", type=int_at_least(1), default=512, help="number of random ReLU features")
    parser.add_argument("--no-center", action="store_true", help="do not centre features before unit-normalising rows")
    parser.add_argument(
        "--test-fraction",
        type=float_in(0.0, 1.0, lo_open=True, hi_open=True),
        default=0.25,
        help="held-out fraction for the digits split (or for --features without a test split), in (0, 1)",
    )


def dataset_or_exit(parser, args, load):
    """``load(args)``; a file or data set that cannot be used is an argparse error naming its flag (exit 2)."""
    try:
        return load(args)
    except (OSError, ValueError, TypeError) as exc:  # the loader's message names the file and the problem
        parser.error(f"argument {'--features' if args.features is not None else '--dataset'}: {exc}")
    except ImportError as exc:
        parser.error(f"argument --dataset: {exc}")


def run_parameters(args, exclude=("out",)) -> dict:
    """The run's parameters as every output file records them: the flags (paths as text) but ``exclude``."""
    return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in vars(args).items() if k not in exclude}


def plain_text(doc: str) -> str:
    """A module docstring as ``--help`` text: reST roles and double-backquote literals unmarked (their text kept)."""
    return re.sub(r"``([^`]+)``", r"\1", re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc))
