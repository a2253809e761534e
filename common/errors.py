"""Errors the command line turns into one line for the user, importable without torch (cli.py catches them)."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or not ours: the message names the file."""
