"""Hand fastrl batches to other RL tools, and bring their data in (``import fastrl.interop``).

- :func:`d3rlpy_arrays` / :func:`to_d3rlpy` — what ``d3rlpy.dataset.MDPDataset`` takes
  (observations, actions, rewards, terminals, timeouts).
- :func:`to_minari` / :func:`from_minari` — local Minari datasets, composite (Dict/Tuple)
  observation spaces included.
- :func:`to_parquet` — one row per transition, for pyarrow, pandas, DuckDB, Hugging Face
  ``datasets``.

Conventions everywhere: ``terminals = dones & ~truncated`` and ``timeouts = truncated`` (the
D4RL/Minari convention), so an episode cut by a time limit is not learned as terminal; the
observation after an episode's last step comes from the batch's ``final_obs`` column when it
has one. The optional clients (minari, d3rlpy, pyarrow) are imported only when used. See
docs/INTEROP.md for recipes.
"""

from ._d3rlpy import d3rlpy_arrays, to_d3rlpy
from ._minari import from_minari, minari_episode_buffers, to_minari
from ._parquet import parquet_schema, to_parquet

__all__ = ["d3rlpy_arrays", "from_minari", "minari_episode_buffers", "parquet_schema",
           "to_d3rlpy", "to_minari", "to_parquet"]
