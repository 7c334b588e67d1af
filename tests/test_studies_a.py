"""Studies 1-4 (exploding products, initialisation, symmetry, vanishing gradients) and the study verb.

Each study runs in its quick setting, the same code path as the default, and its numbers
must show the lecture's claim.
"""

import json

import pytest

from headstart.recipes import studies
from headstart.recipes.cli import main
from headstart.recipes.rundir import RunDir


def run_quick(name, tmp_path):
    run_dir, result = studies.run_study(name, RunDir(tmp_path), quick=True, seed=0)
    assert list(tmp_path.glob("*.png")), "the study wrote no figure"
    assert (tmp_path / "results.md").read_text().startswith(f"# Study: {name}")
    assert json.loads((tmp_path / "findings.json").read_text())["supported"] is True
    assert result.supported, result.summary
    return result


def test_exploding_products_quick(tmp_path):
    result = run_quick("exploding-products", tmp_path)
    orders = result.findings["log10_median_norm_after_100"]
    # Variance 1 explodes and a small variance vanishes, by many orders of magnitude.
    assert orders["std 1 (the lecture's)"] > 15
    assert orders["std 0.1 (small)"] < -50
    # Properly scaled products stay bounded: exactly for orthogonal factors, within an
    # order of magnitude at width 64, and far less extreme than either at 4x4.
    assert abs(orders["orthogonal (norm-preserving)"]) < 1e-6
    assert abs(result.findings["log10_median_norm_after_100_scaled_by_width"]["64"]) < 1
    scaled = [value for label, value in orders.items() if label.startswith("std 1/sqrt(n)")][0]
    assert abs(scaled) < orders["std 1 (the lecture's)"] / 3
    assert (tmp_path / "exploding_products.png").stat().st_size > 10_000


def test_list_prints_every_study(capsys):
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    for name in studies.STUDIES:
        assert name in out
    assert len(out.splitlines()) == len(studies.STUDIES)  # one line per study (the count grows as studies land)
    assert len(studies.STUDIES) == 14   # the eight and six


def test_unknown_study_is_one_line_exit_2(capsys):
    assert main(["study", "no-such-study"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown study 'no-such-study'" in err and "exploding-products" in err


@pytest.mark.parametrize("argv", [["study"], ["study", "symmetry", "--seed", "-1"],
                                  ["study", "symmetry", "--seed", "x"], ["study", "symmetry", "--name", ""]])
def test_bad_options_are_one_line_exit_2(argv, capsys, tmp_path):
    assert main([*argv, "--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not list(tmp_path.iterdir()), "nothing is written on bad input"


def test_missing_study_module_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setitem(studies.STUDIES, "not-written-yet", "headstart.recipes.studies.not_written_yet")
    assert main(["study", "not-written-yet"]) == 2
    assert "not available in this checkout" in capsys.readouterr().err
    assert "(not available in this checkout)" in studies.describe_study("not-written-yet")


def test_cli_end_to_end_writes_results(tmp_path, capsys):
    assert main(["study", "exploding-products", "--quick", "--runs-dir", str(tmp_path), "--name", "t"]) == 0
    run = tmp_path / "study" / "exploding-products" / "t"
    results = (run / "results.md").read_text()
    assert "**Claim.**" in results and "**Supported by this run:** yes" in results
    assert json.loads((run / "findings.json").read_text())["study"] == "exploding-products"
    assert (run / "exploding_products.png").exists()
    assert "claim supported by this run: yes" in capsys.readouterr().out
    # The same run name again is refused unless --overwrite.
    assert main(["study", "exploding-products", "--quick", "--runs-dir", str(tmp_path), "--name", "t"]) == 2


def test_initialization_quick(tmp_path):
    result = run_quick("initialization", tmp_path)
    ratio = result.findings["std_ratio_last_to_first"]
    # He keeps ReLU, Xavier keeps tanh, LSUV keeps both within a factor of a few across layers ...
    assert 0.2 < ratio["relu"]["he_normal"] < 5
    assert 0.2 < ratio["tanh"]["xavier_uniform"] < 5
    assert all(0.5 < ratio[activation]["lsuv"] < 2 for activation in ("tanh", "relu"))
    # ... while small normal weights shrink the signal by orders of magnitude, large ones
    # saturate tanh and blow ReLU up, and Xavier under ReLU loses the signal layer by layer.
    assert ratio["relu"]["small_normal"] < 1e-6 and ratio["tanh"]["small_normal"] < 1e-6
    assert result.findings["saturated_fraction_last_layer"]["tanh"]["large_normal"] > 0.5
    assert ratio["relu"]["large_normal"] > 1e4
    assert ratio["relu"]["xavier_uniform"] < 0.2
    # Zeros and constants: every unit of a layer computes the same thing.
    assert all(result.findings["units_identical"][activation][scheme]
               for activation in ("tanh", "relu") for scheme in ("zeros", "constant"))
    assert not result.findings["units_identical"]["relu"]["he_normal"]
    # The gradient side: small weights leave gradients many orders below He's.
    gradients = result.findings["gradient_norm_per_layer"]["relu"]
    assert max(gradients["small_normal"]) < 1e-6 * min(gradients["he_normal"])
    for name in ("initialization.png", "histograms_tanh.png", "histograms_relu.png"):
        assert (tmp_path / name).exists()


def test_symmetry_quick(tmp_path):
    from headstart.recipes.studies import symmetry

    result = run_quick("symmetry", tmp_path)
    findings = result.findings
    # Equal hidden weights stay equal under SGD without dropout, up to float rounding (a matrix
    # product may sum tied columns in different orders: 6.4e-10 was seen on a loaded machine) ...
    assert findings["max_spread_without_dropout"] < symmetry.IDENTICAL == 1e-6
    # ... and dropout makes the units diverge in every hidden layer, four orders of magnitude more.
    assert min(findings["final_spread_with_dropout"]) > symmetry.BROKEN == 0.01
    spreads = findings["spread_per_epoch"]["equal weights + dropout"]
    # At initialisation the units are copies of one constant: identical by construction, exactly.
    assert spreads[0] == [0.0, 0.0] and min(spreads[-1]) > symmetry.BROKEN
    assert min(findings["final_spread_random_init"]) > 1.0
    assert (tmp_path / "symmetry.png").exists()


def test_vanishing_gradients_quick(tmp_path):
    result = run_quick("vanishing-gradients", tmp_path)
    at_start = result.findings["gradient_ratio_first_to_last_at_start"]
    # The deep sigmoid network's first layer gets orders of magnitude less gradient than its last ...
    assert at_start["sigmoid"] < 1e-3
    assert result.findings["gradient_ratio_first_to_last_median"]["sigmoid"] < 1e-3
    # ... while ReLU, leaky ReLU, batch norm and residual connections keep it within two orders.
    for name in ("relu", "leaky_relu", "sigmoid + batch norm", "sigmoid + residual"):
        assert 1e-2 < at_start[name] < 1e2, name
        assert at_start[name] > 1e3 * at_start["sigmoid"], name
    # The sigmoid network does no better than guessing; the others learn.
    final_loss = result.findings["final_loss"]
    assert final_loss["sigmoid"] > 0.95 * result.findings["chance_loss"]
    assert final_loss["relu"] < final_loss["sigmoid"] and final_loss["sigmoid + batch norm"] < final_loss["sigmoid"]
    # GradientLogger wrote one CSV log per network.
    assert len(list((tmp_path / "gradients").glob("*.csv"))) == 6
    assert (tmp_path / "vanishing_gradients.png").exists()
