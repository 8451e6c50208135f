"""Batched image augmentation with one PRNG key per example, on dm-pix.

Conventions every op follows:

* **Images** are float arrays in NHWC layout ``(batch, height, width,
  channels)`` with values in [0, 1]; any float dtype (bfloat16, float16,
  float32, float64) is kept on output (arithmetic runs in float32, or float64
  for float64 images). Integer images, or a single ``(H, W, C)`` image, raise
  ``ValueError`` saying the fix: ``images.astype(jnp.float32) / 255``, or
  ``images[None]``. Color ops need RGB (``C == 3``); geometric ops, noise,
  occlusion and mixing work for any ``C``. Values are not checked (that would
  need a device round trip).
* **Keys**: every random op is ``op(images, *, key, ...)`` with a keyword-only
  ``key``: one PRNG key, split into one per example, or a batch of ``N`` keys
  (typed ``jax.random.key`` or raw ``jax.random.PRNGKey`` arrays), one per
  example. A key batch of the wrong length raises. Different examples get
  different random parameters (flip or not, crop offset, jitter factors, ...);
  the same key gives the same result. ``mixup`` and ``cutmix`` draw a batch
  permutation and take one key.
* **Range**: ops that can leave [0, 1] (color, noise, PIL-style enhance) clip
  to it; interpolation and blends are convex and stay inside.
* **Magnitude 0 is the identity**, exactly: every strength, delta, padding,
  size or probability that switches an op off returns the input unchanged
  (``rand_augment`` at magnitude 0 too, for its magnitude-driven ops).
* **Probabilities** ``p`` are checked to be in [0, 1]; magnitudes to be >= 0.
  Only concrete numbers are checked: a traced value (passed into ``jit`` as an
  argument) is used as given.
* **jit and vmap**: every op can be jitted; arguments that fix shapes or the
  program (``size``, ``padding``, ``mode``, ``num_ops``, ``ops``, flags) are
  Python values: close over them or mark them static. Every op can also be
  ``jax.vmap``-ed over an extra leading axis (e.g. several augmented views).

Where dm-pix has the operation (flips, crops, affine warps, brightness,
contrast, saturation, hue, solarize, grayscale) jopt calls its per-image
function under ``jax.vmap`` with per-example keys; each docstring says which,
or says "jopt's own" for what dm-pix lacks (resized crop, noise, cutout,
random erasing, mixup, cutmix, composition, RandAugment).

Example:
  >>> import functools, jax, jopt.augment as aug
  >>> train_aug = aug.sequence(
  ...     aug.random_flip_left_right,
  ...     functools.partial(aug.random_crop, padding=4),
  ...     functools.partial(aug.color_jitter, brightness=0.2, contrast=0.2, saturation=0.2))
  >>> images = jax.random.uniform(jax.random.key(0), (8, 32, 32, 3))  # a batch, NHWC in [0, 1]
  >>> step = 0
  >>> out = jax.jit(train_aug)(images, key=jax.random.fold_in(jax.random.key(1), step))
  >>> out.shape, out.dtype, bool(jnp.all((out >= 0) & (out <= 1)))
  ((8, 32, 32, 3), dtype('float32'), True)
"""

from jopt.augment.geometric import (
    random_flip_left_right as random_flip_left_right,
    random_flip_up_down as random_flip_up_down,
    random_affine as random_affine,
)
from jopt.augment.crop import (
    random_crop as random_crop,
    random_resized_crop as random_resized_crop,
)
from jopt.augment.color import (
    random_brightness as random_brightness,
    random_contrast as random_contrast,
    random_saturation as random_saturation,
    random_hue as random_hue,
    color_jitter as color_jitter,
)
from jopt.augment.noise import (
    gaussian_noise as gaussian_noise,
    cutout as cutout,
    random_erasing as random_erasing,
)
from jopt.augment.mixing import (
    mixup as mixup,
    cutmix as cutmix,
)
from jopt.augment.compose import (
    sequence as sequence,
    random_choice as random_choice,
    random_apply as random_apply,
)
from jopt.augment.rand_augment import (
    rand_augment as rand_augment,
    RAND_AUGMENT_OPS as RAND_AUGMENT_OPS,
)

__all__ = [
    "random_flip_left_right",
    "random_flip_up_down",
    "random_affine",
    "random_crop",
    "random_resized_crop",
    "random_brightness",
    "random_contrast",
    "random_saturation",
    "random_hue",
    "color_jitter",
    "gaussian_noise",
    "cutout",
    "random_erasing",
    "mixup",
    "cutmix",
    "sequence",
    "random_choice",
    "random_apply",
    "rand_augment",
    "RAND_AUGMENT_OPS",
]
