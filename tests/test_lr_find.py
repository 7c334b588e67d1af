"""The learning-rate finder: the scan, the suggestion, the run directory and bad input."""

import csv
import json
import math

import pytest

from headstart.recipes import cli, lr_find


def synthetic_loss(rate):
    """A plateau at 2, the steepest fall at 1e-3 (per decade), a floor near 0.5, then a blow-up past 0.1."""
    return 0.5 + 1.5 / (1 + (rate / 1e-3) ** 2) + (rate / 0.1) ** 3


def test_learning_rates_rise_geometrically():
    rates = lr_find.learning_rates(1e-6, 1.0, 7)
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1.0)
    ratios = [later / earlier for earlier, later in zip(rates, rates[1:])]
    assert ratios == pytest.approx([10.0] * 6)


def test_scan_stops_when_the_loss_explodes_and_suggests_inside_the_range():
    rates = lr_find.learning_rates(1e-6, 10.0, 100)
    rows, stop = lr_find.scan(synthetic_loss, rates)
    assert stop == "diverged" and len(rows) < 100
    best = min(row["smoothed_loss"] for row in rows)
    assert rows[-1]["smoothed_loss"] > 4 * best >= rows[-2]["smoothed_loss"]

    suggestion = lr_find.suggest(rows)
    assert 1e-6 <= suggestion["suggested"] <= rows[-1]["learning_rate"]
    assert suggestion["suggested"] == min(suggestion["steepest"], suggestion["minimum_tenth"])
    # The smoothed curve lags the loss a little: the steepest fall is found within half a decade of 1e-3.
    assert abs(math.log10(suggestion["steepest"]) - math.log10(1e-3)) < 0.5
    assert suggestion["minimum_tenth"] == pytest.approx(suggestion["minimum"] / 10)


def test_flat_loss_has_no_steepest_descent():
    rates = lr_find.learning_rates(1e-4, 1.0, 20)
    rows, stop = lr_find.scan(lambda rate: 1.0 + 1e-4 * math.sin(1e4 * rate), rates)
    assert stop is None and len(rows) == 20
    suggestion = lr_find.suggest(rows)
    assert suggestion["steepest"] is None
    assert suggestion["suggested"] == suggestion["minimum_tenth"]
    assert 1e-4 <= suggestion["suggested"] <= 1.0


def test_scan_stops_at_a_non_finite_loss():
    rates = lr_find.learning_rates(1e-4, 1.0, 9)                 # half a decade apart
    rows, stop = lr_find.scan(lambda rate: float("nan") if rate > 1.5e-2 else 1.0, rates)
    assert stop == "non_finite" and [row["learning_rate"] for row in rows] == pytest.approx(rates[:5])


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize("phase, extra", [
    ("head", []),
    ("finetune", ["--epochs", "1", "--layer-decay", "0.5", "--unfreeze", "stage2", "--regularizer", "l2sp"]),
])
def test_lr_find_on_digits_writes_the_curve_and_a_suggestion(tmp_path, capsys, phase, extra):
    status = cli.main(["lr-find", "--phase", phase, "--weights", "none", "--scan-steps", "12", "--start", "1e-5",
                       "--end", "1", "--runs-dir", str(tmp_path), "--name", "scan", *extra])
    assert status == 0
    run = tmp_path / "lr-find" / "scan"
    rows = read_csv(run / "lr_find.csv")
    rates = [float(row["learning_rate"]) for row in rows]
    assert 5 <= len(rows) <= 12 and rates == sorted(rates)
    assert rates[0] == pytest.approx(1e-5) and rates[-1] <= 1.0 + 1e-9
    assert all(math.isfinite(float(row["loss"])) for row in rows)
    assert (run / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    suggestion = json.loads((run / "suggestion.json").read_text())
    assert 1e-5 <= suggestion["suggested"] <= 1.0
    assert suggestion["phase"] == phase and suggestion["flag"] == {"head": "--lr", "finetune": "--finetune-lr"}[phase]
    assert json.loads((run / "config.json").read_text())["recipe"] == "lr-find"
    assert f"suggested {suggestion['flag']}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--start", "1", "--end", "1e-3"], "--start 1 must be below --end 0.001"),
    (["--start", "0"], "--start must be a positive number"),
    (["--scan-steps", "2"], "--scan-steps must be 5 or more"),
    (["--lr-groups", "stage9=0.1"], "--lr-groups: Unknown layer group 'stage9'"),
    (["--lr-groups", "stage3=0"], "must be a positive number"),
    (["--layer-decay", "-1"], "--layer-decay must be in (0, 1]"),
    (["--gradual-unfreeze", "0,1,2,3,4"], "unfreezes 5 blocks but resnet8 has 4 to unfreeze"),
    (["--phase", "middle"], "invalid choice: 'middle'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    status = cli.main(["lr-find", "--weights", "none", "--runs-dir", str(tmp_path), *argv])
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("headstart: error: ") and message in error[0], error
    assert not (tmp_path / "lr-find").exists()
