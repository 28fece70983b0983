"""The batch contract: padding values, padded and abstract batches."""

import jax
import numpy as np

from ponder_jax import batch as batch_lib


def test_empty_batch_is_padding_in_every_field():
  empty = batch_lib.empty_batch(3, 5, pad_id=7)
  assert tuple(empty) == batch_lib.FIELDS
  assert all(v.shape == (3, 5) and v.dtype == np.int32 for v in empty.values())
  for field, value in batch_lib.padding_values(7).items():
    assert (empty[field] == value).all()


def test_pad_rows_appends_padding_rows():
  rows = {field: np.full((2, 4), i + 1, np.int32) for i, field in enumerate(batch_lib.FIELDS)}
  padded = batch_lib.pad_rows(rows, 5, pad_id=0)
  for field in batch_lib.FIELDS:
    assert padded[field].shape == (5, 4) and padded[field].dtype == np.int32
    np.testing.assert_array_equal(padded[field][:2], rows[field])
    assert (padded[field][2:] == batch_lib.padding_values(0)[field]).all()


def test_abstract_batch_carries_shapes_and_sharding():
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = batch_lib.abstract_batch(4, 16, sharding)
  assert tuple(abstract) == batch_lib.FIELDS
  for value in abstract.values():
    assert value.shape == (4, 16) and value.dtype == np.int32 and value.sharding == sharding
