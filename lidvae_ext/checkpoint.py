"""Checkpoint files: atomic writes, safe loading, validation and model rebuilding.

A checkpoint is a ``torch.save`` of one dict that holds **only tensors and
plain values** (dict, list, tuple, str, int, float, bool, None). It is read
back with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler
refuses any other pickled object (classes, functions, ``__reduce__`` tricks)
*before* it is constructed, so opening a file never runs code it holds.

Every way a file can be unusable raises :class:`~lidvae_ext.errors.CheckpointError`
(a ``ValueError``) with a one-line message naming the file and the problem:
unreadable / truncated / not a checkpoint, pickled objects (refused), another
``format``, missing or mistyped entries, a model config this version cannot
build, weights that do not match the config, and ``resume`` into a run whose
settings differ (listing them). A missing file raises ``FileNotFoundError``.

Layout (``format = "lidvae_ext.checkpoint/1"``)::

    format           str
    model_config     dict   (``model.config``; plain values)
    model_state      dict   parameter/buffer name -> Tensor
    optimizer_state  dict   ``optimizer.state_dict()`` ("state", "param_groups")
    epoch            int    epochs completed
    seconds          float  training wall time so far
    history          list   per-epoch records (dicts of numbers)
    train_config     dict   ``dataclasses.asdict(TrainConfig)``
    data, spec, model_options, ...   optional extras (plain values)

Checkpoints written by earlier versions of this package use the same layout
and load unchanged.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import CheckpointError, RunExists, one_line

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "CheckpointError", "RunExists", "check_output_dirs", "check_plain",
    "check_resume",
    "load_checkpoint", "load_model", "load_training_state", "resolve_checkpoint_path",
    "save_checkpoint", "validate_checkpoint",
]

# builds the untrained model of a ``model_config`` (``backend`` overrides a LID model's)
ModelBuilder = Callable[..., torch.nn.Module]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "lidvae_ext.checkpoint/1"
_FORMAT_PREFIX = "lidvae_ext.checkpoint/"

#: TrainConfig fields that do not change the trajectory of a run, so ``resume`` may change them
#: (more epochs, another checkpoint interval, ...). Every other recorded field must match.
RESUME_FREE_TRAIN_KEYS = frozenset({"epochs", "checkpoint_every", "progress", "desc", "au_threshold"})
#: Recorded data fields that ``resume`` may change (the same files may live elsewhere).
RESUME_FREE_DATA_KEYS = frozenset({"data_dir"})

#: What torch's weights-only unpickler says when it refuses a global (class/function), a call or an object.
_CODE_REFUSALS = r"GLOBAL|call reduce|create new object|Can only build|must be imported to load"
_PLAIN_SCALARS = (str, int, float, bool, type(None))
_MAX_LISTED = 3
_MAX_DEPTH = 32


# ----------------------------------------------------------------------------- plain values
def _plain_problem(obj: Any, where: str, tensors: bool = True) -> str | None:
    """The first non-plain value in ``obj`` as ``"<where> is a <type>"``, or None.

    Exact types only (a ``numpy.float64`` is not a float here: it would not
    load under ``weights_only``). Containers may be shared but not nested in
    themselves or deeper than :data:`_MAX_DEPTH` (a crafted file can hold either).
    """
    on_path: set[int] = set()

    def visit(value: Any, at: str, depth: int) -> str | None:
        kind = type(value)
        if kind in _PLAIN_SCALARS:
            return None
        if kind in (torch.Tensor, torch.nn.Parameter):
            return None if tensors else f"{at} is a tensor (expected a plain value)"
        if kind not in (dict, OrderedDict, list, tuple):
            return f"{at} is a {kind.__module__}.{kind.__qualname__}"
        if depth >= _MAX_DEPTH:
            return f"{at} is nested more than {_MAX_DEPTH} levels deep"
        if id(value) in on_path:
            return f"{at} contains itself"
        on_path.add(id(value))
        try:
            if kind in (dict, OrderedDict):
                for key, item in value.items():
                    if type(key) not in (str, int):
                        return f"{at} has a key of type {type(key).__name__} ({key!r:.40})"
                    if problem := visit(item, f"{at}[{key!r}]", depth + 1):
                        return problem
            else:
                for i, item in enumerate(value):
                    if problem := visit(item, f"{at}[{i}]", depth + 1):
                        return problem
        finally:
            on_path.discard(id(value))
        return None

    return visit(obj, where, 0)


def check_plain(state: Any, name: str = "state") -> None:
    """Raise ``TypeError`` unless ``state`` holds only tensors and plain values.

    Plain: dict (str or int keys), list, tuple, str, int, float, bool, None.
    """
    problem = _plain_problem(state, name)
    if problem is not None:
        raise TypeError(f"a checkpoint may hold only tensors and plain values (dict, list, tuple, str, int, "
                        f"float, bool, None): {problem}; convert it (e.g. dataclasses.asdict, str(path))")


# ----------------------------------------------------------------------------- writing
def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically.

    ``state`` must hold only tensors and plain values (:func:`check_plain`,
    ``TypeError`` otherwise, before anything is written). The bytes go to a
    temporary file in the same directory, are flushed and fsync'ed, then
    ``os.replace`` renames it over ``path``: a crash or Ctrl-C at any moment
    leaves either the old or the new checkpoint, never a torn one.
    """
    check_plain(state, "checkpoint")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


