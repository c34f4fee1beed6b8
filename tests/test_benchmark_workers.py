import sys
import textwrap

import pytest

from tests.helpers import ROOT

WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {benchmarks!r})
    from _workers import report

    args = sys.argv[sys.argv.index("--worker") + 1 :]
    if args[0] == "fail":
        sys.exit("the worker's own error")
    report({{"args": args}})
    print("a library's message after the result")
    """
)


@pytest.fixture
def worker_script(tmp_path):
    script = tmp_path / "bench.py"
    script.write_text(WORKER.format(benchmarks=str(ROOT / "benchmarks")))
    return script


def _run_worker():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _workers import run_worker
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return run_worker


def test_the_result_line_comes_back_whatever_is_printed_after_it(worker_script):
    result = _run_worker()(worker_script, ["a", 3, 0.5], label="tiny")
    assert result == {"args": ["a", "3", "0.5"]}


def test_a_failed_worker_exits_with_its_label_and_stderr(worker_script):
    with pytest.raises(SystemExit) as failed:
        _run_worker()(worker_script, ["fail"], label="jax mlp 8")
    message = str(failed.value)
    assert message.startswith("jax mlp 8: the worker failed (exit 1)")
    assert "the worker's own error" in message
