"""The Sonic benchmark of "Gotta Learn Fast" (Nichol et al. 2018) on stable-retro 1.0.1.

* :data:`SONIC_TRAIN` (47 levels) and :data:`SONIC_TEST` (11 levels; the contest's "validation" CSV), verbatim from
  the contest's CSVs; :func:`validate_split` checks every state against stable-retro's files (no ROM needed).
* :func:`make_contest_env`: the contest env of retro-contest ``local.py``: ``scenario="contest"``, filtered
  actions, sticky 4-frame skip (p = 0.25), 4500-step limit. ``render_mode`` defaults to None (stable-retro's own
  default, "human", crashes without a display).
* :func:`make_sonic_env`: the contest env plus the agent-side wrappers: 7-action :class:`SonicDiscretizer`,
  optional backtracking-only reward and reward scaling, 84x84 grayscale, 4-frame stack (channels first).
* :class:`RetroLevelsEnv` / :func:`make_sonic_split_env`: draws a level of a set at every reset (``SonicTrain-v0``).
  stable-retro allows one emulator per process, so switching level closes the emulator and opens the next one in
  the same process; run several of these in subprocesses (``gymnasium.vector.AsyncVectorEnv``).

A missing ROM raises :class:`~dreamarcade.errors.MissingROMError` naming the game, the SHA-1 stable-retro accepts
and the import command. stable-retro ships one ROM, Airstriker (``game="Airstriker-Genesis"``, state ``Level1``,
no "contest" scenario: pass ``scenario="scenario"``); the tests run the same stack on it.

Example:
    >>> from dreamarcade.envs.sonic import SONIC_TRAIN, SONIC_TEST, make_sonic_env
    >>> len(SONIC_TRAIN), len(SONIC_TEST)
    (47, 11)
    >>> env = make_sonic_env("Airstriker-Genesis", "Level1", scenario="scenario")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.action_space
    ((4, 84, 84), Discrete(7))
    >>> env.close()
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from dreamarcade.errors import MissingROMError, check_count, require


class Level(NamedTuple):
    """A (game, save state) pair; ``game`` as the contest CSVs spell it (without stable-retro's ``-v0``).

    Example:
        >>> from dreamarcade.envs.sonic import SONIC_TEST, Level, parse_levels, validate_split
        >>> SONIC_TEST[0]
        Level(game='SonicTheHedgehog-Genesis', state='SpringYardZone.Act1')
        >>> levels = parse_levels("SonicTheHedgehog-Genesis:GreenHillZone.Act1,Airstriker-Genesis:Level1")
        >>> levels[1] == Level("Airstriker-Genesis", "Level1"), levels[1].state
        (True, 'Level1')
        >>> validate_split(levels)  # both save states exist in stable-retro's data (no ROM needed)
    """

    game: str
    state: str


def _levels(game: str, states: str) -> list[Level]:
    return [Level(game, s.strip()) for s in states.split(",") if s.strip()]


# sonic-train.csv, in file order.
SONIC_TRAIN: tuple[Level, ...] = tuple(
    _levels(
        "SonicTheHedgehog-Genesis",
        "SpringYardZone.Act3, SpringYardZone.Act2, GreenHillZone.Act3, GreenHillZone.Act1, StarLightZone.Act2,"
        "StarLightZone.Act1, MarbleZone.Act2, MarbleZone.Act1, MarbleZone.Act3, ScrapBrainZone.Act2,"
        "LabyrinthZone.Act2, LabyrinthZone.Act1, LabyrinthZone.Act3",
    )
    + _levels(
        "SonicTheHedgehog2-Genesis",
        "EmeraldHillZone.Act1, EmeraldHillZone.Act2, ChemicalPlantZone.Act2, ChemicalPlantZone.Act1,"
        "MetropolisZone.Act1, MetropolisZone.Act2, OilOceanZone.Act1, OilOceanZone.Act2, MysticCaveZone.Act2,"
        "MysticCaveZone.Act1, HillTopZone.Act1, CasinoNightZone.Act1, WingFortressZone, AquaticRuinZone.Act2,"
        "AquaticRuinZone.Act1",
    )
    + _levels(
        "SonicAndKnuckles3-Genesis",
        "LavaReefZone.Act2, CarnivalNightZone.Act2, CarnivalNightZone.Act1, MarbleGardenZone.Act1,"
        "MarbleGardenZone.Act2, MushroomHillZone.Act2, MushroomHillZone.Act1, DeathEggZone.Act1, DeathEggZone.Act2,"
        "FlyingBatteryZone.Act1, SandopolisZone.Act1, SandopolisZone.Act2, HiddenPalaceZone, HydrocityZone.Act2,"
        "IcecapZone.Act1, IcecapZone.Act2, AngelIslandZone.Act1, LaunchBaseZone.Act2, LaunchBaseZone.Act1",
    )
)

# sonic-validation.csv (the tech report's test set), in file order.
SONIC_TEST: tuple[Level, ...] = tuple(
    _levels(
        "SonicTheHedgehog-Genesis", "SpringYardZone.Act1, GreenHillZone.Act2, StarLightZone.Act3, ScrapBrainZone.Act1"
    )
    + _levels("SonicTheHedgehog2-Genesis", "MetropolisZone.Act3, HillTopZone.Act2, CasinoNightZone.Act2")
    + _levels(
        "SonicAndKnuckles3-Genesis",
        "LavaReefZone.Act1, FlyingBatteryZone.Act2, HydrocityZone.Act1, AngelIslandZone.Act2",
    )
)

SPLITS: dict[str, tuple[Level, ...]] = {"train": SONIC_TRAIN, "test": SONIC_TEST}
SONIC_GAMES = ("SonicTheHedgehog-Genesis", "SonicTheHedgehog2-Genesis", "SonicAndKnuckles3-Genesis")

# Contest episode: 4 frames per step, 4500 steps = 18000 frames = 5 minutes at 60 fps.
CONTEST_FRAME_SKIP = 4
CONTEST_STICKPROB = 0.25
CONTEST_MAX_STEPS = 4500


def retro_game_id(game: str) -> str:
    """stable-retro 1.0.x spelling of a game id: ``SonicTheHedgehog-Genesis`` -> ``SonicTheHedgehog-Genesis-v0``."""
    return game if game.endswith("-v0") else f"{game}-v0"


def _retro() -> Any:
    return require("stable_retro", "the Sonic / stable-retro envs", extra="retro")


def required_sha1(game: str) -> list[str]:
    """The ROM SHA-1(s) stable-retro accepts for ``game`` (read from its ``rom.sha``; no ROM needed)."""
    retro = _retro()
    path = retro.data.get_file_path(retro_game_id(game), "rom.sha", retro.data.Integrations.STABLE)
    if not path:
        raise ValueError(
            f"stable-retro has no integration for game {game!r}. Check the spelling (e.g. {SONIC_GAMES[0]})."
        )
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def check_rom(game: str) -> None:
    """Raise :class:`MissingROMError` (naming the game, its SHA-1 and the import command) if the ROM is missing."""
    check_roms([game])


def missing_roms(games: Iterable[str]) -> list[str]:
    """The stable-retro game ids of ``games`` whose ROMs are not imported (sorted; needs stable-retro)."""
    retro = _retro()
    missing = []
    for game in sorted(set(games)):
        game_id = retro_game_id(game)
        try:
            retro.data.get_romfile_path(game_id, retro.data.Integrations.STABLE)
        except FileNotFoundError:
            missing.append(game_id)
    return missing


def check_roms(games: Iterable[str]) -> None:
    """Raise one :class:`MissingROMError` naming every game of ``games`` whose ROM is missing (with SHA-1s)."""
    missing = [f"{g} (SHA-1 {' or '.join(required_sha1(g))})" for g in missing_roms(games)]
    if missing:
        what = f"The ROM of {missing[0]} is" if len(missing) == 1 else f"The ROMs of {', '.join(missing)} are"
        raise MissingROMError(
            f"{what} not imported. stable-retro imports only a ROM file whose SHA-1 matches exactly. Put the files in "
            "a folder and run `python -m stable_retro.import /path/to/roms` (it writes into the installed "
            "stable_retro package, so that folder must be writable). The Sega Genesis Sonic titles are no longer "
            "sold on Steam, so `python -m stable_retro.import.sega_classics` usually fails."
        )


def check_level(game: str, state: str) -> None:
    """Raise ValueError if ``state`` is not a save state of ``game`` in stable-retro's data (no ROM needed)."""
    retro = _retro()
    game_id = retro_game_id(game)
    if game_id not in retro.data.list_games(retro.data.Integrations.STABLE):
        close = difflib.get_close_matches(game_id, retro.data.list_games(retro.data.Integrations.STABLE), n=3)
        raise ValueError(f"Unknown stable-retro game {game!r}. Did you mean one of {close}?")
    states = retro.data.list_states(game_id, retro.data.Integrations.STABLE)
    if state not in states:
        close = difflib.get_close_matches(state, states, n=3)
        raise ValueError(
            f"Unknown level {state!r} for {game_id}. Close names: {close}. All {len(states)} levels: {sorted(states)}."
        )


def validate_split(levels: Sequence[Level]) -> None:
    """Check that every level of a split names an existing stable-retro save state (needs no ROM)."""
    for level in levels:
        check_level(level.game, level.state)


def parse_levels(spec: str | Sequence[str | Sequence[str]]) -> list[Level]:
    """Levels from ``"train"``, ``"test"``, ``"GAME:STATE,GAME:STATE"`` or a list of ``(game, state)`` pairs."""
    if isinstance(spec, str):
        if spec in SPLITS:
            return list(SPLITS[spec])
        out = []
        for item in spec.split(","):
            if ":" not in item:
                raise ValueError(
                    f"level {item!r} must be 'GAME:STATE' (e.g. SonicTheHedgehog-Genesis:GreenHillZone.Act1)."
                )
            game, state = item.split(":", 1)
            out.append(Level(game.strip(), state.strip()))
        return out
    out = []
    for lv in spec:
        if isinstance(lv, str):  # "GAME:STATE", "A:x,B:y" or a split name: every level it names
            out.extend(parse_levels(lv))
        elif isinstance(lv, Sequence) and len(lv) == 2 and all(isinstance(x, str) for x in lv):
            out.append(Level(*lv))
        else:
            raise ValueError(f"level {lv!r} must be a (game, state) pair of strings or a 'GAME:STATE' string.")
    return out


def _check_scenario(game_id: str, scenario: str) -> None:
    retro = _retro()
    scenarios = retro.data.list_scenarios(game_id, retro.data.Integrations.STABLE)
    if scenario not in scenarios:
        raise ValueError(
            f"{game_id} has no {scenario!r} scenario (it has {scenarios}). The Sonic games have 'contest'; for "
            "Airstriker pass scenario='scenario'."
        )


def check_level_settings(
    game: str, state: str, scenario: str, reward_scale: float | None, max_episode_steps: int | None
) -> None:
    """Refuse (ValueError) a level, scenario, reward scale or episode limit :func:`make_sonic_env` would refuse,
    without starting an emulator: for a command to call before it records its settings or trains.

    Example:
        >>> from dreamarcade.envs.sonic import check_level_settings
        >>> check_level_settings("Airstriker-Genesis", "Level1", "scenario", 0.01, 4500)
        >>> check_level_settings("Airstriker-Genesis", "Level1", "contest", 0.01, 4500)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: Airstriker-Genesis-v0 has no 'contest' scenario ...
    """
    check_level(game, state)
    _check_scenario(retro_game_id(game), scenario)
    if reward_scale is not None and not (math.isfinite(reward_scale) and reward_scale != 0):
        raise ValueError(f"--reward-scale must be a finite non-zero number (or None), got {reward_scale!r}")
    if max_episode_steps is not None:
        check_count("--max-episode-steps", max_episode_steps, hint=" (agent steps; None: no limit)")


def make_contest_env(
    game: str = "SonicTheHedgehog-Genesis",
    state: str = "GreenHillZone.Act1",
    scenario: str = "contest",
    render_mode: str | None = None,
    frame_skip: int = CONTEST_FRAME_SKIP,
    stickprob: float = CONTEST_STICKPROB,
    max_episode_steps: int | None = CONTEST_MAX_STEPS,
) -> gym.Env:
    """The retro-contest env: ``retro.make(game, state, scenario="contest", FILTERED)``, sticky skip, time limit.

    Observations are the raw 224x320 RGB frames and actions the 12 Genesis buttons (``MultiBinary(12)``).
    """
    from dreamarcade.wrappers.retro import StochasticFrameSkip

    retro = _retro()
    game_id = retro_game_id(game)
    check_level(game, state)
    _check_scenario(game_id, scenario)
    check_rom(game)
    env = retro.make(
        game_id,
        state=state,
        scenario=scenario,
        use_restricted_actions=retro.Actions.FILTERED,
        inttype=retro.data.Integrations.STABLE,
        render_mode=render_mode,
    )
    env = StochasticFrameSkip(env, n=frame_skip, stickprob=stickprob)
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps)
    return env


