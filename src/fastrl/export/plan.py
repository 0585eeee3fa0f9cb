"""What every export (local or Ray) does first: check the options, load the spec or encoder, list
the files, cut them into tasks and fix the layout (obsDim, numActions, maskDim, optional columns)
from the data."""

from __future__ import annotations

import os
import sys

from .. import _format as F
from .._batch.stager import Layout
from ..errors import EpisodeError, FastrlError
from .parse import LineCounter, bad, episode_fields, find_episode_files, iter_task_episodes, make_tasks
from .sidecar import SIDECAR_NAME, resolve_options
from .tasks import load_encoder, load_spec

MAX_INFERRED_ACTIONS = 65536  # a larger action count must be given explicitly
SCAN = "scan"  # n_actions=SCAN (--num-actions scan): infer it from the ids, a second pass


class Plan(tuple):
    """(spec, encoder function, files, tasks, layout), plus attributes: ``encoder`` (the
    encoder's ``module:function`` name or None, given or from the sidecar), ``sources`` (what
    came from where: see :func:`.sidecar.resolve_options`), ``first`` ((task index, episode
    number in task, parsed object) of the episode the layout was taken from: tasks can reuse
    it instead of parsing it again), ``mask_pad``."""

    def __new__(cls, items, **attrs):
        self = super().__new__(cls, items)
        self.__dict__.update(attrs)
        return self


