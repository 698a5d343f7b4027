"""Errors that reach the user as one line, without a traceback."""


class UserError(Exception):
    """Bad input from the user: the CLI prints `str(error)` on one line and exits with code 2.

    The message says what is wrong and, where known, what to do about it.
    """


class ModelNotFoundError(UserError):
    """A model folder, file or hub id could not be found or reached."""


class InvalidInputError(UserError, ValueError):
    """An argument of a public call is out of its range or shape; the message names it and what it expects."""