def make_sonic_env(
    game: str = "SonicTheHedgehog-Genesis",
    state: str = "GreenHillZone.Act1",
    scenario: str = "contest",
    render_mode: str | None = None,
    backtracking: bool = False,
    reward_scale: float | None = None,
    frame_size: int | None = 84,
    frame_stack: int | None = None,
    max_episode_steps: int | None = CONTEST_MAX_STEPS,
    stickprob: float = CONTEST_STICKPROB,
) -> gym.Env:
    """Contest env + retro-baselines' agent-side wrappers, ready for a CNN policy.

    Order: contest env -> SonicDiscretizer -> RecordEpisodeStatistics (so ``info["episode"]["r"]`` is the contest
    score) -> [AllowBacktracking] -> [RewardScaler] -> GrayscaleResize(84) -> FrameStack(4) (zero-padded at reset;
    retro-baselines' stack repeats the first frame). retro-baselines' PPO
    uses ``reward_scale=0.01``; its Rainbow uses ``backtracking=True``. ``frame_size=None`` keeps raw RGB frames.
    ``frame_stack``: frames per observation (0: no stack); None stacks 4 resized frames and leaves raw RGB frames
    unstacked. A stack of raw frames is (k, 224, 320, 3).
    ``max_episode_steps`` is the contest's limit, inside the episode statistics. Through ``gym.make`` it cannot be
    set: Gymnasium takes ``gym.make(id, max_episode_steps=N)`` for itself and adds a ``TimeLimit`` around the whole
    stack, which can only shorten episodes and leaves the episodes it cuts without ``info["episode"]``.
    """
    from dreamarcade.wrappers.retro import AllowBacktracking, RewardScaler, SonicDiscretizer

    if frame_stack is None:  # the CNN stack's 4 resized frames; raw frames as they come
        frame_stack = 4 if frame_size is not None else 0
    frame_stack = check_count("frame_stack", frame_stack, low=0, hint=" (0: no stack)")  # before any emulator
    if frame_size is not None:
        frame_size = check_count("frame_size", frame_size, hint=" (None: raw RGB frames)")
    env = make_contest_env(
        game,
        state,
        scenario=scenario,
        render_mode=render_mode,
        stickprob=stickprob,
        max_episode_steps=max_episode_steps,
    )
    env = SonicDiscretizer(env)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if backtracking:
        env = AllowBacktracking(env)
    if reward_scale is not None:
        env = RewardScaler(env, reward_scale)
    from dreamarcade.wrappers.frames import FrameStack, GrayscaleResize

    if frame_size is not None:
        env = GrayscaleResize(env, frame_size)
    if frame_stack > 0:  # raw RGB frames too, when asked for (a stack given with frame_size=None was dropped)
        env = FrameStack(env, frame_stack)
    return env


