#!/usr/bin/env python
"""Train, evaluate, predict with or export the image classifier: python run.py --config_set NAME."""

import sys

from library import config
from project.options import OPTIONS


def main(argv=None) -> int:
    try:
        settings, print_config = config.parse(OPTIONS, argv, description=__doc__, prog="run.py")
    except config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if print_config:
        print(config.format_config(settings))
        return 0
    from library import run_loop
    from project import experiment

    return run_loop.main(settings, experiment)


if __name__ == "__main__":
    sys.exit(main())
