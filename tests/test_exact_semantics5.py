"""Exact semantics of the frame-deduplicating replay buffer (which env and slot a uniform draw lands on, the frame
ring's slack, the clamp of the oldest valid transition, episodes ended outside add()) and of world-model collection
(the min_length cut, the per-episode random streams), each pinned where a plausible one-line bug (found by mutation
testing: a changed bound, side, constant or reset) kept every other test passing. ViZDoom runs for real."""

from __future__ import annotations

import numpy as np

from dreamarcade.baselines.replay_buffer import ReplayBuffer


# --- replay buffer ----------------------------------------------------------------------------------------------
class _Stream:
    """One env's stream of stacked observations whose every frame is unique: pixel (0, 0) and (0, 1) hold the frame's
    number in the stream (low and high byte), pixel (1, 0) the env. Transition ``g`` of env ``e`` has the reward
    ``1000 * (e + 1) + g`` (never 0, the value of an empty slot) and the action ``g % 5``."""

    def __init__(self, env: int, k: int) -> None:
        self.env, self.k, self.frame_id, self.step = env, k, 0, 0
        self.stack: list[np.ndarray] | None = None

    def _frame(self) -> np.ndarray:
        f = np.zeros((2, 2), np.uint8)
        f[0, 0], f[0, 1], f[1, 0] = self.frame_id % 256, self.frame_id // 256, self.env + 1
        self.frame_id += 1
        return f

    def transition(self, last: bool) -> tuple[np.ndarray, np.ndarray, int, float, bool]:
        if self.stack is None:  # an episode starts: k frames of its own
            self.stack = [self._frame() for _ in range(self.k)]
        obs = np.stack(self.stack)
        self.stack = [*self.stack[1:], self._frame()]
        nxt = np.stack(self.stack)
        reward = 1000.0 * (self.env + 1) + self.step
        action = self.step % 5
        self.step += 1
        if last:
            self.stack = None
        return obs, nxt, action, reward, last


def _feed(rb: ReplayBuffer, streams: list[_Stream], mask: list[bool], last: list[bool], oracle: dict) -> None:
    """One add() of one transition per env in ``mask``; ``last`` ends that env's episode (terminated)."""
    obs = np.zeros((rb.num_envs, *rb.obs_shape), np.uint8)
    nxt, actions = obs.copy(), np.zeros(rb.num_envs, np.int64)
    rewards, term = np.zeros(rb.num_envs), np.zeros(rb.num_envs, bool)
    for e, s in enumerate(streams):
        if mask[e]:
            obs[e], nxt[e], actions[e], rewards[e], term[e] = s.transition(last[e])
            oracle[rewards[e]] = (obs[e].tobytes(), nxt[e].tobytes(), int(actions[e]), bool(term[e]))
    rb.add(obs, nxt, actions, rewards, term, np.zeros(rb.num_envs, bool), env_mask=np.array(mask))


def _drawn(rb: ReplayBuffer, oracle: dict, n: int) -> set[float]:
    """Sample ``n`` transitions, check each is exactly one that was added, and return their rewards (their ids)."""
    b = rb.sample(n)
    seen = set()
    rows = zip(b.obs.numpy(), b.actions.tolist(), b.rewards.tolist(), b.next_obs.numpy(), b.terminated.tolist())
    for o, a, r, nx, d in rows:
        assert r in oracle, f"sampled a transition that was never added (reward {r})"
        assert oracle[r] == (o.tobytes(), nx.tobytes(), a, bool(d)), f"transition {r} came back with other data"
        seen.add(r)
    return seen


def test_sampling_lands_on_every_valid_slot_of_every_env_and_only_on_those():
    # 4 envs filled unequally (env 0 empty, env 2 wrapped around its ring): a draw on a boundary of the cumulative
    # sizes belongs to the next env, so no draw reaches an empty env or the slot past an env's newest transition,
    # and each env's oldest transition can be drawn
    k, cap = 4, 16
    rb = ReplayBuffer(4 * cap, (k, 2, 2), frame_stack=k, num_envs=4, seed=0)
    streams, oracle = [_Stream(e, k) for e in range(4)], {}
    fills = [0, 5, 40, 9]
    for i in range(max(fills)):
        _feed(rb, streams, [i < n for n in fills], [False] * 4, oracle)
    assert rb.sizes().tolist() == [0, 5, 16, 9]
    valid = {1000.0 * (e + 1) + g for e, n in enumerate(fills) for g in range(max(0, n - cap), n)}
    assert _drawn(rb, oracle, 4000) == valid


