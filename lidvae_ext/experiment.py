"""End-to-end runs behind the CLI: train one model, evaluate a checkpoint, compare models.

These functions take plain Python values (no argparse) so they can be used
from notebooks and tests; :mod:`lidvae_ext.cli` only parses arguments.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from . import metrics, report
from .data import Dataset, load_dataset, validation_split
from .ops import fused_available
from .checkpoint import CHECKPOINT_NAME, CheckpointError, check_output_dirs, resolve_checkpoint_path
from .training import (
    DistInfo,
    ModelOptions,
    ModelSpec,
    TrainConfig,
    barrier,
    build_from_spec,
    current_dist,
    load_checkpoint,
    model_from_checkpoint,
    train,
)


@dataclass
class DataOptions:
    """Which data to load (recorded in checkpoints so ``evaluate`` can reload it)."""

    name: str = "digits"
    data_dir: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    seed: int = 0

    def load(self, likelihood: str = "bernoulli") -> Dataset:
        """Load the data; logs a one-line notice when array rows were flattened (e.g. (N, 8, 8) -> (N, 64))."""
        ds = load_dataset(self.name, self.data_dir, self.train_size, self.test_size, self.seed,
                          require_unit_interval=(likelihood == "bernoulli"))
        shape = ds.info.get("flattened_from")
        if shape is not None:
            _log(f"note: {ds.name} holds an array of shape {tuple(shape)}; each row is flattened to "
                 f"{ds.dim} values (D = {ds.dim})")
        return ds


@dataclass
class EvalOptions:
    """Metric settings."""

    iwae_samples: int = 100
    au_threshold: float = 0.01
    batch_size: int = 256
    mi_samples: int = 1
    seed: int = 0
    au_thresholds: tuple[float, ...] = (0.001, 0.01, 0.1)
    diagnostics: int = 0
    diagnostic_samples: int = 500


@dataclass
class RunResult:
    """Metrics (with ``seconds`` = training wall time) and where things were written."""

    metrics: dict[str, Any]
    out_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)


def _log(msg: str, stream: TextIO | None = None) -> None:
    if current_dist().is_main:
        print(msg, file=stream or sys.stderr, flush=True)


@contextmanager
def output_dir(out: Path) -> Iterator[Path]:
    """Create ``out`` (and missing parents) for a run; if the run fails, remove the directories it
    created and left empty. Files are never removed, nor directories that existed before."""
    top = None
    for p in (out, *out.parents):
        if p.exists():
            break
        top = p
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    except BaseException:
        if top is not None:
            for root, _, _ in os.walk(top, topdown=False):
                try:
                    os.rmdir(root)  # only succeeds on an empty directory
                except OSError:
                    pass
        raise


def resume_notice(name: str, out_dir: Path, resume: bool) -> None:
    """With ``resume``, say in one line when ``out_dir`` holds no checkpoint, so the run starts fresh."""
    if resume and not (out_dir / CHECKPOINT_NAME).is_file():
        _log(f"[{name}] --resume: no checkpoint at {out_dir / CHECKPOINT_NAME}; starting a new run")


def _train_one(spec: ModelSpec, ds: Dataset, data: DataOptions, model_opts: ModelOptions, train_cfg: TrainConfig,
               eval_opts: EvalOptions, out_dir: Path, resume: bool, evaluate: bool = True):
    resume_notice(spec.name, out_dir, resume)
    fit_x, stop_x = ds.train, None
    if train_cfg.early_stopping is not None:
        fit_x, stop_x = validation_split(ds.train, train_cfg.val_fraction, train_cfg.seed)
    torch.manual_seed(train_cfg.seed)  # identical encoder initialization for every model of a comparison
    model = build_from_spec(spec, ds.dim, model_opts, train_x=fit_x)
    cfg = TrainConfig(**{**asdict(train_cfg), "desc": spec.name})
    extra = {"data": asdict(data), "spec": spec.name, "model_options": asdict(model_opts)}
    result = train(model, fit_x, cfg, out_dir, val_x=ds.test, stop_x=stop_x, resume=resume, extra_state=extra)
    if result.resumed_from is not None:
        _log(f"[{spec.name}] resumed from epoch {result.resumed_from} ({out_dir})")
    out: dict[str, Any] = {}
    if evaluate and current_dist().is_main:
        out = metrics.evaluate(model, ds.test, au_threshold=eval_opts.au_threshold,
                               iwae_samples=eval_opts.iwae_samples, mi_samples=eval_opts.mi_samples,
                               batch_size=eval_opts.batch_size, seed=eval_opts.seed, labels=ds.test_labels)
        out.update(seconds=result.seconds, epochs=result.epochs, model=spec.name, data=ds.name,
                   train_size=int(fit_x.shape[0]), kl_weight=model.kl_weight,
                   strong_convexity=model.config.get("strong_convexity"), beta=model.config.get("beta"),
                   active_units_at=metrics.active_units_at(out["au_variance"], eval_opts.au_thresholds),
                   best_epoch=result.best_epoch, stopped_epoch=result.stopped_epoch,
                   val_size=None if stop_x is None else int(stop_x.shape[0]))
        if getattr(model, "is_mixture", False):
            out["flow"] = model.flow is not None
        if eval_opts.diagnostics:
            from .diagnostics import diagnose

            out["diagnostics"] = diagnose(model, ds.test, num_examples=eval_opts.diagnostics,
                                          posterior_samples=eval_opts.diagnostic_samples, seed=eval_opts.seed)
    return model, out, result


def run_train(spec: str, data: DataOptions, model_opts: ModelOptions, train_cfg: TrainConfig,
              eval_opts: EvalOptions, out_dir: str | Path, resume: bool = False, evaluate: bool = True,
              overwrite: bool = False) -> RunResult:
    """Train one model into ``out_dir`` (``checkpoint.pt``, ``history.json``, ``metrics.json``).

    An ``out_dir`` that holds a checkpoint is refused (:class:`~lidvae_ext.errors.RunExists`,
    before anything is written) unless ``resume`` (continue it) or ``overwrite`` (replace it).
    """
    out = Path(out_dir)
    parsed = ModelSpec.parse(spec)
    check_output_dirs([out], resume, overwrite)
    with output_dir(out):
        ds = data.load(model_opts.likelihood)
        _log(f"[{parsed.name}] {ds.name}: {ds.train.shape[0]} train / {ds.test.shape[0]} test, D={ds.dim}, "
             f"K={model_opts.latent_dim}, {train_cfg.epochs} epochs, world size {current_dist().world_size}")
        _, m, result = _train_one(parsed, ds, data, model_opts, train_cfg, eval_opts, out, resume, evaluate)
        if current_dist().is_main:
            report.write_json(out / "history.json", result.history)
            if m:
                report.write_json(out / "metrics.json", m)
    barrier()
    return RunResult(m, out, result.history)


def data_from_checkpoint(checkpoint: str | Path, state: dict[str, Any] | None = None) -> DataOptions:
    """The :class:`DataOptions` recorded in a checkpoint (defaults if it records none).

    For a sentence VAE: the name, directory, train/test sizes and seed of its
    text data (:func:`lidvae_ext.experiment_text.text_data_from_checkpoint` has them all).

    Raises :class:`~lidvae_ext.errors.CheckpointError` if the record is not a
    valid data description.
    """
    if state is None:
        checkpoint = resolve_checkpoint_path(checkpoint)
        state = load_checkpoint(checkpoint)
    if state["model_config"].get("model") in ("svae", "lidsvae"):  # text data: the fields the two share
        from .experiment_text import text_data_from_checkpoint

        text = text_data_from_checkpoint(Path(checkpoint), dict(state.get("data", {})))
        return DataOptions(text.name, text.data_dir, text.train_size, text.test_size, text.seed)
    saved = state.get("data", {})
    types = {"name": (str,), "data_dir": (str, type(None)), "train_size": (int, type(None)),
             "test_size": (int, type(None)), "seed": (int,)}
    for key, value in saved.items():
        if key not in types:
            raise CheckpointError(checkpoint, f"malformed: 'data' has an unknown entry {key!r:.40} "
                                              f"(expected {', '.join(types)})")
        if not isinstance(value, types[key]) or isinstance(value, bool):
            raise CheckpointError(checkpoint, f"malformed: 'data' entry {key!r} is {value!r:.60} "
                                              f"({type(value).__name__})")
    return DataOptions(**saved)


def run_evaluate(checkpoint: str | Path, data: DataOptions | None = None, eval_opts: EvalOptions | None = None,
                 backend: str | None = None) -> dict[str, Any]:
    """Metrics of a saved model on the held-out split of its (or the given) data."""
    path = resolve_checkpoint_path(checkpoint)
    state = load_checkpoint(path)
    eval_opts = eval_opts or EvalOptions()
    if state["model_config"].get("model") in ("svae", "lidsvae"):  # sentence VAEs: their own data and metrics
        from .experiment_text import evaluate_text_checkpoint

        return evaluate_text_checkpoint(path, state, data, eval_opts, backend, label=str(checkpoint))
    cfg_backend = state["model_config"].get("backend")
    if backend is None and cfg_backend == "fused" and not fused_available("cpu"):
        backend = "auto"
    model = model_from_checkpoint(state, backend=backend, source=path)
    data = data or data_from_checkpoint(path, state)
    ds = data.load(model.likelihood.name)
    data_dim = model.config.get("data_dim")
    if data_dim is not None and ds.dim != data_dim:
        raise ValueError(f"data {ds.name!r} has dimension {ds.dim}, the model of {path} needs {data_dim}")
    out = metrics.evaluate(model, ds.test, au_threshold=eval_opts.au_threshold, iwae_samples=eval_opts.iwae_samples,
                           mi_samples=eval_opts.mi_samples, batch_size=eval_opts.batch_size, seed=eval_opts.seed,
                           labels=ds.test_labels)
    out.update(checkpoint=str(checkpoint), model=state.get("spec", state["model_config"]["model"]),
               epochs=int(state["epoch"]), seconds=float(state["seconds"]), data=ds.name,
               active_units_at=metrics.active_units_at(out["au_variance"], eval_opts.au_thresholds))
    if "early_stopping" in state:
        out.update(best_epoch=int(state["early_stopping"]["best_epoch"]))
    if eval_opts.diagnostics:
        from .diagnostics import diagnose

        out["diagnostics"] = diagnose(model, ds.test, num_examples=eval_opts.diagnostics,
                                      posterior_samples=eval_opts.diagnostic_samples, seed=eval_opts.seed)
    return out


def run_compare(specs: list[ModelSpec], data: DataOptions, model_opts: ModelOptions, train_cfg: TrainConfig,
                eval_opts: EvalOptions, out_dir: str | Path, resume: bool = False, figures: bool = True,
                stream: TextIO | None = None, overwrite: bool = False) -> dict[str, dict[str, Any]]:
    """Train every model with the same seed, data and budget, then write the report.

    Writes ``out_dir/<model>/checkpoint.pt``, ``report.json``, ``report.md`` and
    the figures (``kl_per_dim.png``, ``reconstructions.png``, ``samples.png``,
    ``training_curves.png``); prints the markdown table to ``stream`` (stdout).
    A model directory that holds a checkpoint is refused (before anything is
    trained) unless ``resume`` or ``overwrite``.
    """
    out = Path(out_dir)
    check_output_dirs([out / s.name for s in specs], resume, overwrite)
    with output_dir(out):
        return _run_compare(specs, data, model_opts, train_cfg, eval_opts, out, resume, figures, stream)


def _run_compare(specs: list[ModelSpec], data: DataOptions, model_opts: ModelOptions, train_cfg: TrainConfig,
                 eval_opts: EvalOptions, out: Path, resume: bool, figures: bool,
                 stream: TextIO | None) -> dict[str, dict[str, Any]]:
    ds = data.load(model_opts.likelihood)
    info: DistInfo = current_dist()
    _log(f"compare {', '.join(s.name for s in specs)} on {ds.name}: {ds.train.shape[0]} train / "
         f"{ds.test.shape[0]} test, D={ds.dim}, K={model_opts.latent_dim}, {train_cfg.epochs} epochs, "
         f"{torch.get_num_threads()} threads x {info.world_size} process(es)")
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    models, histories = {}, {}
    for spec in specs:
        model, m, result = _train_one(spec, ds, data, model_opts, train_cfg, eval_opts, out / spec.name, resume)
        models[spec.name], histories[spec.name] = model, result.history
        if info.is_main:
            results[spec.name] = m
            report.write_json(out / spec.name / "metrics.json", m)
            report.write_json(out / spec.name / "history.json", result.history)
            _log(f"[{spec.name}] AU {m['active_units']}/{m['latent_dim']}, KL {m['kl']:.2f}, MI {m['mutual_info']:.2f}, "
                 f"IWAE NLL {m['iwae_nll']:.2f} (train {m['seconds']:.1f}s, eval {m['eval_seconds']:.1f}s)")
    if info.is_main:
        meta = {"data": ds.name, "train_size": int(ds.train.shape[0]), "test_size": int(ds.test.shape[0]),
                "models": [s.name for s in specs], "model_options": asdict(model_opts), "train": asdict(train_cfg),
                "eval": asdict(eval_opts), "au_threshold": eval_opts.au_threshold,
                "threads": torch.get_num_threads(), "world_size": info.world_size,
                "fused_kernels": fused_available("cpu"), "torch": torch.__version__,
                "total_seconds": None}
        if figures:
            report.write_figures(models, eval_test_images(ds, models), results, ds.image_shape, out,
                                 seed=eval_opts.seed, histories=histories)
        meta["total_seconds"] = round(time.perf_counter() - t0, 1)
        report.write_json(out / "report.json", results)
        report.write_markdown(out / "report.md", results, meta)
        print(report.markdown_table(results), file=stream or sys.stdout, flush=True)
        _log(f"wrote {out / 'report.json'}, {out / 'report.md'} and figures in {meta['total_seconds']}s total")
    barrier()
    return results


def eval_test_images(ds: Dataset, models: dict[str, Any]) -> torch.Tensor:
    """Held-out inputs shown in the reconstruction figure (binarized like the metrics' targets)."""
    first = next(iter(models.values()))
    return first.likelihood.fixed_targets(ds.test, 0)


def dumps(obj: Any) -> str:
    """JSON for stdout."""
    return json.dumps(obj, indent=2)
