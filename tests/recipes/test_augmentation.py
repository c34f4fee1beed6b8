"""Pad-crop-flip per image, and the batches that replay it by epoch."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg


def _images(n=64, size=8):
    return np.random.default_rng(0).random((n, size, size, 3), dtype="float32")


def _window_of(image, out, padding, mode):
    """`(row, column, flipped)` of `out` in `image` padded, or None."""
    pad = "constant" if mode == "zero" else "reflect"
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode=pad)
    size = image.shape[0]
    for flipped in (False, True):
        target = out[:, ::-1] if flipped else out
        for i in range(2 * padding + 1):
            for j in range(2 * padding + 1):
                if np.array_equal(padded[i : i + size, j : j + size], target):
                    return i, j, flipped
    return None


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_each_image_is_a_window_of_itself_padded_possibly_flipped(mode):
    x = _images()
    out = keras.ops.convert_to_numpy(
        kg.layers.PadCropFlip(2, mode, seed=3)(x, training=True)
    )
    assert out.shape == x.shape and out.dtype == x.dtype
    windows = [_window_of(a, b, 2, mode) for a, b in zip(x, out)]
    assert None not in windows  # exactly a window: nothing interpolated
    rows, columns, flips = zip(*windows)
    # Each image draws its own window and flip (not one per batch).
    assert len(set(zip(rows, columns))) > 10
    assert set(rows) == set(columns) == set(range(5))
    assert 0 < sum(flips) < len(flips)


def test_inference_passes_images_through_and_seeds_fix_the_draws():
    x = _images(8)
    layer = kg.layers.PadCropFlip(seed=0)
    assert np.array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    assert np.array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    once = keras.ops.convert_to_numpy(layer(x, training=True, seed=11))
    again = keras.ops.convert_to_numpy(layer(x, training=True, seed=11))
    assert np.array_equal(once, again)
    assert not np.array_equal(once, x)
    flip_only = kg.layers.PadCropFlip(padding=0, seed=0)(x, training=True)
    flip_only = keras.ops.convert_to_numpy(flip_only)
    assert all(
        np.array_equal(o, a) or np.array_equal(o, a[:, ::-1])
        for o, a in zip(flip_only, x)
    )
    restored = kg.layers.PadCropFlip.from_config(
        kg.layers.PadCropFlip(3, "reflect", flip=False, seed=5).get_config()
    )
    assert (restored.padding, restored.mode, restored.flip, restored.seed) == (
        3,
        "reflect",
        False,
        5,
    )


def test_inside_a_model_it_augments_in_training_only():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, kg.layers.PadCropFlip(seed=1)(inputs))
    x = _images(4)
    assert np.array_equal(np.asarray(model.predict(x, verbose=0)), x)
    assert not np.array_equal(keras.ops.convert_to_numpy(model(x, training=True)), x)


@pytest.mark.parametrize(
    "arguments, message",
    [({"padding": -1}, "padding=-1"), ({"mode": "edge"}, "mode='edge'"),
     ({"flip": 1}, "flip=1"), ({"seed": -2}, "seed=-2")],
)  # fmt: skip
def test_bad_arguments_are_refused_by_name(arguments, message):
    with pytest.raises(ValueError, match=message):
        kg.layers.PadCropFlip(**arguments)


def test_batches_reshuffle_by_epoch_and_replay_an_epoch_exactly():
    x, y = _images(10), np.arange(10)
    batches = kg.datasets.AugmentedBatches(x, y, 4, kg.layers.PadCropFlip(1), seed=7)
    assert len(batches) == 3
    first = [batches[i] for i in range(3)]
    assert sorted(np.concatenate([b[1] for b in first])) == list(range(10))
    batches.on_epoch_end()  # epoch 1: another order and other draws
    second = [batches[i] for i in range(3)]
    assert not np.array_equal(first[0][1], second[0][1])
    # A resumed run that starts at epoch 0 (the callback) sees epoch 0 again.
    batches.epoch_callback().on_epoch_begin(0)
    for (xa, ya), (xb, yb) in zip(first, (batches[i] for i in range(3))):
        assert np.array_equal(ya, yb) and np.array_equal(xa, xb)
    assert np.array_equal(first[0][0][0].shape, (8, 8, 3))
    short = kg.datasets.AugmentedBatches(x, y, 4, drop_remainder=True, shuffle=False)
    assert len(short) == 2 and list(short[1][1]) == [4, 5, 6, 7]
    assert len(kg.datasets.AugmentedBatches(x, y, 2, steps=3)) == 3
    with pytest.raises(ValueError, match="batch_size=11"):
        kg.datasets.AugmentedBatches(x, y, 11, drop_remainder=True)
    with pytest.raises(ValueError, match="len\\(y\\)=9"):
        kg.datasets.AugmentedBatches(x, y[:9], 4)
