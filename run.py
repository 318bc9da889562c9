#!/usr/bin/env python
"""Train, evaluate, predict with or export the image classifier: python run.py --config_set NAME."""

import sys

from library.configuration import config
from library.configuration.run_options import RUN_LOOP_OPTIONS
from library.training import phases as training_phases, run_loop
from project.experiment import ImageClassifier


def main(argv=None) -> int:
    experiment = ImageClassifier()
    try:
        settings, print_config = config.parse(RUN_LOOP_OPTIONS + experiment.options, argv, description=__doc__,
                                              prog="run.py")
    except config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if print_config:
        print(config.format_config(settings))
        phases = training_phases.describe(experiment.training_phases(settings.as_dict()), settings)
        if phases:
            print(phases)
        return 0
    return run_loop.main(settings, experiment)


if __name__ == "__main__":
    sys.exit(main())
