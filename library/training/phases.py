"""Training in phases: a run whose experiment names phases (``Experiment.training_phases``) trains them in order.

E.g. a new head trained on a frozen pretrained network first, then the whole network fine-tuned
from that head. Each phase is a training run of its own option values (``Phase.values`` over the
run's): its own global steps from 0, its own epochs, cycles and evaluations. Every phase but the
last keeps its checkpoints, TensorBoard events and evaluation reports in ``model_dir/<name>``;
the last phase in model_dir itself, so that evaluate, predict and export find its checkpoints
where they find those of a run without phases. A phase after the first starts its trainable
variables from the previous phase's last checkpoint (Estimator's warm start, which applies only
while the phase's own folder holds no checkpoint); the rest (its optimizer's slots, other
variables such as batch-norm statistics) starts from its initializers.

What the phases share: model_dir's lock, record and config.yaml; one ``evaluations.jsonl``,
whose entries name their phase; and the best snapshot, which the evaluations of every phase
compete for. A phase that has trained all its steps (or stopped early) is not trained again, so
a run killed at any moment resumes in the phase it was in (``run_loop.train_in_phases``).
"""

import dataclasses
import os

from library.configuration.config import Config, ConfigError
from library.distribution import strategies


def phase_settings(settings: Config, phase, last: bool) -> Config:
    """The run's settings with ``phase``'s values (sourced ``phase <name>``); its model_dir a folder of the run's,
    unless it is the ``last`` phase."""
    values = {**settings.values, **phase.values}
    sources = {**settings.sources, **{name: f"phase {phase.name}" for name in phase.values}}
    if not last:
        values["model_dir"] = os.path.join(settings.model_dir, phase.name)
        sources["model_dir"] = f"phase {phase.name}: a folder of model_dir"
    return Config(values, sources)


def describe(phases: tuple, settings: Config) -> str:
    """What each phase trains and where, as comment lines for ``--print_config``; empty without phases."""
    if not phases:
        return ""
    lines = [f"# training in {len(phases)} phases, one after the other, each with its own steps and epochs:"]
    for index, phase in enumerate(phases):
        where = phase_settings(settings, phase, last=index == len(phases) - 1).model_dir
        changed = ", ".join(f"{name} {value}" for name, value in phase.values.items())
        lines.append(f"#   {phase.name}: {phase.summary}; in {where}" + (f" ({changed})" if changed else ""))
    return "\n".join(lines)


def phase_runs(run) -> list:
    """The run (a ``library.training.invocation.Run``) of each phase the experiment names for this run, in order; ``[run]`` when it names none."""
    settings = run.settings
    phases = run.experiment.training_phases(settings.as_dict())
    if not phases:
        return [run]
    if settings.distribution in strategies.CLUSTER_DISTRIBUTIONS:
        raise ConfigError(f"distribution {settings.distribution}: a training run in phases "
                          f"({', '.join(phase.name for phase in phases)}) runs on one machine only; "
                          "use distribution none or mirrored, or train each phase as a run of its own")
    runs = []
    for index, phase in enumerate(phases):
        settings_of_phase = phase_settings(settings, phase, last=index == len(phases) - 1)
        params = run.experiment.make_params(settings_of_phase.as_dict()) if phase.values else run.params
        runs.append(dataclasses.replace(run, settings=settings_of_phase, params=params, phase=phase.name,
                                        log_dir=settings.model_dir))
    return runs
