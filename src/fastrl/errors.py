"""Exception classes shared by every fastrl module and by both kernel paths.

All of them derive from :class:`FastrlError` and from :class:`ValueError` (bad data is a value
error), so ``except ValueError`` keeps working for callers that do not know fastrl.
"""

from __future__ import annotations


class FastrlError(Exception):
    """Base class of every error fastrl raises on purpose."""


class EpisodeError(FastrlError, ValueError):
    """An input episode is malformed; says which source, episode and step.

    Attributes: ``reason`` (str), ``episode`` (int or None, 0-based), ``step`` (int or None,
    0-based), ``source`` (str or None: the file the episode came from, when known).
    """

    def __init__(self, reason: str, *, episode: int | None = None, step: int | None = None,
                 source: str | None = None):
        self.reason = reason
        self.episode = episode
        self.step = step
        self.source = source
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.source is not None:
            where.append(str(self.source))
        if self.episode is not None:
            where.append(f"episode {self.episode}")
        if self.step is not None:
            where.append(f"step {self.step}")
        return (", ".join(where) + ": " if where else "") + self.reason

    def relocated(self, *, episode: int | None = None, source: str | None = None) -> "EpisodeError":
        """Return a copy that names another episode index and/or source file."""
        return type(self)(self.reason, episode=self.episode if episode is None else episode,
                          step=self.step, source=self.source if source is None else source)

    def __reduce__(self):  # keep the keyword attributes across process boundaries
        return (_rebuild_episode_error, (type(self), self.reason, self.episode, self.step, self.source))


def _rebuild_episode_error(cls, reason, episode, step, source):
    return cls(reason, episode=episode, step=step, source=source)


class BatchFormatError(FastrlError, ValueError):
    """A batch on disk does not follow the format (wrong size, bad meta.json, missing file...)."""


class SpecError(FastrlError, ValueError):
    """An observation spec is malformed (bad JSON, unknown kind, bad sizes)."""


class EncodeError(FastrlError, ValueError):
    """A raw state cannot be encoded by an observation spec; names the field and the row.

    Attributes: ``field`` (str), ``row`` (int, 0-based index in the batch given to ``encode``),
    ``reason`` (str).
    """

    def __init__(self, reason: str, *, field: str, row: int):
        self.reason = reason
        self.field = field
        self.row = row
        super().__init__(f"row {row}, field {field!r}: {reason}")

    def __reduce__(self):
        return (_rebuild_encode_error, (type(self), self.reason, self.field, self.row))


def _rebuild_encode_error(cls, reason, field, row):
    return cls(reason, field=field, row=row)