# ----------------------------------------------------------------------------- reading
def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """``path``, or ``path/checkpoint.pt`` for a directory; ``FileNotFoundError`` if there is no file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


def _read(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a :class:`CheckpointError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4" for foreign files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc).split("WeightsUnpickler error:", 1)[-1].strip()  # torch's own detail, no boilerplate
        if re.search(_CODE_REFUSALS, text):  # the restricted unpickler stopped at a class or function
            found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", text)
            what = f"a pickled Python object ({found.group(1)})" if found else "a pickled Python object"
            raise CheckpointError(path, f"refused to load: it contains {what} that could run code when "
                                        "unpickled; nothing in it was executed. lidvae_ext checkpoints hold "
                                        "only tensors and plain values (open only files you trust "
                                        "with torch.load(weights_only=False))") from None
        raise CheckpointError(path, f"not a readable checkpoint (truncated or not a torch.save file): "
                                    f"{_short(pickle.UnpicklingError(text))}") from None
    except MemoryError:
        raise
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError, IndexError, OSError, ...
        raise CheckpointError(path, f"not a readable checkpoint (truncated or not a torch.save file): "
                                    f"{_short(exc)}") from None


def _short(exc: BaseException, limit: int = 160) -> str:
    text = one_line(str(exc).strip().split("\n")[0].split(". ")[0]) or "empty or cut-off data"
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _type_name(value: Any) -> str:
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_checkpoint(state: Any, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check the layout of a loaded checkpoint; return it, or raise :class:`CheckpointError`.

    Checks the ``format``, that every value is a tensor or a plain value, and
    the presence and types of the required entries. It does not build the
    model (see :func:`load_model`).
    """
    if not isinstance(state, dict):
        raise CheckpointError(path, f"not a lidvae_ext checkpoint (it holds a {_type_name(state)}, "
                                    "not a dict with a 'format' entry)")
    fmt = state.get("format")
    if fmt != CHECKPOINT_FORMAT:
        if isinstance(fmt, str) and fmt.startswith(_FORMAT_PREFIX):
            raise CheckpointError(path, f"unsupported checkpoint format {fmt!r}: this version of lidvae_ext "
                                        f"reads {CHECKPOINT_FORMAT!r} (was it written by a newer version?)")
        if "format" not in state:
            keys = ", ".join(repr(k) for k in list(state)[:5]) or "none"
            raise CheckpointError(path, f"not a lidvae_ext checkpoint (no 'format' entry; its keys: {keys})")
        raise CheckpointError(path, f"not a lidvae_ext checkpoint (format {fmt!r:.80}, expected "
                                    f"{CHECKPOINT_FORMAT!r})")
    problem = _plain_problem(state, "checkpoint")
    if problem is not None:
        raise CheckpointError(path, f"malformed: {problem}; a checkpoint holds only tensors and plain values")

    required: dict[str, tuple[str, Any]] = {
        "model_config": ("a dict", lambda v: isinstance(v, dict)),
        "model_state": ("a dict of tensors", lambda v: isinstance(v, dict)),
        "optimizer_state": ("a dict", lambda v: isinstance(v, dict)),
        "epoch": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
        "seconds": ("a finite number >= 0", lambda v: _is_number(v) and math.isfinite(v) and v >= 0),
        "history": ("a list of dicts", lambda v: isinstance(v, list) and all(isinstance(h, dict) for h in v)),
        "train_config": ("a dict", lambda v: isinstance(v, dict)),
    }
    optional: dict[str, tuple[str, Any]] = {
        "data": ("a dict", lambda v: isinstance(v, dict)),
        "spec": ("a string", lambda v: isinstance(v, str)),
        "model_options": ("a dict", lambda v: isinstance(v, dict)),
    }
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(path, f"malformed: missing {', '.join(repr(k) for k in missing)}")
    for key, (expected, ok) in {**required, **optional}.items():
        if key in state and not ok(state[key]):
            raise CheckpointError(path, f"malformed: {key!r} should be {expected}, got {_describe(state[key])}")

    config = state["model_config"]
    if not isinstance(config.get("model"), str):
        raise CheckpointError(path, f"malformed: 'model_config' has no model kind ('model' entry: "
                                    f"{_describe(config.get('model'))})")
    problem = _plain_problem(config, "checkpoint['model_config']", tensors=False)
    if problem is not None:
        raise CheckpointError(path, f"malformed: {problem}")
    for name, value in state["model_state"].items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise CheckpointError(path, f"malformed: 'model_state' should map names to tensors, "
                                        f"got {name!r:.60} -> {_describe(value)}")
    opt = state["optimizer_state"]
    if not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        raise CheckpointError(path, "malformed: 'optimizer_state' should hold a dict 'state' and a list "
                                    "'param_groups' (an optimizer.state_dict())")
    return state


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (dict, list, tuple)):
        return f"a {_type_name(value)} of length {len(value)}"
    return f"{value!r:.60} ({_type_name(value)})"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`lidvae_ext.training.train` (tensors on CPU).

    Parameters
    ----------
    path : path
        The file, or a directory holding ``checkpoint.pt``.

    Returns
    -------
    dict
        The checkpoint (layout in this module's docstring).

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        The file is unreadable, holds pickled objects (refused without being
        run), has another format or a malformed layout.
    """
    path = resolve_checkpoint_path(path)
    return validate_checkpoint(_read(path), path)


# ----------------------------------------------------------------------------- models
def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _weights_problem(expected: Mapping[str, Tensor], got: Mapping[str, Tensor]) -> str | None:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k} has shape {_shape(got[k])}, the config needs {_shape(v)}"
             for k, v in expected.items() if k in got and tuple(got[k].shape) != tuple(v.shape)]
    wrong += [f"{k} is {got[k].dtype}, the config needs a {v.dtype} tensor"
              for k, v in expected.items() if k in got and tuple(got[k].shape) == tuple(v.shape)
              and (got[k].is_floating_point(), got[k].is_complex()) != (v.is_floating_point(), v.is_complex())]
    parts = []
    for label, items, sep in (("missing", missing, ", "), ("unexpected", unexpected, ", "), ("", wrong, "; ")):
        if items:
            listed = sep.join(items[:_MAX_LISTED]) + (f" (+{len(items) - _MAX_LISTED} more)"
                                                      if len(items) > _MAX_LISTED else "")
            parts.append(f"{label} {listed}".strip())
    return "; ".join(parts) or None


def _rebuild(config: dict[str, Any], weights: Mapping[str, Tensor], backend: str | None, path: Path | None,
             build_model: ModelBuilder):
    """Build the model ``config`` describes and check ``weights`` against it (names, shapes, kinds)."""
    def cannot_build(exc: Exception) -> CheckpointError:
        return CheckpointError(path, f"its model config cannot be built by this version of lidvae_ext "
                                     f"({_short(exc, 200)})")

    def check(model: torch.nn.Module) -> None:
        problem = _weights_problem(model.state_dict(), weights)
        if problem:
            raise CheckpointError(path, f"its weights do not match its model config: {problem}")

    try:  # shapes first, on the meta device: nothing is allocated, whatever sizes the config names
        with torch.device("meta"):
            probe = build_model(config, backend=backend)
    except (NotImplementedError, RuntimeError) as exc:
        if "meta" not in str(exc).lower():
            raise cannot_build(exc) from None
        probe = None  # a model family that cannot be built on meta: check the real model only
    except Exception as exc:
        raise cannot_build(exc) from None
    if probe is not None:
        check(probe)
    try:
        model = build_model(config, backend=backend)
    except Exception as exc:
        raise cannot_build(exc) from None
    check(model)
    return model


def load_model(state: Mapping[str, Any] | str | os.PathLike, build_model: ModelBuilder, backend: str | None = None,
               *, source: str | os.PathLike | None = None) -> torch.nn.Module:
    """Rebuild the model of a checkpoint with ``build_model`` and load its weights.

    :func:`lidvae_ext.families.model_from_checkpoint` calls it with the families' builder.

    Parameters
    ----------
    state : dict or path
        A checkpoint from :func:`load_checkpoint`, or the path of one.
    build_model : callable
        ``build_model(config, backend=...)`` returns the untrained model a ``model_config`` describes.
    backend : str, optional
        Override the LIDVAE Brenier-map backend (e.g. ``"auto"``).
    source : path, optional
        The file ``state`` was read from, named in error messages.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    FileNotFoundError
        ``state`` is a path with no file.
    CheckpointError
        Malformed checkpoint, a model config this version cannot build,
        weights whose names or shapes do not match the config, or
        non-finite weights.
    """
    if isinstance(state, (str, os.PathLike)):
        source = resolve_checkpoint_path(state)
        state = load_checkpoint(source)
    path = Path(source) if source is not None else None
    state = validate_checkpoint(dict(state) if isinstance(state, Mapping) else state, path)
    weights = state["model_state"]
    model = _rebuild(state["model_config"], weights, backend, path, build_model)
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(path, f"its weights hold non-finite values ({', '.join(bad[:_MAX_LISTED])})")
    try:
        model.load_state_dict(weights)
    except Exception as exc:
        raise CheckpointError(path, f"its weights cannot be loaded into the model: {_short(exc)}") from None
    return model


# ----------------------------------------------------------------------------- resuming
def check_output_dirs(dirs: list[str | os.PathLike], resume: bool, overwrite: bool) -> list[Path]:
    """Refuse to start a run over finished ones; return the checkpoints found in ``dirs``.

    Raises :class:`~lidvae_ext.errors.RunExists` when a directory of ``dirs``
    holds ``checkpoint.pt`` and neither ``resume`` (continue it) nor
    ``overwrite`` (replace it) is set, and ``ValueError`` when both are set.
    Nothing is written or removed.
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: --resume continues the checkpoint in "
                         "--out, --overwrite replaces it")
    found = [Path(d) / CHECKPOINT_NAME for d in dirs if (Path(d) / CHECKPOINT_NAME).is_file()]
    if found and not (resume or overwrite):
        raise RunExists(found)
    return found


