"""Record a gymnasium vector environment with ``BatchWriter.add_steps``.

    python examples/vector_env.py            # 8 CartPole environments, 2,000 steps

Autoreset: gymnasium's default (``NEXT_STEP``) returns the final observation of an ended episode
as the next ``obs`` and spends the following ``step`` on the reset, which is not a transition.
Use ``autoreset_mode=SAME_STEP``: ``step`` then resets at once, returns the next episode's first
observation, and puts the ended episode's final observation in ``info["final_obs"]``; every
step is a real transition and ``add_steps(..., final_obs=info["final_obs"])`` stores it. The
observation returned after an episode ends belongs to the next episode, which is why ``obs``
(what the action was taken in) and not ``next_obs`` is what ``add_steps`` gets.
"""

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import fastrl

N_ENVS, STEPS = 8, 2000

envs = SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=200)] * N_ENVS,
                     autoreset_mode=AutoresetMode.SAME_STEP)
rng = np.random.default_rng(0)
obs, info = envs.reset(seed=0)
# CartPole has no action mask: every action is legal, so only n_actions is needed.
with fastrl.BatchWriter("data/binary", n_actions=2) as writer:
    for _ in range(STEPS):
        actions = rng.integers(0, 2, N_ENVS)          # your policy here
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        writer.add_steps(obs, actions, rewards, terminated, truncated,
                         final_obs=info.get("final_obs"))
        obs = next_obs
# episodes still running at close are stored, flagged truncated (partial="drop" discards them)
envs.close()
batch = fastrl.load_batch(writer.path)
print(writer.path, f"{batch.count} transitions, {batch.num_episodes} episodes")
