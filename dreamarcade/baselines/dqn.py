"""DQN (Mnih et al. 2013, 2015) for any Discrete-action env: ``python -m dreamarcade.baselines dqn``.

Reads top to bottom, CleanRL style: hyperparameters in :class:`DQNConfig` (defaults from CleanRL's
``dqn_atari.py``, which follows the Nature paper, with the Nature paper's Huber loss), then the networks,
then :func:`train`. Pixel observations ``(k, 84, 84)`` get the Nature CNN, vector observations an MLP.
The replay buffer stores each frame once (:mod:`dreamarcade.baselines.replay_buffer`).

Outputs in ``--run-dir``: ``episodes.csv``, ``metrics.csv``, TensorBoard events, ``learning_curve.png``
(redrawn at every checkpoint), ``checkpoint/`` (safetensors + JSON, written atomically every
``--checkpoint-interval`` steps and when the run is stopped with Ctrl-C or SIGTERM; continue with
``--resume``), ``replay_buffer/`` with ``--save-buffer`` (so a resumed run keeps its experience), and
``agent.mp4`` (an epsilon-greedy episode of the trained agent, ``--eval-epsilon``).

Example (a short CartPole run):
    >>> import tempfile
    >>> from dreamarcade.baselines.dqn import DQNConfig, train
    >>> cfg = DQNConfig(env_id="CartPole-v1", total_timesteps=300, learning_starts=100, video_episodes=0,
    ...                 run_dir=tempfile.mkdtemp(), progress=False, tensorboard=False)
    >>> result = train(cfg)
    >>> result["global_step"]
    300
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dreamarcade.baselines.common import (
    GracefulStop,
    RunLogger,
    VideoWriter,
    check_counts,
    check_ranges,
    check_run_dir_free,
    check_video_path,
    claim_run_dir,
    drop_rows_after,
    has_episode_statistics,
    help_field,
    note_nothing_to_train,
    parse_dataclass_args,
    plot_learning_curve,
    read_episodes,
    releases_run_dirs,
    resolve_device,
    save_hyperparameters,
    seed_everything,
)
from dreamarcade.baselines.replay_buffer import ReplayBuffer
from dreamarcade.checkpoint import (
    built_from_config,
    checkpoint_exists,
    json_text,
    load_checkpoint,
    pack_state,
    refuse_diverged,
    save_checkpoint,
    strip_prefix,
    unpack_state,
    with_prefix,
)
from dreamarcade.errors import CheckpointError, check_count, input_checks, input_error_status
from dreamarcade.precision import autocast, check_precision, flush_denormals, validate_precision

_h = help_field  # a field with its --help text; short, for the table below


@dataclass
class DQNConfig:
    """DQN hyperparameters; defaults are CleanRL's ``dqn_atari.py`` (Nature DQN) values with a Huber loss.

    Each field is a ``--flag`` of ``python -m dreamarcade.baselines dqn``, with the field's help text.

    Example:
        >>> from dreamarcade.baselines.common import parse_dataclass_args
        >>> from dreamarcade.baselines.dqn import DQNConfig
        >>> argv = ["--env-id", "CartPole-v1", "--learning-starts", "1000", "--no-progress"]
        >>> cfg = parse_dataclass_args(DQNConfig, argv, description="DQN")
        >>> cfg.env_id, cfg.learning_starts, cfg.progress, cfg.batch_size
        ('CartPole-v1', 1000, False, 32)
    """

    env_id: str = _h("a registered id with Discrete actions (dreamarcade ids need no import)", "DQNPong-v0")
    total_timesteps: int = _h("environment steps (agent steps, each 4 frames on Atari)", 10_000_000)
    learning_rate: float = _h("Adam learning rate", 1e-4)
    buffer_size: int = _h("replay capacity in transitions", 1_000_000)
    gamma: float = _h("discount factor", 0.99)
    target_network_frequency: int = _h("steps between copies of the online net into the frozen target net", 1000)
    batch_size: int = _h("minibatch size", 32)
    start_e: float = _h("initial epsilon", 1.0)
    end_e: float = _h("final epsilon", 0.01)
    exploration_fraction: float = _h("fraction of total_timesteps over which epsilon decays linearly", 0.10)
    learning_starts: int = _h(
        "steps of pure experience collection before learning (again after --resume, unless the buffer was saved)",
        80_000,
    )
    train_frequency: int = _h("env steps per gradient step", 4)
    max_grad_norm: float = _h("gradient-norm clip (<= 0 disables)", 10.0)
    num_envs: int = _h("parallel envs (gymnasium SyncVectorEnv)", 1)
    seed: int = _h("random seed", 1)
    device: str = _h("cpu, cuda, cuda:N, mps or auto", "cpu")
    torch_threads: int = _h("torch CPU threads (0 = torch default)", 0)
    precision: Literal["fp32", "bf16"] = _h(
        "fp32, or bf16: mixed precision for the gradient step (convolutions and the 512-unit layer in bfloat16; "
        "weights, Adam, Q head and loss in fp32; acting stays fp32). About 1.75x faster updates on CPUs with "
        "AMX (Intel Sapphire Rapids and later) and on CUDA GPUs; slower on CPUs without native bfloat16",
        "fp32",
    )
    flush_denormal: bool = _h(
        "flush denormal floats to zero on the CPU (this process, from the start of training): Adam's moments of "
        "dead units decay into the denormal range, where x86 arithmetic is ~20x slower",
        True,
    )
    run_dir: str = _h("output directory (logs, checkpoint, curve, video)", "runs/dqn")
    resume: bool = _h("continue from run_dir/checkpoint: weights, optimizer, step and epsilon schedule", False)
    checkpoint_interval: int = _h("steps between atomic checkpoints", 50_000)
    save_buffer: bool = _h(
        "also save the replay buffer to run_dir/replay_buffer (about 7.2 KB per stored 84x84 transition), so "
        "--resume continues with the same experience instead of refilling learning_starts steps",
        False,
    )
    buffer_checkpoint_interval: int = _h(
        "with --save-buffer: steps between buffer saves (it is also saved when the run ends or is stopped "
        "with Ctrl-C / SIGTERM)",
        250_000,
    )
    eval_epsilon: float = _h("epsilon of the evaluation/video policy (Nature paper: 0.05)", 0.05)
    video_episodes: int = _h(
        "epsilon-greedy (--eval-epsilon) episodes recorded to run_dir/agent.mp4 after training (0: none)", 1
    )
    video_max_steps: int = _h("cap on the steps of each recorded episode", 4500)
    progress: bool = _h("show a progress bar", True)
    tensorboard: bool = _h("write TensorBoard events", True)
    env_kwargs: str = _h("JSON dict of extra kwargs for gym.make", "{}")

    def __post_init__(self) -> None:
        # a 0 interval divided by zero at the first step, after the run dir was written; a negative
        # train_frequency made the run finish "successfully" without a single gradient step
        at_least_one = (
            "total_timesteps",
            "buffer_size",
            "batch_size",
            "target_network_frequency",
            "train_frequency",
            "num_envs",
            "checkpoint_interval",
            "buffer_checkpoint_interval",
            "video_max_steps",  # 0 trained the whole run, then failed in the video's evaluation
        )
        check_counts(self, dict.fromkeys(at_least_one, 1))  # numpy integers (a sweep's np.arange) are stored as int
        if self.learning_starts < 0:
            raise ValueError(f"--learning-starts must be >= 0, got {self.learning_starts}")
        # a NaN gamma trained to NaN weights and reported success; an epsilon above 1 is no probability
        probability = (0.0, 1.0, True)
        check_ranges(
            self,
            {
                "learning_rate": (0.0, None, False),
                "gamma": probability,
                "start_e": probability,
                "end_e": probability,
                "exploration_fraction": probability,
                "eval_epsilon": probability,
                "max_grad_norm": (-math.inf, None, False),  # <= 0 disables the clip; NaN is refused
            },
        )
        if self.buffer_size < self.num_envs:  # each step stores one transition per env
            raise ValueError(
                f"--buffer-size ({self.buffer_size}) must be at least --num-envs ({self.num_envs}): every step "
                "stores one transition per env"
            )


# --- networks -------------------------------------------------------------------------------------


class NatureCNN(nn.Module):
    """The Nature DQN torso + Q head over ``(k, 84, 84)`` uint8 stacks (scaled by 1/255 inside).

    Example:
        >>> import torch
        >>> from dreamarcade.baselines.dqn import NatureCNN
        >>> q = NatureCNN(in_channels=4, n_actions=6)
        >>> q(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape  # one Q-value per action
        torch.Size([2, 6])
        >>> sum(p.numel() for p in q.parameters())
        1687206
    """

    def __init__(self, in_channels: int, n_actions: int, image_hw: tuple[int, int] = (84, 84)) -> None:
        super().__init__()
        self.torso = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.torso(torch.zeros(1, in_channels, *image_hw)).shape[1]
        self.head = nn.Sequential(nn.Linear(n_flat, 512), nn.ReLU(), nn.Linear(512, n_actions))
        # channels-last convolutions run about 1.15x faster on CPU (oneDNN); the weights stay the same numbers.
        self.torso.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Reordered to channels-last while still one byte per value, then made float. The 1/255 scaling is
        # folded into the first convolution's weights (conv(x / 255, W) = conv(x, W / 255)), a product over
        # 8K weights instead of a pass over the batch: preparing a batch of 32 takes 0.6 ms instead of 2.1.
        return self.head(self._features(x.contiguous(memory_format=torch.channels_last).float()))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        conv1 = self.torso[0]
        x = F.conv2d(x, conv1.weight * (1.0 / 255.0), conv1.bias, conv1.stride)
        for layer in list(self.torso)[1:]:
            x = layer(x)
        return x

    def forward_bf16(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed-precision forward: the convolutions and the 512-unit layer run in bfloat16, the Q head in fp32.

        The weights stay fp32 (autocast casts them per call, and gradients flow back to them in fp32). uint8
        pixels convert to bfloat16 exactly (0..255 fit its 8-bit mantissa), so the input loses nothing.
        """
        x = x.contiguous(memory_format=torch.channels_last).to(torch.bfloat16)
        with autocast("bf16", x.device):
            x = self.head[1](self.head[0](self._features(x)))
        return self.head[2](x.float())


class MLPQNetwork(nn.Module):
    """Two hidden layers of 120 and 84 units (CleanRL's ``dqn.py``) for vector observations.

    Example:
        >>> import gymnasium as gym, torch
        >>> from dreamarcade.baselines.dqn import MLPQNetwork, make_q_network
        >>> q = MLPQNetwork(obs_dim=4, n_actions=2)
        >>> q(torch.zeros(5, 4)).shape
        torch.Size([5, 2])
        >>> type(make_q_network(gym.make("CartPole-v1").observation_space, 2)).__name__  # picked for vectors
        'MLPQNetwork'
    """

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, n_actions)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float().flatten(1))