class RetroLevelsEnv(gym.Env):
    """Plays one level of a set per episode: at each reset a level is drawn (or the one fixed by ``set_task``).

    Task-family interface (so :class:`~dreamarcade.wrappers.metarl.EpisodeConcat` can run RL^2 trials over levels):
    ``sample_task(rng) -> Level``, ``set_task(level)``, ``get_task()``. Only one emulator lives in this process at
    a time: changing level closes the current one first (stable-retro refuses a second emulator per process).

    Example:
        >>> env = RetroLevelsEnv([("Airstriker-Genesis", "Level1")], scenario="scenario")
        >>> obs, info = env.reset(seed=0)
        >>> info["level"]
        'Airstriker-Genesis:Level1'
        >>> env.close()
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}
    # each level's env (make_sonic_env) has its own RecordEpisodeStatistics, under the reward scaling: the unscaled
    # contest score is in info["episode"] already, and a second recorder on top would assert at the first episode end
    records_episode_statistics = True

    def __init__(
        self, levels: Sequence[Level | Sequence[str]] | str, render_mode: str | None = None, **env_kwargs: Any
    ) -> None:
        self.levels = parse_levels(levels)
        if not self.levels:
            raise ValueError("levels must name at least one (game, state) level.")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        validate_split(self.levels)
        check_roms(lv.game for lv in self.levels)  # fail now, naming every missing ROM's game, not at a later reset
        self.render_mode = render_mode
        self._env_kwargs = env_kwargs
        self._fixed: Level | None = None
        self.level = self.levels[0]
        self._env: gym.Env | None = self._make(self.level)
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space

    def _make(self, level: Level) -> gym.Env:
        return make_sonic_env(level.game, level.state, render_mode=self.render_mode, **self._env_kwargs)

    def sample_task(self, rng: np.random.Generator) -> Level:
        return self.levels[int(rng.integers(len(self.levels)))]

    def set_task(self, task: Level | Sequence[str] | str) -> None:
        named = parse_levels([task])
        if len(named) != 1:
            raise ValueError(f"set_task takes one level, got {task!r} ({len(named)} levels).")
        level = named[0]
        if level not in self.levels:
            raise ValueError(f"{level} is not one of this env's {len(self.levels)} levels.")
        self._fixed = level

    def get_task(self) -> Level:
        return self.level

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        level = self._fixed if self._fixed is not None else self.sample_task(self.np_random)
        inner_seed = seed
        if level != self.level or self._env is None:
            if self._env is not None:
                self._env.close()  # frees the emulator: only one may exist per process
                self._env = None
            self._env = self._make(level)
            self.level = level
            if inner_seed is None:  # a new level's env (sticky actions...) draws from this env's seeded stream
                inner_seed = int(self.np_random.integers(2**31 - 1))
        obs, info = self._env.reset(seed=inner_seed)
        return obs, dict(info, level=f"{level.game}:{level.state}")

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._env is None:
            raise RuntimeError("call reset() before step().")
        obs, reward, terminated, truncated, info = self._env.step(action)
        return obs, float(reward), terminated, truncated, dict(info, level=f"{self.level.game}:{self.level.state}")

    def render(self) -> Any:
        return None if self._env is None else self._env.render()

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def make_sonic_split_env(split: str = "train", render_mode: str | None = None, **env_kwargs: Any) -> RetroLevelsEnv:
    """``SonicTrain-v0`` / ``SonicTest-v0``: a random level of the split at every reset."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}.")
    return RetroLevelsEnv(SPLITS[split], render_mode=render_mode, **env_kwargs)
