"""The errors of our own: each names the file, the field and the value, and says what to do.

Every error the toolkit raises on bad input derives from :class:`DistillError`. The command-line
tools print such an error as the last line of their output (``error: ...``), without a
traceback (set ``DISTILL_DEBUG=1`` to see one), and exit with status 2; any other exception is a
bug of ours or of the stack and keeps its full traceback.
"""

from __future__ import annotations


class DistillError(Exception):
    """Base class of the toolkit's own errors (bad configs, checkpoints, datasets, recipes)."""


class ConfigError(DistillError, ValueError):
    """A config file or a ``--cfg-options`` override is wrong."""


class CheckpointError(DistillError, ValueError):
    """A checkpoint is missing, unreadable, or does not fit the config it is used with."""


class DatasetError(DistillError, ValueError):
    """A dataset's annotation file, image folder or image is missing, corrupt or foreign."""


class RecipeError(DistillError, ValueError):
    """A recipe's edge names an unknown loss, region or tap, or misses a field."""


class ResumeMismatchError(DistillError, ValueError):
    """``--resume`` was asked for a run that is defined differently from the checkpoint's."""


class WorkDirError(DistillError, ValueError):
    """A work dir is not usable (a file, or a ``last_checkpoint`` pointing nowhere)."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (line breaks become ``'; '``)."""
    text = str(err).strip()
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    return '; '.join(parts) if parts else type(err).__name__
