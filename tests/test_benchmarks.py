"""The benchmarks that docs/performance.md records, each on a tiny job of
its own (no timing threshold: only that it measures and reports). The
comparison with Neural Structured Learning needs its own environment
(`make bench-legacy`)."""

import json
import subprocess
import sys

import keras
import pytest

from tests.helpers import ROOT, on_one_backend, requires_mnist

pytestmark = pytest.mark.slow


def run(script, *arguments, timeout=600):
    """`benchmarks/<script>` with `arguments`; its completed process."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *map(str, arguments)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@on_one_backend("the forms' gradients in tests/training and tests/family")
def test_step_cost_times_a_form_against_plain(tmp_path):
    out = tmp_path / "step_cost.json"
    backend = keras.backend.backend()
    result = run(
        "step_cost.py", "--backends", backend, "--rounds", "1", "--steps", "2",
        "--only", "penalty linf", "--json", out,
    )  # fmt: skip
    (row,) = json.loads(out.read_text())
    assert row["backend"] == backend
    assert set(row["examples_per_s"]) == {"plain", "penalty linf"}
    assert all(v > 0 for v in row["examples_per_s"].values())
    assert "| penalty linf |" in result.stdout
    # The members study's CNN, at its batch size.
    run(
        "step_cost.py", "--backends", backend, "--rounds", "1", "--steps", "2",
        "--network", "small_cnn", "--batch-size", "100", "--only", "k=10", "--json", out,
    )  # fmt: skip
    (row,) = json.loads(out.read_text())
    assert (row["network"], row["batch_size"]) == ("small_cnn", 100)
    assert set(row["examples_per_s"]) == {
        "plain", "multistep linf k=10", "trades linf k=10",
        "multistep linf k=10, no clean pass",  # clean_metrics=False
    }  # fmt: skip


@on_one_backend("the matrix products' count is the step's, tested in step_cost's")
def test_pass_count_reads_the_compiled_steps_products():
    result = run("pass_count.py", "--backend", "jax", "--only", "penalty linf")
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("| penalty")]
    products = int(line.split("|")[2])
    assert products >= 17  # the penalty's floor (docs/performance.md)


@requires_mnist
@on_one_backend("the attacks in tests/evaluation", "torch")
def test_attack_cost_attacks_the_small_cnn_and_profiles_the_suite(tmp_path):
    out = tmp_path / "attack_cost.json"
    result = run(
        "attack_cost.py", "--backends", "torch", "--network", "small_cnn",
        "--train-limit", "256", "--suites", "fgm", "standard", "--points", "8",
        "--norms", "linf", "--json", out,
    )  # fmt: skip
    rows = json.loads(out.read_text())
    assert [r["suite"] for r in rows] == ["fgm", "standard"]
    fgm, standard = rows
    assert standard["robust_accuracy"] <= fgm["robust_accuracy"] + 1e-9
    assert all(r["points"] == 8 and r["seconds"] > 0 for r in rows)
    assert "| torch | standard | linf | 0.1 | 8 |" in result.stdout


@requires_mnist
@on_one_backend("the tuner in tests/tools/test_tuning.py")
def test_tuner_memory_runs_its_trials(tmp_path):
    out = tmp_path / "tuner_memory.json"
    run("tuner_memory.py", "--trials", "2", "--examples", "64", "--json", out)
    result = json.loads(out.read_text())
    assert len(result["rss_mib"]) == 2 and all(m > 0 for m in result["rss_mib"])


@on_one_backend("the recipe in tests/recipes", "tensorflow")
def test_recipe_step_time_times_the_cifar10_recipe(tmp_path):
    out = tmp_path / "recipe_step_time.json"
    run("recipe_step_time.py", "--steps", "1", "--width", "8", "--json", out)
    result = json.loads(out.read_text())
    assert (result["recipe"], result["timed_steps"]) == ("fgsm_rs", 1)
    assert result["wall_seconds_per_step"] > 0


@on_one_backend("the forms' step cost in test_step_cost_times_a_form_against_plain")
def test_scaling_runs_one_cell(tmp_path):
    out = tmp_path / "scaling.json"
    backend = keras.backend.backend()
    result = run(
        "scaling.py", "--backends", backend, "--networks", "mlp", "--batch-sizes",
        "8", "--forms", "perturb linf alpha=0", "--rounds", "1", "--steps", "1",
        "--json", out, timeout=300,
    )  # fmt: skip
    (cell,) = json.loads(out.read_text())
    assert cell["backend"] == backend
    assert (cell["network"], cell["batch"]) == ("mlp", 8)
    assert cell["form_step_ms"] > 0 and cell["plain_step_ms"] > 0
    assert cell["form_peak_mib"] >= 0
    assert "| mlp | 8 | perturb linf alpha=0 |" in result.stdout


@requires_mnist
@on_one_backend("its jobs are the library's, tested in the other files")
def test_end_to_end_times_both_checkouts(tmp_path):
    """This checkout against itself as `--source`. Each job is a worker
    process per checkout; `epoch` is `first_epoch` and one more `fit`."""
    out = tmp_path / "end_to_end.json"
    names = ["pgd", "first_epoch"]
    arguments = ["--source", ROOT, "--jobs", *names, "--rounds", "1"]
    result = run("end_to_end.py", *arguments, "--limit", 256, "--output", out)
    times = json.loads(out.read_text())
    assert set(times) == {"--source", "this checkout"}
    for jobs in times.values():
        assert sorted(jobs) == sorted(names)
        assert all(len(t) == 1 and t[0] > 0 for t in jobs.values())
    assert "| first_epoch |" in result.stdout
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "end_to_end.py"), "--rounds", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "--rounds must be >= 1. Received: 0" in bad.stderr
