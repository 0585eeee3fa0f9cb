"""fastrl: compact binary datasets from game-bot trajectories, for RL training.

Public API (see README.md and docs/FORMAT.md):

- :class:`BatchWriter` — streaming writer for bot harnesses.
- :func:`load_batch` — memory-mapped columns of a batch folder.
- :func:`validate`, :func:`to_npz`, :func:`info`.
- :class:`ObsSpec` — declarative observation encoder.
- ``BACKEND`` — ``"cython"`` or ``"numpy"``: which kernel implementation runs
  (``FASTRL_PURE_NUMPY=1`` forces NumPy).
"""

from ._version import __version__

from . import _kernels
from .convert import decompress, info, to_npz
from .dataset import Dataset, open_dataset
from .errors import BatchFormatError, EncodeError, EpisodeError, FastrlError, SpecError
from ._format import FORMAT_VERSION
from .reader import Batch, EpisodeView, load_batch
from .spec import ObsSpec
from .validate import validate
from .writer import BatchWriter

__all__ = [
    "BACKEND", "Batch", "BatchFormatError", "BatchWriter", "Dataset", "EncodeError",
    "EpisodeError", "EpisodeView", "FastrlError", "FORMAT_VERSION", "ObsSpec", "SpecError", "info",
    "decompress", "load_batch", "open_dataset", "to_npz", "validate", "__version__",
]


def __getattr__(name):
    if name == "BACKEND":  # read live, so tests that switch paths see the active one
        return _kernels.BACKEND
    raise AttributeError(f"module 'fastrl' has no attribute {name!r}")
