"""Row 9: fine-tuning steps/s through run.py against a bare Session loop over the same graph and input.

The documented fine-tuning recipe (``--hyperparameter_set mobilenet``: the module trained with the
head, its batch norm frozen) on the small CNN as a 224x224 hub module (``project_config``), its
fine-tuning phase alone (``--head_epochs 0``: a head phase changes the starting values, not a
step). ``run.py``: ``run.main`` in this process, as a user runs it (the run loop's hooks, the
cycles hook, the progress bar, summaries, checkpoints), its steps timed by a hook of their own
(``waiting.timed_steps``); ``session``: row 3's bare ``tf.compat.v1.Session`` loop running only
the model_fn's train_op over the same ``input_fn``. Steady state over the same window of steps
after a warm-up; one evaluation, after the window, on one shard.
"""

import os
import shutil
import tempfile

from benchmarks import measure, project_config, training, waiting
from benchmarks.report import target
from project import feature_extractor

RECIPE = ("--hyperparameter_set", "mobilenet", "--head_epochs", "0", "--train_epochs", "1", "--epochs_between_evals",
          "1", "--random_seed", "0")


def recipe_argv(records_dir: str, work_dir: str) -> list:
    """run.py arguments of the fine-tuning recipe on the benchmark records (evaluated on their first shard)."""
    return project_config.run_argv(records_dir, *RECIPE, "--eval_data", os.path.join(records_dir, "train-00000-of-*"),
                                   "--model_dir", os.path.join(work_dir, "model"),
                                   "--best_model_dir", os.path.join(work_dir, "best"))


def run_py_loop(records_dir: str, work_dir: str, warmup: int, steps: int) -> tuple:
    """Steps/s of run.py's fine-tuning steps ``warmup`` to ``warmup + steps``."""
    out = tempfile.mkdtemp(prefix="fine-tuning-", dir=work_dir)
    try:
        with waiting.timed_steps() as events:
            waiting.run_quietly(recipe_argv(records_dir, out))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ends = [end for kind, _, end in events if kind == "train"]
    return training.window_rate(ends, warmup, steps), {"steps": len(ends)}


def run(records_dir: str, work_dir: str, warmup: int, steps: int, budget, rounds: int, max_extra: int,
        quiet_wait: float, log=print) -> dict:
    """Row 9: run.py's fine-tuning steps/s / a bare Session's, same graph and input."""
    settings, params = project_config.parsed(recipe_argv(records_dir, work_dir))
    params = training.training_params(settings, params)
    loops = {"run.py": lambda: run_py_loop(records_dir, work_dir, warmup, steps),
             "session": lambda: training.session_loop(settings, params, warmup, steps)}
    log(f"  fine-tuning through run.py: {params['hub_module']}, batch {settings.train_batch_size}, "
        f"batch norm {feature_extractor.batch_norm_mode(params)}, {warmup} warm-up + {steps} timed steps")
    done = measure.rounds(loops, rounds, budget, max_extra, quiet_wait, log)
    summary = measure.ratio_summary(done, "run.py", "session")
    return {
        "id": "fine_tuning",
        "title": "fine-tuning steps/s through run.py vs a bare Session loop, same graph and input",
        "figures": {
            "model": params["hub_module"], "batch_size": settings.train_batch_size, "image_size": params["image_size"],
            "warmup_steps": warmup, "timed_steps": steps,
            "steps_per_sec_run_py": measure.median_value(done, "run.py"),
            "steps_per_sec_session": measure.median_value(done, "session"),
            "step_ms_median_session": measure.median_detail(done, "session", "step_ms_median"),
            "ratio": summary["ratio"],
        },
        "targets": [target("fine-tuning: run.py / bare Session, steps/s", summary["ratio"], ">=", 0.95, "", summary)],
    }