def _diff(a: Any, b: Any, prefix: str, out: list[str], skip: frozenset[str] = frozenset()) -> None:
    """Append ``"key: checkpoint X, this run Y"`` for every leaf where ``a`` (checkpoint) and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key in skip:
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in a:
                out.append(f"{name}: not in the checkpoint, this run {b[key]!r}")
            elif key not in b:
                out.append(f"{name}: checkpoint {a[key]!r}, not in this run")
            else:
                _diff(a[key], b[key], name, out)
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    if a != b:
        out.append(f"{prefix}: checkpoint {a!r}, this run {b!r}")


def check_resume(state: Mapping[str, Any], path: str | os.PathLike | None, model_config: Mapping[str, Any],
                 train_config: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`CheckpointError` if ``state`` was written by a run with other settings.

    Compared: the whole model config; the training settings except
    :data:`RESUME_FREE_TRAIN_KEYS` (only those recorded in the checkpoint,
    so settings added by later versions do not block old checkpoints); the
    data description except :data:`RESUME_FREE_DATA_KEYS`, when both sides
    have one. The message lists every differing setting.
    """
    diffs: list[str] = []
    _diff(state["model_config"], dict(model_config), "", diffs)
    saved_train = state.get("train_config", {})
    _diff({k: v for k, v in saved_train.items() if k not in RESUME_FREE_TRAIN_KEYS},
          {k: v for k, v in train_config.items() if k in saved_train and k not in RESUME_FREE_TRAIN_KEYS},
          "", diffs)
    if data is not None and isinstance(state.get("data"), dict):
        _diff(state["data"], dict(data), "data", diffs, skip=RESUME_FREE_DATA_KEYS)
    if diffs:
        listed = "; ".join(diffs[:6]) + (f"; (+{len(diffs) - 6} more)" if len(diffs) > 6 else "")
        raise CheckpointError(path, f"cannot resume: the checkpoint holds a different model or training "
                                    f"settings than this run ({listed}); use another --out or the same settings")


