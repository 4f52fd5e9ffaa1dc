"""Data augmentation: ImageDataGenerator's random transform, drawn per image inside the compiled training step.

ImageDataGenerator composes rotation, shift, shear and zoom into one affine matrix per image and resamples
the image once (bilinear, `fill_mode` outside it); flips and a brightness factor follow. `RandomTransform`
does the same for a whole batch with `keras.ops`, so it runs wherever the training step runs (inside the
compiled program, on the GPU when there is one) under every backend, instead of on host threads that the
accelerator waits for.

| option                    | drawn per image                                               |
|---------------------------|---------------------------------------------------------------|
| rotation_range (degrees)  | an angle uniform in ±range                                    |
| width/height_shift_range  | a shift uniform in ±range × the width / height                |
| shear_range (degrees)     | a shear angle uniform in ±range                               |
| zoom_range z              | x and y scales, each uniform in [1-z, 1+z] (>1 zooms out)     |
| horizontal/vertical_flip  | mirrored with probability 1/2                                 |
| brightness_range (lo, hi) | pixel values × a factor uniform in [lo, hi], clipped to 0..255 |

Training batches only: `training.fit` wraps the network in `AugmentedTraining` for the fit, so validation
and test data are never augmented and the saved network carries no random layer.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from cnnlab.params import Augmentation


def _affine(a: Any, b: Any, c: Any, d: Any, e: Any, f: Any) -> Any:
    """(n, 3, 3) matrices [[a, b, c], [d, e, f], [0, 0, 1]] from per-image entries of shape (n,)."""
    zero, one = ops.zeros_like(a), ops.ones_like(a)
    return ops.reshape(ops.stack([a, b, c, d, e, f, zero, zero, one], axis=-1), (-1, 3, 3))


class RandomTransform(keras.layers.Layer):
    """ImageDataGenerator's `random_transform` for a batch of (n, rows, cols, channels) images in 0..255."""

    def __init__(self, options: Augmentation, seed: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.options = options
        self.seed_generator = keras.random.SeedGenerator(seed)
        geometric = options.model_copy(update={"brightness_range": None, "fill_mode": "nearest"})
        self.geometric = geometric.enabled

    def call(self, images: Any, training: bool = True) -> Any:
        if not training:
            return images
        draws = keras.random.uniform((ops.shape(images)[0], 9), seed=self.seed_generator)
        if self.geometric:
            images = ops.image.affine_transform(
                images,
                self.transforms(draws, ops.shape(images)[1], ops.shape(images)[2]),
                interpolation="bilinear",
                fill_mode=self.options.fill_mode,  # Keras' modes are scipy's, as ImageDataGenerator's
            )
        if self.options.brightness_range:
            low, high = self.options.brightness_range
            factor = low + (high - low) * draws[:, 8]
            images = ops.clip(images * factor[:, None, None, None], 0.0, 255.0)
        return images

    def transforms(self, draws: Any, rows: int, cols: int) -> Any:
        """Keras' (n, 8) projective transforms from uniform [0, 1) draws: each maps an output pixel (x, y) to
        the input point it samples, ImageDataGenerator's rotation · shift · shear · zoom · flip about the
        image's centre."""
        o = self.options

        def spread(column: int, limit: float) -> Any:  # uniform in ±limit
            return (2.0 * draws[:, column] - 1.0) * limit

        angle = spread(0, math.radians(o.rotation_range))
        shift_x, shift_y = spread(1, o.width_shift_range * cols), spread(2, o.height_shift_range * rows)
        shear = spread(3, math.radians(o.shear_range))
        zoom_x, zoom_y = 1.0 + spread(4, o.zoom_range), 1.0 + spread(5, o.zoom_range)
        none, one = ops.zeros_like(angle), ops.ones_like(angle)
        flip_x = ops.where(draws[:, 6] < 0.5, -one, one) if o.horizontal_flip else one
        flip_y = ops.where(draws[:, 7] < 0.5, -one, one) if o.vertical_flip else one
        cx, cy = none + (cols - 1) / 2, none + (rows - 1) / 2
        cos, sin = ops.cos(angle), ops.sin(angle)
        steps = [
            _affine(one, none, cx, none, one, cy),  # back from centred coordinates
            _affine(cos, sin, none, -sin, cos, none),
            _affine(one, none, shift_x, none, one, shift_y),
            _affine(ops.cos(shear), none, none, -ops.sin(shear), one, none),
            _affine(zoom_x * flip_x, none, none, none, zoom_y * flip_y, none),
            _affine(one, none, -cx, none, one, -cy),  # to coordinates about the centre
        ]
        matrix = steps[0]
        for step in steps[1:]:
            matrix = ops.matmul(matrix, step)
        return ops.reshape(matrix, (-1, 9))[:, :8]

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


class AugmentedTraining(keras.Model):
    """Trains `network` on batches `augmenter` transforms first, inside the compiled step; evaluation and
    prediction see the images unchanged. The weights are the network's own variables."""

    def __init__(self, network: keras.Model, augmenter: RandomTransform, **kwargs: Any):
        super().__init__(**kwargs)
        self.network, self.augmenter = network, augmenter

    def build(self, input_shape: tuple) -> None:
        self.augmenter.build(input_shape)  # the network comes built

    def call(self, images: Any, training: bool = False) -> Any:
        if training:
            images = self.augmenter(images, training=True)
        return self.network(images, training=training)

    # Weight files hold the network's weights alone, as the network's own would: ModelCheckpoint's best epoch
    # is reloaded into the network, and Keras Tuner's into a freshly built one when Hyperband continues a trial.
    def save_weights(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        self.network.save_weights(filepath, *args, **kwargs)

    def load_weights(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        self.network.load_weights(filepath, *args, **kwargs)


def build_augmenter(options: Augmentation, seed: int) -> RandomTransform | None:
    """The random transform of `options`, or None when augmentation is off."""
    return RandomTransform(options, seed, name="augmentation") if options.enabled else None
