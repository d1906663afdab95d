"""Preprocessing throughput: dreamarcade vs Gymnasium vs SB3 vs ale-py C++ vs envpool, in one run.

Every contender computes the same thing (noop reset 30, skip 4 with max-pool, 84x84 gray, 4-stack,
sign-clipped reward, no life-loss signal, sticky actions off) on Pong with the same random actions.
(One difference that cannot be turned off: SB3's AtariWrapper presses FIRE after each reset; it costs
a step per episode, not per step.) Gymnasium's stack runs twice: on the default RGB env, as its docs
show, and on an ``obs_type="grayscale"`` env, which spares ALE the RGB copy of every frame that
AtariPreprocessing does not read (same observations; the faster of the two is the reference).
Contenders are timed in interleaved rounds, in a new random order each round; the median is reported
with the range over rounds, so the ratios are taken under the same machine load and their noise is
visible. Steps are agent steps (4 emulator frames each), summed over envs.

    python benchmarks/bench_preprocessing.py --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import ale_py  # noqa: F401  (registers ALE/...)
import gymnasium as gym
import numpy as np

import dreamarcade  # noqa: F401  (registers DQNPong-v0)
from dreamarcade.baselines.common import positive_int
from dreamarcade.checkpoint import atomic_write_text, json_text

GAME = "Pong"
GYM_RGB = "Gymnasium stack"
GYM_GRAY = "Gymnasium stack, obs_type='grayscale' env"


def single_contenders() -> dict[str, Callable[[], gym.Env]]:
    def raw() -> gym.Env:
        return gym.make("ALE/Pong-v5", repeat_action_probability=0.0)

    def ours() -> gym.Env:
        return gym.make("DQNPong-v0", episodic_life=False, fire_reset=False)

    def gymnasium_stack(obs_type: str = "rgb") -> gym.Env:
        env = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0, obs_type=obs_type)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84)
        env = gym.wrappers.TransformReward(env, lambda r: float(np.sign(r)))
        return gym.wrappers.FrameStackObservation(env, 4, padding_type="zero")

    return {
        "raw ALE/Pong-v5 (no preprocessing)": raw,
        "dreamarcade DQNPong-v0": ours,
        GYM_RGB: gymnasium_stack,
        GYM_GRAY: lambda: gymnasium_stack("grayscale"),
    }


class VecAsSingle:
    """Drive a 1-env vector env through the single-env loop (actions and results batched by 1)."""

    def __init__(self, venv) -> None:
        self.venv = venv
        self.n = 1

    def reset(self, seed: int) -> None:
        self.venv.reset(seed=seed)

    def step(self, a: int) -> None:
        self.venv.step(np.array([a]))


def make_sb3(n: int):
    from stable_baselines3.common.atari_wrappers import AtariWrapper
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    def thunk() -> gym.Env:
        env = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
        return AtariWrapper(env, terminal_on_life_loss=False)

    return VecFrameStack(DummyVecEnv([thunk] * n), 4)


def make_cpp(n: int):
    from dreamarcade.envs.atari import make_dqn_vector_env

    # ale-py's own env, without dreamarcade's Gymnasium-API adapter (AtariVectorAPI) that make_vec gives "ours"
    return make_dqn_vector_env(n, GAME, episodic_life=False, fire_reset=False).env


def make_ours_vec(n: int):
    return gym.make_vec(
        "DQNPong-v0", num_envs=n, vectorization_mode="vector_entry_point", episodic_life=False, fire_reset=False
    )


def make_envpool(n: int):
    import envpool

    return envpool.make(
        "Pong-v5",
        env_type="gymnasium",
        num_envs=n,
        batch_size=n,
        episodic_life=False,
        reward_clip=True,
        repeat_action_probability=0.0,
        noop_max=30,
        use_fire_reset=False,
        stack_num=4,
        img_height=84,
        img_width=84,
    )


def make_python_async(n: int):
    from dreamarcade.envs.atari import make_dqn_env

    return gym.vector.AsyncVectorEnv([lambda: make_dqn_env(GAME, episodic_life=False, fire_reset=False)] * n)


def time_single(env, actions: np.ndarray, seconds: float) -> float:
    env.reset(seed=0)
    steps, i, t0 = 0, 0, time.perf_counter()
    while True:
        for _ in range(100):
            out = env.step(int(actions[i % len(actions)]))
            i += 1
            if out is not None and len(out) == 5 and (out[2] or out[3]):
                env.reset()
        steps += 100
        if time.perf_counter() - t0 >= seconds:
            return steps / (time.perf_counter() - t0)


def time_vector(venv, n: int, actions: np.ndarray, seconds: float, sb3_api: bool = False) -> float:
    if sb3_api:
        venv.reset()
    else:
        venv.reset(seed=0)
    steps, i, t0 = 0, 0, time.perf_counter()
    while True:
        for _ in range(50):
            a = actions[(i + np.arange(n)) % len(actions)]
            venv.step(a)  # vector envs (and SB3's VecEnv) reset finished envs themselves
            i += n
        steps += 50 * n
        if time.perf_counter() - t0 >= seconds:
            return steps / (time.perf_counter() - t0)


def bench(seconds: float, rounds: int, vector_sizes: list[int], with_envpool: bool) -> dict:
    actions = np.random.default_rng(0).integers(0, 6, size=100_000)
    results: dict[str, dict[str, list[float]]] = {"single": {}, **{f"vec{n}": {} for n in vector_sizes}}
    single = {name: make() for name, make in single_contenders().items()}
    single["SB3 AtariWrapper + VecFrameStack"] = make_sb3(1)
    single["ale-py AtariVectorEnv, 1 env (C++)"] = VecAsSingle(make_cpp(1))
    if with_envpool:
        single["envpool, 1 env (C++)"] = VecAsSingle(make_envpool(1))
    vectors: dict[int, dict[str, tuple]] = {}
    for n in vector_sizes:
        vectors[n] = {
            "dreamarcade make_vec (C++ path)": (make_ours_vec(n), False),
            "ale-py AtariVectorEnv (C++)": (make_cpp(n), False),
            "dreamarcade Python path, AsyncVectorEnv": (make_python_async(n), False),
            "SB3 AtariWrapper, DummyVecEnv + VecFrameStack": (make_sb3(n), True),
        }
        if with_envpool:
            vectors[n]["envpool (C++)"] = (make_envpool(n), False)
    order_rng = np.random.default_rng(1)
    for r in range(rounds):
        # a fresh random order each round, so no contender always runs right after another's warm-up
        for name in order_rng.permutation(list(single)):
            env = single[name]
            if name.startswith("SB3"):
                sps = time_vector(env, 1, actions, seconds, sb3_api=True)
            else:
                sps = time_single(env, actions, seconds)
            results["single"].setdefault(name, []).append(sps)
        for n, contenders in vectors.items():
            for name in order_rng.permutation(list(contenders)):
                venv, sb3_api = contenders[name]
                sps = time_vector(venv, n, actions, seconds, sb3_api=sb3_api)
                results[f"vec{n}"].setdefault(name, []).append(sps)
        print(f"round {r + 1}/{rounds} done", flush=True)
    return {
        group: {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v} for k, v in d.items()}
        for group, d in results.items()
    }


def to_markdown(res: dict) -> str:
    def cell(r: dict) -> str:
        return f"{r['median']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f})"

    def ratio(r: dict, ref_rounds: list[float]) -> str:  # within each round (same load), then the median
        return f"{statistics.median(a / b for a, b in zip(r['rounds'], ref_rounds)):.2f}x"

    out = []
    single = {k: v for k, v in res["single"].items()}
    # the stronger Gymnasium variant of each round
    gym_ref = [max(a, b) for a, b in zip(single[GYM_RGB]["rounds"], single[GYM_GRAY]["rounds"])]
    cpp_ref = single["ale-py AtariVectorEnv, 1 env (C++)"]["rounds"]
    out.append(
        "| single env | steps/s, median (range over rounds) | vs the faster Gymnasium stack | vs ale-py C++ (1 env) |"
    )
    out.append("|---|---|---|---|")
    for name, r in sorted(single.items(), key=lambda kv: -kv[1]["median"]):
        out.append(f"| {name} | {cell(r)} | {ratio(r, gym_ref)} | {ratio(r, cpp_ref)} |")
    for group in [g for g in res if g.startswith("vec")]:
        n = group[3:]
        d = res[group]
        ref = d["ale-py AtariVectorEnv (C++)"]["rounds"]
        out.append("")
        out.append(f"| {n} envs | steps/s, median (range over rounds) | vs ale-py C++ | vs envpool |")
        out.append("|---|---|---|---|")
        ep = d.get("envpool (C++)", {}).get("rounds")
        for name, r in sorted(d.items(), key=lambda kv: -kv[1]["median"]):
            out.append(f"| {name} | {cell(r)} | {ratio(r, ref)} | {ratio(r, ep) if ep else '-'} |")
    out.append("\nRatios: the median over rounds of the ratio within each round (both sides under the same load).")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per contender per round")
    p.add_argument("--rounds", type=positive_int, default=3)
    p.add_argument("--vector-sizes", type=int, nargs="*", default=[4, 8])
    p.add_argument("--no-envpool", action="store_true", help="skip envpool (pip install envpool to include it)")
    p.add_argument("--json", default=None, help="also write the medians, ranges and per-round values to this JSON")
    a = p.parse_args()
    with_envpool = not a.no_envpool
    if with_envpool:
        try:
            import envpool  # noqa: F401
        except ImportError:
            print("envpool is not installed: `pip install envpool` to include it; skipping it")
            with_envpool = False
    res = bench(a.seconds, a.rounds, a.vector_sizes, with_envpool)
    print(to_markdown(res))
    if a.json:
        atomic_write_text(a.json, json_text(res, indent=2) + "\n")


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