def load_training_state(state: Mapping[str, Any], path: str | os.PathLike | None, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer) -> None:
    """Load a checkpoint's weights and optimizer state into ``model``/``optimizer`` (for resuming).

    Raises :class:`CheckpointError` when the weights or the optimizer state do
    not fit the model (names, shapes, parameter groups).
    """
    weights = state["model_state"]
    problem = _weights_problem(model.state_dict(), weights)
    if problem:
        raise CheckpointError(path, f"its weights do not match the model: {problem}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    opt = state["optimizer_state"]
    for index, entry in opt["state"].items():
        if not _is_int(index) or not 0 <= index < len(params) or not isinstance(entry, dict):
            raise CheckpointError(path, f"malformed: 'optimizer_state' has state for parameter {index!r:.40}, "
                                        f"the optimizer has {len(params)}")
        for name, value in entry.items():
            if isinstance(value, Tensor) and value.dim() > 0 and tuple(value.shape) != tuple(params[index].shape):
                raise CheckpointError(path, f"malformed: optimizer state {name!r} of parameter {index} has shape "
                                            f"{_shape(value)}, the parameter {_shape(params[index])}")
    groups = opt["param_groups"]
    for i, (ours, theirs) in enumerate(zip(optimizer.param_groups, groups)):
        if not isinstance(theirs, dict):
            break  # load_state_dict below reports it
        for key, value in ours.items():
            if key == "params":
                continue
            kinds = {type(value), type(theirs.get(key))}
            if key not in theirs or (len(kinds) > 1 and not kinds <= {int, float} and not kinds <= {list, tuple}):
                raise CheckpointError(path, f"malformed: optimizer param group {i} has {key}="
                                            f"{theirs.get(key, '(missing)')!r:.40}, expected a "
                                            f"{type(value).__name__}")
    try:
        optimizer.load_state_dict(opt)  # checks the groups' sizes before it changes anything
    except Exception as exc:
        raise CheckpointError(path, f"its optimizer state does not fit this model's optimizer: "
                                    f"{_short(exc)}") from None
    model.load_state_dict(weights)