def plan_export(episodes_dir, *, spec=None, encoder=None, n_actions=None, mask_pad=None,
                on_error="fail", resolve=False, use_sidecar=True) -> Plan:
    """What every export (local or Ray) does first: check the options, merge them with the
    folder's sidecar (``fastrl-episodes.json``; the given options win), load the spec/encoder,
    list the files, cut them into tasks and fix the layout from the first valid episode (one
    pass: numActions comes from the options, the sidecar or the first dense mask; never from
    reading every file, unless ``n_actions="scan"``). Returns a :class:`Plan`, which unpacks as
    (spec, encoder function, files, tasks, layout). ``resolve``: tasks name absolute paths
    (messages still name the files as listed)."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if spec is not None and encoder is not None:
        raise ValueError("give a spec or an encoder, not both")
    if n_actions is not None and n_actions != SCAN and (
            isinstance(n_actions, bool) or not isinstance(n_actions, int)
            or not 1 <= n_actions <= F.MAX_DIM):
        raise ValueError(f"n_actions must be an integer in [1, {F.MAX_DIM}] or 'scan', "
                         f"got {n_actions!r}")
    if mask_pad is not None and (isinstance(mask_pad, bool) or not isinstance(mask_pad, int)
                                 or not 1 <= mask_pad <= F.MAX_DIM):
        raise ValueError(f"mask_pad must be an integer in [1, {F.MAX_DIM}], got {mask_pad!r}")
    spec, encoder, n_actions, mask_pad, sources = resolve_options(
        episodes_dir, spec=spec, encoder=encoder, n_actions=n_actions, mask_pad=mask_pad,
        use_sidecar=use_sidecar)
    if isinstance(spec, (str, os.PathLike, dict)):
        spec = load_spec(spec)
    enc_fn = load_encoder(encoder) if encoder else None
    files = find_episode_files(episodes_dir)
    if not files:
        raise FastrlError(f"no *.json or *.jsonl episode files in {episodes_dir}")
    shown = {str(p.resolve()): str(p) for p in files}
    tasks = make_tasks([p.resolve() for p in files] if resolve else files)
    layout, first_bad, first = discover_layout(tasks, spec, enc_fn, n_actions, mask_pad,
                                               episodes_dir)
    if layout is None:
        if on_error == "fail" and first_bad is not None:
            raise first_bad.relocated(source=shown.get(first_bad.source, first_bad.source))
        raise FastrlError(f"no valid episode in {episodes_dir}"
                          + (f" (first problem: {first_bad})" if first_bad else ""))
    return Plan((spec, enc_fn, files, tasks, layout), encoder=encoder, sources=sources,
                first=first, mask_pad=mask_pad)


def discover_layout(tasks, spec, encoder, n_actions, mask_pad, episodes_dir=None):
    """Fix obsDim, numActions, maskDim and the optional columns from the first usable episode.
    Returns (layout or None, first bad episode's EpisodeError naming its file, or None,
    (task index, episode number in task, parsed object) of the episode used, or None)."""
    use_states = spec is not None or encoder is not None
    lines = LineCounter()
    first_bad = None
    for ti, (path, start, end) in enumerate(tasks):
        for ep_no, obj in iter_task_episodes(path, start, end):
            try:
                if isinstance(obj, EpisodeError):
                    raise obj
                fields = episode_fields(obj, use_states=use_states, encoder=encoder)
                obs_dim = spec.dim if spec is not None else len(fields["obs"][0])
                if not 1 <= obs_dim <= F.MAX_DIM:
                    raise bad(f"obs rows have {obs_dim} values; obsDim must be in "
                               f"[1, {F.MAX_DIM}]", 0)
                width = None
                if "mask" in fields:
                    width = len(fields["mask"][0])
                    if not 1 <= width <= F.MAX_DIM:
                        raise bad(f"mask has {width} entries; numActions must be in "
                                   f"[1, {F.MAX_DIM}]", 0)
            except EpisodeError as exc:
                if first_bad is None:
                    base = lines.lines_before(path, start) if path.endswith(".jsonl") else 0
                    first_bad = EpisodeError(exc.reason, episode=base + ep_no, step=exc.step,
                                             source=path)
                continue
            if n_actions == SCAN:
                n_actions = scan_num_actions(tasks)
                print(f"fastrl export: numActions {n_actions} inferred from the largest legal "
                      "id or action in the data (a second pass over every file)",
                      file=sys.stderr)
            elif n_actions is None:
                if width is None:
                    raise FastrlError(num_actions_hint(episodes_dir, "legal" in fields))
                n_actions = width
            if mask_pad is not None and mask_pad < n_actions:
                raise FastrlError(f"--mask-pad {mask_pad} is smaller than numActions={n_actions}")
            layout = Layout(obs_dim, n_actions, mask_pad or n_actions, "values" in fields,
                            "logprobs" in fields)
            return layout, first_bad, (ti, ep_no, obj)
    return None, first_bad, None


def num_actions_hint(episodes_dir, legal: bool) -> str:
    """The error when nothing gives the action count."""
    what = ("the episodes give legal-id lists, not dense masks" if legal
            else "the episodes have no masks (every action legal)")
    folder = episodes_dir if episodes_dir is not None else "FOLDER"
    return (f"numActions unknown: {what}, and no option or sidecar gives it. Pass "
            f"--num-actions N (n_actions=N in Python), or write the folder's sidecar "
            f"{SIDECAR_NAME} (fastrl.export.write_sidecar({str(folder)!r}, n_actions=N, "
            "spec=...)); --num-actions scan infers it from the largest id (reads every file "
            "twice)")


def scan_num_actions(tasks) -> int:
    hi = -1
    for path, start, end in tasks:
        for _, obj in iter_task_episodes(path, start, end):
            steps = obj.get("steps") if isinstance(obj, dict) else obj
            if not isinstance(steps, list):
                continue
            for s in steps:
                if not isinstance(s, dict):
                    continue
                for v in [s.get("action")] + (s.get("legal") if isinstance(s.get("legal"), list)
                                              else []):
                    if isinstance(v, int) and not isinstance(v, bool) and hi < v < F.MAX_DIM:
                        hi = v
    if hi < 0:
        raise FastrlError("cannot infer numActions from the data; pass --num-actions")
    if hi + 1 > MAX_INFERRED_ACTIONS:
        raise FastrlError(f"the data has action/legal id {hi}; an inferred numActions above "
                          f"{MAX_INFERRED_ACTIONS} is refused (pass --num-actions if it is real)")
    return hi + 1


