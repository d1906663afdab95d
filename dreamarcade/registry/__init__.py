"""The catalog of dreamarcade env ids.

Each pillar keeps its own list of :class:`EnvEntry` in a module of this package (``atari``, ``dreams``,
``imitation``, ``metarl``); :func:`register_all` registers every entry with Gymnasium. Registration only
records entry-point strings, so it never imports a heavy optional dependency: a missing one is
reported when the env is made, by an error naming the extra to install.

Example:
    >>> import gymnasium as gym
    >>> import dreamarcade  # registers every id
    >>> "DQNPong-v0" in gym.registry
    True
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from dreamarcade.errors import is_installed

# Modules of this package that define ``ENTRIES: list[EnvEntry]``; a module not written yet is skipped.
_PILLAR_MODULES = ("atari", "dreams", "imitation", "metarl")


@dataclass(frozen=True)
class EnvEntry:
    """One registered env id and what it needs.

    Example:
        >>> from dreamarcade.registry import EnvEntry, catalog
        >>> pong = next(e for e in catalog() if e.id == "DQNPong-v0")
        >>> pong.entry_point, pong.extra, pong.requires
        ('dreamarcade.envs.atari:make_dqn_env', 'atari', ('ale_py', 'cv2'))
        >>> entry = EnvEntry("MyGame-v0", "mypkg.envs:MyGame", "a new game", requires=("not_installed",))
        >>> entry.installed, entry.max_episode_steps
        (False, None)
    """

    id: str
    entry_point: str
    description: str
    extra: str | None = None
    requires: tuple[str, ...] = ()
    vector_entry_point: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    reward_threshold: float | None = None
    nondeterministic: bool = False
    roms: tuple[str, ...] = ()  # stable-retro games whose ROMs the user imports (the default kwargs' levels)

    @property
    def installed(self) -> bool:
        """True if every module this env needs can be imported."""
        return all(is_installed(m) for m in self.requires)

    def missing_roms(self) -> list[str]:
        """The games of ``roms`` whose ROMs are not imported (empty when none is needed, or the extra is missing)."""
        if not self.roms or not self.installed:
            return []
        from dreamarcade.envs.sonic import missing_roms

        return missing_roms(self.roms)


def catalog() -> list[EnvEntry]:
    """Every env entry of every pillar, in catalog order."""
    entries: list[EnvEntry] = []
    for name in _PILLAR_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        entries.extend(module.ENTRIES)
    return entries


def register_all() -> list[str]:
    """Register every catalog entry with Gymnasium (idempotent); return the ids."""
    ids = []
    for entry in catalog():
        if entry.id not in gym.registry:
            gym.register(
                id=entry.id,
                entry_point=entry.entry_point,
                vector_entry_point=entry.vector_entry_point,
                kwargs=dict(entry.kwargs),
                max_episode_steps=entry.max_episode_steps,
                reward_threshold=entry.reward_threshold,
                nondeterministic=entry.nondeterministic,
            )
        ids.append(entry.id)
    return ids


def format_catalog() -> str:
    """The catalog as a text table: id, extra, installed, description."""
    rows = [("id", "extra", "installed", "what it is")]
    no_roms = False
    for e in catalog():
        ready = "yes" if e.installed else "no"
        if ready == "yes" and e.missing_roms():  # it was "yes", and the env then failed for want of its ROM
            ready, no_roms = "no ROM", True
        rows.append((e.id, e.extra or "-", ready, e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for r in rows:
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 10)
    if no_roms:
        lines.append("\nno ROM: import them with `python -m stable_retro.import /path/to/roms` (gym.make names them)")
    return "\n".join(lines)


def markdown_catalog() -> str:
    """The catalog as a Markdown table (the README's env table is generated from it)."""
    lines = ["| id | what it is | extra | vector entry point |", "|---|---|---|---|"]
    for e in catalog():
        vec = "yes" if e.vector_entry_point else "-"
        lines.append(f"| `{e.id}` | {e.description} | `{e.extra or '-'}` | {vec} |")
    return "\n".join(lines)


__all__ = ["EnvEntry", "catalog", "register_all", "format_catalog", "markdown_catalog"]
