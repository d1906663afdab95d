"""PPO's clipped-surrogate loss (:func:`ppo_loss`) against hand-computed numbers, and the training loop's use of it.

The expected values are worked out here with plain Python (``math`` / ``statistics``), never with the code under test.
"""

from __future__ import annotations

import csv
import math
import statistics

import gymnasium as gym
import pytest
import torch

import dreamarcade.baselines.ppo as ppo_module
from dreamarcade.baselines.ppo import PPOConfig, PPOLoss, ppo_loss, train_ppo


def _t(values: list[float], grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def _policy_only(ratios: list[float], advantages: list[float], *, clip_coef: float = 0.2, norm_adv: bool = False,
                 grad: bool = False) -> tuple[PPOLoss, torch.Tensor]:  # fmt: skip
    """``ppo_loss`` with old log-probs 0 and new ones log(ratio); the value and entropy terms are zero."""
    n = len(ratios)
    newlogprob = _t([math.log(r) for r in ratios], grad=grad)
    terms = ppo_loss(newlogprob, torch.zeros(n), torch.zeros(n), torch.zeros(n), torch.zeros(n), torch.zeros(n),
                     _t(advantages), clip_coef=clip_coef, ent_coef=0.0, vf_coef=0.0, norm_adv=norm_adv,
                     clip_vloss=False)  # fmt: skip
    return terms, newlogprob


def _standardised(xs: list[float]) -> list[float]:
    """Mean 0, (unbiased, as torch.std) std 1 -- with the 1e-8 of the code."""
    mean, std = statistics.fmean(xs), statistics.stdev(xs)
    return [(x - mean) / (std + 1e-8) for x in xs]


def _surrogate(ratios: list[float], advantages: list[float]) -> float:
    """-mean(A * r): the policy loss when no ratio leaves the clip range."""
    return -sum(a * r for a, r in zip(ratios, advantages)) / len(ratios)


# ---- (1) advantages are normalised within the minibatch passed in ---------------------------------------------------


def test_advantages_are_normalised_within_the_minibatch():
    batch = [1.0, 2.0, 4.0, 9.0, 20.0, -5.0, 0.0, 3.0]  # the whole rollout's advantages
    ratios = [1.1, 0.9, 1.0, 1.15]  # all inside 1 +- 0.2: no clipping, the loss is -mean(A_norm * r)
    first, second = batch[:4], batch[4:]

    per_minibatch = _surrogate(ratios, _standardised(first))
    batch_norm = _standardised(batch)
    per_batch = _surrogate(ratios, batch_norm[:4])
    assert abs(per_minibatch - per_batch) > 0.05  # the test tells the two apart
    assert abs(per_minibatch - _surrogate(ratios, first)) > 0.05  # and normalised from raw

    terms, _ = _policy_only(ratios, first, norm_adv=True)
    assert terms.pg_loss.item() == pytest.approx(per_minibatch, rel=1e-5)
    terms, _ = _policy_only(ratios, second, norm_adv=True)
    assert terms.pg_loss.item() == pytest.approx(_surrogate(ratios, _standardised(second)), rel=1e-5)
    # the mean 0 / std 1 of that minibatch: shifting and scaling its advantages changes nothing
    terms, _ = _policy_only(ratios, [7.0 + 3.0 * a for a in first], norm_adv=True)
    assert terms.pg_loss.item() == pytest.approx(per_minibatch, rel=1e-5)


def test_without_norm_adv_the_advantages_are_used_as_given():
    ratios, advantages = [1.1, 0.9, 1.0, 1.15], [1.0, 2.0, 4.0, 9.0]
    terms, _ = _policy_only(ratios, advantages, norm_adv=False)
    assert terms.pg_loss.item() == pytest.approx(-(1.1 + 1.8 + 4.0 + 10.35) / 4, rel=1e-6)


# ---- (2) a single-step minibatch is not normalised -------------------------------------------------------------------


def test_a_single_step_minibatch_is_not_normalised():
    terms, _ = _policy_only([1.1], [3.0], norm_adv=True)  # normalising it would give 0/0 (std of one value: nan)
    assert terms.pg_loss.item() == pytest.approx(-3.3, rel=1e-6)
    assert math.isfinite(terms.loss.item())
    # two steps are normalised: +-1/sqrt(2) whatever the raw values
    terms, _ = _policy_only([1.0, 1.1], [1.0, 3.0], norm_adv=True)
    assert terms.pg_loss.item() == pytest.approx(-(-1.0 + 1.1) / math.sqrt(2) / 2, rel=1e-5)


# ---- (3) the clip bound is exactly 1 +- clip_coef --------------------------------------------------------------------


@pytest.mark.parametrize("clip", [0.1, 0.2, 0.3])
def test_clip_bound_is_one_plus_minus_clip_coef(clip):
    eps = 0.05  # ratios just inside and just outside each bound
    cases = [  # (advantage, ratio, the ratio it is clipped to or None)
        (+1.0, 1 + clip + eps, 1 + clip),  # positive advantage, ratio above 1 + clip: clipped
        (+2.0, 1 + clip - eps, None),
        (+0.5, 1 - clip - eps, None),  # the pessimistic bound keeps the smaller, unclipped, objective
        (-1.5, 1 - clip - eps, 1 - clip),  # negative advantage, ratio below 1 - clip: clipped
        (-3.0, 1 - clip + eps, None),
        (-0.7, 1 + clip + eps, None),
    ]
    advantages, ratios = [c[0] for c in cases], [c[1] for c in cases]
    terms, newlogprob = _policy_only(ratios, advantages, clip_coef=clip, norm_adv=False, grad=True)
    n = len(cases)
    expected = sum(-adv * (ratio if to is None else to) for adv, ratio, to in cases) / n
    assert terms.pg_loss.item() == pytest.approx(expected, rel=1e-5)

    terms.pg_loss.backward()
    # d(-A * r)/d(log r) = -A * r, over the mean's n; a clipped step gets no gradient at all
    for (adv, ratio, to), g in zip(cases, newlogprob.grad.tolist()):
        if to is not None:
            assert g == 0.0, (adv, ratio)
        else:
            assert g == pytest.approx(-adv * ratio / n, rel=1e-5), (adv, ratio)
        # each step on its own, too: its loss is -A times the (clipped) ratio
        alone, _ = _policy_only([ratio], [adv], clip_coef=clip, norm_adv=False)
        assert alone.pg_loss.item() == pytest.approx(-adv * (ratio if to is None else to), rel=1e-5), (adv, ratio)


# ---- (4) the clipped value loss --------------------------------------------------------------------------------------


def test_clipped_value_loss_is_half_the_max_of_clipped_and_unclipped_errors():
    clip = 0.2
    old_value = [0.0, 0.0, 0.0, 0.0]
    newvalue = [0.5, 0.1, 0.5, -0.5]
    returns = [1.0, 1.0, -1.0, 0.3]
    # V clipped to old +- 0.2: [0.2, 0.1, 0.2, -0.2]
    # unclipped (V - R)^2:  [0.25, 0.81, 2.25, 0.64]
    # clipped (Vc - R)^2:   [0.64, 0.81, 1.44, 0.25]
    # max:                  [0.64, 0.81, 2.25, 0.64]
    n = 4
    v = _t(newvalue, grad=True)
    terms = ppo_loss(torch.zeros(n), torch.zeros(n), torch.zeros(n), v, _t(old_value), _t(returns), torch.zeros(n),
                     clip_coef=clip, ent_coef=0.0, vf_coef=1.0, norm_adv=False, clip_vloss=True)  # fmt: skip
    assert terms.v_loss.item() == pytest.approx(0.5 * (0.64 + 0.81 + 2.25 + 0.64) / n, rel=1e-5)
    terms.v_loss.backward()
    # step 0: the clipped error wins and its V is saturated -> no gradient; the others: 0.5 * 2 (V - R) / n
    expected = [0.0, (0.1 - 1.0) / n, (0.5 + 1.0) / n, (-0.5 - 0.3) / n]
    assert v.grad.tolist() == pytest.approx(expected, rel=1e-5)

    unclipped = ppo_loss(torch.zeros(n), torch.zeros(n), torch.zeros(n), _t(newvalue), _t(old_value), _t(returns),
                         torch.zeros(n), clip_coef=clip, ent_coef=0.0, vf_coef=1.0, norm_adv=False,
                         clip_vloss=False)  # fmt: skip
    assert unclipped.v_loss.item() == pytest.approx(0.5 * (0.25 + 0.81 + 2.25 + 0.64) / n, rel=1e-5)


def test_total_loss_combines_the_terms():
    # ratio 1, advantage 2 (not normalised): pg = -2; entropy mean 1.5; V - R = 1 and -3: v = 0.5 * (1 + 9) / 2 = 2.5
    terms = ppo_loss(torch.zeros(2), torch.zeros(2), _t([1.0, 2.0]), _t([1.0, -3.0]), _t([1.0, -3.0]), torch.zeros(2),
                     _t([2.0, 2.0]), clip_coef=0.2, ent_coef=0.1, vf_coef=0.5, norm_adv=False,
                     clip_vloss=True)  # fmt: skip
    assert terms.pg_loss.item() == pytest.approx(-2.0)
    assert terms.entropy.item() == pytest.approx(1.5)
    assert terms.v_loss.item() == pytest.approx(2.5)
    assert terms.loss.item() == pytest.approx(-2.0 - 0.1 * 1.5 + 0.5 * 2.5)


# ---- (5) the statistics: clipfrac and approx_kl ----------------------------------------------------------------------


def test_clipfrac_and_approx_kl():
    ratios = [1.0, 1.1, 1.3, 0.7, 0.85]  # |r - 1| = 0, 0.1, 0.3, 0.3, 0.15: two of five beyond 0.2
    terms, newlogprob = _policy_only(ratios, [1.0, -1.0, 1.0, -1.0, 1.0], clip_coef=0.2, grad=True)
    assert isinstance(terms.clipfrac, float)
    assert terms.clipfrac == pytest.approx(2 / 5)
    kl = sum((r - 1) - math.log(r) for r in ratios) / len(ratios)
    assert terms.approx_kl.item() == pytest.approx(kl, rel=1e-4)
    assert not terms.approx_kl.requires_grad  # a statistic: computed under no_grad
    # a wider clip range counts fewer steps
    assert _policy_only(ratios, [1.0] * 5, clip_coef=0.12)[0].clipfrac == pytest.approx(3 / 5)
    assert _policy_only(ratios, [1.0] * 5, clip_coef=0.35)[0].clipfrac == 0.0


# ---- the training loop uses it ---------------------------------------------------------------------------------------


def test_training_loop_calls_ppo_loss_per_minibatch(tmp_path, monkeypatch):
    calls: list[tuple[list[torch.Tensor], dict, PPOLoss]] = []

    def recording(*args, **kwargs):
        # the network's outputs (new log-probs, entropy, values) carry gradients; the rollout's data does not
        assert [a.requires_grad for a in args] == [True, False, True, True, False, False, False]
        terms = ppo_loss(*args, **kwargs)
        calls.append(([a.detach().clone() for a in args], kwargs, terms))
        return terms

    monkeypatch.setattr(ppo_module, "ppo_loss", recording)
    cfg = PPOConfig(
        total_timesteps=64, num_envs=2, num_steps=8, num_minibatches=2, update_epochs=2, ent_coef=0.02,
        mlp_hidden=8, vector_mode="sync", clip_coef=0.15, vf_coef=0.4,
    )  # fmt: skip
    train_ppo([lambda: gym.make("CartPole-v1")] * 2, cfg, tmp_path, progress=False, tensorboard=False)

    num_updates = cfg.total_timesteps // (cfg.num_envs * cfg.num_steps)
    assert len(calls) == num_updates * cfg.update_epochs * cfg.num_minibatches
    per_update = cfg.update_epochs * cfg.num_minibatches
    for i, (args, kwargs, _) in enumerate(calls):
        newlogprob, old_logprob, entropy, newvalue, old_value, returns, advantages = args
        assert kwargs == {"clip_coef": 0.15, "ent_coef": 0.02, "vf_coef": 0.4, "norm_adv": True, "clip_vloss": True}
        for a in args:
            assert a.shape == (cfg.num_envs * cfg.num_steps // cfg.num_minibatches,)  # a minibatch
        # raw GAE advantages: normalising them is left to ppo_loss (per minibatch), not done before it
        assert not (abs(advantages.mean().item()) < 1e-4 and abs(advantages.std().item() - 1) < 1e-3)
        torch.testing.assert_close(returns - old_value, advantages)  # returns = advantages + rollout values
        if i % per_update == 0:  # an update's first minibatch: the weights are still the rollout's
            torch.testing.assert_close(newlogprob, old_logprob)
            torch.testing.assert_close(newvalue, old_value)
    first_epoch = torch.cat([args[6] for args, _, _ in calls[: cfg.num_minibatches]])
    assert not (abs(first_epoch.mean().item()) < 1e-4 and abs(first_epoch.std().item() - 1) < 1e-3)

    with open(tmp_path / "metrics.csv") as f:
        last_row = list(csv.DictReader(f))[-1]
    last = calls[-1][2]  # the log shows the last minibatch's terms
    assert float(last_row["losses/policy_loss"]) == pytest.approx(last.pg_loss.item())
    assert float(last_row["losses/value_loss"]) == pytest.approx(last.v_loss.item())
    assert float(last_row["losses/entropy"]) == pytest.approx(last.entropy.item())
    assert float(last_row["losses/approx_kl"]) == pytest.approx(last.approx_kl.item())
    last_update = calls[-per_update:]
    expected_clipfrac = sum(t.clipfrac for _, _, t in last_update) / len(last_update)
    assert float(last_row["losses/clipfrac"]) == pytest.approx(expected_clipfrac)
