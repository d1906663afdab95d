"""Iterative-procedure data collection with exploration, and the done-head calibration of a Doom dream."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dreamarcade.errors import DreamArcadeError
from dreamarcade.world_models.collect import ExploringPolicy, RandomPolicy, collect
from dreamarcade.world_models.controller import Controller
from dreamarcade.world_models.features import FeatureTracker, WorldModelAgent
from dreamarcade.world_models.model import WorldModel, bundled_dir
from dreamarcade.world_models.rollouts import list_shards, load_shard


def _agent() -> WorldModelAgent:
    wm = WorldModel.bundled("doom")
    return WorldModelAgent(wm, Controller.load(bundled_dir("doom") / "controller", feature_size=wm.feature_size))


def test_exploring_policy_mixes_random_held_actions_and_tells_the_agent() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    rng = np.random.default_rng(0)
    always = ExploringPolicy(_agent().reset(0), RandomPolicy("doom", rng), 1.0, rng)
    for _ in range(15):
        a = always(frame)
        assert a.shape == (1,) and always.agent._prev_action is not None
        np.testing.assert_array_equal(always.agent._prev_action, a)  # M is fed the action actually taken
    assert always.random_steps == always.steps == 15
    agent, plain = _agent().reset(0), _agent().reset(0)
    never = ExploringPolicy(agent, RandomPolicy("doom", np.random.default_rng(1)), 0.0, np.random.default_rng(1))
    for _ in range(5):
        np.testing.assert_array_equal(never(frame), plain(frame))
    assert never.random_steps == 0
    with pytest.raises(ValueError, match="explore"):
        ExploringPolicy(_agent(), RandomPolicy("doom", rng), 1.5, rng)
    with pytest.raises(RuntimeError, match="previous call"):
        _agent().reset(0).override_action(np.zeros(1, np.float32))


def test_collect_with_controller_and_exploration(tmp_path) -> None:
    d = bundled_dir("doom")
    s = collect("doom", tmp_path, 1, workers=1, seed=3, min_length=0, max_steps=30, backend="inline",
                policy_dir=str(d), controller_dir=str(d / "controller"), explore=0.3)  # fmt: skip
    assert s["episodes"] == 1 and 0 < s["steps"] <= 30
    data = load_shard(list_shards(tmp_path)[0])
    assert data["actions"].shape == (s["steps"], 1) and np.all(np.abs(data["actions"]) <= 1)
    with pytest.raises(ValueError, match="explore"):
        collect("doom", tmp_path, 1, explore=-0.1)


def test_explore_without_a_controller_is_refused_and_the_pipeline_collects_its_first_round_at_random(
    tmp_path, monkeypatch
) -> None:
    """`collect --explore p` without `--collect-controller` was accepted, written to the manifest and ignored."""
    import json

    import dreamarcade.baselines.world_models as wmb
    from dreamarcade.world_models.rollouts import ShardWriter

    with pytest.raises(ValueError, match=r"explore=0\.5 \(--explore\).*--collect-controller"):
        collect("doom", tmp_path / "random", 1, explore=0.5, backend="inline")
    with pytest.raises(ValueError, match="controller_dir is given without policy_dir"):  # collected at random
        collect("doom", tmp_path / "random", 1, controller_dir=str(tmp_path), backend="inline")
    assert not (tmp_path / "random").exists()
    assert wmb.main(["collect", "--run-dir", str(tmp_path / "run"), "--explore", "0.5", "--backend", "inline"]) == 2
    assert not (tmp_path / "run" / "frames").exists()
    # a folder an earlier collect recorded that way resumes without --explore: it collected at random all the same
    old = tmp_path / "old"
    writer = ShardWriter(old, prefix="frames-s0-w0")
    writer.add_episode(np.zeros((3, 64, 64, 3), np.uint8), np.zeros((3, 1)), np.ones(3), np.arange(3) == 2)
    writer.close()
    record = {"seed": 0, "workers": 1, "episodes": 1, "min_length": 0, "env": "doom", "max_steps": 5,
              "explore": 0.5, "policy_dir": None, "controller_dir": None}  # fmt: skip
    (old / "collect-s0.json").write_text(json.dumps(record))
    assert collect("doom", old, 1, workers=1, min_length=0, max_steps=5, backend="inline")["resumed"] == 1
    # the pipeline's --explore is for its iterations' collects with a controller: the first round is random
    seen = []

    def first_collect(cfg: wmb.WMConfig) -> None:
        seen.append(cfg.explore)
        raise KeyboardInterrupt  # enough: the pipeline's first step was called

    monkeypatch.setattr(wmb, "step_collect", first_collect)
    with pytest.raises(KeyboardInterrupt):
        wmb.step_pipeline(wmb.WMConfig(run_dir=str(tmp_path / "pipe"), explore=0.3, iterations=2))
    assert seen == [0.0]


def test_collect_refuses_a_controller_evolved_in_another_world_model(tmp_path, capsys) -> None:
    """evaluate and video refused a controller evolved in another world model; collect played it."""
    from dreamarcade.baselines.world_models import main
    from dreamarcade.world_models.model import world_model_fingerprint

    d = bundled_dir("doom")
    size = WorldModel.bundled("doom").feature_size
    other, fits = tmp_path / "other", tmp_path / "fits"
    Controller.for_env("doom", size).save(other, extra={"world_model_sha256": "another model"})
    Controller.for_env("doom", size).save(fits, extra={"world_model_sha256": world_model_fingerprint(d)})
    kwargs = {"workers": 1, "min_length": 0, "max_steps": 5, "backend": "inline", "policy_dir": str(d)}
    with pytest.raises(ValueError, match="evolved in another world model.*--collect-controller"):
        collect("doom", tmp_path / "frames", 1, controller_dir=str(other), **kwargs)
    assert not (tmp_path / "frames").exists()  # refused before any work
    argv = ["collect", "--run-dir", str(tmp_path / "run"), "--episodes", "1", "--workers", "1", "--backend", "inline"]
    capsys.readouterr()
    assert main([*argv, "--max-steps", "5", "--collect-controller", str(other)]) == 2  # the run's (bundled) model
    assert capsys.readouterr().err.startswith("error: The controller in ")
    assert not (tmp_path / "run" / "frames").exists()
    assert collect("doom", tmp_path / "frames", 1, controller_dir=str(fits), **kwargs)["episodes"] == 1


def test_v_only_controller_plays_the_real_game(tmp_path) -> None:
    """A V-only controller (``--controller v-only``) reads z alone: the agent and collect with it must accept it."""
    wm = WorldModel.bundled("doom")
    ctrl = Controller.for_env("doom", wm.z_size)
    ctrl.set_flat(np.random.default_rng(0).normal(size=ctrl.num_params))
    ctrl.save(tmp_path / "v_only")
    agent = WorldModelAgent(wm, ctrl).reset(0)
    frame = np.full((64, 64, 3), 90, np.uint8)
    z = FeatureTracker(wm, seed=0).reset(frame)[: wm.z_size]
    np.testing.assert_array_equal(agent(frame), ctrl.act(z))  # acts on z alone
    s = collect("doom", tmp_path / "frames", 1, workers=1, seed=3, min_length=0, max_steps=20, backend="inline",
                policy_dir=str(bundled_dir("doom")), controller_dir=str(tmp_path / "v_only"))  # fmt: skip
    assert s["episodes"] == 1
    with pytest.raises(ValueError, match=r"gives 1088 \(zch\) or 64"):
        WorldModelAgent(wm, Controller.for_env("doom", 100))


def test_calibrate_done_shift_moves_dream_length_toward_target() -> None:
    from dreamarcade.baselines.world_models import calibrate_done_shift, dream_lengths_random

    wm = WorldModel.bundled("doom")
    wm.max_steps = 120
    base_bias = float(wm.rnn.head.bias.detach()[wm.rnn.n_mdn])
    before = dream_lengths_random(wm, 16, 1.15, seed=0)
    assert before.shape == (16,) and np.all((before >= 1) & (before <= 120))
    target = 30.0
    shift, length = calibrate_done_shift(wm, target, 1.15, episodes=16, seed=0, iters=6)
    assert shift > 0  # this dream is too safe for a 30-step target: the done head must fire more
    assert abs(length - target) < abs(before.mean() - target)
    assert float(wm.rnn.head.bias.detach()[wm.rnn.n_mdn]) == pytest.approx(base_bias + shift)
    np.testing.assert_allclose(dream_lengths_random(wm, 16, 1.15, seed=0).mean(), length)
    with pytest.raises(ValueError, match="positive"):
        calibrate_done_shift(wm, 0.0, 1.15)
    # a target from recorded episodes is a mean over those collect kept (Doom: longer than 100 steps), so the dream's
    # mean is taken over its episodes past the same cut (the mean over all of them ran ~5% short of the data's)
    with torch.no_grad():
        wm.rnn.head.bias[wm.rnn.n_mdn] = base_bias
    _, cut_length = calibrate_done_shift(wm, 110.0, 1.15, episodes=16, seed=0, iters=6, min_length=100)
    lengths = dream_lengths_random(wm, 16, 1.15, seed=0)
    np.testing.assert_allclose(lengths[lengths > 100].mean(), cut_length)
    assert lengths.min() <= 100  # some dreams end before the cut: the two means differ
    with torch.no_grad():
        wm.rnn.head.bias[wm.rnn.n_mdn] = base_bias
    # a cut no dream outlives at any shift: there is no mean to match (it took 0 as the mean and kept that shift)
    with pytest.raises(DreamArcadeError, match="all 16 dreams end within 120 steps"):
        calibrate_done_shift(wm, 130.0, 1.15, episodes=16, seed=0, iters=3, min_length=120)
    with torch.no_grad():
        wm.rnn.head.bias[wm.rnn.n_mdn] = base_bias


def test_evolve_with_a_pessimistic_ensemble_scores_the_worst_dream(tmp_path) -> None:
    import csv

    from dreamarcade.baselines.world_models import WMConfig, step_evolve, step_pipeline

    deadly = WorldModel.bundled("doom")
    with torch.no_grad():
        deadly.rnn.head.bias[deadly.rnn.n_mdn] += 50.0  # this dream ends after the first step, whatever C does
    deadly.save(tmp_path / "deadly", half=True)
    cfg = WMConfig(env="doom", run_dir=str(tmp_path / "run"), popsize=4, rollouts=2, generations=2, eval_every=0,
                   max_steps=60, ensemble=str(tmp_path / "deadly"))  # fmt: skip
    step_evolve(cfg)
    with open(tmp_path / "run" / "logs_controller" / "metrics.csv", newline="") as f:
        best = [float(r["fitness_best"]) for r in csv.DictReader(f) if r.get("fitness_best")]
    assert best == [1.0, 1.0]  # the bundled dream alone gives far more (see test_cma_es_evolves_in_the_bundled_dream)
    # the real env has no ensemble: the models were checked, then ignored, and the run recorded no ensemble
    real = dataclasses.replace(cfg, where="real", run_dir=str(tmp_path / "real"), backend="inline", workers=1)
    with pytest.raises(ValueError, match="--ensemble .* but --where real"):
        step_evolve(real)
    with pytest.raises(ValueError, match="--ensemble .* but --where real"):  # before the pipeline collects
        step_pipeline(real)
    assert not (tmp_path / "real").exists()
