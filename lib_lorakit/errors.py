"""One exception family: the UI, the CLI and the HTTP API show the same text to the user."""

from __future__ import annotations


class LorakitError(Exception):
    """A problem the user can act on; the message says what happened and what to do."""


class InvalidName(LorakitError, ValueError):
    """A project, concept or file name that would escape its folder or break sd-scripts' layout."""


class PathNotAllowed(LorakitError, PermissionError):
    """A server-side path that lies outside the folders the user allowed."""


class NotFound(LorakitError, LookupError):
    """A project, concept or file that does not exist."""


class AlreadyExists(LorakitError, FileExistsError):
    """Creating something whose name is taken."""


class Cancelled(LorakitError):
    """Long work stopped because the user asked it to."""
