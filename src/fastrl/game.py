"""The built-in reference game: a small, fast stand-in for a user's game, with the shapes real
games have (a 13x16 board, one action per cell, changing legal-action masks, a hand of tiles, turn
phases and a few scalar features), so ``fastrl bot``, ``fastrl demo``, the tests and the benchmarks
have realistic trajectories without any outside game.

Rules. Two sides share a 13x16 board; the agent (``1``, "mine") plays against a scripted opponent
(``2``) that places a stone on a random empty cell after each of the agent's phase-1 and phase-3
moves. Tiles come in 52 kinds, ``kind = suit * 13 + rank`` (4 suits, 13 ranks); tile ``kind`` fits
the four cells of row ``rank`` in columns ``4 * suit .. 4 * suit + 3``, so the cell ``(r, c)``
takes tile ``(c // 4) * 13 + r``. The agent starts with 6 random tiles in hand (never more than 13,
all distinct) and 8 stones per side are scattered at random. Moves cycle through 4 phases: in
phases 0, 1 and 2 the agent places a stone on an empty cell that one of its tiles fits (that tile
goes back to the bottom of the deck); if no tile fits any empty cell, every empty cell is legal (a
free move, no tile spent). In phase 3 the agent lifts one of its own stones. After the move the
agent draws 1, 1, 0 or 2 tiles (phases 0..3) while the hand has room. Each side scores one point
per orthogonally adjacent pair of its own stones. The number of moves is fixed at reset, drawn
uniformly from 20..180; after the last move the reward is +1, 0 or -1 as the agent's score is
above, equal to or below the opponent's (0 on every other move). Everything is drawn from one
``random.Random(seed)``, so a seed and a sequence of actions give the same episode everywhere.

The raw state is a plain dict (JSON-serializable): ``board`` (13x16 nested lists of 0/1/2 =
empty/mine/opponent), ``hand`` (sorted distinct tile kinds), ``phase`` (0..3) and ``scalars``
(8 floats in [0, 1] or [-1, 1]); :data:`GAME_SPEC_JSON` describes it as an ``ObsSpec`` of
3*208 + 52 + 4 + 8 = 688 floats.
"""

from __future__ import annotations

import math
import operator
import random
from collections import deque

import numpy as np

N_ROWS = 13
N_COLS = 16
N_CELLS = N_ROWS * N_COLS
N_ACTIONS = N_CELLS  # one action per cell: action id = row * 16 + col
N_KINDS = 52
N_PHASES = 4
N_SCALARS = 8
HAND_MAX = 13
HAND_START = 6
STONES_START = 8
MIN_MOVES = 20
MAX_MOVES = 180
LIFT_PHASE = 3
DRAWS = (1, 1, 0, 2)  # tiles drawn after a move in phase 0..3
OPPONENT_PHASES = (False, True, False, True)  # the opponent answers moves in these phases

OBS_DIM = 3 * N_CELLS + N_KINDS + N_PHASES + N_SCALARS  # 688

GAME_SPEC_JSON = {
    "version": 1,
    "fields": [
        {"name": "board", "kind": "onehot_array", "shape": [N_ROWS, N_COLS], "n": 3,
         "layout": "plane"},
        {"name": "hand", "kind": "multihot", "n": N_KINDS},
        {"name": "phase", "kind": "onehot", "n": N_PHASES},
        {"name": "scalars", "kind": "box", "shape": [N_SCALARS]},
    ],
}


def _neighbours(cell: int) -> tuple:
    r, c = divmod(cell, N_COLS)
    out = []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        rr, cc = r + dr, c + dc
        if 0 <= rr < N_ROWS and 0 <= cc < N_COLS:
            out.append(rr * N_COLS + cc)
    return tuple(out)


