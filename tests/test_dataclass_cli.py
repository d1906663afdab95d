"""The dataclass -> argparse flags shared by the DQN, PPO, world-models and JERK command lines."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from dreamarcade.baselines.common import add_dataclass_args, help_field, parse_dataclass_args


@dataclasses.dataclass
class Settings:
    mode: typing.Literal["fast", "exact"] = "exact"
    level: typing.Literal[1, 2, 3] = 1
    sizes: tuple[int, ...] = (32, 64)
    crop: tuple[float, float] = (0.0, 1.0)
    target_kl: float | None = None
    label: str = help_field("a name for the run", "run")
    verbose: bool = False


def _parser(**kw: typing.Any) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x")
    add_dataclass_args(p, Settings, **kw)
    return p


def test_each_field_type_parses_to_its_value() -> None:
    argv = ["--mode", "fast", "--level", "3", "--sizes", "8", "16", "4", "--crop", "0.1", "0.9"]
    argv += ["--target-kl", "0.02", "--label", "a%b", "--verbose"]
    cfg = Settings(**vars(_parser().parse_args(argv)))
    assert cfg == Settings("fast", 3, (8, 16, 4), (0.1, 0.9), 0.02, "a%b", True)
    assert Settings(**vars(_parser().parse_args([]))) == Settings()  # the dataclass defaults
    assert _parser().parse_args(["--target-kl", "none"]).target_kl is None  # Optional: "none" gives None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mode", "slow"], "argument --mode: invalid choice: 'slow' (choose from 'fast', 'exact')"),
        (["--level", "4"], "argument --level: invalid choice: 4"),
        (["--level", "one"], "argument --level: invalid int value: 'one'"),
        (["--crop", "0.1"], "argument --crop: expected 2 arguments"),
        (["--sizes"], "argument --sizes: expected at least one argument"),
        (["--label", "none"], None),  # a plain str field keeps the word: only Optional fields read it as None
    ],
)
def test_bad_values_are_usage_errors_naming_the_flag(argv, message, capsys) -> None:
    if message is None:
        assert _parser().parse_args(argv).label == "none"
        return
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_help_shows_each_fields_help_and_default() -> None:
    text = _parser(defaults=Settings(sizes=(1, 2))).format_help()
    assert "a name for the run (default: run)" in text
    assert "(default: (1, 2))" in text  # from the given instance, not the dataclass
    assert "{fast,exact}" in text


def test_a_percent_sign_in_a_help_text_is_shown_not_formatted() -> None:
    @dataclasses.dataclass
    class Cfg:
        keep: float = help_field("keep the top 5% of episodes", 0.05)

    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, Cfg)
    assert "keep the top 5% of episodes (default: 0.05)" in " ".join(parser.format_help().split())  # a ValueError


def test_given_only_leaves_flags_not_given_as_none_and_exclude_drops_flags() -> None:
    ns = _parser(given_only=True, exclude=("verbose",)).parse_args(["--mode", "fast"])
    assert vars(ns) == {
        "mode": "fast",
        "level": None,
        "sizes": None,
        "crop": None,
        "target_kl": None,
        "label": None,
    }
    with pytest.raises(SystemExit):
        _parser(exclude=("verbose",)).parse_args(["--verbose"])


@pytest.mark.parametrize(
    "annotation",
    [dict[str, int], list[int], tuple[int, str], tuple[int, ...] | None, typing.Literal["a", 1], tuple[()]],
)
def test_a_field_type_it_cannot_parse_is_refused_not_parsed_wrongly(annotation) -> None:
    cls = dataclasses.make_dataclass("Odd", [("value", annotation, dataclasses.field(default=None))])
    with pytest.raises(TypeError, match=r"Odd\.value is "):
        add_dataclass_args(argparse.ArgumentParser(), cls)


def test_parse_dataclass_args_turns_the_configs_own_check_into_a_usage_error(capsys) -> None:
    from dreamarcade.baselines.dqn import DQNConfig

    with pytest.raises(SystemExit) as exc:
        parse_dataclass_args(DQNConfig, ["--batch-size", "0"], description="DQN")
    assert exc.value.code == 2 and "--batch-size must be an integer >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_dataclass_args(DQNConfig, ["--precision", "fp16"], description="DQN")
    assert "invalid choice: 'fp16' (choose from 'fp32', 'bf16')" in capsys.readouterr().err


def test_ppo_flags_take_none_for_optional_settings_and_refuse_unknown_choices(capsys) -> None:
    from dreamarcade.baselines.ppo import PPOConfig, add_config_args, config_from_args

    p = argparse.ArgumentParser()
    add_config_args(p, PPOConfig(target_kl=0.05), exclude=("seed",))
    cfg = config_from_args(p.parse_args(["--target-kl", "none", "--ent-coef-final", "0", "--network", "mlp"]))
    assert (cfg.target_kl, cfg.ent_coef_final, cfg.network, cfg.seed) == (None, 0.0, "mlp", PPOConfig().seed)
    assert config_from_args(p.parse_args([])).target_kl == 0.05  # the given defaults
    with pytest.raises(SystemExit):
        p.parse_args(["--vector-mode", "threads"])
    assert "invalid choice: 'threads'" in capsys.readouterr().err


def test_world_models_flags_keep_their_choices_and_leave_unset_flags_to_the_presets(capsys) -> None:
    from dreamarcade.baselines import world_models as W
    from dreamarcade.world_models.mdnrnn import ACTION_MAPS
    from dreamarcade.world_models.model import ENV_DEFAULTS

    hints = typing.get_type_hints(W.WMConfig)
    assert set(typing.get_args(hints["env"])) == set(ENV_DEFAULTS)  # the choices cannot drift from the models
    assert set(typing.get_args(hints["rnn_action_map"])) == set(ACTION_MAPS)
    ns = W.build_parser().parse_args(["demo", "--popsize", "8"])
    assert ns.popsize == 8 and ns.rollouts is None and ns.env is None  # main() fills these from the demo presets
    with pytest.raises(SystemExit) as exc:
        W.main(["collect", "--env", "pong"])
    assert exc.value.code == 2 and "invalid choice: 'pong'" in capsys.readouterr().err


def test_jerk_refuses_settings_that_would_hang_or_mean_nothing(capsys) -> None:
    from dreamarcade.baselines.jerk import JERKConfig, main

    with pytest.raises(ValueError, match="--explore-steps must be an integer >= 1, got 0"):
        JERKConfig(explore_steps=0, backtrack_steps=0)  # looped forever without taking a step
    with pytest.raises(ValueError, match=r"--jump-prob must be a probability in \[0, 1\], got nan"):
        JERKConfig(jump_prob=float("nan"))
    JERKConfig(backtrack_steps=0, exploit_bias=1.0)  # allowed: never backtrack; always replay the best
    with pytest.raises(ValueError, match=r"--seed must be an integer from 0 to 2\*\*32 - 1, got -1"):
        JERKConfig(seed=-1)  # a traceback after hyperparameters.json was written
    with pytest.raises(SystemExit) as exc:  # refused before any emulator is made
        main(["--game", "Airstriker-Genesis", "--state", "Level1", "--explore-steps", "0"])
    assert exc.value.code == 2 and "--explore-steps must be an integer >= 1, got 0" in capsys.readouterr().err