def is_pixel_space(space: gym.Space) -> bool:
    """True for uint8 image stacks ``(C, H, W)`` that the Nature CNN takes."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def learner_forward(precision: str) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """The forward the gradient step uses: ``net(x)`` for fp32; the bfloat16 mixed-precision forward for bf16.

    A network without a mixed-precision path (the MLP) runs its plain forward under bfloat16 autocast.
    """
    if validate_precision(precision) == "fp32":
        return lambda net, x: net(x)

    def forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(net, NatureCNN):
            return net.forward_bf16(x)
        with autocast("bf16", x.device):
            return net(x).float()

    return forward


def make_q_network(obs_space: gym.Space, n_actions: int) -> nn.Module:
    """Nature CNN for ``(C, H, W)`` uint8 pixels, MLP for flat vectors; a clear error otherwise."""
    if not isinstance(obs_space, gym.spaces.Box):
        raise TypeError(
            f"DQN needs a Box observation space (pixel stacks or flat vectors), got {obs_space}: wrap the env in "
            "gymnasium.wrappers.FlattenObservation (one-hot for Discrete, concatenated for Dict/Tuple)"
        )
    if is_pixel_space(obs_space):
        c, h, w = obs_space.shape
        if w in (1, 3, 4) and c > 4:  # an (H, W, C) image, as ALE's own ids give: not a frame stack
            raise ValueError(
                f"DQN's Nature CNN reads channels-first (C, H, W) frame stacks, but the observations are "
                f"{obs_space.shape} images, channels last: use a DQN* env id (python -m dreamarcade list) or wrap the "
                "env in dreamarcade.wrappers.GrayscaleResize + FrameStack"
            )
        if h < 36 or w < 36:
            raise ValueError(f"the Nature CNN needs frames of at least 36x36, got {h}x{w}")
        return NatureCNN(c, n_actions, (h, w))
    if len(obs_space.shape) == 1:
        return MLPQNetwork(obs_space.shape[0], n_actions)
    raise TypeError(
        f"DQN got observations of shape {obs_space.shape} {obs_space.dtype}: use uint8 (C, H, W) pixel stacks "
        "(e.g. dreamarcade.wrappers.GrayscaleResize + FrameStack) or flat vectors."
    )


def frame_stack_of(env: gym.Env) -> int:
    """The ``num_stack`` of a FrameStack (dreamarcade or Gymnasium) in ``env``'s wrapper chain, else 1."""
    from dreamarcade.wrappers.frames import FrameStack

    while isinstance(env, gym.Wrapper):
        if isinstance(env, FrameStack):
            return env.num_stack
        if isinstance(env, gym.wrappers.FrameStackObservation):
            return env.stack_size
        env = env.env
    return 1


