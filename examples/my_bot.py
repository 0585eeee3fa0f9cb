"""How your own bot harness writes a fastrl batch while it plays.

The "game" here is fastrl's built-in reference game; replace RefGame, the policy and the
observation spec with your own. Run from anywhere, after ``pip install fastrl-batch`` (or
``pip install .`` in a clone; the import name is ``fastrl``):

    python examples/my_bot.py --episodes 20 --root data/my-bot
"""

import argparse
import math
import random

import fastrl
from fastrl.game import GAME_SPEC_JSON, N_ACTIONS, RefGame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--root", default="data/binary", help="where batch_<ms>/ folders go")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    # The spec turns each raw state dict into a float32 vector (688 floats for this game):
    # board as 3 one-hot planes, hand multi-hot, phase one-hot, 8 scalars. For your own game,
    # write such a JSON description of your state (or pass obs= vectors you encode yourself).
    spec = fastrl.ObsSpec.from_json(GAME_SPEC_JSON)
    policy_rng = random.Random(args.seed)
    game = RefGame()

    # The batch folder appears under its final name only when the `with` block ends normally;
    # an exception discards it.
    with fastrl.BatchWriter(args.root, n_actions=N_ACTIONS, spec=spec,
                            meta={"bot": "examples/my_bot.py", "seed": args.seed}) as writer:
        for episode in range(args.episodes):
            state = game.reset(seed=args.seed * 100_000 + episode)
            done = False
            while not done:
                legal = game.legal_actions()
                action = policy_rng.choice(legal)  # your policy goes here
                next_state, reward, done = game.step(action)
                writer.add_step(state=state, action=action, reward=reward, legal=legal,
                                logprob=-math.log(len(legal)))
                state = next_state
            writer.end_episode()  # truncated=True if a time limit, not the game, ended it
    path = writer.path

    # Reading it back: memory-mapped columns, metadata, per-episode views.
    batch = fastrl.load_batch(path)
    print(f"{batch.meta['episodes']} episodes, {batch.meta['count']} transitions, "
          f"obs {batch.obs.shape}, masks {batch.masks.shape}")
    ep = batch.episode(0)
    print(f"episode 0: {len(ep)} steps, return {ep.total_reward:+.0f}, "
          f"first action {int(ep.actions[0])} legal: {bool(ep.masks[0, ep.actions[0]])}")
    problems = fastrl.validate(path)
    print("valid" if not problems else f"INVALID: {problems}")
    print(path)


if __name__ == "__main__":
    main()