# Lookup tables, built once: the game loop only indexes them.
NEIGHBOURS = tuple(_neighbours(a) for a in range(N_CELLS))
TILE_OF_CELL = tuple((a % N_COLS // 4) * N_ROWS + a // N_COLS for a in range(N_CELLS))
CELLS_OF_TILE = tuple(tuple(rank * N_COLS + 4 * suit + j for j in range(4))
                      for suit in range(4) for rank in range(N_ROWS))
_ROW_STARTS = tuple(range(0, N_CELLS, N_COLS))
_ALL_CELLS = range(N_CELLS)


def game_spec():
    """The reference game's :class:`fastrl.spec.ObsSpec` (688 floats per state)."""
    from .spec import ObsSpec

    return ObsSpec.from_json(GAME_SPEC_JSON)


class RefGame:
    """One game of the reference rules (see the module docstring).

    ``reset(seed)`` starts a game and returns the raw state; ``legal_actions()`` lists the legal
    action ids (sorted, non-empty until the game is over); ``step(action)`` plays one move and
    returns ``(state, reward, done)``, raising :class:`ValueError` for an illegal action.
    :meth:`play` is ``step`` without building the state dict, for callers that record states as
    columns (:meth:`state_columns`, :meth:`board_bytes`).
    """

    N_ACTIONS = N_ACTIONS

    __slots__ = ("_rng", "_board", "_mine", "_hand", "_deck", "_move", "_phase", "_length",
                 "_my_score", "_opp_score", "_n_opp", "_done", "_legal", "seed")

    def __init__(self, seed: int | None = None):
        self._done = True
        self._legal = None
        if seed is not None:
            self.reset(seed)

    # -- game flow -------------------------------------------------------------------------
    def reset(self, seed: int = 0) -> dict:
        """Start a new game from ``seed`` (an int) and return its first state."""
        self.seed = operator.index(seed)
        rng = self._rng = random.Random(self.seed)
        self._length = rng.randint(MIN_MOVES, MAX_MOVES)
        board = self._board = bytearray(N_CELLS)
        cells = rng.sample(_ALL_CELLS, 2 * STONES_START)
        self._mine = set(cells[:STONES_START])
        for a in cells[:STONES_START]:
            board[a] = 1
        for a in cells[STONES_START:]:
            board[a] = 2
        self._n_opp = STONES_START
        self._my_score = self._pairs(1)
        self._opp_score = self._pairs(2)
        kinds = list(range(N_KINDS))
        rng.shuffle(kinds)
        self._hand = kinds[:HAND_START]
        self._deck = deque(kinds[HAND_START:])
        self._move = 0
        self._phase = 0
        self._done = False
        self._legal = None
        return self.state()

    def legal_actions(self) -> list[int]:
        """Sorted legal action ids of the current state (empty once the game is over)."""
        legal = self._legal
        if legal is None:
            if self._done:
                return []
            b = self._board
            if self._phase == LIFT_PHASE:
                legal = sorted(self._mine)
            else:
                legal = [a for k in self._hand for a in CELLS_OF_TILE[k] if not b[a]]
                if legal:
                    legal.sort()
                else:  # no tile fits: a free move on any empty cell
                    legal = [a for a in _ALL_CELLS if not b[a]]
            self._legal = legal
        return legal

    def step(self, action: int):
        """Play ``action``; return ``(state, reward, done)``."""
        reward, done = self.play(action)
        return self.state(), reward, done

    def play(self, action: int):
        """Play ``action``; return ``(reward, done)`` without building the next state dict."""
        if self._done:
            raise ValueError("the game is over (or not started); call reset() first")
        try:
            a = operator.index(action)
        except TypeError:
            raise ValueError(f"action must be an integer, got {action!r}") from None
        legal = self._legal if self._legal is not None else self.legal_actions()
        if a not in legal:
            raise ValueError(f"action {a} is not legal in phase {self._phase} "
                             f"({len(legal)} legal actions)")
        b = self._board
        phase = self._phase
        own = 0
        for n in NEIGHBOURS[a]:
            if b[n] == 1:
                own += 1
        if phase == LIFT_PHASE:
            b[a] = 0
            self._mine.discard(a)
            self._my_score -= own
        else:
            b[a] = 1
            self._mine.add(a)
            self._my_score += own
            tile = TILE_OF_CELL[a]
            hand = self._hand
            if tile in hand:  # otherwise a free move: no tile spent
                hand.remove(tile)
                self._deck.append(tile)
        hand = self._hand
        for _ in range(DRAWS[phase]):
            if len(hand) < HAND_MAX:
                hand.append(self._deck.popleft())
        if OPPONENT_PHASES[phase]:
            self._opponent_move()
        self._move += 1
        self._phase = self._move & 3
        self._legal = None
        if self._move >= self._length:
            self._done = True
            diff = self._my_score - self._opp_score
            return (1.0 if diff > 0 else -1.0 if diff < 0 else 0.0), True
        return 0.0, False

    def _opponent_move(self):
        # Rejection sampling: at most 16 + 180 stones are ever on the 208 cells, so an empty cell
        # is always found, in a couple of draws on a typical board.
        b = self._board
        rnd = self._rng.random
        while True:
            a = int(rnd() * N_CELLS)
            if not b[a]:
                break
        b[a] = 2
        self._n_opp += 1
        for n in NEIGHBOURS[a]:
            if b[n] == 2:
                self._opp_score += 1

    def _pairs(self, side: int) -> int:
        b = self._board
        return sum(1 for a in _ALL_CELLS if b[a] == side
                   for n in NEIGHBOURS[a] if n > a and b[n] == side)

    # -- observing -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done

    @property
    def phase(self) -> int:
        return self._phase

    @property
    def move(self) -> int:
        """Moves played so far."""
        return self._move

    @property
    def length(self) -> int:
        """The number of moves this game lasts (drawn at reset)."""
        return self._length

    @property
    def scores(self) -> tuple[int, int]:
        """(agent score, opponent score): adjacent same-side pairs."""
        return self._my_score, self._opp_score

    def gain(self, action: int) -> int:
        """Change of the agent's score if ``action`` were played (no legality check)."""
        b = self._board
        own = 0
        for n in NEIGHBOURS[action]:
            if b[n] == 1:
                own += 1
        return -own if self._phase == LIFT_PHASE else own

    def value_estimate(self) -> float:
        """A cheap heuristic value in (-1, 1): the squashed score difference."""
        return math.tanh((self._my_score - self._opp_score) / 8.0)

    def scalars(self) -> list[float]:
        """The 8 scalar features: progress, moves left, hand size, stones per side, score lead,
        score share, empty share; each in [0, 1] except the lead in (-1, 1)."""
        mine = len(self._mine)
        opp = self._n_opp
        my_s, opp_s = self._my_score, self._opp_score
        return [self._move / MAX_MOVES,
                (self._length - self._move) / MAX_MOVES,
                len(self._hand) / HAND_MAX,
                mine / N_CELLS,
                opp / N_CELLS,
                math.tanh((my_s - opp_s) / 8.0),
                my_s / (my_s + opp_s + 1.0),
                (N_CELLS - mine - opp) / N_CELLS]

    def state(self) -> dict:
        """The raw state as plain lists/ints/floats (JSON-serializable, a fresh copy)."""
        b = self._board
        return {"board": [list(b[i:i + N_COLS]) for i in _ROW_STARTS],
                "hand": sorted(self._hand),
                "phase": self._phase,
                "scalars": self.scalars()}

    def board_bytes(self) -> bytes:
        """The board as 208 bytes (row-major, 0/1/2): the cheapest copy to record per step."""
        return bytes(self._board)

    def record(self, boards: bytearray, hands: bytearray) -> None:
        """Append the board (208 bytes, 0/1/2) to ``boards`` and the hand's tile kinds (one byte
        each, unordered) to ``hands``: the cheapest way to record a game's states as columns."""
        boards += self._board
        hands += bytes(self._hand)

    def state_columns(self) -> dict:
        """The raw state as NumPy values: board int8 (13, 16), hand sorted list, phase int,
        scalars float32 (8,)."""
        return {"board": np.frombuffer(bytes(self._board), dtype=np.int8)
                .reshape(N_ROWS, N_COLS).copy(),
                "hand": sorted(self._hand),
                "phase": self._phase,
                "scalars": np.array(self.scalars(), dtype=np.float32)}
