"""The reference game (fastrl.game), the bot that plays it (fastrl.bot, ``fastrl bot``)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from fastrl import bot, game
from fastrl.game import GAME_SPEC_JSON, N_ACTIONS, RefGame

STEP_KEYS = {"state", "legal", "action", "reward", "value", "logprob"}


def random_game(seed, policy_seed=None):
    """Play one game with a random legal policy; yield (state, legal, action, reward, done)."""
    g = RefGame()
    state = g.reset(seed)
    rng = random.Random(seed if policy_seed is None else policy_seed)
    done = False
    while not done:
        legal = g.legal_actions()
        a = rng.choice(legal)
        nxt, r, done = g.step(a)
        yield state, legal, a, r, done
        state = nxt


# -- the game -----------------------------------------------------------------------------------

def test_same_seed_same_game_and_different_seeds_differ():
    a = list(random_game(7))
    b = list(random_game(7))
    assert a == b
    c = list(random_game(8))
    assert a != c
    assert RefGame(5).state() == RefGame().reset(5) == RefGame(5).reset(5)


def test_rules_over_many_games():
    lengths = set()
    for seed in range(40):
        prev_legal = None
        steps = list(random_game(seed))
        T = len(steps)
        lengths.add(T)
        assert 20 <= T <= 180
        for t, (state, legal, action, reward, done) in enumerate(steps):
            assert legal and legal == sorted(set(legal))
            assert 0 <= legal[0] and legal[-1] < N_ACTIONS
            assert action in legal
            assert legal != prev_legal  # the mask changes every move
            prev_legal = legal
            assert state["phase"] == t % 4
            board = np.array(state["board"])
            assert board.shape == (13, 16) and set(np.unique(board)) <= {0, 1, 2}
            if state["phase"] == 3:  # lift one of the agent's stones
                assert all(board.flat[a] == 1 for a in legal)
            else:  # place on an empty cell
                assert all(board.flat[a] == 0 for a in legal)
            hand = state["hand"]
            assert len(hand) <= 13 and hand == sorted(set(hand))
            assert all(0 <= k < 52 for k in hand)
            sc = state["scalars"]
            assert len(sc) == 8 and all(math.isfinite(x) and -1.0 <= x <= 1.0 for x in sc)
            assert done == (t == T - 1)
            if done:
                assert reward in (-1.0, 0.0, 1.0)
            else:
                assert reward == 0.0
    assert min(lengths) < 60 and max(lengths) > 140  # lengths spread over 20..180


def test_outcomes_are_mixed_under_random_play():
    finals = {steps[-1][3] for steps in (list(random_game(s)) for s in range(60))}
    assert finals == {-1.0, 0.0, 1.0}


def test_tiles_fit_their_row_and_suit_columns():
    g = RefGame(3)
    hand = g.state()["hand"]
    for a in g.legal_actions():
        r, c = divmod(a, 16)
        assert (c // 4) * 13 + r in hand
    assert game.CELLS_OF_TILE[13 + 2] == (2 * 16 + 4, 2 * 16 + 5, 2 * 16 + 6, 2 * 16 + 7)
    assert all(game.TILE_OF_CELL[a] == k for k, cells in enumerate(game.CELLS_OF_TILE)
               for a in cells)


def test_illegal_actions_raise_and_leave_the_game_unchanged():
    g = RefGame(11)
    before = g.state()
    legal = set(g.legal_actions())
    occupied = next(a for a in range(N_ACTIONS) if a not in legal)
    for bad in (occupied, N_ACTIONS, -1, 1.5, "3", None):
        with pytest.raises(ValueError):
            g.step(bad)
    assert g.state() == before and set(g.legal_actions()) == legal
    g.step(np.int64(min(legal)))  # NumPy integers are accepted
    while not g.done:
        g.step(g.legal_actions()[0])
    assert g.legal_actions() == []
    with pytest.raises(ValueError, match="over"):
        g.step(0)


def test_state_is_plain_json():
    for state, legal, *_ in random_game(2):
        text = json.dumps({"state": state, "legal": legal}, allow_nan=False)
        assert json.loads(text) == {"state": state, "legal": legal}
        assert set(state) == {"board", "hand", "phase", "scalars"}
        assert type(state["phase"]) is int
        assert all(type(x) is int for row in state["board"] for x in row)
        assert all(type(x) is int for x in state["hand"])
        assert all(type(x) is float for x in state["scalars"])


def test_state_columns_match_state():
    g = RefGame(4)
    for _ in range(9):
        s, cols = g.state(), g.state_columns()
        assert cols["board"].dtype == np.int8 and cols["board"].shape == (13, 16)
        assert cols["board"].tolist() == s["board"]
        assert cols["hand"] == s["hand"] and cols["phase"] == s["phase"]
        assert cols["scalars"].dtype == np.float32
        np.testing.assert_array_equal(cols["scalars"], np.float32(s["scalars"]))
        assert g.board_bytes() == bytes(np.array(s["board"], np.uint8))
        g.step(g.legal_actions()[-1])


def test_spec_is_688_wide_and_encodes_the_board_as_planes(backend):
    spec = game.game_spec()
    assert spec.dim == 3 * 208 + 52 + 4 + 8 == 688 == game.OBS_DIM
    assert json.loads(json.dumps(GAME_SPEC_JSON)) == GAME_SPEC_JSON
    states = [s for s, *_ in random_game(9)]
    obs = spec.encode(states)
    assert obs.dtype == np.float32 and obs.shape == (len(states), 688)
    for row, s in zip(obs[:5], states[:5]):
        board = np.array(s["board"]).ravel()
        for k in range(3):
            np.testing.assert_array_equal(row[k * 208:(k + 1) * 208], board == k)
        hand = np.zeros(52, np.float32)
        hand[s["hand"]] = 1
        np.testing.assert_array_equal(row[624:676], hand)
        np.testing.assert_array_equal(row[676:680], np.eye(4)[s["phase"]])
        np.testing.assert_array_equal(row[680:688], np.float32(s["scalars"]))
    # the columns fast path encodes to the same rows as the state dicts
    states = [s["state"] for s in bot.play_episode(9)["steps"]]
    cols = bot.play_columns(9)["states"]
    np.testing.assert_array_equal(spec.encode(cols), spec.encode(states))


# -- the bot ------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", bot.POLICIES)
def test_play_episode_schema_and_determinism(policy):
    ep = bot.play_episode(21, policy)
    assert ep == bot.play_episode(21, policy)
    assert set(ep) == {"steps"}
    steps = ep["steps"]
    assert 20 <= len(steps) <= 180
    for i, s in enumerate(steps):
        last = i == len(steps) - 1
        assert set(s) == STEP_KEYS | ({"done"} if last else set())
        assert s["action"] in s["legal"] and type(s["action"]) is int
        assert s["reward"] == 0.0 or last
        assert -1.0 < s["value"] < 1.0
        assert s["logprob"] <= 0.0
        if policy == "random":
            assert s["logprob"] == pytest.approx(-math.log(len(s["legal"])))
    assert steps[-1]["done"] is True and steps[-1]["reward"] in (-1.0, 0.0, 1.0)
    # the game's dealing does not depend on the policy
    assert steps[0]["state"] == bot.play_episode(21, "greedy" if policy == "random" else
                                                 "random")["steps"][0]["state"]


def test_greedy_beats_random():
    def wins(policy):
        return sum(bot.play_episode(s, policy)["steps"][-1]["reward"] for s in range(30))
    assert wins("greedy") > wins("random")


def test_play_episode_with_obs():
    ep = bot.play_episode(5, with_obs=True)
    obs = game.game_spec().encode([s["state"] for s in ep["steps"]])
    assert [s["obs"] for s in ep["steps"]] == obs.tolist()


def test_play_columns_match_play_episode():
    ep = bot.play_episode(13)["steps"]
    cols = bot.play_columns(13)
    assert cols["actions"].tolist() == [s["action"] for s in ep]
    np.testing.assert_array_equal(cols["rewards"], np.float32([s["reward"] for s in ep]))
    np.testing.assert_array_equal(cols["values"], np.float32([s["value"] for s in ep]))
    np.testing.assert_array_equal(cols["logprobs"], np.float32([s["logprob"] for s in ep]))
    ids, offsets = cols["legal"]
    assert [ids[offsets[t]:offsets[t + 1]].tolist() for t in range(len(ep))] == \
        [s["legal"] for s in ep]
    st = cols["states"]
    assert st["board"].tolist() == [s["state"]["board"] for s in ep]
    hand_ids, hand_offsets = st["hand"]
    assert [sorted(hand_ids[hand_offsets[t]:hand_offsets[t + 1]].tolist())
            for t in range(len(ep))] == [s["state"]["hand"] for s in ep]
    assert st["phase"].tolist() == [s["state"]["phase"] for s in ep]
    np.testing.assert_array_equal(st["scalars"], np.float32([s["state"]["scalars"] for s in ep]))


def read_episode_files(paths):
    eps = []
    for p in paths:
        with open(p, "rb") as f:
            lines = [line for line in f.read().split(b"\n") if line]
        if p.suffix == ".json":
            assert len(lines) == 1
        eps += [json.loads(line) for line in lines]
    return eps


@pytest.mark.parametrize("fmt,per_file,n_files", [("jsonl", 3, 3), ("jsonl", None, 1),
                                                  ("json", None, 7)])
def test_write_episodes_files_follow_the_contract(tmp_path, fmt, per_file, n_files):
    paths = bot.write_episodes(tmp_path / "eps", episodes=7, seed=4, fmt=fmt, per_file=per_file)
    assert len(paths) == n_files
    assert all(p.suffix == f".{fmt}" and p.parent == tmp_path / "eps" for p in paths)
    assert paths == sorted(paths)
    # no temporary file left behind; the sidecar beside the episodes
    assert sorted((tmp_path / "eps").iterdir()) == sorted(paths + [tmp_path / "eps" /
                                                                  "fastrl-episodes.json"])
    assert all("-s4-" in p.name for p in paths)
    eps = read_episode_files(paths)
    assert eps == [bot.play_episode(bot.episode_seed(4, i)) for i in range(7)]
    for ep in eps:  # contract §2, field by field
        for i, s in enumerate(ep["steps"]):
            assert isinstance(s["action"], int) and isinstance(s["reward"], (int, float))
            assert isinstance(s["state"], dict) and all(isinstance(a, int) for a in s["legal"])
            assert s.get("done", False) is (i == len(ep["steps"]) - 1)


def test_write_episodes_seeds_and_names(tmp_path, monkeypatch):
    a = bot.write_episodes(tmp_path, episodes=2, seed=1, fmt="json")
    b = bot.write_episodes(tmp_path, episodes=2, seed=2, fmt="json")
    assert read_episode_files(a)[0] != read_episode_files(b)[0]
    # Two runs with the same seed in the same millisecond: nothing is overwritten.
    monkeypatch.setattr(bot.time, "time_ns", lambda: 1_700_000_000_000_000_000)
    first = bot.write_episodes(tmp_path / "x", episodes=2, seed=3, fmt="json")
    content = [p.read_bytes() for p in first]
    second = bot.write_episodes(tmp_path / "x", episodes=2, seed=3, fmt="json")
    assert len(set(first + second)) == 4
    assert [p.read_bytes() for p in first] == content
    assert sorted((tmp_path / "x").iterdir()) == sorted(first + second
                                                        + [tmp_path / "x" / "fastrl-episodes.json"])


def test_write_episodes_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "eps"
    seen = []
    real_publish = bot._publish

    def publish(tmp, final):
        # when a file gets its final name, it is already complete, and until then no file an
        # exporter would pick up (*.json, *.jsonl) exists
        assert not final.exists()
        assert sorted(out.glob("*.jsonl")) == sorted(seen)
        assert not tmp.name.endswith((".json", ".jsonl"))
        lines = tmp.read_bytes().split(b"\n")
        assert lines[-1] == b"" and all(json.loads(x) for x in lines[:-1])
        seen.append(final)
        return real_publish(tmp, final)

    monkeypatch.setattr(bot, "_publish", publish)
    paths = bot.write_episodes(out, episodes=4, seed=0, per_file=2)
    assert paths == seen and len(paths) == 2

    def fail(tmp, final):
        raise OSError("disk full")

    monkeypatch.setattr(bot, "_publish", fail)
    with pytest.raises(OSError, match="disk full"):
        bot.write_episodes(out, episodes=2, seed=9)
    # no partial or temporary file (the sidecar of the first run stays)
    assert sorted(out.iterdir()) == sorted(paths + [out / "fastrl-episodes.json"])


def test_write_episodes_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        bot.write_episodes(tmp_path, 2, fmt="csv")
    with pytest.raises(ValueError):
        bot.write_episodes(tmp_path, 2, fmt="json", per_file=2)
    with pytest.raises(ValueError):
        bot.write_episodes(tmp_path, 2, per_file=0)
    with pytest.raises(ValueError):
        bot.write_episodes(tmp_path, 2, policy="smart")
    assert list(tmp_path.iterdir()) == []


def test_play_direct_writes_a_sound_batch(tmp_path, backend):
    import fastrl

    path = bot.play_direct(tmp_path / "bin", episodes=5, seed=2, policy="greedy")
    assert path.parent == tmp_path / "bin" and path.name.startswith("batch_")
    assert fastrl.validate(path) == []
    b = fastrl.load_batch(path)
    eps = [bot.play_episode(bot.episode_seed(2, i), "greedy")["steps"] for i in range(5)]
    steps = [s for ep in eps for s in ep]
    assert b.meta["count"] == len(steps) and b.meta["episodes"] == 5
    assert b.meta["obsDim"] == 688 and b.meta["maskDim"] == 208
    assert b.actions.tolist() == [s["action"] for s in steps]
    np.testing.assert_array_equal(b.rewards, np.float32([s["reward"] for s in steps]))
    np.testing.assert_array_equal(b.masks.sum(axis=1), [len(s["legal"]) for s in steps])
    assert all(b.masks[i, s["legal"]].all() for i, s in enumerate(steps))
    np.testing.assert_array_equal(b.dones.nonzero()[0] + 1, np.cumsum([len(e) for e in eps]))
    np.testing.assert_array_equal(b.obs, game.game_spec().encode([s["state"] for s in steps]))
    ep1 = b.episode(1)
    assert ep1.actions.tolist() == [s["action"] for s in eps[1]]


def test_cli_bot(tmp_path, capsys):
    from fastrl.cli import main

    assert main(["bot", "--episodes", "3", "--seed", "1", "--out", str(tmp_path / "e"),
                 "--format", "json"]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 3 and sorted(printed) == sorted(
        str(p) for p in (tmp_path / "e").iterdir() if p.name != "fastrl-episodes.json")
    assert (tmp_path / "e" / "fastrl-episodes.json").is_file()
    assert main(["bot", "--episodes", "2", "--direct", "--batch-root", str(tmp_path / "b"),
                 "--policy", "greedy"]) == 0
    printed = capsys.readouterr().out.split()
    (batch,) = (tmp_path / "b").glob("batch_*")
    assert printed[-1] == str(batch)
    with pytest.raises(SystemExit):
        main(["bot", "--episodes", "0"])
