"""Model cards: JSON or YAML beside the weights, or inline; validated fields; the default halo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segpipe.errors import ModelError
from segpipe.models import ModelCard, resolve_model
from segpipe.models.card import FALLBACK_HALO, card_locations

from ..helpers import TinyNet, save_torchscript, tiny_card

YAML_CARD = """\
name: tiny-yaml
in_channels: 2
num_classes: 3
class_names: [a, b, c]
size_divisor: 2
receptive_field: 6
normalization: percentile
"""


def test_card_locations_sit_beside_the_weights() -> None:
    assert card_locations("s3://bucket/models/net.onnx") == [
        "s3://bucket/models/net.json",
        "s3://bucket/models/net.yaml",
        "s3://bucket/models/net.yml",
    ]


def test_yaml_card_beside_the_weights(tmp_path: Path) -> None:
    path = save_torchscript(TinyNet(), tmp_path / "model.pt")
    (tmp_path / "model.yaml").write_text(YAML_CARD)
    card = resolve_model(path).card
    assert (card.name, card.in_channels, card.class_names) == ("tiny-yaml", 2, ("a", "b", "c"))
    assert card.halo is None
    assert card.default_halo == 6


def test_json_card_wins_over_yaml(tmp_path: Path) -> None:
    path = save_torchscript(TinyNet(), tmp_path / "model.pt", tiny_card(name="from-json"))
    (tmp_path / "model.yaml").write_text(YAML_CARD)
    assert resolve_model(path).card.name == "from-json"


def test_inline_card_replaces_the_card_beside_the_file(tmp_path: Path) -> None:
    path = save_torchscript(TinyNet(), tmp_path / "model.pt", tiny_card(name="beside"))
    ref = resolve_model(path, card=tiny_card(name="inline", halo=4))
    assert (ref.card.name, ref.card.halo) == ("inline", 4)


def test_card_without_halo_or_receptive_field_says_what_it_assumed(tmp_path: Path) -> None:
    card = {k: v for k, v in tiny_card().items() if k != "halo"}
    ref = resolve_model(save_torchscript(TinyNet(), tmp_path / "model.pt", card))
    assert ref.card.default_halo == FALLBACK_HALO
    assert ref.assumptions == (f"model card gives neither halo nor receptive field: halo {FALLBACK_HALO}",)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"normalization": "zscore"}, "normalization must be one of"),
        ({"size_divisor": 0}, "size_divisor must be a positive integer"),
        ({"halo": -1}, "halo must be a non-negative integer"),
        ({"class_names": ["a", "b"]}, "2 class_names for 3 classes"),
        ({"colour": "red"}, "unknown field 'colour'"),
    ],
)
def test_invalid_field_values_are_refused(tmp_path: Path, change: dict, fragment: str) -> None:
    path = save_torchscript(TinyNet(), tmp_path / "model.pt", tiny_card(**change))
    with pytest.raises(ModelError, match=f"model.json: invalid model card.*{fragment}"):
        resolve_model(path)


@pytest.mark.parametrize(("suffix", "text"), [(".json", "{not json"), (".yaml", "a: [unclosed"), (".json", "[1, 2]")])
def test_unparseable_card_is_one_line(tmp_path: Path, suffix: str, text: str) -> None:
    path = save_torchscript(TinyNet(), tmp_path / "model.pt")
    (tmp_path / f"model{suffix}").write_text(text)
    with pytest.raises(ModelError, match=f"model{suffix}: invalid model card") as caught:
        resolve_model(path)
    assert "\n" not in str(caught.value)


def test_to_dict_round_trips_through_json() -> None:
    card = ModelCard.from_dict({**tiny_card(), "architecture": {"name": "unet", "depth": 2}})
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    assert card.to_dict()["class_names"] == ["a", "b", "c"]


BOUNDARY_CARD = {"name": "b", "in_channels": 1, "num_classes": 3, "class_names": ["bg", "nucleus", "boundary"]}


def test_a_cards_instance_rule_is_read_and_written_back() -> None:
    from segpipe.objects.grow import InstanceRule

    card = ModelCard.from_dict({**BOUNDARY_CARD, "instances": {"interior": 1, "boundary": 2, "width": 4}})
    assert card.instances == InstanceRule(1, 2, 4)
    assert ModelCard.from_dict(card.to_dict()) == card


def test_a_card_without_an_instance_rule_writes_no_instances_key() -> None:
    assert "instances" not in ModelCard.from_dict(BOUNDARY_CARD).to_dict()


def test_an_instance_rule_naming_a_class_the_card_lacks_is_refused() -> None:
    with pytest.raises(ModelError, match=r"card.json: invalid model card \(instances.boundary must be 1..2, got 3\)"):
        ModelCard.from_dict({**BOUNDARY_CARD, "instances": {"interior": 1, "boundary": 3}}, "card.json")


def test_an_instance_rule_on_a_two_class_card_is_refused() -> None:
    with pytest.raises(ModelError, match="instances.boundary must be 1..1, got 2"):
        ModelCard.from_dict({"name": "t", "num_classes": 2, "instances": {"interior": 1, "boundary": 2}})


def test_the_shipped_boundary_card_declares_three_classes_and_its_rule() -> None:
    from segpipe.models.backends.builtin import BOUNDARY_CARD as SHIPPED

    card = ModelCard.from_json(SHIPPED)
    assert card.class_names == ("background", "nucleus", "boundary")
    assert (card.instances.interior, card.instances.boundary) == (1, 2)
    assert card.instances.min_interior == 3  # scripts/train_boundary.py's choice on held-out synthetic images
