"""Exceptions a user can act on.

Every error raised for bad input derives from :class:`UserError`; the CLI prints its message on
one line and exits with status 2. Messages say what was wrong, the offending value, and what to do.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (a config value, a path, a checkpoint, a corpus)."""


class ConfigError(UserError):
    """A ``ModelConfig`` or ``TrainConfig`` field is out of range or of the wrong kind."""


class CorpusError(UserError):
    """A corpus could not be read, is empty, or is too short for the requested batching."""


class DownloadError(UserError):
    """A corpus download failed or its checksum did not match."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupted, truncated or belongs to another model."""


class DiskFullError(UserError):
    """The disk (or quota) holding a file the package writes is full; the previous version of
    that file is intact. ``about_run`` is True once the message says which checkpoint of the run
    is intact (what a user resumes from)."""

    def __init__(self, message: str, *, about_run: bool = False) -> None:
        super().__init__(message)
        self.about_run = about_run


class FolderInUseError(UserError):
    """Another process is writing into the output folder (it holds the folder's lock)."""


class BackendUnavailableError(UserError):
    """A backend is unknown, or its framework is not installed."""


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or gradient."""


class WorkerError(RuntimeError):
    """A data-parallel worker died, failed or timed out; the message names the worker."""