def linear_schedule(start_e: float, end_e: float, duration: int, t: int) -> float:
    """Epsilon decays linearly from ``start_e`` to ``end_e`` over ``duration`` steps, then stays."""
    slope = (end_e - start_e) / max(1, duration)
    return max(slope * t + start_e, end_e) if end_e <= start_e else min(slope * t + start_e, end_e)


# --- training -------------------------------------------------------------------------------------


def make_envs(cfg: DQNConfig, render_mode: str | None = None) -> gym.vector.VectorEnv:
    """``cfg.num_envs`` copies of ``cfg.env_id`` in a SyncVectorEnv that resets in the same step."""
    import dreamarcade  # noqa: F401  (registers the ids)

    try:
        kwargs = json.loads(cfg.env_kwargs)
    except json.JSONDecodeError as exc:  # "Expecting value: line 1 column 1" alone did not say which flag
        raise ValueError(f'--env-kwargs must be a JSON object such as \'{{"game": "Pong"}}\': {exc}') from None
    if not isinstance(kwargs, dict):
        raise ValueError(f'--env-kwargs must be a JSON object such as \'{{"game": "Pong"}}\', got {cfg.env_kwargs}')
    env_id = cfg.env_id
    if ":" in env_id:  # gym.make's "module:EnvId" (e.g. ale_py:ALE/Pong-v5): importing the module registers the id
        import importlib

        module, env_id = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise gym.error.Error(f"--env-id {cfg.env_id}: module '{module}' cannot be imported ({exc})") from None
    if env_id not in gym.registry:
        import difflib

        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        raise gym.error.UnregisteredEnv(
            f"Unknown env id '{env_id}'."
            + (f" Did you mean {close}?" if close else "")
            + " `python -m dreamarcade list` shows dreamarcade's ids."
        )

    def thunk() -> gym.Env:
        env = gym.make(cfg.env_id, render_mode=render_mode, **kwargs) if render_mode else gym.make(cfg.env_id, **kwargs)
        return env if has_episode_statistics(env) else gym.wrappers.RecordEpisodeStatistics(env)

    envs = gym.vector.SyncVectorEnv(
        [thunk for _ in range(cfg.num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        raise TypeError(f"DQN needs a Discrete action space; {cfg.env_id} has {envs.single_action_space}.")
    return envs


def _checkpoint_state(
    q: nn.Module, target: nn.Module, opt: torch.optim.Optimizer, step: int, episodes: int, cfg: DQNConfig, meta: dict
) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {**with_prefix(q.state_dict(), "q"), **with_prefix(target.state_dict(), "target")}
    opt_skeleton = pack_state(opt.state_dict(), "optimizer", tensors)
    rng_skeleton = pack_state({"torch": torch.get_rng_state()}, "rng", tensors)
    config = {
        "kind": "dqn",
        "global_step": step,
        "episodes": episodes,
        "hyperparameters": dataclasses.asdict(cfg),
        "optimizer": opt_skeleton,
        "rng": rng_skeleton,
        **meta,
    }
    return tensors, config


# Options that change how a run is watched or stored, not what it learns: never worth a note on --resume.
_BOOKKEEPING = {"resume", "run_dir", "progress", "tensorboard", "torch_threads", "device", "save_buffer"}


def _parsed_kwargs(text: str) -> Any:
    """``--env-kwargs`` as the dict it means (so spacing and key order do not count as a change)."""
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return text


def _note_changed_hyperparameters(saved: dict[str, Any], cfg: DQNConfig) -> None:
    """On --resume, print which learning settings differ from the checkpoint's (this run's values apply)."""
    now = dataclasses.asdict(cfg)
    changed = {k: (saved[k], v) for k, v in now.items() if k in saved and k not in _BOOKKEEPING and saved[k] != v}
    if changed:
        detail = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
        extra = " (the epsilon schedule follows the new total)" if "total_timesteps" in changed else ""
        print(f"Note: resuming with settings that differ from the checkpoint's: {detail}{extra}.", file=sys.stderr)


def load_q_network(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", network: str = "online"
) -> tuple[nn.Module, dict]:
    """Load a Q-network of a DQN checkpoint (for evaluation): the ``"online"`` one, or the frozen ``"target"``
    copy (at most ``target_network_frequency`` steps older; a second snapshot of a policy still learning)."""
    if network not in ("online", "target"):
        raise ValueError(f"network must be 'online' or 'target', got {network!r}.")
    tensors, config = load_checkpoint(path, kind="dqn", map_location=device)
    with built_from_config(path, "DQN checkpoint"):
        obs_space = gym.spaces.Box(
            low=0 if config["pixels"] else -np.inf,
            high=255 if config["pixels"] else np.inf,
            shape=tuple(config["obs_shape"]),
            dtype=np.uint8 if config["pixels"] else np.float32,
        )
        q = make_q_network(obs_space, config["n_actions"]).to(device)
    try:
        q.load_state_dict(strip_prefix(tensors, "q" if network == "online" else "target"))
    except RuntimeError as exc:
        raise CheckpointError(f"Checkpoint '{path}' does not fit its recorded network: {exc}") from exc
    return q, config


@releases_run_dirs  # the run directory's claim ends with the run, also when it raises
def train(cfg: DQNConfig) -> dict[str, Any]:
    """Train DQN as configured; return a summary (steps, episodes, final mean return, paths)."""
    from tqdm.auto import tqdm

    if cfg.flush_denormal:  # before the thread pool exists (see flush_denormals)
        flush_denormals()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    with input_checks(gym.error.Error):  # settings, env, run directory, checkpoint; not the training
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        check_precision(cfg.precision, device)
        learn_q = learner_forward(cfg.precision)
        run_dir = Path(cfg.run_dir)
        ckpt_dir = run_dir / "checkpoint"
        if not cfg.resume:  # a checkpoint, or the logs of a run killed before its first one: never mix two runs
            check_run_dir_free(run_dir)

        envs = make_envs(cfg)
        modes = envs.envs[0].unwrapped.metadata.get("render_modes", [])
        if cfg.video_episodes > 0 and "rgb_array" not in modes:  # the closing video: refused before, not after training
            raise ValueError(
                f"--video-episodes {cfg.video_episodes} films the trained agent, but {cfg.env_id} renders {modes}, "
                "not 'rgb_array' frames. Pass --video-episodes 0."
            )
        obs_space, n_actions = envs.single_observation_space, int(envs.single_action_space.n)
        pixels = is_pixel_space(obs_space)
        q_network = make_q_network(obs_space, n_actions).to(device)  # refuses observations it cannot read
        # created only once the envs and the network exist (a bad env id leaves no empty run dir), and claimed before
        # the resume below drops log rows: one process per run directory
        claim_run_dir(run_dir)
        target_network = make_q_network(obs_space, n_actions).to(device)
        target_network.load_state_dict(q_network.state_dict())
        # The fused Adam kernel is about 1.3x faster per update than the default per-tensor loop on CPU.
        optimizer = torch.optim.Adam(q_network.parameters(), lr=cfg.learning_rate, fused=True)
        meta = {"env_id": cfg.env_id, "obs_shape": list(obs_space.shape), "n_actions": n_actions, "pixels": pixels}

        start_step, episodes_done = 0, 0
        if cfg.resume:
            if not checkpoint_exists(ckpt_dir):
                logs = [n for n in ("episodes.csv", "metrics.csv") if (run_dir / n).exists()]
                if logs:  # killed before its first checkpoint: "start without --resume" was refused as a run
                    raise CheckpointError(
                        f"--resume: no checkpoint in {ckpt_dir}: the run there stopped before its first one, so "
                        f"there is nothing to continue. Delete its logs ({', '.join(logs)}) to start it again, or "
                        "use a new --run-dir."
                    )
                raise CheckpointError(f"--resume: no checkpoint in {ckpt_dir}; start without --resume.")
            tensors, ck = load_checkpoint(ckpt_dir, kind="dqn", map_location=device)
            if ck.get("env_id", cfg.env_id) != cfg.env_id:
                raise CheckpointError(
                    f"Checkpoint in {ckpt_dir} was trained on {ck['env_id']}, not {cfg.env_id}. "
                    f"Resume with --env-id {ck['env_id']}, or start a new --run-dir for {cfg.env_id}."
                )
            # a hand-edited field (a string where an object was, null for a count) is one line naming the file
            with built_from_config(ckpt_dir / "config.json", "DQN checkpoint"):
                saved_kwargs = ck.get("hyperparameters", {}).get("env_kwargs")
                if saved_kwargs is not None and _parsed_kwargs(saved_kwargs) != _parsed_kwargs(cfg.env_kwargs):
                    # another game of DQNAtari-v0 (or other env settings) in the same run would mix two tasks in one
                    # learning curve, and --evaluate would play the new one
                    raise CheckpointError(
                        f"Checkpoint in {ckpt_dir} was trained with --env-kwargs '{saved_kwargs}', not "
                        f"'{cfg.env_kwargs}'. Resume with --env-kwargs '{saved_kwargs}', or start a new --run-dir."
                    )
                if ck["obs_shape"] != meta["obs_shape"] or ck["n_actions"] != n_actions:
                    raise CheckpointError(
                        f"Checkpoint in {ckpt_dir} was trained on observations {ck['obs_shape']} "
                        f"with {ck['n_actions']} actions, "
                        f"but {cfg.env_id} has {meta['obs_shape']} and {n_actions}. Use the same --env-id."
                    )
                q_network.load_state_dict(strip_prefix(tensors, "q"))
                target_network.load_state_dict(strip_prefix(tensors, "target"))
                optimizer.load_state_dict(unpack_state(ck["optimizer"], tensors))
                for group in optimizer.param_groups:  # the saved state carries the old rate; this run's flag wins
                    group["lr"] = cfg.learning_rate
                _note_changed_hyperparameters(ck.get("hyperparameters", {}), cfg)
                rng = unpack_state(ck["rng"], tensors)
                torch.set_rng_state(rng["torch"].cpu())  # loaded onto the training device with the rest
                start_step, episodes_done = int(ck["global_step"]), int(ck["episodes"])
            note_nothing_to_train(start_step, cfg.total_timesteps)
            for log in ("episodes.csv", "metrics.csv"):  # rows of a crash after the checkpoint: those steps replay
                drop_rows_after(run_dir / log, start_step)
        k = frame_stack_of(envs.envs[0]) if pixels else 1
        try:
            rb = ReplayBuffer(
                cfg.buffer_size,
                obs_space.shape,
                frame_stack=k,
                num_envs=cfg.num_envs,
                obs_dtype=obs_space.dtype,
                device=device,
                seed=cfg.seed + start_step,
            )
        except MemoryError as exc:  # a traceback after the settings were written, before
            raise ValueError(
                f"--buffer-size {cfg.buffer_size}: the replay buffer cannot be allocated ({exc}). Use a smaller "
                "--buffer-size."
            ) from None
        buffer_dir = run_dir / "replay_buffer"
        if cfg.resume and ReplayBuffer.saved_copy_exists(buffer_dir):
            saved = rb.load(buffer_dir)  # a buffer of other settings is refused before the settings are written
            if saved.get("global_step") != start_step:
                print(
                    f"Note: the replay buffer was saved at step {saved.get('global_step')}, the checkpoint at step "
                    f"{start_step}; continuing with the buffer's {len(rb)} transitions.",
                    file=sys.stderr,
                    flush=True,
                )
        elif cfg.resume and cfg.save_buffer:
            print(
                f"Note: no saved replay buffer in {buffer_dir}; refilling {cfg.learning_starts} steps first.",
                file=sys.stderr,
                flush=True,
            )
        save_hyperparameters(run_dir, cfg)  # after the resume checks: a refused --resume leaves the run's file alone

    # Learning waits until learning_starts transitions have gone into this buffer (a resumed run without a
    # saved buffer starts empty and refills). Counted as transitions added, not stored: with short episodes
    # the buffer holds a little less than buffer_size, so len(rb) may never reach it.
    warmup = max(cfg.learning_starts, 1)

    logger = RunLogger(run_dir, tensorboard=cfg.tensorboard, resumed_at=start_step if cfg.resume else None)

    def write_curve() -> tuple[Path, np.ndarray]:
        steps, returns = (
            read_episodes(logger.episodes_csv) if logger.episodes_csv.exists() else (np.array([]), np.array([]))
        )
        title = f"DQN on {cfg.env_id}"
        return plot_learning_curve(
            {f"DQN {cfg.env_id}": (steps, returns)}, run_dir / "learning_curve.png", title
        ), returns

    saved: dict[str, int] = {"checkpoint": -1, "buffer": -1}  # the step of the last save of each
    last_curve: dict[str, Any] = {"step": -1}  # the last learning curve drawn, not redrawn for the same step

    def save_all(step: int, with_buffer: bool) -> None:
        # NaN weights (a learning rate too high) never overwrite the last good checkpoint, nor its buffer
        refuse_diverged(q_network, ckpt_dir, step, f"--learning-rate {cfg.learning_rate:g}")
        if saved["checkpoint"] != step:
            state = _checkpoint_state(q_network, target_network, optimizer, step, episodes_done, cfg, meta)
            save_checkpoint(ckpt_dir, *state)
            saved["checkpoint"] = step
        if with_buffer and saved["buffer"] != step:
            rb.save(buffer_dir, global_step=step)
            saved["buffer"] = step
        last_curve.update(step=step, drawn=write_curve())  # the curve so far, to watch a long run

    obs, _ = envs.reset(seed=cfg.seed + start_step)
    rng = np.random.default_rng(cfg.seed + start_step)
    recent: list[float] = []
    t0, last_log_step = time.time(), start_step
    global_step = start_step
    # `disable` is passed only to turn the bar off, so that TQDM_DISABLE / TQDM_MININTERVAL still apply
    off = {} if cfg.progress else {"disable": True}
    bar = tqdm(total=cfg.total_timesteps, initial=start_step, unit="step", dynamic_ncols=True, **off)
    exploration_steps = int(cfg.exploration_fraction * cfg.total_timesteps)
    with GracefulStop() as stop:
        while global_step < cfg.total_timesteps and not stop.requested:
            epsilon = linear_schedule(cfg.start_e, cfg.end_e, exploration_steps, global_step)
            if rng.random() < epsilon:
                actions = rng.integers(0, n_actions, size=cfg.num_envs)
            else:
                with torch.inference_mode():
                    q_values = q_network(torch.as_tensor(obs, device=device))
                actions = q_values.argmax(dim=1).cpu().numpy()

            next_obs, rewards, terminated, truncated, infos = envs.step(actions)
            done = np.logical_or(terminated, truncated)
            real_next_obs = next_obs.copy() if done.any() else next_obs
            for i in np.flatnonzero(done):
                real_next_obs[i] = infos["final_obs"][i]
            rb.add(obs, real_next_obs, actions, rewards, terminated, truncated)
            obs = next_obs
            global_step += cfg.num_envs
            bar.update(cfg.num_envs)

            if "final_info" in infos or "episode" in infos:
                ep_info = infos.get("final_info", infos)
                if "episode" in ep_info:
                    for i in np.flatnonzero(ep_info.get("_episode", np.ones(cfg.num_envs, bool))):
                        ret, length = float(ep_info["episode"]["r"][i]), int(ep_info["episode"]["l"][i])
                        episodes_done += 1
                        recent = (recent + [ret])[-20:]
                        logger.log_episode(global_step, ret, length, epsilon=epsilon)
                        bar.set_postfix(ret=f"{np.mean(recent):.1f}", eps=f"{epsilon:.2f}", eps_done=episodes_done)

            # one gradient step per train_frequency env steps, also when a vector step spans several of them
            n_updates = global_step // cfg.train_frequency - (global_step - cfg.num_envs) // cfg.train_frequency
            if rb.transitions_added < warmup:
                n_updates = 0
            for _ in range(n_updates):
                batch = rb.sample(cfg.batch_size)
                with torch.no_grad():
                    target_max = learn_q(target_network, batch.next_obs).max(dim=1).values
                    td_target = batch.rewards + cfg.gamma * target_max * (1.0 - batch.terminated)
                q_taken = learn_q(q_network, batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
                loss = F.smooth_l1_loss(q_taken, td_target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(q_network.parameters(), cfg.max_grad_norm)
                optimizer.step()
                if global_step - last_log_step >= 1000:
                    sps = (global_step - last_log_step) / max(1e-9, time.time() - t0)
                    td_loss = loss.item()
                    # stop at the first logged NaN, not hours later at the next checkpoint (which it would refuse)
                    refuse_diverged(q_network, ckpt_dir, global_step, f"--learning-rate {cfg.learning_rate:g}", td_loss)
                    logger.log_metrics(
                        global_step,
                        **{
                            "losses/td_loss": td_loss,
                            "losses/q_values": q_taken.mean().item(),
                            "charts/epsilon": epsilon,
                            "charts/SPS": sps,
                        },
                    )
                    t0, last_log_step = time.time(), global_step

            if global_step % cfg.target_network_frequency < cfg.num_envs:
                target_network.load_state_dict(q_network.state_dict())
            finished = global_step >= cfg.total_timesteps
            buffer_due = cfg.save_buffer and (finished or global_step % cfg.buffer_checkpoint_interval < cfg.num_envs)
            if global_step % cfg.checkpoint_interval < cfg.num_envs or buffer_due or finished:
                save_all(global_step, with_buffer=buffer_due)
    stopped = global_step < cfg.total_timesteps
    if stopped:
        save_all(global_step, with_buffer=cfg.save_buffer)
        print(f"Stopped at step {global_step}; continue with --resume --run-dir {run_dir}.", file=sys.stderr)
    bar.close()
    envs.close()
    logger.close()
    png, returns = last_curve["drawn"] if last_curve["step"] == global_step else write_curve()
    result: dict[str, Any] = {
        "global_step": global_step,
        "episodes": episodes_done,
        "mean_return_last_20": float(np.mean(returns[-20:])) if len(returns) else float("nan"),
        "learning_curve": str(png),
        "checkpoint": str(ckpt_dir),
        "stopped_early": stopped,
    }
    if cfg.video_episodes > 0 and not stopped:
        ev = evaluate(
            ckpt_dir,
            episodes=cfg.video_episodes,
            epsilon=cfg.eval_epsilon,
            seed=cfg.seed + 10_000,
            video_path=run_dir / "agent.mp4",
            max_steps=cfg.video_max_steps,
            device=str(device),
            env_kwargs=json.loads(cfg.env_kwargs),
        )
        result.update(video=ev["video"], eval_returns=ev["returns"])
    return result


def evaluate(
    checkpoint: str | os.PathLike[str],
    episodes: int = 5,
    epsilon: float = 0.05,
    seed: int = 0,
    video_path: str | os.PathLike[str] | None = None,
    max_steps: int = 27_000,
    device: str = "cpu",
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    network: str = "online",
) -> dict[str, Any]:
    """Play ``episodes`` whole games with an epsilon-greedy policy; optionally write them to an MP4.

    ``network``: the checkpoint's ``"online"`` Q-network (default) or its frozen ``"target"`` copy.

    Returns the raw game scores (``info["episode"]`` when the env records it, else summed rewards) and,
    under ``"cut_off"``, how many games ``max_steps`` ended early (their score so far is counted).
    Under ``EpisodicLife`` an episode here is a whole game: play continues through life losses.
    Without ``env_id`` and ``env_kwargs`` the env is the one the checkpoint was trained on, kwargs included
    (e.g. ``DQNAtari-v0`` with ``{"game": "SpaceInvaders"}``).
    """
    import dreamarcade  # noqa: F401

    with input_checks(gym.error.Error):  # the request, the checkpoint and its env; not the episodes
        episodes = check_count("--episodes", episodes, hint=" (whole games to play)")
        max_steps = check_count("--max-steps", max_steps, hint=" (agent steps per game before it is cut off)")
        if not 0.0 <= epsilon <= 1.0:  # also NaN, which played greedily without a word
            raise ValueError(f"--epsilon (the chance of a random action) must be in [0, 1], got {epsilon}")
        if video_path is not None:  # checked before the games: a bad path was found after all of them
            check_video_path(video_path, "--video")
        device = str(resolve_device(device))
        q, config = load_q_network(checkpoint, device, network)
        if env_id is None and env_kwargs is None:  # the training env, with the kwargs it was made with
            env_kwargs = json.loads(config.get("hyperparameters", {}).get("env_kwargs") or "{}")
        env_id = env_id or config["env_id"]
        make_kwargs = dict(env_kwargs or {})
        if video_path is not None:
            make_kwargs["render_mode"] = "rgb_array"
        env = gym.make(env_id, **make_kwargs)
        if list(env.observation_space.shape) != config["obs_shape"] or env.action_space.n != config["n_actions"]:
            raise CheckpointError(
                f"Checkpoint '{checkpoint}' expects observations {config['obs_shape']} and {config['n_actions']} "
                f"actions; {env_id} has {list(env.observation_space.shape)} and {env.action_space.n}."
            )
    rng = np.random.default_rng(seed)
    # encoded as they come: kept in a list, the default 5 games of up to 27,000 steps held ~13 GiB of frames
    video = VideoWriter(video_path, fps=30) if video_path is not None else None
    try:
        returns, cut_off = _play_games(env, q, device, episodes, max_steps, epsilon, seed, rng, video)
    except BaseException:
        if video is not None:
            video.discard()
        raise
    finally:
        env.close()
    out: dict[str, Any] = {"returns": returns, "mean": float(np.mean(returns)), "std": float(np.std(returns))}
    out["cut_off"] = cut_off
    written = video.close() if video is not None else None
    out["video"] = str(written) if written is not None else None
    return out


def _play_games(
    env: gym.Env,
    q: torch.nn.Module,
    device: str,
    episodes: int,
    max_steps: int,
    epsilon: float,
    seed: int,
    rng: np.random.Generator,
    video: VideoWriter | None,
) -> tuple[list[float], int]:
    """:func:`evaluate`'s games: (raw score of each, how many ``max_steps`` cut off); frames go to ``video``."""
    returns: list[float] = []
    cut_off = 0
    obs, info = env.reset(seed=seed)
    for _ in range(episodes):
        total, steps, game_score, game_over = 0.0, 0, None, False
        while steps < max_steps:
            if rng.random() < epsilon:
                action = int(rng.integers(env.action_space.n))
            else:
                with torch.inference_mode():
                    action = int(q(torch.as_tensor(obs[None], device=device)).argmax(1).item())
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            steps += 1
            if video is not None:
                video.add(env.render())
            if "episode" in info:
                game_score = float(info["episode"]["r"])
            if terminated or truncated:
                if info.get("game_over", True):
                    game_over = True
                    break
                obs, info = env.reset()  # a life was lost: the same game goes on
        if not game_over:  # cut off by max_steps: the raw score so far, where the env keeps one
            cut_off += 1
            game_score = _running_raw_return(env)
        returns.append(game_score if game_score is not None else total)
        obs, info = env.reset()
    return returns, cut_off


def _running_raw_return(env: gym.Env) -> float | None:
    """The unfinished game's raw score, from the innermost ``RecordEpisodeStatistics`` (None if there is none)."""
    found = None
    e: Any = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, gym.wrappers.RecordEpisodeStatistics):
            found = float(e.episode_returns)
        e = e.env
    return found


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: train (default) or ``--evaluate CHECKPOINT``."""
    import argparse
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--evaluate" or a.startswith("--evaluate=") for a in argv):
        p = argparse.ArgumentParser(
            prog="python -m dreamarcade.baselines dqn --evaluate",
            description="Evaluate a DQN checkpoint and write an MP4 of it playing.",
        )
        p.add_argument("--evaluate", required=True, metavar="CHECKPOINT_DIR")
        p.add_argument("--episodes", type=int, default=5)
        p.add_argument("--epsilon", type=float, default=0.05)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--video", default="agent.mp4", help="MP4 path ('' for none)")
        p.add_argument("--max-steps", type=int, default=27_000)
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
        p.add_argument(
            "--network", choices=("online", "target"), default="online", help="which of the checkpoint's Q-networks"
        )
        a = p.parse_args(argv)
        try:
            res = evaluate(
                a.evaluate, a.episodes, a.epsilon, a.seed, a.video or None, a.max_steps, a.device, network=a.network
            )
        except Exception as exc:  # a device, checkpoint or env this machine cannot use: one line, before any episode
            return input_error_status(exc, parser=p)
        print(json_text(res, indent=2))
        return 0
    cfg = parse_dataclass_args(
        DQNConfig,
        argv,
        description=__doc__.split("\n\n")[0]
        + " To evaluate a checkpoint instead: --evaluate CHECKPOINT_DIR (its flags: dqn --evaluate X --help).",
        prog="python -m dreamarcade.baselines dqn",
    )
    try:
        result = train(cfg)
    except Exception as exc:
        # as for the settings parse_dataclass_args checks: a usage error, found by the checks before training (or,
        # rarely, by those of the closing video's evaluation, once the checkpoint is saved)
        return input_error_status(exc, prog="python -m dreamarcade.baselines dqn")
    print(json_text(result, indent=2))  # strict JSON: a run without a finished episode has no mean (null, not NaN)
    return 0
