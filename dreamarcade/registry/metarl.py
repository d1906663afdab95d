"""Catalog entries of the transfer / meta-RL pillar (Sonic benchmark on stable-retro; RL^2 task families)."""

from __future__ import annotations

from dreamarcade.registry import EnvEntry

# the ROMs the Sonic split's levels need (dreamarcade.envs.sonic.SONIC_GAMES; that module is not imported here)
SONIC_ROMS = ("SonicTheHedgehog-Genesis", "SonicTheHedgehog2-Genesis", "SonicAndKnuckles3-Genesis")

ENTRIES: list[EnvEntry] = [
    # ---- fast task families (no extra dependency) --------------------------------------------------------------------
    EnvEntry(
        id="RandomMaze-v0",
        entry_point="dreamarcade.envs.maze:RandomMazeEnv",
        description="5x5 random maze (loops), hidden goal, vector obs (position one-hot + walls); new task every reset",
        kwargs={"size": 5, "extra_openings": 0.5, "obs_type": "vector"},
    ),
    EnvEntry(
        id="RandomMazePixels-v0",
        entry_point="dreamarcade.envs.maze:RandomMazeEnv",
        description="RandomMaze-v0 seen as an 84x84 RGB top view (walls and agent, goal hidden)",
        kwargs={"size": 5, "extra_openings": 0.5, "obs_type": "pixels"},
        requires=("cv2",),
    ),
    EnvEntry(
        id="Bandit-v0",
        entry_point="dreamarcade.envs.bandit:BanditEnv",
        description="two-armed dependent Bernoulli bandit (0.9 / 0.1), one pull per episode; new task every reset",
        kwargs={"num_arms": 2, "family": "dependent"},
    ),
    EnvEntry(
        id="MetaMaze-v0",
        entry_point="dreamarcade.envs.tasks:make_maze_trial",
        description="RL^2 trials of RandomMaze-v0: 2 episodes of one maze and goal; obs + prev action/reward/done",
        kwargs={"num_episodes": 2, "size": 5, "extra_openings": 0.5, "obs_type": "vector"},
    ),
    EnvEntry(
        id="MetaMazePixels-v0",
        entry_point="dreamarcade.envs.tasks:make_maze_trial",
        description="RL^2 trials of the pixel maze: Dict(obs=(1,84,84) gray, meta=prev action/reward/done)",
        kwargs={"num_episodes": 2, "size": 5, "extra_openings": 0.5, "obs_type": "pixels"},
        requires=("cv2",),
    ),
    EnvEntry(
        id="MetaBandit-v0",
        entry_point="dreamarcade.envs.tasks:make_bandit_trial",
        description="RL^2 trials of Bandit-v0: 10 pulls of the same two arms",
        kwargs={"num_episodes": 10, "num_arms": 2, "family": "dependent"},
    ),
    # ---- Sonic benchmark on stable-retro -----------------------------------------------------------------------------
    EnvEntry(
        id="SonicContest-v0",
        entry_point="dreamarcade.envs.sonic:make_sonic_env",
        description="one Sonic level, retro-contest faithful (contest reward, sticky skip 4, 4500 steps, 7 actions)",
        extra="retro",
        requires=("stable_retro",),
        kwargs={"game": "SonicTheHedgehog-Genesis", "state": "GreenHillZone.Act1"},
        roms=("SonicTheHedgehog-Genesis",),
    ),
    EnvEntry(
        id="SonicTrain-v0",
        entry_point="dreamarcade.envs.sonic:make_sonic_split_env",
        description="a random one of the 47 Sonic training levels at every reset (one emulator per process)",
        extra="retro",
        requires=("stable_retro",),
        kwargs={"split": "train"},
        roms=SONIC_ROMS,
    ),
    EnvEntry(
        id="SonicTest-v0",
        entry_point="dreamarcade.envs.sonic:make_sonic_split_env",
        description="a random one of the 11 Sonic test levels at every reset",
        extra="retro",
        requires=("stable_retro",),
        kwargs={"split": "test"},
        roms=SONIC_ROMS,
    ),
    EnvEntry(
        id="AirstrikerContest-v0",
        entry_point="dreamarcade.envs.sonic:make_sonic_env",
        description="the contest stack on Airstriker, the ROM stable-retro ships (stands in for Sonic in tests)",
        extra="retro",
        requires=("stable_retro",),
        kwargs={"game": "Airstriker-Genesis", "state": "Level1", "scenario": "scenario"},
        roms=("Airstriker-Genesis",),
    ),
]
