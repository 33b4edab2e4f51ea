"""End-to-end runs behind the CLI, the same code path for every family: train one model,
evaluate a checkpoint, compare models.

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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from .. import report
from ..checkpoint import CHECKPOINT_NAME, check_output_dirs, load_checkpoint, resolve_checkpoint_path
from ..core.metrics import active_units_at
from ..core.spec import ModelSpec
from ..families import GAUSSIAN, Family, family_of_kind, model_from_checkpoint, parse_spec
from ..ops import fused_available
from ..training import TrainConfig, barrier, current_dist, train
from .datakinds import DATA_KINDS, data_kind_of_name
from .options import DataOptions, EvalOptions, RunResult, data_options_from_record


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


def _families(specs: list[ModelSpec]) -> tuple[list[Family], Any]:
    """Each spec's family, and the data kind they share (``ValueError`` if they differ)."""
    families = [family_of_kind(s.model) for s in specs]
    kinds = {f.data_kind for f in families}
    if len(kinds) > 1:
        listed = ", ".join(f"{s.name} ({f.data_kind})" for s, f in zip(specs, families))
        raise ValueError(f"the models of one run must take the same data: {listed}")
    return families, DATA_KINDS[families[0].data_kind]


def _check_data(kind: Any, data: Any) -> None:
    """The data options must be the data kind's (image :class:`DataOptions`, :class:`TextDataOptions`)."""
    if type(data) is not kind.options_class:
        raise ValueError(f"these models take {kind.name}; got data {getattr(data, 'name', data)!r} "
                         f"({type(data).__name__})")


def _check_diagnostics(family: Family, eval_opts: EvalOptions, what: str) -> None:
    if eval_opts.diagnostics and not family.supports_diagnostics:
        raise ValueError(f"--diagnostics is not available for {family.name} models ({what})")


def _metrics(family: Family, spec: ModelSpec, model: nn.Module, ds: Any, eval_opts: EvalOptions,
             result: Any, fit_rows: int, stop_rows: int | None) -> dict[str, Any]:
    """A trained model's report entry: its family's metrics, then what the run recorded."""
    out = family.evaluate(model, ds, eval_opts)
    out.update(seconds=result.seconds, epochs=result.epochs, model=spec.name, data=ds.name, train_size=fit_rows,
               **family.run_fields(spec, model),
               active_units_at=active_units_at(out["au_variance"], eval_opts.au_thresholds),
               best_epoch=result.best_epoch, stopped_epoch=result.stopped_epoch, val_size=stop_rows)
    out.update(family.model_fields(model))
    if eval_opts.diagnostics:
        from ..diagnostics import diagnose

        out["diagnostics"] = diagnose(model, ds.test, num_examples=eval_opts.diagnostics,
                                      posterior_samples=eval_opts.diagnostic_samples, seed=eval_opts.seed,
                                      extra=family.latent_diagnostics)
    return out


def _train_one(family: Family, spec: ModelSpec, ds: Any, kind: Any, data: Any, model_opts: Any,
               train_cfg: TrainConfig, eval_opts: EvalOptions, out_dir: Path, resume: bool,
               evaluate: bool = True) -> tuple[nn.Module, dict[str, Any], Any]:
    resume_notice(spec.name, out_dir, resume)
    fit_x, stop_x = kind.fit_and_stop(ds, train_cfg)
    torch.manual_seed(train_cfg.seed)  # identical encoder initialization for every model of a comparison
    model = family.build(spec, ds, model_opts, fit_x)
    cfg = TrainConfig(**{**asdict(train_cfg), "desc": spec.name})
    extra = {"data": asdict(data), "spec": spec.name, "model_options": asdict(model_opts), **kind.checkpoint_extra(ds)}
    # held-out AU per epoch on the test split, the split of the table (so curve and table agree)
    result = train(model, fit_x, cfg, out_dir, val_x=ds.test, stop_x=stop_x, resume=resume, extra_state=extra)
    if result.resumed_from is not None:
        _log(f"[{spec.name}] resumed from epoch {result.resumed_from} ({out_dir})")
    out: dict[str, Any] = {}
    if evaluate and current_dist().is_main:
        out = _metrics(family, spec, model, ds, eval_opts, result, int(fit_x.shape[0]),
                       None if stop_x is None else int(stop_x.shape[0]))
    return model, out, result


