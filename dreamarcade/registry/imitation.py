"""Catalog entries of the video-imitation pillar.

Aytar et al. 2018, "Playing hard exploration games by watching YouTube".
"""

from __future__ import annotations

from dreamarcade.registry import EnvEntry

ENTRIES: list[EnvEntry] = [
    EnvEntry(
        id="MontezumaImitation-v0",
        entry_point="dreamarcade.envs.montezuma_imitation:make_montezuma_imitation",
        vector_entry_point="dreamarcade.envs.montezuma_imitation:make_montezuma_imitation_vector",
        description="Montezuma's Revenge (skip 4, RGB) + one-shot imitation reward of a bundled TDC+CMC embedding",
        extra="atari",
        requires=("ale_py", "cv2"),
        max_episode_steps=4500,
    ),
]
