"""The robustness report's formats (Markdown, JSON, the RobustBench-style
model card) and the evaluation's progress lines."""

import json

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.evaluation.report import RobustnessReport

#: The fields of RobustBench's model_info files (its `ModelInfo` and the
#: files of its leaderboards), with the type each value has there.
ROBUSTBENCH_FIELDS = {
    "link": str, "name": str, "authors": str, "additional_data": bool,
    "number_forward_passes": int, "dataset": str, "venue": str,
    "architecture": str, "eps": str, "clean_acc": str, "reported": str,
    "autoattack_acc": str, "footnote": str, "unreliable": bool,
}  # fmt: skip


def _report(**overrides):
    rows = [
        {"attack": a, "norm": n, "eps": e, "accuracy": acc}
        for n, e, accs in (
            ("linf", 0.1, (0.8, 0.7, 0.7, 0.65)),
            ("linf", 0.3, (0.3, 0.2, 0.2, 0.1)),
            ("l2", 1.0, (0.6, 0.5, 0.5, 0.5)),
        )
        for a, acc in zip(("APGD-CE", "APGD-T", "FAB-T", "Square"), accs)
    ]
    rows += [
        {"attack": "worst case", "norm": n, "eps": e, "accuracy": acc}
        for n, e, acc in (("linf", 0.1, 0.65), ("linf", 0.3, 0.1), ("l2", 1.0, 0.5))
    ]
    fields = {
        "clean_accuracy": 0.98, "rows": rows, "warnings": [], "num_examples": 200,
        "noise": [{"std": 0.3, "clip": (0.0, 1.0), "accuracy": 0.9, "spread": 0.01,
                   "draws": [0.9, 0.91]}],
        "suite": "standard suite (APGD-CE, APGD-T, FAB-T, Square)",
        "suite_name": "standard", "input_range": (0.0, 1.0), "version": "0.2.0",
    }  # fmt: skip
    return RobustnessReport(**{**fields, **overrides})


def test_json_round_trip_and_markdown_caption():
    report = _report()
    text = report.to_json()
    assert json.loads(text)["suite_name"] == "standard"
    again = RobustnessReport.from_json(text)
    assert again == report  # tuples (ranges, clips) come back as tuples
    assert again.accuracy("linf", 0.3) == 0.1 and again.noise_accuracy(0.3) == 0.9
    table = report.to_markdown()
    assert (
        "Robust accuracy under the standard suite (APGD-CE, APGD-T, FAB-T, "
        "Square), keras_gradreg 0.2.0." in table
    )
    assert "| linf | 0.3 | 30.00% | 20.00% | 20.00% | 10.00% | 10.00% |" in table
    assert report.threats() == [("linf", 0.1), ("linf", 0.3), ("l2", 1.0)]
    # A report written before the version and suite were recorded reads too.
    old = {
        k: v for k, v in report.to_dict().items() if k not in ("version", "suite_name")
    }
    assert RobustnessReport.from_json(json.dumps(old)).version == ""
    for bad in ("not json", json.dumps({"clean_accuracy": 1.0}),
                json.dumps({**report.to_dict(), "extra": 1})):  # fmt: skip
        with pytest.raises(ValueError, match="Argument `text` must be the JSON"):
            RobustnessReport.from_json(bad)


def test_model_card_has_robustbenchs_fields_and_the_full_record(tmp_path):
    report = _report()
    path = tmp_path / "model_info" / "mnist" / "Linf" / "Net.json"
    card = kg.write_model_card(
        report, path, "linf", 0.3, name="A net", dataset="mnist",
        architecture="MLP", reported=0.125,
    )  # fmt: skip
    assert json.loads(path.read_text()) == json.loads(json.dumps(card))
    for field, kind in ROBUSTBENCH_FIELDS.items():
        assert isinstance(card[field], kind), field
    assert (card["eps"], card["clean_acc"], card["autoattack_acc"]) == (
        "0.3", "98.00", "10.00"
    )  # fmt: skip
    assert card["reported"] == "12.50" and card["unreliable"] is False
    assert "keras_gradreg 0.2.0" in card["footnote"] and "200" in card["footnote"]
    record = card["evaluation"]
    assert record["threat_model"] == "Linf" and record["num_examples"] == 200
    assert record["attacks"] == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert record["version"] == "0.2.0" and record["input_range"] == (0.0, 1.0)
    assert [r["accuracy"] for r in record["robust_accuracy"]] == [0.65, 0.1, 0.5]
    # One threat in the report: norm and eps may be left out.
    single = _report(rows=[r for r in report.rows if r["norm"] == "l2"])
    card = kg.write_model_card(single, tmp_path / "l2.json")
    assert card["eps"] == "1" and card["evaluation"]["threat_model"] == "L2"


def test_model_card_refuses_other_suites_and_unknown_threats(tmp_path):
    with pytest.raises(ValueError, match="suite_name='fast'"):
        kg.write_model_card(_report(suite_name="fast"), tmp_path / "c.json")
    with pytest.raises(ValueError, match="norm=None"):
        kg.write_model_card(_report(), tmp_path / "c.json")
    with pytest.raises(ValueError, match="eps=0.2"):
        kg.write_model_card(_report(), tmp_path / "c.json", "linf", 0.2)
    with pytest.raises(ValueError, match="eps=None"):
        kg.write_model_card(_report(), tmp_path / "c.json", "linf")
    assert not (tmp_path / "c.json").exists()


class _Break:
    """A fake attack that misclassifies the first `count` points it gets
    (by mirroring a 2-vector, which the identity classifier then flips)."""

    def __init__(self, name, count):
        self.name, self.count = name, count

    def __call__(self, model, x, y, norm, eps, **kwargs):
        x_adv = x.copy()
        x_adv[: self.count] = x[: self.count, ::-1]
        return x_adv


def test_progress_lines_name_the_threat_and_the_points_still_robust(capsys):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32")])
    x = np.array([[0.9, 0.1]] * 10, "float32")
    y = np.zeros(10, "int32")
    report = kg.evaluate_robustness(
        model, x, y, ["linf"], [0.1, 0.2], [_Break("A", 3), _Break("B", 2)],
        cascade=True, checks=False, verbose=1,
    )  # fmt: skip
    lines = [line for line in capsys.readouterr().out.splitlines() if "eps=" in line]
    assert lines[0].startswith(
        "[1/4] linf eps=0.1 A: attacked 10, 7/10 robust (70.00%)"
    )
    # The cascade: B attacks the 7 that A left, and leaves 5.
    assert lines[1].startswith("[2/4] linf eps=0.1 B: attacked 7, 5/10 robust")
    assert lines[2].startswith("[3/4] linf eps=0.2 A: attacked 10, 7/10 robust")
    # Once every attack has run, an estimate of the time left.
    assert "left" in lines[2] and "left" not in lines[3]
    assert report.accuracy("linf", 0.2) == 0.5
