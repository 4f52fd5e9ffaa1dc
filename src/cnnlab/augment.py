"""Data augmentation: the seeds' ImageDataGenerator options mapped onto Keras 3 preprocessing layers.

| ImageDataGenerator        | Keras 3 layer                                        |
|---------------------------|------------------------------------------------------|
| rotation_range (degrees)  | RandomRotation(degrees / 360)                        |
| width/height_shift_range  | RandomTranslation(height, width)                     |
| shear_range (degrees)     | RandomShear(tan(angle)) (a fraction of the image)    |
| zoom_range z              | RandomZoom((-z, z), (-z, z)): scale in [1-z, 1+z]   |
| horizontal/vertical_flip  | RandomFlip                                           |
| brightness_range (lo, hi) | RandomBrightness((lo-1, hi-1)) (additive, 0..255)   |
| fill_mode                 | fill_mode of every geometric layer                   |

The augmenter is applied to training batches only, in the input pipeline,
never inside the model: validation and test data are never augmented, and a
saved model carries no random layers.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from cnnlab.config import Augmentation


def augmentation_layers(options: Augmentation, seed: int) -> list[layers.Layer]:
    """One preprocessing layer per option that is switched on, in ImageDataGenerator's order."""
    fill = options.fill_mode
    out: list[layers.Layer] = []
    if options.rotation_range:
        out.append(layers.RandomRotation(options.rotation_range / 360, fill_mode=fill, seed=seed))
    if options.width_shift_range or options.height_shift_range:
        out.append(
            layers.RandomTranslation(
                options.height_shift_range, options.width_shift_range, fill_mode=fill, seed=seed + 1
            )
        )
    if options.shear_range:
        factor = math.tan(math.radians(options.shear_range))
        out.append(layers.RandomShear(x_factor=factor, y_factor=factor, fill_mode=fill, seed=seed + 2))
    if options.zoom_range:
        z = options.zoom_range
        out.append(layers.RandomZoom((-z, z), (-z, z), fill_mode=fill, seed=seed + 3))
    flips = "horizontal_and_vertical" if options.horizontal_flip and options.vertical_flip else None
    flips = flips or ("horizontal" if options.horizontal_flip else "vertical" if options.vertical_flip else None)
    if flips:
        out.append(layers.RandomFlip(flips, seed=seed + 4))
    if options.brightness_range:
        lo, hi = options.brightness_range
        out.append(layers.RandomBrightness((lo - 1, hi - 1), value_range=(0, 255), seed=seed + 5))
    return out


def build_augmenter(options: Augmentation, seed: int) -> keras.Sequential | None:
    """A Sequential of the configured layers, or None when augmentation is off."""
    stack = augmentation_layers(options, seed)
    return keras.Sequential(stack, name="augmentation") if stack else None
