"""Grad-CAM on synthetic images whose class is where a bright patch is: the heatmap peaks inside the patch."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cnnlab.explain.grad_cam import class_scores, grad_cam, upsample

SIZE, PATCH = 32, 8


def patch_images(count: int, seed: int, sides: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dim noise with one bright 8x8 patch: class 0 when it lies in the left half, 1 in the right half.

    With `sides=4` the training images hold no patch, one on either side or both, labelled per side (two
    sigmoid outputs): neither class can then be learnt as the other's absence.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (count, SIZE, SIZE, 1)).astype(np.uint8)
    kind = rng.integers(0, sides if sides > 1 else 2, count)  # 1 patch: 0 left, 1 right; 4: +2 none, 3 both
    corners = np.stack([rng.integers(0, SIZE - PATCH, count), rng.integers(0, SIZE // 2 - PATCH, count)], axis=1)
    on = np.stack([(kind == 0) | (kind == 3), (kind == 1) | (kind == 3)], axis=1)
    for image, (row, col), (left, right) in zip(images, corners, on, strict=True):
        for side, present in ((0, left), (1, right)):
            if present:
                image[row : row + PATCH, col + side * SIZE // 2 : col + side * SIZE // 2 + PATCH] = 230
    corners[:, 1] += (kind == 1) * SIZE // 2
    return images, (on.astype("float32") if sides > 1 else kind), corners


@pytest.fixture(scope="module", params=["flat", "nested"])
def trained(request: pytest.FixtureRequest) -> keras.Model:
    return patch_model(nested=request.param == "nested")


def patch_model(nested: bool = False) -> keras.Model:
    """A small convnet as the seeds build them, one sigmoid output per side (is there a patch?).

    `nested`: the convolutions form a functional "backbone" inside the model, as in cnnlab's transfer models.
    """
    keras.utils.set_random_seed(0)
    convs = [
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv"),
    ]  # fmt: skip
    head = [
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(2, activation="sigmoid"),
    ]
    if nested:
        inner = keras.Input((SIZE, SIZE, 1))
        x = inner
        for layer in convs:
            x = layer(x)
        convs = [keras.Model(inner, x, name="backbone")]
        head = [keras.Sequential(head, name="head")]
    model = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Rescaling(1 / 255), *convs, *head])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x, y, _ = patch_images(1000, seed=1, sides=4)
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    return model


def test_the_heatmap_peaks_inside_the_patch_that_sets_the_class(trained: keras.Model) -> None:
    x, y, corners = patch_images(40, seed=2)
    predicted = trained.predict(x, verbose=0).argmax(axis=1)
    assert (predicted == y).mean() >= 0.9  # the network has learnt where the patch is
    heat = upsample(grad_cam(trained, "last_conv", x), (SIZE, SIZE))
    assert heat.shape == (40, SIZE, SIZE) and heat.min() >= 0.0 and heat.max() <= 1.0
    peaks = [np.unravel_index(h.argmax(), h.shape) for h in heat]
    inside = [r0 <= r < r0 + PATCH and c0 <= c < c0 + PATCH for (r, c), (r0, c0) in zip(peaks, corners, strict=True)]
    assert np.mean(inside) >= 0.9, peaks


def test_the_class_asked_for_is_the_one_explained(trained: keras.Model) -> None:
    x, y, _ = patch_images(8, seed=3)
    np.testing.assert_array_equal(grad_cam(trained, "last_conv", x), grad_cam(trained, "last_conv", x, y))
    other = grad_cam(trained, "last_conv", x, 1 - y)
    assert other.shape == (8, 16, 16) and not np.allclose(other, grad_cam(trained, "last_conv", x, y))


def test_one_sigmoid_unit_scores_class_0_as_minus_its_logit() -> None:
    logits = np.array([[2.5], [-1.5]], dtype=np.float32)
    scores = keras.ops.convert_to_numpy(class_scores(logits, np.array([1, 0])))
    np.testing.assert_allclose(scores, [2.5, 1.5], rtol=1e-6)


def test_an_unknown_layer_is_named_with_the_layers_there_are(trained: keras.Model) -> None:
    with pytest.raises(ValueError, match=r"no layer 'conv9'; its convolutions: .*last_conv"):
        grad_cam(trained, "conv9", np.zeros((1, SIZE, SIZE, 1), np.uint8))
