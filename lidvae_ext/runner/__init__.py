"""Runs: train one model, evaluate a checkpoint, compare models — one code path for every family
(:mod:`.run`), the data kinds it serves (:mod:`.datakinds`) and the run's options (:mod:`.options`)."""

from .options import DataOptions, EvalOptions, RunResult, TextDataOptions
from .run import data_from_checkpoint, dumps, output_dir, resume_notice, run_compare, run_evaluate, run_train

__all__ = ["DataOptions", "EvalOptions", "RunResult", "TextDataOptions", "data_from_checkpoint", "dumps",
           "output_dir", "resume_notice", "run_compare", "run_evaluate", "run_train"]
