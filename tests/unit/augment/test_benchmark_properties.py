"""scripts/benchmark_properties.py: gaps, their spread and the verdicts of issue #13's
properties 1-2 from measured values (the runs themselves are the runner's)."""
import importlib.util
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts",
                      "benchmark_properties.py")


@pytest.fixture(scope="module")
def bp():
    spec = importlib.util.spec_from_file_location("benchmark_properties", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _task(fp, scratch, w4, w2, qat, metric="accuracy"):
    return {"metric": metric, "fp": fp, "scratch": scratch, "ptq_w4": w4, "ptq_w2": w2, "qat_w2": qat}


def test_all_properties_met(bp):
    measured = {"SST-2": _task(90.0, [70.0, 71.0, 70.5], [89.0] * 3, [80.0, 80.5, 81.0], [87.0, 87.5, 87.2]),
                "RTE": _task(70.0, [55.0, 55.5, 56.0], [68.0] * 3, [60.0, 60.2, 60.4], [67.0, 67.5, 67.9])}
    ev = bp.evaluate(measured)
    assert all(ev["verdicts"].values()), ev["verdicts"]
    g = ev["tasks"]["SST-2"]["gaps"]
    assert g["scratch"]["mean"] == pytest.approx(19.5) and g["scratch"]["std"] == pytest.approx(0.5)
    assert g["ptq_w2"]["mean"] == pytest.approx(9.5)
    text = bp.markdown(ev, [1, 2, 3], 300, 60.0)
    assert "train300 (first 300 train rows)" in text and "**not met**" not in text
    assert "| SST-2 | accuracy | 90.0 | 70.5 ± 0.5 |" in text and "Setting:" not in text
    assert "Setting: aliases=16 in_train=1" in bp.markdown(ev, [1], 300, 1.0, "aliases=16 in_train=1")


def test_each_property_can_fail(bp):
    base = dict(fp=90.0, scratch=[70.0] * 3, w4=[89.0] * 3, w2=[80.0] * 3, qat=[87.0] * 3)
    cases = {
        "1_teacher_knows_more": dict(base, scratch=[85.0] * 3),        # gap 5 < 10
        "2a_ptq_w2_hurts": dict(base, w2=[88.0] * 3),                   # gap 2 < 5
        "2b_qat_w2_gap_on_two_tasks": dict(base, qat=[89.5] * 3),       # gap 0.5 < 2
        "2c_gap_std_at_most_1": dict(base, qat=[85.0, 87.0, 89.0]),     # std 2 > 1
    }
    for failing, kwargs in cases.items():
        ev = bp.evaluate({"A": _task(**kwargs), "B": _task(**base)})
        assert not ev["verdicts"][failing], failing
        assert all(v for k, v in ev["verdicts"].items() if k != failing), (failing, ev["verdicts"])
        assert "**not met**" in bp.markdown(ev, [1, 2, 3], None, 1.0)
    # the std bound is property 2's: a noisy from-scratch gap (property 1) does not fail it
    ev = bp.evaluate({"A": _task(**dict(base, scratch=[60.0, 70.0, 80.0])), "B": _task(**base)})
    assert all(ev["verdicts"].values()) and ev["tasks"]["A"]["gaps"]["scratch"]["std"] == 10.0
    # W2 must hurt more than W4
    ev = bp.evaluate({"A": _task(**dict(base, w4=[79.0] * 3)), "B": _task(**base)})
    assert not ev["verdicts"]["2a_ptq_w2_hurts"]


def test_rerender_evaluates_stored_values_again_in_the_same_order(bp, tmp_path):
    import argparse
    import json
    base = dict(fp=90.0, scratch=[70.0] * 3, w4=[89.0] * 3, w2=[80.0] * 3, qat=[87.0] * 3)
    measured = {"SST-2": _task(**base), "CoLA": _task(**dict(base, qat=[89.5] * 3))}
    out = tmp_path / "p.md"
    args = argparse.Namespace(out=str(out), qat_train_size=300, setting="s")
    bp._write(args, measured, [1, 2, 3], 120.0)
    first = out.read_text()
    stored = json.loads((tmp_path / "p.json").read_text())
    assert stored["task_order"] == ["SST-2", "CoLA"] and stored["seconds"] == 120.0
    stored["measured"]["CoLA"]["qat_w2"] = [80.0] * 3   # as if measured differently
    (tmp_path / "p.json").write_text(json.dumps(stored, sort_keys=True))
    assert bp.main(["--rerender", str(tmp_path / "p.json")]) == 0
    again = out.read_text()
    assert again != first and "it took 2.0 min" in again and "Setting: s" in again
    assert again.index("| SST-2 |") < again.index("| CoLA |")
    assert "FP - QAT W2 (no KD) >= 2 on at least 2 tasks: met" in again
    assert not list(tmp_path.glob("*.tmp"))
