"""crc32c (Castagnoli) as TensorFlow and LevelDB use it, from the ``google-crc32c`` library.

``value`` and ``extend`` take ``bytes`` or any contiguous buffer (numpy arrays included) without
copying it. ``mask``/``unmask`` are LevelDB's: a stored checksum is masked so that a crc computed
over data that itself holds crcs does not give degenerate values.
"""

import google_crc32c
import numpy as np

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _readonly(data):
    # The C extension parses its argument as a read-only bytes-like object (``y#``): bytes and
    # read-only numpy arrays pass as they are; any other buffer is viewed (not copied) as one.
    if isinstance(data, bytes):
        return data
    if isinstance(data, np.ndarray):
        view = data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 or data.ndim != 1 else data
    else:
        view = np.frombuffer(data, dtype=np.uint8)
    if view.flags.writeable:
        view = view.view()
        view.flags.writeable = False
    return view


def readonly_view(data):
    """``data`` as a read-only 1-D uint8 view (no copy), which :func:`extend_view` takes as it
    is; slices of it are read-only views too (the chunked reads and writes of :mod:`.bundle`)."""
    return _readonly(data)


def extend_view(crc, view):
    """:func:`extend` of a :func:`readonly_view` (or ``bytes``), without converting it again."""
    return google_crc32c.extend(crc, view)


def value(data):
    """crc32c of ``data``."""
    return google_crc32c.value(_readonly(data))


def extend(crc, data):
    """crc32c of (the bytes whose crc32c is ``crc``) followed by ``data``."""
    return google_crc32c.extend(crc, _readonly(data))


def mask(crc):
    """LevelDB's masked form of a crc, the form stored in files."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask(masked):
    """The crc whose masked form is ``masked``."""
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32
