"""Catalog entries of the DQN-preprocessing pillar (Mnih et al. 2013)."""

from __future__ import annotations

from dreamarcade.registry import EnvEntry

_ENTRY = "dreamarcade.envs.atari:make_dqn_env"
_VECTOR = "dreamarcade.envs.atari:make_dqn_vector_env"

ENTRIES: list[EnvEntry] = [
    EnvEntry(
        id="DQNAtari-v0",
        entry_point=_ENTRY,
        vector_entry_point=_VECTOR,
        description="any ALE game (kwarg game=...), DQN-paper preprocessing: 84x84 gray, skip 4, stack 4, sign clip",
        extra="atari",
        requires=("ale_py", "cv2"),
        kwargs={"game": "Pong"},
    ),
    *[
        EnvEntry(
            id=f"DQN{game}-v0",
            entry_point=_ENTRY,
            vector_entry_point=_VECTOR,
            description=f"{game} with the DQN-paper preprocessing (one of the 2013 paper's seven games)",
            extra="atari",
            requires=("ale_py", "cv2"),
            kwargs={"game": game},
        )
        for game in ("BeamRider", "Breakout", "Enduro", "Pong", "Qbert", "Seaquest", "SpaceInvaders")
    ],
]
