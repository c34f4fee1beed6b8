"""Matrix products in Neural Structured Learning's XLA-compiled train step.

The counterpart of `pass_count.py` for the comparison in
`vs_legacy_adversarial.py`: builds NSL's adversarial model (or plain legacy
tf.keras) on the same maxout MLP, trains a few steps with `jit_compile=True`
while XLA dumps its optimized HLO, and counts the dots of the train step.
Needs `make bench-legacy-setup`; runs in its own process under legacy
tf.keras.

Usage:
    python benchmarks/pass_count_nsl.py            # NSL, linf 0.1
    python benchmarks/pass_count_nsl.py --plain    # plain legacy tf.keras
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def count(kind: str, dump: str) -> None:
    import numpy as np

    sys.path.insert(0, str(HERE))
    import pass_count
    import vs_legacy_adversarial as legacy

    spec = {"impl": kind, "jit": True, "sigma": 0.1, "norm": "linf",
            "dropout": legacy.DROPOUT}  # fmt: skip
    tf, model, _ = legacy._nsl_model(spec)
    rng = np.random.default_rng(0)
    x = rng.random((128 * 4, 784), dtype=np.float32)
    y = rng.integers(0, 10, 128 * 4)
    model.fit(legacy._pipeline(tf, x, y, 128, as_dict=kind == "nsl"), verbose=0)
    step = max(
        Path(dump).glob("*run_step*after_optimizations.txt"), key=os.path.getsize
    )
    dots, flops, _ = pass_count.hlo_matmuls(step.read_text())
    print(f"{kind}: {dots} matrix products, {flops / 1e9:.3f} GFLOP per step")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plain", action="store_true", help="plain legacy tf.keras")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    kind = "legacy-plain" if args.plain else "nsl"
    if args.worker:
        count(kind, args.worker)
        return
    with tempfile.TemporaryDirectory() as dump:
        env = {
            **os.environ,
            "TF_USE_LEGACY_KERAS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "XLA_FLAGS": f"--xla_dump_to={dump} --xla_dump_hlo_as_text",
        }
        command = [sys.executable, __file__, "--worker", dump]
        subprocess.run(
            [*command, *(["--plain"] if args.plain else [])], env=env, check=True
        )


if __name__ == "__main__":
    main()
