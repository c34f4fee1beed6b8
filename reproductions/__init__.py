"""The scripts that reproduce the paper's tables and the studies beside them.

Run from the repository root as modules, for example
`KERAS_BACKEND=jax python -m reproductions.reproduce_paper --help`:

- `reproduce_paper`: Tables I, II and IV with the maxout papers' protocol;
- `ablate_paper`: one-change ablations of Table I's runs;
- `reproduce_cifar10`: Table III (CIFAR-10 without augmentation);
- `reproduce_mnist`: the permutation-invariant MNIST comparison on a short
  Adam + cosine budget;
- `compare_inner_max`: the first-order family against k-step training;
- `semi_supervised_reference`: virtual adversarial training written by hand
  in JAX, an independent check of the label-free member.

`paper_study`, `run_records` and `standard_suite` are what they share: the
studies and tables, resumable run records, and the standard suite's
evaluation. docs/results.md gives the command behind each number, and the
records the runs leave are kept under docs/data/. This package is part of
the repository, not of the installed library.
"""
