"""The label-free member's pieces against closed forms (work in progress:
the train steps do not use them yet)."""

import numpy as np

from keras_gradreg import virtual


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kl_divergence_matches_numpy():
    rng = np.random.default_rng(0)
    p, q = _softmax(rng.normal(size=(5, 4))), _softmax(rng.normal(size=(5, 4)))
    expected = (p * (np.log(p) - np.log(q))).sum(-1)
    got = np.asarray(virtual.kl_divergence(p.astype("float32"), q.astype("float32")))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.all(np.asarray(virtual.kl_divergence(p, p)) == 0.0)


def test_power_iteration_finds_the_dominant_eigenvector_of_the_hessian():
    """For logits z = x W the Hessian of KL(p || softmax((x + r) W)) at
    r = 0 is W (diag p - p p^T) W^T: power iteration through the exact
    gradient at xi d converges to its dominant eigenvector."""
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(6, 4))
    x = rng.normal(size=(3, 6))
    p = _softmax(x @ kernel)

    def divergence_gradient(deltas):
        (r,) = [np.asarray(d, "float64") for d in deltas]
        q = _softmax((x + r) @ kernel)
        return [((q - p) @ kernel.T).astype("float32")]

    start = [rng.normal(size=x.shape).astype("float32")]
    (d,) = virtual.power_iteration(divergence_gradient, start, xi=1e-3, iterations=60)
    d = np.asarray(d)
    for i in range(len(x)):
        hessian = kernel @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ kernel.T
        values, vectors = np.linalg.eigh(hessian)
        assert values[-1] > 1.1 * values[-2]  # a separated top eigenvalue
        top = vectors[:, -1]
        np.testing.assert_allclose(abs(d[i] @ top), 1.0, atol=1e-3)
    one_step = np.asarray(
        virtual.power_iteration(divergence_gradient, start, xi=1e-3, iterations=1)[0]
    )
    assert np.all(np.abs(np.linalg.norm(one_step, axis=1) - 1.0) < 1e-5)


def test_the_label_free_member_trains_on_the_divergence_at_the_eigenvector():
    """A linear softmax model with learning rate 0 and no labels (sample
    weight 0): the logged adv_loss is the KL at sigma times the Hessian's
    dominant eigenvector (either sign: power iteration keeps the random
    start's), and beats a random direction of the same length."""
    import keras

    import keras_gradreg as kg

    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(size=(6, 4)), rng.normal(size=4)
    x = rng.normal(size=(8, 6)).astype("float32")
    inputs = keras.Input((6,))
    model = kg.GradRegModel(
        inputs, keras.layers.Dense(4)(inputs), norm="l2", sigma=0.3, form="perturb",
        virtual=True, power_iterations=50, xi=1e-3,
    )  # fmt: skip
    model.set_weights([kernel.astype("float32"), bias.astype("float32")])
    model.compile(
        keras.optimizers.SGD(0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    logs = model.fit(
        x, np.zeros(8, "int32"), sample_weight=np.zeros(8, "float32"),
        batch_size=8, verbose=0,
    ).history  # fmt: skip
    assert logs["clean_loss"][0] == 0.0
    p = _softmax(x @ kernel + bias)

    def kl(r):
        q = _softmax((x + r) @ kernel + bias)
        return (p * (np.log(p) - np.log(q))).sum(-1)

    tops = []
    for i in range(len(x)):
        hessian = kernel @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ kernel.T
        tops.append(np.linalg.eigh(hessian)[1][:, -1])
    tops = 0.3 * np.array(tops)
    low, high = np.minimum(kl(tops), kl(-tops)), np.maximum(kl(tops), kl(-tops))
    assert low.mean() * (1 - 1e-3) <= logs["adv_loss"][0] <= high.mean() * (1 + 1e-3)
    random = rng.normal(size=x.shape)
    random *= 0.3 / np.linalg.norm(random, axis=1, keepdims=True)
    assert logs["adv_loss"][0] > 1.5 * kl(random).mean()


def test_the_label_free_member_refuses_what_it_cannot_train():
    import pytest

    import keras_gradreg as kg

    for form in ("penalty", "finite_difference", "multistep"):
        with pytest.raises(ValueError, match="form='perturb'.*Received: form="):
            kg.GradientRegularizer(form=form, virtual=True)
    with pytest.raises(ValueError, match="feature_mask"):
        kg.GradientRegularizer(form="perturb", virtual=True, feature_mask=0.5)
    for name, value in (("xi", 0.0), ("power_iterations", 0), ("virtual_weight", -1.0)):
        with pytest.raises(ValueError, match=f"Received: {name}="):
            kg.GradientRegularizer(form="perturb", virtual=True, **{name: value})
    with pytest.raises(ValueError, match="Received: virtual="):
        kg.GradientRegularizer(virtual=1)