def test_sampling_with_an_empty_env_between_two_filled_ones():
    k, cap = 4, 8
    rb = ReplayBuffer(3 * cap, (k, 2, 2), frame_stack=k, num_envs=3, seed=1)
    streams, oracle = [_Stream(e, k) for e in range(3)], {}
    for i in range(11):
        _feed(rb, streams, [i < 3, False, True], [False] * 3, oracle)
    valid = {1000.0, 1001.0, 1002.0} | {3000.0 + g for g in range(3, 11)}
    assert _drawn(rb, oracle, 2000) == valid


def test_episodes_of_300_steps_keep_the_whole_capacity_sampleable():
    # "with episodes of L steps about min(capacity, 1.016 * capacity * L / (L + frame_stack)) transitions stay
    # sampleable": at L = 300 and stacks of 4 that is all of them, thanks to the ring's 1.6 % slack (cap // 64
    # frames); without it every episode start over the last `capacity` transitions costs a few of them
    k, capacity, length = 4, 1280, 300
    rb = ReplayBuffer(capacity, (k, 2, 2), frame_stack=k, seed=2)
    stream, oracle, sizes = _Stream(0, k), {}, []
    for g in range(4000):
        _feed(rb, [stream], [True], [g % length == length - 1], oracle)
        if g >= capacity - 1:
            sizes.append(len(rb))
    assert min(sizes) == max(sizes) == capacity
    assert min(_drawn(rb, oracle, 3000)) >= 1000.0 + 4000 - capacity  # only the newest `capacity` are drawn


def test_a_wrapped_long_episode_keeps_exactly_capacity_transitions():
    # one episode far longer than the buffer: the newest `capacity` transitions, never more, every one drawable
    k, capacity = 4, 32
    rb = ReplayBuffer(capacity, (k, 2, 2), frame_stack=k, seed=3)
    stream, oracle = _Stream(0, k), {}
    for g in range(200):
        _feed(rb, [stream], [True], [False], oracle)
        assert len(rb) == min(g + 1, capacity)
    assert _drawn(rb, oracle, 3000) == {1000.0 + g for g in range(200 - capacity, 200)}


def test_short_episodes_after_a_wrapped_long_one_never_give_overwritten_frames():
    # a long episode wraps the transition ring; then 1- and 2-step episodes (k + 1 or k + 2 frames each) overwrite
    # the frame ring far faster than the transition ring: the oldest transitions still in their slots have lost
    # their frames and must not be sampled (the oldest valid transition is searched from `trans_written - cap` on)
    k, capacity = 4, 64
    rb = ReplayBuffer(capacity, (k, 2, 2), frame_stack=k, seed=4)
    stream, oracle = _Stream(0, k), {}
    for _ in range(150):
        _feed(rb, [stream], [True], [False], oracle)
    _feed(rb, [stream], [True], [True], oracle)  # the long episode ends
    for i in range(60):
        _feed(rb, [stream], [True], [i % 3 != 1], oracle)  # episodes of 1 and 2 steps
        _drawn(rb, oracle, 300)
    # only transitions whose k + 1 frames are the newest frame_cap frames are counted
    assert len(rb) == len(_drawn(rb, oracle, 4000)) < capacity


def test_end_episodes_starts_a_new_stack_for_the_next_transition():
    # an episode cut off without add() seeing it (a run stopped mid-episode, an env reset outside the loop): after
    # end_episodes() the next transition writes its own k frames, so its stack is not made of the old episode's
    k = 4
    rb = ReplayBuffer(64, (k, 2, 2), frame_stack=k, seed=5)
    oracle: dict = {}
    old = _Stream(0, k)
    for _ in range(5):
        _feed(rb, [old], [True], [False], oracle)  # never terminated nor truncated
    rb.end_episodes()
    new = _Stream(1, k)  # frames marked with env 1: a stack borrowing old frames would show it
    for _ in range(3):
        _feed(rb, [new], [True], [False], oracle)
    assert _drawn(rb, oracle, 1000) == {1000.0 + g for g in range(5)} | {2000.0 + g for g in range(3)}


def test_end_episodes_without_frame_stacks_keeps_the_new_first_observation():
    # frame_stack=1: within an episode obs is the previous next_obs and is not stored again; after end_episodes()
    # the new episode's first observation is stored, not replaced by the old episode's last one
    rb = ReplayBuffer(10, (2,), obs_dtype=np.float32, seed=6)
    no = np.array([False])
    rb.add(np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]]), np.array([1]), np.array([0.5]), no, no)
    rb.end_episodes()
    rb.add(np.array([[7.0, 7.0]]), np.array([[8.0, 8.0]]), np.array([0]), np.array([2.0]), no, no)
    b = rb.sample(64)
    pairs = {(float(o[0]), float(n[0]), float(r)) for o, n, r in zip(b.obs, b.next_obs, b.rewards)}
    assert pairs == {(0.0, 1.0, 0.5), (7.0, 8.0, 2.0)}


