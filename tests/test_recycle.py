"""The CPU buffer cache hands a tensor back only once nothing references its storage."""
import torch

from fmashard.data import recycle


def test_a_released_buffer_is_reused_and_a_held_one_is_not():
    recycle.clear()
    a = recycle.empty((4, 1000), torch.int16)
    ptr = a.data_ptr()
    b = recycle.empty((4, 1000), torch.int16)
    assert b.data_ptr() != ptr                      # `a` is still held
    view = a[:2]
    del a
    c = recycle.empty((4, 1000), torch.int16)
    assert c.data_ptr() not in (ptr, b.data_ptr())  # a view of it is still alive
    del view
    assert recycle.empty((4, 1000), torch.int16).data_ptr() == ptr   # now nobody holds it
    recycle.clear()


def test_other_shapes_and_dtypes_get_their_own_buffers():
    recycle.clear()
    a = recycle.empty((2, 8), torch.float32)
    a_ptr = a.data_ptr()
    del a
    assert recycle.empty((2, 8), torch.int16).data_ptr() != a_ptr
    assert recycle.empty((2, 8), torch.float32).data_ptr() == a_ptr
    recycle.clear()
