"""The command-line parser every script here uses: a mistake is one ``error:`` line, never a usage page."""

import argparse


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are a single line plus a pointer to --help, exiting with status 2 (a usage error)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _number(kind, text: str):
    """``kind(text)``, or the argparse error saying a number is needed."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a {'whole ' if kind is int else ''}number, got {text!r}") from None


def positive(kind):
    """An argparse type: ``kind`` values above zero, with a message that says so."""
    def parse(text):
        value = _number(kind, text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be {'at least 1' if kind is int else 'above 0'}, got {value}")
        return value

    return parse


def percentage(text: str) -> float:
    """An argparse type: a percentage of a whole that must keep something, in [0, 100)."""
    value = _number(float, text)
    if not 0 <= value < 100:  # NaN too
        raise argparse.ArgumentTypeError(f"must be in [0, 100), got {text}")
    return value
