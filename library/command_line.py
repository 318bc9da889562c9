"""The command-line parser every script here uses: a mistake is one ``error:`` line, never a usage page."""

import argparse


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are a single line plus a pointer to --help, exiting with ``exit_status``."""

    def __init__(self, *args, exit_status: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self._exit_status = exit_status

    def error(self, message):
        self.exit(self._exit_status, f"error: {message} (see {self.prog} --help)\n")


def positive(kind):
    """An argparse type: ``kind`` values above zero, with a message that says so."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {'whole ' if kind is int else ''}number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be {'at least 1' if kind is int else 'above 0'}, got {value}")
        return value

    return parse
