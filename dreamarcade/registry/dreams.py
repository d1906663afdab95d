"""World Models ("Dreams") env ids: the dream envs on bundled weights and the paper-faithful real envs."""

from __future__ import annotations

from dreamarcade.registry import EnvEntry

ENTRIES: list[EnvEntry] = [
    EnvEntry(
        id="DreamDoom-v0",
        entry_point="dreamarcade.envs.dream:DreamEnv",
        vector_entry_point="dreamarcade.envs.dream:DreamVectorEnv",
        description="DoomTakeCover dreamed by a bundled VAE + MDN-RNN (tau 1.15, obs [z, c, h]; 2100-step cap)",
        kwargs={"env": "doom"},
        max_episode_steps=2100,  # the real game's cap; gym.make(..., max_episode_steps=N) replaces it
    ),
    EnvEntry(
        id="DreamCarRacing-v0",
        entry_point="dreamarcade.envs.dream:DreamEnv",
        vector_entry_point="dreamarcade.envs.dream:DreamVectorEnv",
        description="CarRacing dreamed by a bundled VAE + MDN-RNN with a reward head (obs [z, h]; 1000-step cap)",
        kwargs={"env": "carracing"},
        max_episode_steps=1000,
    ),
    EnvEntry(
        id="DoomTakeCover-v0",
        entry_point="dreamarcade.envs.doom:TakeCoverEnv",
        description="Real ViZDoom TakeCover as the paper: 64x64 frames (HUD cropped), 1 continuous action, 2100 cap",
        extra="doom",
        requires=("vizdoom",),
        kwargs={"max_steps": None},  # the cap is the TimeLimit below, as the dream's: max_episode_steps replaces it
        max_episode_steps=2100,
        reward_threshold=750.0,
    ),
    EnvEntry(
        id="DoomTakeCoverFeatures-v0",
        entry_point="dreamarcade.envs.dream:make_real_features_env",
        description="Real TakeCover seen through the bundled world model: obs [z, c, h], as in DreamDoom-v0",
        extra="doom",
        requires=("vizdoom",),
        kwargs={"env": "doom", "max_steps": None},
        max_episode_steps=2100,
        reward_threshold=750.0,
    ),
    EnvEntry(
        id="CarRacing64-v0",
        entry_point="dreamarcade.envs.carracing:CarRacing64Env",
        description="Real CarRacing as the paper: 64x64 frames (indicator bar cropped), 1000-step episodes",
        extra="box2d",
        requires=("Box2D",),
        kwargs={"max_steps": None},
        max_episode_steps=1000,
        reward_threshold=900.0,
    ),
    EnvEntry(
        id="CarRacingFeatures-v0",
        entry_point="dreamarcade.envs.dream:make_real_features_env",
        description="Real CarRacing seen through the bundled world model: obs [z, h], as in DreamCarRacing-v0",
        extra="box2d",
        requires=("Box2D",),
        kwargs={"env": "carracing", "max_steps": None},
        max_episode_steps=1000,
        reward_threshold=900.0,
    ),
]
