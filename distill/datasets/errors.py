"""The datasets' error: :class:`DatasetConfigError`, one line naming file, field, value and fix.

It lives in its own module so that the cache, the registry and the COCO datasets can all raise it
(``distill.datasets.coco`` imports the registry, which imports the cache).
"""

from __future__ import annotations

from distill.errors import DatasetError


def _unwrap_worker_message(message, name: str):
    """The original one-line message of an error that a DataLoader worker re-raised.

    torch re-raises an exception from a worker process as ``type(e)(text)``, where ``text`` is
    ``"Caught <Name> in DataLoader worker process 0.\\nOriginal Traceback ..."``: the whole
    traceback, whose last line is ``"...<Name>: <original message>"``. The command-line tools
    print our errors as one line, so that becomes the original message plus where it was raised.
    """
    if not (isinstance(message, str) and message.startswith(f'Caught {name} ')
            and '\nOriginal Traceback' in message):
        return message
    where = message.split('\n', 1)[0][len(f'Caught {name} '):].rstrip('.')
    lines = [line for line in message.splitlines() if line.strip()]
    marker = f'{name}: '
    if marker not in lines[-1]:
        return message
    return f'{lines[-1].split(marker, 1)[1]} (raised {where})'


def short(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting a value in a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


class DatasetConfigError(DatasetError):
    """A dataset config, annotation file, image or cache is wrong.

    The message is one line: what is wrong, the file, the field and the value, and what to do.
    Raised in a DataLoader worker, it reaches the main process with that same one-line message
    (see :func:`_unwrap_worker_message`), not with the worker's traceback as its text.
    """

    def __init__(self, message='', *args):
        super().__init__(_unwrap_worker_message(message, type(self).__name__), *args)