def run_train(spec: str, data: Any, model_opts: Any, train_cfg: TrainConfig, eval_opts: EvalOptions,
              out_dir: str | Path, resume: bool = False, evaluate: bool = True, overwrite: bool = False) -> RunResult:
    """Train one model of any family into ``out_dir`` (``checkpoint.pt``, ``history.json``, ``metrics.json``).

    ``data`` is a :class:`DataOptions` (image families) or :class:`TextDataOptions` (sentence family);
    ``model_opts`` the family's options. An ``out_dir`` that holds a checkpoint is refused
    (:class:`~lidvae_ext.errors.RunExists`, before anything is written) unless ``resume``
    (continue it) or ``overwrite`` (replace it).
    """
    out = Path(out_dir)
    parsed = parse_spec(spec)
    (family,), kind = _families([parsed])
    _check_data(kind, data)
    _check_diagnostics(family, eval_opts, parsed.name)
    check_output_dirs([out], resume, overwrite)
    with output_dir(out):
        ds = kind.load(data, model_opts.likelihood, _log)
        _log(f"[{parsed.name}] {kind.describe(ds)}, K={model_opts.latent_dim}, {train_cfg.epochs} epochs, "
             f"world size {current_dist().world_size}")
        _, m, result = _train_one(family, parsed, ds, kind, data, model_opts, train_cfg, eval_opts, out, resume,
                                  evaluate)
        if current_dist().is_main:
            report.write_json(out / "history.json", result.history)
            if m:
                report.write_json(out / "metrics.json", m)
    barrier()
    return RunResult(m, out, result.history)


def data_from_checkpoint(checkpoint: str | Path, state: dict[str, Any] | None = None) -> Any:
    """The data options a checkpoint records (:class:`DataOptions` or, for a sentence VAE,
    :class:`TextDataOptions`; defaults for fields it does not record).

    Raises :class:`~lidvae_ext.errors.CheckpointError` if the record is not a valid data description.
    """
    path = resolve_checkpoint_path(checkpoint)
    if state is None:
        state = load_checkpoint(path)
    kind = DATA_KINDS[_family_of_state(state).data_kind]
    return data_options_from_record(kind.options_class, dict(state.get("data", {})), path)


def _family_of_state(state: dict[str, Any]) -> Family:
    kind = state["model_config"].get("model")
    try:
        return family_of_kind(kind)
    except ValueError:
        return GAUSSIAN  # model_from_checkpoint names the unknown kind in its error


def _data_for_evaluation(path: Path, state: dict[str, Any], family: Family, data: Any) -> Any:
    """The recorded data options, with the fields ``data`` sets (text: ``name``, ``seed`` and those not None)."""
    recorded = data_from_checkpoint(path, state)
    if data is None:
        return recorded
    if family.data_kind == "images" and type(data) is DataOptions:
        return data
    if data_kind_of_name(data.name) != family.data_kind:
        raise ValueError(f"{path} holds a {family.name} model ({state['model_config']['model']}): --data must be "
                         f"{family.data_kind} data, got {data.name!r}")
    changes = {"name": data.name, "seed": data.seed}
    changes.update({k: getattr(data, k) for k in ("data_dir", "train_size", "test_size") if getattr(data, k) is not None})
    return type(recorded)(**{**asdict(recorded), **changes})


def run_evaluate(checkpoint: str | Path, data: Any = None, eval_opts: EvalOptions | None = None,
                 backend: str | None = None) -> dict[str, Any]:
    """Metrics of a saved model of any family on the held-out split of its (or the given) data.

    ``data`` overrides the recorded data: image options replace it; for a sentence VAE the
    ``name``, ``seed`` and the not-None sizes and directory are changed, and the data must give
    the vocabulary the model was trained with.
    """
    path = resolve_checkpoint_path(checkpoint)
    state = load_checkpoint(path)
    eval_opts = eval_opts or EvalOptions()
    family = _family_of_state(state)
    if eval_opts.batch_size is None:  # the family's evaluation batch (the one its compare uses)
        eval_opts = replace(eval_opts, batch_size=family.cli_defaults.get("eval_batch_size", EvalOptions.batch_size))
    _check_diagnostics(family, eval_opts, f"{state['model_config'].get('model')}, {path}")
    if backend is None and state["model_config"].get("backend") == "fused" and not fused_available("cpu"):
        backend = "auto"
    model = model_from_checkpoint(state, backend=backend, source=path)
    kind = DATA_KINDS[family.data_kind]
    data = _data_for_evaluation(path, state, family, data)
    ds = kind.load(data, model.likelihood.name, _log)
    if isinstance(state.get("vocab"), dict) and ds.vocab.to_dict() != state["vocab"]:
        raise ValueError(f"data {ds.name!r} gives a vocabulary of {len(ds.vocab)} words other than the one {path} "
                         "was trained with; evaluate on the data recorded in the checkpoint")
    kind.check_model(ds, model, path)
    out = family.evaluate(model, ds, eval_opts)
    out.update(checkpoint=str(checkpoint), model=state.get("spec", state["model_config"]["model"]),
               epochs=int(state["epoch"]), seconds=float(state["seconds"]), data=ds.name,
               active_units_at=active_units_at(out["au_variance"], eval_opts.au_thresholds))
    if "early_stopping" in state:
        out.update(best_epoch=int(state["early_stopping"]["best_epoch"]))
    if eval_opts.diagnostics:
        from ..diagnostics import diagnose

        out["diagnostics"] = diagnose(model, ds.test, num_examples=eval_opts.diagnostics,
                                      posterior_samples=eval_opts.diagnostic_samples, seed=eval_opts.seed,
                                      extra=family.latent_diagnostics)
    return out