# --- world-model collection ---------------------------------------------------------------------------------------
def _episodes(directory) -> list[dict[str, np.ndarray]]:
    """The stored episodes of a collection folder, in order."""
    from dreamarcade.world_models.rollouts import list_shards, load_shard

    out = []
    for path in list_shards(directory):
        data = load_shard(path)
        start = 0
        for n in data["episode_lengths"].tolist():
            out.append({key: data[key][start : start + n] for key in ("frames", "actions", "rewards", "dones")})
            start += n
    return out


def _documented_actions(job_seed: int, episode: int, attempt: int, steps: int) -> np.ndarray:
    """The random policy's actions of an episode drawn from (job seed, episode index, attempt), as documented: the
    stream first gives the env and agent seeds, then the policy's draws."""
    from dreamarcade.world_models.collect import RandomPolicy

    rng = np.random.default_rng(np.random.SeedSequence([job_seed, episode, attempt]))
    rng.integers(0, 2**31 - 1, size=2)
    policy = RandomPolicy("doom", rng)
    return np.stack([policy(None) for _ in range(steps)])


# job seed 11, 400-step cap: episode 0's first try dies after a few hundred steps and its second try lives longer;
# episode 1's first try lives longer than episode 0's first try too (each is read from a reference collection)
_SEED, _CAP = 11, 400


def test_an_episode_of_exactly_min_length_steps_is_dropped_and_one_step_more_is_kept(tmp_path):
    # "episodes of at most this many steps are dropped" (the paper dropped Doom episodes of <= 100 frames)
    from dreamarcade.world_models.collect import CollectJob, run_job

    def job(name: str, min_length: int) -> CollectJob:
        return CollectJob("doom", str(tmp_path / name), 0, 1, _SEED, min_length=min_length, max_steps=_CAP)

    assert run_job(job("ref", 0))["dropped"] == 0
    first = _episodes(tmp_path / "ref")[0]
    n = len(first["actions"])
    assert n < _CAP and first["dones"][-1]  # died: its length is its own, not the cap

    assert run_job(job("below", n - 1))["dropped"] == 0  # n > min_length: kept
    np.testing.assert_array_equal(_episodes(tmp_path / "below")[0]["frames"], first["frames"])

    at = run_job(job("at", n))  # n == min_length: dropped, and the next try is stored instead
    assert at["dropped"] >= 1 and at["episodes"] == 1
    assert len(_episodes(tmp_path / "at")[0]["actions"]) > n


def test_each_kept_episode_is_drawn_from_its_own_index_and_attempt_whatever_was_dropped_before(tmp_path):
    # Episode k's env seed and actions come from (job seed, k, attempt), attempt counting the tries of episode k
    # alone: drops before episode 1 do not change which episode 1 is collected
    from dreamarcade.world_models.collect import CollectJob, run_job

    summary = run_job(CollectJob("doom", str(tmp_path / "all"), 0, 2, _SEED, min_length=0, max_steps=_CAP))
    ref = _episodes(tmp_path / "all")
    assert (summary["dropped"], summary["steps"]) == (0, sum(len(ep["actions"]) for ep in ref))
    cut = len(ref[0]["actions"])  # episode 0's first try is dropped at this min_length, episode 1's is not
    assert len(ref[1]["actions"]) > cut
    for k, ep in enumerate(ref):
        np.testing.assert_array_equal(ep["actions"], _documented_actions(_SEED, k, 0, len(ep["actions"])))

    summary = run_job(CollectJob("doom", str(tmp_path / "cut"), 0, 2, _SEED, min_length=cut, max_steps=_CAP))
    got = _episodes(tmp_path / "cut")
    assert summary["dropped"] >= 1 and len(got) == 2
    # episode 0 is its try number `dropped` (every drop was one of its tries); episode 1 its first try, as above
    np.testing.assert_array_equal(
        got[0]["actions"], _documented_actions(_SEED, 0, summary["dropped"], len(got[0]["actions"]))
    )
    for key in ("frames", "actions", "rewards", "dones"):
        np.testing.assert_array_equal(got[1][key], ref[1][key])
