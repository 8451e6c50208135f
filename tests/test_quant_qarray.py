"""jopt.quant.QuantizedArray: bit packing, true byte counts, pytree behaviour, docstrings."""

import doctest
import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import jopt
from jopt import quant


def np_pack(codes, bits):
  """NumPy reference: a little-endian bit stream, bits of code i at [i*b, (i+1)*b)."""
  bitstream = ((np.asarray(codes, np.int64).reshape(-1)[:, None] >> np.arange(bits)) & 1)
  bitstream = bitstream.reshape(-1)
  bitstream = np.concatenate([bitstream, np.zeros((-len(bitstream)) % 8, np.int64)])
  return (bitstream.reshape(-1, 8) << np.arange(8)).sum(1).astype(np.uint8)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), n=st.integers(1, 40), seed=st.integers(0, 2 ** 31 - 1))
def test_pack_unpack_round_trip_and_layout(bits, n, seed):
  codes = np.random.default_rng(seed).integers(0, 2 ** bits, n)
  packed = quant.pack_bits(jnp.asarray(codes), bits)
  assert packed.dtype == jnp.uint8 and packed.shape == (quant.packed_nbytes(n, bits),)
  np.testing.assert_array_equal(packed, np_pack(codes, bits))
  np.testing.assert_array_equal(quant.unpack_bits(packed, bits, n), codes)


def test_int4_packs_two_per_byte_low_nibble_first():
  packed = quant.pack_bits(jnp.array([0x3, 0xA, 0xF, 0x1]), 4)
  np.testing.assert_array_equal(packed, [0xA3, 0x1F])
  np.testing.assert_array_equal(quant.pack_bits(jnp.array([1, 2, 3, 0, 3]), 2),
                                [0b00111001, 0b11])
  assert quant.packed_nbytes(1000, 3) == 375 and quant.packed_nbytes(7, 4) == 4


@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("method,kw,per_block", [
    ("linear", {}, lambda b: 4),
    ("linear", dict(scheme="asymmetric"), lambda b: 4 + 1),
    ("log2", {}, lambda b: 4),
    ("kmeans", dict(iters=2), lambda b: 4 * 2 ** b),
])
@pytest.mark.parametrize("gran", [{}, dict(granularity="channel", axis=0),
                                  dict(granularity="group", axis=1, group_size=5)])
def test_nbytes_formula(bits, method, kw, per_block, gran):
  x = jax.random.normal(jax.random.key(0), (6, 10))
  qa = quant.quantize(x, bits, method=method, **kw, **gran)
  blocks = {"": 1, "channel": 6, "group": 12}[gran.get("granularity", "")]
  assert qa.nbytes == -(-60 * bits // 8) + blocks * per_block(bits)
  stored = sum(a.nbytes for a in jax.tree.leaves(qa))
  assert qa.nbytes == stored
  assert quant.unpack_bits(qa.packed, bits, 60).shape == (60,)


def test_nf4_nbytes_and_int4_compression():
  x = jax.random.normal(jax.random.key(1), (64, 64))
  nf4 = quant.quantize(x, method="nf4", granularity="group", group_size=64)
  assert nf4.nbytes == 64 * 64 // 2 + 64 * 4
  int4 = quant.quantize(x, 4, granularity="channel")
  assert int4.nbytes == 64 * 64 // 2 + 64 * 4 and x.nbytes / int4.nbytes == 16384 / 2304


def test_is_a_pytree_with_static_metadata():
  x = jax.random.normal(jax.random.key(2), (4, 6))
  qa = quant.quantize(x, 4, scheme="asymmetric", granularity="channel")
  leaves, treedef = jax.tree.flatten(qa)
  assert [l.dtype for l in leaves] == [jnp.uint8, jnp.float32, jnp.uint8]
  back = jax.tree.unflatten(treedef, leaves)
  np.testing.assert_array_equal(back.dequantize(), qa.dequantize())
  doubled = jax.tree.map(lambda a: a, qa)
  assert doubled.bits == 4 and doubled.shape == (4, 6) and doubled.axis == 1
  assert "bits=4" in repr(qa) and "asymmetric" in repr(qa)
  # the same quantizer on other data has the same tree structure (checkpointable)
  assert jax.tree.structure(quant.quantize(x + 1, 4, scheme="asymmetric",
                                           granularity="channel")) == treedef


def test_codes_property_signed_for_symmetric():
  qa = quant.quantize(jnp.array([-1.0, 0.0, 1.0]), 3)
  np.testing.assert_array_equal(qa.codes, [-3, 0, 3])
  np.testing.assert_array_equal(qa.stored_codes, [0, 3, 6])
  assert qa.codes.dtype == jnp.int32


MODULES = ["linear", "nonlinear", "qarray", "quantizer", "calibrate", "tree", "qat", "integer", "mixed"]


def test_docstring_examples_run():
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
  globs = dict(jax=jax, jnp=jnp, np=np, jopt=jopt)
  names = set()
  for m in MODULES:
    module = importlib.import_module(f"jopt.quant.{m}")
    for t in doctest.DocTestFinder().find(module, globs=globs):
      if t.examples:
        names.add(t.name.rsplit(".", 1)[-1])
        runner.run(t)
  assert runner.failures == 0
  functions = {n for n in quant.__all__ if inspect.isfunction(getattr(quant, n))}
  assert functions <= names, functions - names


@pytest.mark.parametrize("name", quant.__all__)
def test_every_public_name_is_documented(name):
  obj = getattr(quant, name)
  if not (inspect.isfunction(obj) or inspect.isclass(obj)):
    return
  doc = inspect.getdoc(obj)
  assert doc and 0 < len(doc.splitlines()[0]) <= 100, name
  if inspect.isfunction(obj):
    for part in ("Args:", "Returns:", "Example:", "Reference:", ">>> "):
      assert part in doc, (name, part)
    assert ":math:" in doc or ".. math::" in doc, name
