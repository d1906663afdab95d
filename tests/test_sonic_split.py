"""Sonic train/test split as data, checked against stable-retro's state files (no ROM needed); ROM errors."""

from __future__ import annotations

import pytest

stable_retro = pytest.importorskip("stable_retro")

from dreamarcade.envs.sonic import (  # noqa: E402
    SONIC_GAMES,
    SONIC_TEST,
    SONIC_TRAIN,
    Level,
    check_level,
    make_contest_env,
    make_sonic_env,
    make_sonic_split_env,
    parse_levels,
    required_sha1,
    retro_game_id,
    validate_split,
)
from dreamarcade.errors import MissingROMError  # noqa: E402


def test_split_counts_and_no_overlap():
    assert len(SONIC_TRAIN) == 47 and len(SONIC_TEST) == 11
    assert len(set(SONIC_TRAIN)) == 47 and len(set(SONIC_TEST)) == 11
    assert not set(SONIC_TRAIN) & set(SONIC_TEST)
    per_game_train = {g: sum(lv.game == g for lv in SONIC_TRAIN) for g in SONIC_GAMES}
    per_game_test = {g: sum(lv.game == g for lv in SONIC_TEST) for g in SONIC_GAMES}
    assert per_game_train == {SONIC_GAMES[0]: 13, SONIC_GAMES[1]: 15, SONIC_GAMES[2]: 19}
    assert per_game_test == {SONIC_GAMES[0]: 4, SONIC_GAMES[1]: 3, SONIC_GAMES[2]: 4}


def test_split_is_exactly_the_states_stable_retro_ships():
    validate_split(SONIC_TRAIN)
    validate_split(SONIC_TEST)
    for game in SONIC_GAMES:  # train + test together are every save state of the three games
        shipped = set(stable_retro.data.list_states(retro_game_id(game)))
        ours = {lv.state for lv in SONIC_TRAIN + SONIC_TEST if lv.game == game}
        assert ours == shipped, game


def test_split_names_known_traps():
    names = {f"{lv.game}:{lv.state}" for lv in SONIC_TRAIN}
    assert "SonicTheHedgehog2-Genesis:WingFortressZone" in names  # no ".Act"
    assert "SonicAndKnuckles3-Genesis:HiddenPalaceZone" in names
    assert "SonicTheHedgehog2-Genesis:HillTopZone.Act1" in names  # not "Hilltop"
    assert Level("SonicTheHedgehog-Genesis", "GreenHillZone.Act2") in SONIC_TEST
    assert Level("SonicTheHedgehog-Genesis", "GreenHillZone.Act1") in SONIC_TRAIN
    assert all(lv.state != "ScrapBrainZone.Act3" for lv in SONIC_TRAIN + SONIC_TEST)


def test_parse_levels():
    assert parse_levels("test") == list(SONIC_TEST)
    assert parse_levels("Airstriker-Genesis:Level1") == [Level("Airstriker-Genesis", "Level1")]
    with pytest.raises(ValueError, match="GAME:STATE"):
        parse_levels("GreenHillZone.Act1")
    # a list mixes pairs and strings; a string item gives every level it names (it used to keep only its first)
    two = "Airstriker-Genesis:Level1,SonicTheHedgehog-Genesis:GreenHillZone.Act1"
    green_hill = Level("SonicTheHedgehog-Genesis", "GreenHillZone.Act1")
    assert parse_levels([two, ("A", "b")]) == [Level("Airstriker-Genesis", "Level1"), green_hill, Level("A", "b")]
    assert parse_levels(["test"]) == list(SONIC_TEST)
    with pytest.raises(ValueError, match=r"must be a \(game, state\) pair"):
        parse_levels([("A", "b", "c")])


def test_unknown_level_and_game_are_clear_errors():
    with pytest.raises(ValueError, match=r"Unknown level 'GreenHillZone\.Act4'.*GreenHillZone\.Act3"):
        check_level("SonicTheHedgehog-Genesis", "GreenHillZone.Act4")
    with pytest.raises(ValueError, match="Unknown stable-retro game"):
        check_level("SonicTheHedgehog4-Genesis", "GreenHillZone.Act1")
    with pytest.raises(ValueError, match="no 'contest' scenario"):
        make_contest_env("Airstriker-Genesis", "Level1")  # Airstriker only has "scenario"


def test_missing_rom_names_game_sha_and_import_command():
    for game in SONIC_GAMES:
        try:
            stable_retro.data.get_romfile_path(retro_game_id(game))
            pytest.skip(f"{game} ROM is imported on this machine")
        except FileNotFoundError:
            pass
    with pytest.raises(MissingROMError) as err:
        make_sonic_env("SonicTheHedgehog-Genesis", "GreenHillZone.Act1")
    msg = str(err.value)
    assert "SonicTheHedgehog-Genesis-v0" in msg
    assert "69e102855d4389c3fd1a8f3dc7d193f8eee5fe5b" in msg
    assert "python -m stable_retro.import" in msg
    with pytest.raises(MissingROMError) as err:  # one error names every missing ROM, not just the first
        make_sonic_split_env("test")
    for game in ("SonicTheHedgehog-Genesis-v0", "SonicTheHedgehog2-Genesis-v0", "SonicAndKnuckles3-Genesis-v0"):
        assert game in str(err.value)
    assert str(err.value).startswith("The ROMs of ")
    assert required_sha1("SonicAndKnuckles3-Genesis") == [
        "b711a909cce238ca4af3e517a2edca306228efa5",
        "cfbf98c36c776677290a872547ac47c53d2761d6",
    ]


def test_registered_sonic_ids_raise_missing_rom():
    import gymnasium as gym

    import dreamarcade  # noqa: F401

    for env_id in ("SonicContest-v0", "SonicTrain-v0", "SonicTest-v0"):
        assert env_id in gym.registry
    try:
        stable_retro.data.get_romfile_path(retro_game_id(SONIC_GAMES[0]))
    except FileNotFoundError:
        with pytest.raises(MissingROMError):
            gym.make("SonicContest-v0")
