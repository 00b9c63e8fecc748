"""`harness methods`: every built-in method is listed, with its hyper-parameters; --json parses."""

from __future__ import annotations

import json

import pytest

import harness.cli
from harness.losses import LOSSES, register_loss
from harness.losses.base import LossOutput
from harness.methods import describe_methods, render_methods

MISSION = (
    "dpo", "dpop", "slic", "tdpo1", "tdpo2", "kto", "ipo", "spin", "sdpo_segment", "sdpo_stepwise",
    "simpo", "odpo_offset", "rdpo", "cdpo",
)  # fmt: skip
BEYOND = (
    "orpo", "cpo", "rpo", "ln_dpo", "r_dpo", "ld_dpo", "exo_pair", "nca_pair", "bco_pair",
    "sppo_hard", "apo_zero", "apo_down", "aot", "discopop", "f_dpo", "wpo", "tr_dpo",
)  # fmt: skip
KEYS = {
    "name", "hparams", "constraints", "needs", "data", "reduction", "state", "paper", "formula", "version", "origin",
    "regime", "regime_hparams", "regime_label", "search_space", "space_text",
}  # fmt: skip
ADDED = ("sft", "rso_hinge", "apo_zero_unpaired", "alphapo", "cal_dpo", "beta_dpo", "alpha_dpo", "sampo")


def test_all_31_methods_are_registered():
    assert len(set(MISSION + BEYOND)) == 31
    missing = sorted(set(MISSION + BEYOND) - set(LOSSES.names()))
    assert not missing, f"not registered: {missing}"


def test_describe_methods_covers_every_registered_loss():
    described = describe_methods()
    assert [m["name"] for m in described] == LOSSES.names()
    for method in described:
        assert set(method) == KEYS
        assert method["paper"] and method["formula"], method["name"]
        assert method["hparams"] == LOSSES.get(method["name"]).hparams


def test_text_table_lists_every_method_with_its_defaults():
    text = render_methods(as_json=False)
    lines = text.splitlines()
    header = lines[0]
    assert header.split()[:2] == ["name", "hyper-parameters"]
    for name in MISSION + BEYOND:
        row = next((line for line in lines if line.split(" ", 1)[0] == name), None)
        assert row is not None, f"{name} missing from the table"
    dpo_row = next(line for line in lines if line.startswith("dpo "))
    assert "beta=0.1" in dpo_row and "reference" in dpo_row
    # aligned: the hyper-parameters column starts at the same offset on every row
    column = header.index("hyper-parameters")
    rows = [line for line in lines[2:] if line and line.split(" ", 1)[0] in LOSSES]
    assert all(line[column - 1] == " " and line[column] != " " for line in rows)


def test_json_parses_and_round_trips_the_defaults():
    described = json.loads(render_methods(as_json=True))
    by_name = {m["name"]: m for m in described}
    assert set(MISSION + BEYOND) <= set(by_name)
    assert by_name["f_dpo"]["hparams"] == {"beta": 0.1, "divergence": "reverse_kl", "alpha": 0.5}
    assert by_name["wpo"]["needs"] == ["reference", "token_logps", "vocab_collision"]
    assert by_name["bco_pair"]["state"] == ["reward_mean", "reward_count"]
    assert by_name["orpo"]["needs"] == []


def test_a_plugin_loss_is_listed_with_its_origin():
    """A loss registered from outside harness/losses shows up, marked by the file it came from."""

    @register_loss("listing_test_plugin", reduction="sum", paper="test", formula="0")
    def plugin(inputs, *, scale: float = 2.0) -> LossOutput:  # pragma: no cover - never called
        raise NotImplementedError

    try:
        row = next(m for m in describe_methods() if m["name"] == "listing_test_plugin")
        assert row["hparams"] == {"scale": 2.0}
        assert row["origin"].endswith("test_methods_listing.py")
        assert "listing_test_plugin" in render_methods()
    finally:
        LOSSES.remove("listing_test_plugin")


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_prints_the_listing(capsys, as_json):
    assert harness.cli.main(["methods", "--json"] if as_json else ["methods"]) == 0
    out = capsys.readouterr().out
    if as_json:
        assert {m["name"] for m in json.loads(out)} >= set(MISSION + BEYOND)
    else:
        assert all(name in out for name in MISSION + BEYOND)


def test_the_added_methods_are_registered_and_every_space_is_listed_with_its_source():
    """The rest of the family (issue 16) is registered; --json gives each method's search space,
    the shared learning rate first, each dimension with its scale, range and source."""
    assert not sorted(set(ADDED) - set(LOSSES.names()))
    described = {m["name"]: m for m in json.loads(render_methods(as_json=True))}
    for name, method in described.items():
        space = method["search_space"]
        assert next(iter(space)) == "lr" and space["lr"]["relative_to"] == "train.lr", name
        assert all(dim["source"] for dim in space.values()), name
    assert described["dpo"]["search_space"]["beta"] == {
        "scale": "log", "low": 0.01, "high": 0.5, "source": described["dpo"]["search_space"]["beta"]["source"]}
    text = render_methods()
    assert "beta log[0.01, 0.5]" in text and "lr log[0.1, 10]×train.lr" in text