def run_compare(specs: list[ModelSpec], data: Any, model_opts: Any, train_cfg: TrainConfig,
                eval_opts: EvalOptions, out_dir: str | Path, resume: bool = False, figures: bool = True,
                stream: TextIO | None = None, overwrite: bool = False) -> dict[str, dict[str, Any]]:
    """Train every model with the same seed, data and budget, then write the report.

    Writes ``out_dir/<model>/checkpoint.pt`` (+ ``metrics.json``, ``history.json``),
    ``report.json``, ``report.md``, ``report.html`` and the figures; prints the
    markdown table to ``stream`` (stdout). The models may come from several
    families that take the same data. A model directory that holds a checkpoint
    is refused (before anything is trained) unless ``resume`` or ``overwrite``.
    """
    out = Path(out_dir)
    families, kind = _families(specs)
    _check_data(kind, data)
    for family, spec in zip(families, specs):
        _check_diagnostics(family, eval_opts, spec.name)
    check_output_dirs([out / s.name for s in specs], resume, overwrite)
    with output_dir(out):
        return _run_compare(specs, families, kind, data, model_opts, train_cfg, eval_opts, out, resume, figures,
                            stream)


def _run_compare(specs: list[ModelSpec], families: list[Family], kind: Any, data: Any, model_opts: Any,
                 train_cfg: TrainConfig, eval_opts: EvalOptions, out: Path, resume: bool, figures: bool,
                 stream: TextIO | None) -> dict[str, dict[str, Any]]:
    t0, cpu0 = time.perf_counter(), time.process_time()
    ds = kind.load(data, model_opts.likelihood, _log)
    info = current_dist()
    _log(f"compare {', '.join(s.name for s in specs)} on {kind.describe(ds)}, K={model_opts.latent_dim}, "
         f"{train_cfg.epochs} epochs, {torch.get_num_threads()} threads x {info.world_size} process(es)")
    results: dict[str, dict[str, Any]] = {}
    models, histories = {}, {}
    for family, spec in zip(families, specs):
        model, m, result = _train_one(family, spec, ds, kind, data, model_opts, train_cfg, eval_opts, out / spec.name,
                                      resume)
        models[spec.name], histories[spec.name] = model, result.history
        if info.is_main:
            results[spec.name] = m
            report.write_json(out / spec.name / "metrics.json", m)
            report.write_json(out / spec.name / "history.json", result.history)
            _log(family.log_line(spec.name, m))
    if info.is_main:
        _write_report(specs, families, kind, ds, models, results, histories, model_opts, train_cfg, eval_opts, out,
                      figures, stream, t0, cpu0)
    barrier()
    return results


def _write_report(specs: list[ModelSpec], families: list[Family], kind: Any, ds: Any, models: dict[str, nn.Module],
                  results: dict[str, dict[str, Any]], histories: dict[str, Any], model_opts: Any,
                  train_cfg: TrainConfig, eval_opts: EvalOptions, out: Path, figures: bool, stream: TextIO | None,
                  t0: float, cpu0: float) -> None:
    """``report.json``, the figures, the family sections, ``report.md``/``report.html``; the table on ``stream``."""
    present = list(dict.fromkeys(families))  # each family once, in order of first use
    members = {f: {s.name: models[s.name] for s, g in zip(specs, families) if g is f} for f in present}
    meta = {**kind.meta(ds), "models": [s.name for s in specs], "model_options": asdict(model_opts),
            "train": asdict(train_cfg), "eval": asdict(eval_opts), "au_threshold": eval_opts.au_threshold,
            "threads": torch.get_num_threads(), "world_size": current_dist().world_size,
            "fused_kernels": fused_available("cpu"), "torch": torch.__version__, "total_seconds": None}
    if figures:
        kind.shared_figures(models, ds, results, histories, out, eval_opts.seed)
        for family in present:
            family.figures(members[family], ds, results, out, eval_opts.seed)
    sections = [s for family in present for s in family.sections(members[family], ds, results, out, eval_opts.seed)]
    meta["total_seconds"] = round(time.perf_counter() - t0, 1)
    meta["total_cpu_seconds"] = round(time.process_time() - cpu0, 1)
    columns = [c for family in present for c in family.table_columns()]
    table = report.markdown_table(results, columns)
    report.write_json(out / "report.json", results)
    report.write_markdown(out / "report.md", results, meta, table, sections)
    print(table, file=stream or sys.stdout, flush=True)
    _log(f"wrote {out / 'report.json'}, {out / 'report.md'} and figures in {meta['total_seconds']}s total "
         f"({meta['total_cpu_seconds']}s CPU time)")


def dumps(obj: Any) -> str:
    """JSON for stdout."""
    return json.dumps(obj, indent=2)
