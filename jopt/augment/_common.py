"""Shared plumbing of jopt.augment: argument checks, per-example keys, dtypes.

Not public API. Every op calls :func:`check_images` and :func:`example_keys`
first, so a bad argument fails before anything is traced, naming the op, the
argument and the fix. Numbers are range-checked only when concrete: a traced
value (an op called inside ``jit`` with the number as an argument) passes
unchecked and is used as given.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core import validate
from jopt._core.validate import is_concrete, static_int

__all__ = ["check_images", "example_keys", "check_number", "check_probability",
           "check_interval", "check_choice", "static_size", "compute_dtype",
           "pix_promotion", "per_example", "keep_where", "uniform", "lerp",
           "randint_below"]

Op = Callable[..., jax.Array]


def check_images(op: str, images: Any, *, rgb: bool = False) -> jax.Array:
  """``images`` as a float NHWC array; raise naming ``images`` and the fix otherwise."""
  if not (hasattr(images, "dtype") and hasattr(images, "shape")):
    images = jnp.asarray(images)
  dtype = images.dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"{op}: images has dtype {dtype}, but augmentations take float images with"
        " values in [0, 1]; pass images.astype(jnp.float32) / 255 for 8-bit pixels.")
  if images.ndim != 4:
    fix = (" for one HWC image pass images[None]." if images.ndim == 3 else
           " reshape it to (batch, height, width, channels).")
    raise ValueError(
        f"{op}: images must be a batch in NHWC layout (batch, height, width,"
        f" channels), got shape {tuple(images.shape)};{fix}")
  if rgb and images.shape[-1] != 3:
    raise ValueError(
        f"{op}: this color op needs RGB images (3 channels, last axis), got"
        f" {images.shape[-1]} channels in shape {tuple(images.shape)}.")
  if 0 in images.shape[1:3]:
    raise ValueError(f"{op}: images has an empty spatial axis, shape {tuple(images.shape)}.")
  return jnp.asarray(images)


def example_keys(op: str, key: Any, n: int) -> jax.Array:
  """One typed PRNG key per example, shape ``(n,)``.

  ``key`` is one key (``jax.random.key`` or a raw ``jax.random.PRNGKey``), split
  into ``n``, or a batch of ``n`` keys (typed, shape ``(n,)``, or raw, shape
  ``(n, 2)``), used as given.
  """
  if key is None:
    raise TypeError(f"{op}: key is required (keyword-only): pass key=jax.random.key(seed).")
  if not hasattr(key, "dtype"):
    key = np.asarray(key)
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    typed = key
  elif key.dtype == np.uint32 and np.ndim(key) in (1, 2):
    try:
      typed = jax.random.wrap_key_data(key)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"{op}: key of shape {tuple(key.shape)} is not a raw PRNG key"
                       f" (nor a batch of them): {e}") from e
  else:
    raise TypeError(
        f"{op}: key must be a PRNG key (jax.random.key(seed) or"
        f" jax.random.PRNGKey(seed)) or a batch of them, got dtype {key.dtype}"
        f" and shape {tuple(np.shape(key))}.")
  if typed.ndim == 0:
    return jax.random.split(typed, n)
  if typed.ndim == 1:
    if typed.shape[0] != n:
      raise ValueError(
          f"{op}: key is a batch of {typed.shape[0]} keys but images has {n}"
          " examples; pass one key (split into one per example) or exactly one"
          " key per example.")
    return typed
  raise ValueError(f"{op}: key must be one key or a 1-d batch of keys, got a key"
                   f" array of shape {tuple(typed.shape)}.")


def _concrete(value: Any) -> float | None:
  """``value`` as a float, or None when it is traced; TypeError for non-numbers."""
  if not is_concrete(value):
    return None
  if isinstance(value, (bool, np.bool_)):
    raise TypeError(f"got the bool {value!r} where a number is needed")
  arr = np.asarray(value)
  if arr.shape != () or not (np.issubdtype(arr.dtype, np.integer)
                             or np.issubdtype(arr.dtype, np.floating)):
    raise TypeError(f"got {value!r} where a real number is needed")
  return float(arr)


def check_number(op: str, name: str, value: Any, low: float | None = None,
                 high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False) -> Any:
  """Raise ``ValueError`` unless ``value`` is finite and within the range; return it.

  A concrete number comes back as a Python float; a traced one unchanged.
  """
  try:
    x = _concrete(value)
  except TypeError as e:
    raise TypeError(f"{op}: {name}: {e}.") from None
  if x is None:
    return value
  bad = not math.isfinite(x)
  if low is not None:
    bad |= x <= low if low_open else x < low
  if high is not None:
    bad |= x >= high if high_open else x > high
  if bad:
    lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    raise ValueError(f"{op}: {name}={x!r} is outside the accepted range {lo}, {hi};"
                     " pass a finite value in that range.")
  return x


def check_probability(op: str, value: Any, name: str = "p") -> Any:
  """A probability in [0, 1] (see :func:`check_number`)."""
  return check_number(op, name, value, 0.0, 1.0)


def check_interval(op: str, name: str, value: Any, low: float | None = None,
                   high: float | None = None, *, low_open: bool = False,
                   symmetric: bool = False) -> tuple[Any, Any]:
  """A pair ``(lo, hi)`` with ``lo <= hi``, both in the range.

  With ``symmetric=True`` a single number ``d >= 0`` means ``(-d, d)``.
  """
  if symmetric and not isinstance(value, (tuple, list)):
    d = check_number(op, name, value, 0.0, high)
    return (-d, d)
  if not isinstance(value, (tuple, list)) or len(value) != 2:
    what = "a number d >= 0 (meaning (-d, d)) or a pair" if symmetric else "a pair"
    raise ValueError(f"{op}: {name}={value!r} must be {what} (lo, hi) with lo <= hi.")
  lo = check_number(op, f"{name}[0]", value[0], low, high, low_open=low_open)
  hi = check_number(op, f"{name}[1]", value[1], low, high, low_open=low_open)
  if isinstance(lo, float) and isinstance(hi, float) and lo > hi:
    raise ValueError(f"{op}: {name}={tuple(value)!r} has lo > hi; pass (lo, hi) with lo <= hi.")
  return (lo, hi)


def check_choice(op: str, name: str, value: Any, choices: Sequence[Any]) -> None:
  validate.check_choice(name, value, tuple(choices), f"{op}: ")


def static_size(op: str, name: str, value: Any, minimum: int = 1) -> tuple[int, int]:
  """An output size ``int`` or ``(height, width)`` as a pair of Python ints."""
  where = f"{op}: "
  if isinstance(value, (tuple, list)):
    if len(value) != 2:
      raise ValueError(f"{where}{name}={value!r} must be an int or a pair (height, width).")
    return (static_int(f"{name}[0]", value[0], where, minimum),
            static_int(f"{name}[1]", value[1], where, minimum))
  s = static_int(name, value, where, minimum)
  return (s, s)


def compute_dtype(dtype: Any) -> Any:
  """The dtype arithmetic runs in: float32 for half types, else the dtype itself."""
  dtype = jnp.dtype(dtype)
  return dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)


@contextlib.contextmanager
def pix_promotion() -> Iterator[None]:
  """Standard dtype promotion while tracing dm-pix, which mixes int and float
  arrays (e.g. ``affine_transform``) and bool with float (the HSV conversions);
  our callers cast their results back to the input dtype. Matrix products at
  full precision: dm-pix computes sampling coordinates and luma with them,
  and a TF32/bf16 product would move a sample by hundredths of a pixel."""
  with jax.numpy_dtype_promotion("standard"), jax.default_matmul_precision("highest"):
    yield


def per_example(fn: Callable[..., jax.Array], keys: jax.Array, *arrays: jax.Array) -> Any:
  """``fn(key_i, array_i, ...)`` for every example, vectorized with ``jax.vmap``."""
  return jax.vmap(fn)(keys, *arrays)


def keep_where(identity: jax.Array, x: jax.Array, out: jax.Array) -> jax.Array:
  """``x`` where the drawn parameter is the op's neutral value, else ``out``:
  magnitude 0 then returns the input bit for bit (no round trip through HSV)."""
  return jnp.where(identity, x, out.astype(x.dtype))


def uniform(key: jax.Array, low: Any, high: Any, dtype: Any, shape: tuple[int, ...] = ()
            ) -> jax.Array:
  """``U[low, high)`` in ``dtype``; exactly ``low`` when ``low == high``."""
  return lerp(jax.random.uniform(key, shape, dtype), low, high)


def lerp(u: jax.Array, low: Any, high: Any) -> jax.Array:
  """``low + (high - low) * u`` in ``u``'s dtype: maps ``U[0, 1)`` draws to ``U[low, high)``.

  The ops draw all of an example's numbers with one ``jax.random.uniform``
  call and map them with this and :func:`randint_below`: one random call
  instead of several compiles about three times faster on CPU.
  """
  low = jnp.asarray(low, u.dtype)
  high = jnp.asarray(high, u.dtype)
  return low + (high - low) * u


def randint_below(u: jax.Array, n: Any) -> jax.Array:
  """A uniform integer in ``{0, ..., n - 1}`` (int32) from a ``U[0, 1)`` draw ``u``."""
  n = jnp.asarray(n, jnp.int32)
  i = jnp.floor(u * n.astype(u.dtype)).astype(jnp.int32)
  return jnp.clip(i, 0, n - 1)
