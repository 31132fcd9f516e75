"""TensorFlow's V2 tensor bundle (``tensorflow/core/util/tensor_bundle``): the checkpoint format.

A bundle at ``prefix`` is

* ``prefix.index``: a LevelDB-format table (:mod:`.table`). Key ``""`` holds a
  ``BundleHeaderProto`` (``num_shards``, endianness, version); every other key is a tensor name
  (or the encoded key of a slice of a partitioned tensor, :mod:`.ordered_code`) and holds a
  ``BundleEntryProto``: dtype, shape, ``shard_id``, ``offset`` and ``size`` in that shard, the
  masked crc32c of the tensor, and for a partitioned tensor its ``slices``.
* ``prefix.data-00000-of-0000N`` ... : the shards, tensor after tensor, no padding. Numeric
  tensors are their raw little-endian bytes (the entry's crc32c covers them). A string tensor is
  the varint64 lengths of all elements, a masked crc32c (u32) of those lengths, then the
  elements' bytes; its crc32c covers the lengths *each as a u32* (u64 past 4 GiB, as TensorFlow
  does), then the four bytes of the length checksum, then the elements' bytes.

:class:`BundleReader` reads one tensor at a time (seek + read into the result's own buffer, by
256 KiB chunks, each checksummed while it is in the CPU's cache) and checks its crc32c on every
read; :meth:`BundleReader.verify` checks a tensor without keeping it. :class:`BundleWriter`
streams tensors into temporary files (the write-back to disk started in the background as
they grow) and publishes the bundle with fsync + rename on :meth:`BundleWriter.finish`.
:func:`merge_bundles` is TensorFlow's ``MergeV2Checkpoints``. Every problem with a file is an mgrt error
(:mod:`mgrt.runtime.errors`) naming the file.
"""

import difflib
import errno
import glob
import mmap
import os
import re
import secrets
import struct
import threading

import numpy as np
from google.protobuf.message import DecodeError

from mgrt.protos import tensor_bundle_pb2, types_pb2
from mgrt.runtime import dtypes as dtypes_lib
from mgrt.runtime import errors
from mgrt.runtime.checkpoint import crc as crc_lib
from mgrt.runtime.checkpoint import ordered_code
from mgrt.runtime.checkpoint import table
from mgrt.runtime.checkpoint.table import _Corrupt

__all__ = [
    "BundleReader", "BundleWriter", "merge_bundles", "index_filename", "data_filename",
    "V1_MESSAGE",
]

HEADER_KEY = b""
BUNDLE_VERSION = 1          # kTensorBundleVersion: what this code writes and the newest it reads
BUNDLE_MIN_PRODUCER = 0     # kTensorBundleMinProducer
BUNDLE_MIN_CONSUMER = 0     # kTensorBundleMinConsumer
MAX_RANK = 254              # TensorShape::MaxDimensions()
NUMPY_MAX_RANK = 64         # numpy's NPY_MAXDIMS
_INT64_MAX = (1 << 63) - 1
_U32_MAX = 0xFFFFFFFF

DT_STRING = types_pb2.DT_STRING
DT_RESOURCE = types_pb2.DT_RESOURCE
DT_VARIANT = types_pb2.DT_VARIANT

V1_MESSAGE = ("V1 checkpoints are not supported; re-save it with TensorFlow 1.x's "
              "tf.train.Saver(write_version=tf.train.SaverDef.V2)")

# Reads and writes of numeric tensors go by chunks of this size, each checksummed right after
# it is read or written, while it is still in the CPU's cache (about 1.2x faster than one read
# and one pass of crc32c over the whole tensor, 3x when the tensor is only verified).
_CHUNK = 256 * 1024

# While a bundle is written, the write-back of its data files is started (fdatasync in a thread)
# every this many bytes, so that the disk writes the early tensors while the later ones are
# copied, and the fsync of finish() has little left to wait for.
_FLUSH_EVERY = 32 * 1024 * 1024

_DATA_SUFFIX_RE = re.compile(r"\.data-\d{5}-of-\d{5}$")


def index_filename(prefix):
    """``prefix.index``."""
    return f"{os.fspath(prefix)}.index"


def data_filename(prefix, shard_id, num_shards):
    """``prefix.data-SSSSS-of-NNNNN``."""
    return "%s.data-%05d-of-%05d" % (os.fspath(prefix), shard_id, num_shards)


def _key_bytes(name):
    if isinstance(name, bytes):
        return name
    if isinstance(name, str):
        return name.encode("utf-8", "surrogateescape")
    raise TypeError(f"A tensor name must be a str or bytes, not {type(name).__name__}")


def _key_str(key):
    return key.decode("utf-8", "surrogateescape")


def _dtype_name(enum):
    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"DataType({enum})"


def _fsync_dir(path):
    """fsync a directory so that renames in it are durable (no-op where unsupported)."""
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_error(err, path):
    """An mgrt error for an OSError raised while writing ``path``."""
    msg = f"Cannot write checkpoint file {path!r}: {err.strerror or err}"
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return errors.ResourceExhaustedError(None, None, msg)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return errors.PermissionDeniedError(None, None, msg)
    if code == errno.ENOENT:
        return errors.NotFoundError(None, None, msg)
    return errors.UnknownError(None, None, msg)


def _os_error(err, path, what):
    """An mgrt error for an OSError raised while opening ``path``."""
    if isinstance(err, FileNotFoundError):
        return errors.NotFoundError(None, None, f"{what} {path!r} does not exist.")
    if isinstance(err, PermissionError):
        return errors.PermissionDeniedError(None, None, f"Cannot read {what} {path!r}: {err}")
    return errors.UnknownError(None, None, f"Cannot read {what} {path!r}: {err}")


# -- dtypes ------------------------------------------------------------------------------------

def _numpy_dtype(enum):
    """The little-endian numpy dtype of a fixed-size DataType; None for DT_STRING."""
    if enum == DT_STRING:
        return None
    dt = np.dtype(dtypes_lib.as_dtype(enum).as_numpy_dtype)
    return dt.newbyteorder("<") if dt.byteorder == ">" or (
        dt.byteorder == "=" and not _LITTLE_HOST) else dt


_LITTLE_HOST = np.little_endian

# Tensors at least this large are read into their own anonymous memory mapping (4 KiB pages)
# rather than numpy's allocation, which asks the kernel for transparent huge pages from 4 MiB
# up: a huge page costs a 2 MiB zeroing and, on a fragmented host or in a VM, often more
# (compaction, the hypervisor's first touch): a restore's time then swings by up to 2x from one
# run to the next. TensorFlow's buffers do not ask for huge pages either.
_OWN_MAPPING_MIN = 4 * 1024 * 1024


def _empty(n, dtype):
    """An uninitialized 1-D array of ``n`` elements of ``dtype`` (writable; its memory is
    returned to the system when the last view of it is gone)."""
    nbytes = n * dtype.itemsize
    if nbytes >= _OWN_MAPPING_MIN:
        try:
            return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype, count=n)
        except (OSError, ValueError, OverflowError):
            pass
    return np.empty(n, dtype=dtype)


def _check_dtype(enum, key, filename):
    """Refuses DataTypes a checkpoint entry cannot hold or that mgrt cannot read."""
    if enum in (DT_RESOURCE, DT_VARIANT):
        raise errors.UnimplementedError(
            None, None,
            f"Tensor {_key_str(key)!r} in checkpoint {filename!r} has dtype "
            f"{_dtype_name(enum)}; mgrt cannot read {_dtype_name(enum)[3:].lower()} tensors "
            "from checkpoints (they hold TensorFlow runtime objects, not values).")
    valid = 0 < enum < 100 and enum in types_pb2.DataType.values()
    if valid:
        try:
            dtypes_lib.as_dtype(enum)
        except (TypeError, ValueError, KeyError):
            valid = False
    if not valid:
        raise errors.DataLossError(
            None, None,
            f"Invalid dtype {enum} in the entry of tensor {_key_str(key)!r} in checkpoint "
            f"index {filename!r}; the file is corrupted or from a newer TensorFlow.")


def _swap_bytes(arr):
    """Byte-swaps each scalar of ``arr`` in place (complex: each of its two parts)."""
    if arr.dtype.kind == "c":
        arr.view(np.dtype(f"<f{arr.dtype.itemsize // 2}")).byteswap(inplace=True)
    elif arr.dtype.itemsize > 1:
        arr.view(np.dtype(f"<u{arr.dtype.itemsize}")).byteswap(inplace=True)


# -- reading ------------------------------------------------------------------------------------

def _missing_index(prefix, path):
    """The error for a prefix whose .index file does not exist: V1, a wrong path, not found."""
    for suffix_re, kind in ((re.compile(r"\.index$"), "index"), (_DATA_SUFFIX_RE, "data"),
                            (re.compile(r"\.meta$"), "metagraph")):
        if suffix_re.search(prefix):
            stripped = suffix_re.sub("", prefix)
            raise errors.NotFoundError(
                None, None,
                f"Checkpoint not found: {prefix!r} names a checkpoint's {kind} file, not its "
                f"prefix (there is no {path!r}); pass the prefix {stripped!r} instead.")
    if os.path.isfile(prefix) and _looks_like_table(prefix):
        raise errors.UnimplementedError(
            None, None,
            f"{prefix!r} is a V1 checkpoint (one table file, no {os.path.basename(path)!r}): "
            f"{V1_MESSAGE}.")
    v1_shards = sorted(glob.glob(glob.escape(prefix) + "-[0-9][0-9][0-9][0-9][0-9]-of-"
                                 "[0-9][0-9][0-9][0-9][0-9]"))
    if v1_shards and _looks_like_table(v1_shards[0]):
        raise errors.UnimplementedError(
            None, None,
            f"{prefix!r} is a sharded V1 checkpoint ({v1_shards[0]!r} ...): {V1_MESSAGE}.")
    if os.path.isdir(prefix):
        raise errors.NotFoundError(
            None, None,
            f"Checkpoint not found: {prefix!r} is a directory, not a checkpoint prefix (no "
            f"{path!r}); pass a prefix such as {os.path.join(prefix, 'model.ckpt-1000')!r} or "
            "find the latest one with tf.train.latest_checkpoint(dir).")
    msg = f"Checkpoint not found: its index file {path!r} does not exist"
    dirname = os.path.dirname(prefix) or "."
    if not os.path.isdir(dirname):
        msg += f" (nor does the directory {dirname!r})"
    else:
        others = sorted(os.path.join(os.path.dirname(prefix), f[:-len(".index")])
                        for f in os.listdir(dirname) if f.endswith(".index"))
        close = difflib.get_close_matches(prefix, others, n=5, cutoff=0.5)
        if close:
            msg += "; checkpoints nearby: " + ", ".join(repr(c) for c in close)
    raise errors.NotFoundError(None, None, msg + ".")


def _looks_like_table(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < table.FOOTER_SIZE:
                return False
            f.seek(size - 8)
            return table.has_table_magic(b"\0" * (table.FOOTER_SIZE - 8) + f.read(8))
    except OSError:
        return False


class BundleReader:
    """Reads the V2 bundle at ``prefix``.

    Opening reads and checks the whole ``.index`` (every block's crc32c, the header); data
    shards are opened when a tensor in them is first read. Keys are ``bytes``; the public
    ``CheckpointReader`` wraps this with ``str`` names.
    """

    def __init__(self, prefix):
        self.prefix = os.fspath(prefix)
        self.index_path = index_filename(self.prefix)
        try:
            with open(self.index_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            _missing_index(self.prefix, self.index_path)
        except OSError as e:
            raise _os_error(e, self.index_path, "checkpoint index file") from None
        pairs = table.read_table(data, self.index_path)
        if not pairs or pairs[0][0] != HEADER_KEY:
            raise errors.DataLossError(
                None, None,
                f"Unable to read checkpoint index file {self.index_path!r}: it has no header "
                "entry (the empty key); it is corrupted or not a TensorFlow V2 checkpoint index.")
        header = tensor_bundle_pb2.BundleHeaderProto()
        try:
            header.ParseFromString(pairs[0][1])
        except DecodeError:
            raise errors.DataLossError(
                None, None,
                f"Unable to read checkpoint index file {self.index_path!r}: its header "
                "(BundleHeaderProto) does not parse; the file is corrupted.") from None
        self.header = header
        self._check_header()
        self.num_shards = header.num_shards
        self.byte_swap = (header.endianness == header.BIG) == _LITTLE_HOST
        self._entries = dict(pairs[1:])
        self._keys = [k for k, _ in pairs[1:]]
        self._files = {}
        self._lock = threading.RLock()

    def _check_header(self):
        h = self.header
        if h.num_shards < 1:
            raise errors.DataLossError(
                None, None,
                f"Unable to read checkpoint index file {self.index_path!r}: its header says "
                f"{h.num_shards} data shards; the file is corrupted.")
        if h.endianness not in (h.LITTLE, h.BIG):
            raise errors.DataLossError(
                None, None,
                f"Unable to read checkpoint index file {self.index_path!r}: unknown endianness "
                f"{h.endianness} in its header; the file is corrupted.")
        v = h.version
        if v.producer < BUNDLE_MIN_PRODUCER:
            raise errors.InvalidArgumentError(
                None, None,
                f"Checkpoint {self.prefix!r} has producer version {v.producer}, older than the "
                f"oldest this reader supports ({BUNDLE_MIN_PRODUCER}).")
        if v.min_consumer > BUNDLE_VERSION:
            raise errors.InvalidArgumentError(
                None, None,
                f"Checkpoint {self.prefix!r} needs a reader of version >= {v.min_consumer} "
                f"(this one is {BUNDLE_VERSION}); it was written by a newer TensorFlow.")
        if BUNDLE_VERSION in v.bad_consumers:
            raise errors.InvalidArgumentError(
                None, None,
                f"Checkpoint {self.prefix!r} disallows readers of version {BUNDLE_VERSION}.")

    # -- keys and entries --

    def keys(self):
        """The tensor keys (bytes) in table order, header excluded."""
        return list(self._keys)

    def __contains__(self, key):
        return key != HEADER_KEY and key in self._entries

    def entry(self, key):
        """The checked BundleEntryProto of ``key`` (bytes); NotFoundError if absent."""
        raw = self._entries.get(key) if key != HEADER_KEY else None
        if raw is None:
            raise errors.NotFoundError(
                None, None, f"Key {_key_str(key)} not found in checkpoint {self.prefix!r}.")
        entry = tensor_bundle_pb2.BundleEntryProto()
        try:
            entry.ParseFromString(raw)
        except DecodeError:
            raise self._corrupt_entry(key, "its BundleEntryProto does not parse") from None
        _check_dtype(entry.dtype, key, self.index_path)
        if entry.shape.unknown_rank or len(entry.shape.dim) > MAX_RANK:
            raise self._corrupt_entry(key, "invalid shape")
        n = 1
        for d in entry.shape.dim:
            if d.size < 0:
                raise self._corrupt_entry(key, f"negative dimension {d.size} in its shape")
            n *= d.size
            if n > _INT64_MAX:
                raise self._corrupt_entry(key, "its shape has more than 2**63-1 elements")
        if not entry.slices:
            if not 0 <= entry.shard_id < self.num_shards:
                raise self._corrupt_entry(
                    key, f"shard {entry.shard_id} of a {self.num_shards}-shard checkpoint")
            if entry.offset < 0 or entry.size < 0:
                raise self._corrupt_entry(key, "negative offset or size")
        return entry

    def _corrupt_entry(self, key, detail):
        return errors.DataLossError(
            None, None,
            f"Unable to read checkpoint index file {self.index_path!r}: the entry of tensor "
            f"{_key_str(key)!r} is corrupted ({detail}).")

    @staticmethod
    def shape_of(entry):
        return tuple(d.size for d in entry.shape.dim)

    # -- data files --

    def _data_file(self, shard_id, key):
        with self._lock:
            return self._open_data_file(shard_id, key)

    def _open_data_file(self, shard_id, key):
        f = self._files.get(shard_id)
        if f is None:
            path = data_filename(self.prefix, shard_id, self.num_shards)
            try:
                raw = open(path, "rb", buffering=0)
            except FileNotFoundError:
                raise errors.NotFoundError(
                    None, None,
                    f"Checkpoint {self.prefix!r} is missing its data file {path!r} (shard "
                    f"{shard_id} of {self.num_shards}), which holds tensor {_key_str(key)!r}."
                ) from None
            except OSError as e:
                raise _os_error(e, path, "checkpoint data file") from None
            f = (raw, path, os.fstat(raw.fileno()).st_size)
            self._files[shard_id] = f
        return f

    def _check_extent(self, key, entry):
        """Checks ``entry``'s byte range against its dtype, shape and data file; returns
        (file, path)."""
        n = 1
        for d in entry.shape.dim:
            n *= d.size
        dt = _numpy_dtype(entry.dtype)
        if dt is not None:
            if entry.size != n * dt.itemsize:
                raise self._corrupt_entry(
                    key, f"stored size {entry.size} bytes, but {n} elements of "
                    f"{_dtype_name(entry.dtype)} take {n * dt.itemsize}")
        elif n and entry.size < n + 4:
            raise self._corrupt_entry(
                key, f"stored size {entry.size} bytes is too small for {n} strings")
        raw, path, file_size = self._data_file(entry.shard_id, key)
        if entry.offset + entry.size > file_size:
            raise errors.DataLossError(
                None, None,
                f"Checkpoint data file {path!r} is truncated: it has {file_size} bytes, but "
                f"tensor {_key_str(key)!r} is stored at bytes [{entry.offset}, "
                f"{entry.offset + entry.size}).")
        return raw, path, n, dt

    def _read_into(self, raw, path, offset, buf):
        view = memoryview(buf).cast("B")
        total = view.nbytes
        if not total:
            return
        with self._lock:
            raw.seek(offset)
            got = 0
            while got < total:
                k = raw.readinto(view[got:])
                if not k:
                    raise errors.DataLossError(
                        None, None, f"Checkpoint data file {path!r} ended early while reading "
                        f"bytes [{offset}, {offset + total}) (it shrank while open?).")
                got += k

    def _read_crc(self, raw, path, offset, size, dest=None):
        """The crc32c of the ``size`` bytes at ``offset``, read chunk by chunk (``_CHUNK``) and
        each chunk checksummed right after it is read, while it is in the CPU's cache. With
        ``dest`` (a writable 1-D uint8 array of ``size`` bytes) the bytes land there; without,
        they pass through one chunk-sized buffer (memory: one chunk, not the tensor)."""
        if not size:
            return 0
        if dest is None:
            buf = np.empty(min(size, _CHUNK), dtype=np.uint8)
            step = buf.size
        else:
            buf = dest
            step = _CHUNK
        view = memoryview(buf).cast("B")
        ro = crc_lib.readonly_view(buf)
        extend = crc_lib.extend_view
        crc = 0
        with self._lock:
            raw.seek(offset)
            readinto = raw.readinto
            pos = 0
            while pos < size:
                n = min(step, size - pos)
                start = 0 if dest is None else pos
                got = start
                end = start + n
                while got < end:
                    k = readinto(view[got:end])
                    if not k:
                        raise errors.DataLossError(
                            None, None, f"Checkpoint data file {path!r} ended early while "
                            f"reading bytes [{offset}, {offset + size}) (it shrank while open?).")
                    got += k
                crc = extend(crc, ro[start:end])
                pos += n
        return crc

    def _checksum_error(self, key, entry, path, computed):
        return errors.DataLossError(
            None, None,
            f"Checksum mismatch reading tensor {_key_str(key)!r} from checkpoint data file "
            f"{path!r} ({entry.size} bytes at offset {entry.offset}): stored crc32c "
            f"{crc_lib.unmask(entry.crc32c):08x}, computed {computed:08x}. The file is "
            "corrupted.")

    def read(self, key):
        """The tensor stored under ``key`` (bytes) as a numpy array; partitioned tensors come
        back whole. Strings come back as an object array of ``bytes``."""
        entry = self.entry(key)
        if entry.slices:
            return self._read_sliced(key, entry)
        return self._read_entry(key, entry)

    def verify(self, key):
        """Checks tensor ``key`` (bytes) as :meth:`read` does (its entry, its extent in its
        data file, the crc32c of its bytes) without keeping it: a numeric tensor's bytes pass
        through one small buffer, so the memory this takes is not the tensor's size (string and
        partitioned tensors are read whole)."""
        entry = self.entry(key)
        if entry.slices:
            self._read_sliced(key, entry)
            return
        self._check_numpy_rank(key, self.shape_of(entry))
        raw, path, n, dt = self._check_extent(key, entry)
        if dt is None:
            self._read_strings(key, entry, raw, path, n)
            return
        computed = self._read_crc(raw, path, entry.offset, entry.size)
        if computed != crc_lib.unmask(entry.crc32c):
            raise self._checksum_error(key, entry, path, computed)

    def _check_numpy_rank(self, key, shape):
        if len(shape) > NUMPY_MAX_RANK:
            raise errors.UnimplementedError(
                None, None,
                f"Tensor {_key_str(key)!r} in checkpoint {self.prefix!r} has rank {len(shape)}; "
                f"numpy arrays have at most {NUMPY_MAX_RANK} dimensions.")

    def _read_entry(self, key, entry):
        shape = self.shape_of(entry)
        self._check_numpy_rank(key, shape)
        raw, path, n, dt = self._check_extent(key, entry)
        if dt is None:
            return self._read_strings(key, entry, raw, path, n).reshape(shape)
        arr = _empty(n, dt)
        computed = self._read_crc(raw, path, entry.offset, entry.size, arr.view(np.uint8))
        if computed != crc_lib.unmask(entry.crc32c):
            raise self._checksum_error(key, entry, path, computed)
        if self.byte_swap:
            _swap_bytes(arr)
        return arr.reshape(shape)

    def _read_strings(self, key, entry, raw, path, n):
        out = np.empty(n, dtype=object)
        if entry.size == 0:
            # TensorFlow reads a zero-size string entry as n empty strings.
            out[:] = b""
            computed = 0
            if computed != crc_lib.unmask(entry.crc32c):
                raise self._checksum_error(key, entry, path, computed)
            return out
        buf = bytearray(entry.size)
        self._read_into(raw, path, entry.offset, buf)
        try:
            lengths, pos = _decode_string_lengths(buf, n)
        except _Corrupt as e:
            raise errors.DataLossError(
                None, None, f"Checkpoint data file {path!r}: the string tensor "
                f"{_key_str(key)!r} at offset {entry.offset} is corrupted ({e}).") from None
        fmt = ">" if self.byte_swap else "<"
        crc = crc_lib.value(_pack_lengths(lengths, fmt))
        if pos + 4 > len(buf):
            raise errors.DataLossError(
                None, None, f"Checkpoint data file {path!r}: the string tensor "
                f"{_key_str(key)!r} at offset {entry.offset} is corrupted (its lengths run "
                "past its stored size).")
        stored_len_crc = struct.unpack_from(fmt + "I", buf, pos)[0]
        if crc_lib.unmask(stored_len_crc) != crc:
            raise errors.DataLossError(
                None, None,
                f"Checksum mismatch reading the string lengths of tensor {_key_str(key)!r} from "
                f"checkpoint data file {path!r} (offset {entry.offset}): stored "
                f"{crc_lib.unmask(stored_len_crc):08x}, computed {crc:08x}. The file is "
                "corrupted.")
        crc = crc_lib.extend(crc, bytes(buf[pos:pos + 4]))
        pos += 4
        total = sum(lengths)
        if pos + total != len(buf):
            raise errors.DataLossError(
                None, None, f"Checkpoint data file {path!r}: the string tensor "
                f"{_key_str(key)!r} at offset {entry.offset} is corrupted (its {n} lengths add "
                f"up to {total} bytes, but its entry holds {len(buf) - pos}).")
        body = np.frombuffer(buf, dtype=np.uint8, offset=pos)
        crc = crc_lib.extend(crc, body)
        if crc != crc_lib.unmask(entry.crc32c):
            raise self._checksum_error(key, entry, path, crc)
        mv = memoryview(buf)
        for i, length in enumerate(lengths):
            out[i] = bytes(mv[pos:pos + length])
            pos += length
        return out

    def _read_sliced(self, key, entry):
        full_shape = self.shape_of(entry)
        rank = len(full_shape)
        full_n = 1
        for d in full_shape:
            full_n *= d
        if rank == 0:
            raise self._corrupt_entry(key, "a scalar with slices")
        self._check_numpy_rank(key, full_shape)
        parts = []
        covered = 0
        for sp in entry.slices:
            if len(sp.extent) != rank:
                raise self._corrupt_entry(
                    key, f"a slice of rank {len(sp.extent)} of a rank-{rank} tensor")
            ext, bounds = [], []
            for d, e in enumerate(sp.extent):
                if e.HasField("length"):
                    if e.start < 0 or e.length < 0 or e.start + e.length > full_shape[d]:
                        raise self._corrupt_entry(
                            key, f"slice extent {e.start}:{e.start + e.length} outside "
                            f"dimension {d} of size {full_shape[d]}")
                    ext.append((e.start, e.length))
                    bounds.append((e.start, e.start + e.length))
                else:
                    if e.start != 0:
                        raise self._corrupt_entry(key, "a full slice extent with a start")
                    ext.append((e.start, ordered_code.FULL_EXTENT))
                    bounds.append((0, full_shape[d]))
            slice_key = ordered_code.encode_tensor_name_slice(key, ext)
            if slice_key not in self:
                raise errors.DataLossError(
                    None, None,
                    f"Unable to read checkpoint index file {self.index_path!r}: partitioned "
                    f"tensor {_key_str(key)!r} lists slice {_slice_str(bounds)} but has no entry "
                    "for it; the file is corrupted.")
            sub = self.entry(slice_key)
            want = tuple(b - a for a, b in bounds)
            if sub.slices or sub.dtype != entry.dtype or self.shape_of(sub) != want:
                raise self._corrupt_entry(
                    slice_key, f"slice {_slice_str(bounds)} of {_key_str(key)!r} should hold a "
                    f"{_dtype_name(entry.dtype)} tensor of shape {list(want)}, not "
                    f"{_dtype_name(sub.dtype)} {list(self.shape_of(sub))}")
            for prev_bounds, _, _ in parts:
                if all(a < d and c < b for (a, b), (c, d) in zip(bounds, prev_bounds)):
                    raise self._corrupt_entry(
                        key, f"overlapping slices {_slice_str(prev_bounds)} and "
                        f"{_slice_str(bounds)}")
            self._check_extent(slice_key, sub)
            count = 1
            for w in want:
                count *= w
            covered += count
            parts.append((bounds, slice_key, sub))
        if covered != full_n:
            raise errors.DataLossError(
                None, None,
                f"Checkpoint {self.prefix!r}: the slices of partitioned tensor "
                f"{_key_str(key)!r} cover {covered} of its {full_n} elements (shape "
                f"{list(full_shape)}); a slice is missing from the index.")
        dt = _numpy_dtype(entry.dtype)
        out = np.empty(full_shape, dtype=object if dt is None else dt)
        for bounds, slice_key, sub in parts:
            out[tuple(slice(a, b) for a, b in bounds)] = self._read_entry(slice_key, sub)
        return out

    def close(self):
        with self._lock:
            for raw, _, _ in self._files.values():
                raw.close()
            self._files.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _slice_str(bounds):
    return "[" + ", ".join(f"{a}:{b}" for a, b in bounds) + "]"


def _decode_string_lengths(buf, n):
    lengths = []
    pos = 0
    limit = len(buf)
    get = table.get_varint
    for _ in range(n):
        b = buf[pos] if pos < limit else 0x80
        if b < 0x80 and pos < limit:
            lengths.append(b)
            pos += 1
        else:
            length, pos = get(buf, pos, limit)
            lengths.append(length)
    return lengths, pos


def _pack_lengths(lengths, fmt="<"):
    """The lengths as TensorFlow checksums them: each a u32 (a u64 past 4 GiB)."""
    if lengths and max(lengths) > _U32_MAX:
        return b"".join(struct.pack(fmt + ("I" if x <= _U32_MAX else "Q"), x) for x in lengths)
    return np.asarray(lengths, dtype=np.dtype(fmt + "u4")).tobytes()


# -- writing ------------------------------------------------------------------------------------

def _to_array(value, dtype):
    """(array, DataType enum) for a value to save; strings become an object array of bytes."""
    if dtype is not None:
        dtype = dtypes_lib.as_dtype(dtype)
        dtype = dtypes_lib.as_dtype(dtype.as_datatype_enum % 100)  # refs save as their value type
        _refuse_unsaveable(dtype.as_datatype_enum)
        if dtype.as_datatype_enum == DT_STRING:
            arr = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) or \
                value.dtype.kind not in "OSU" else value
        else:
            target = np.dtype(dtype.as_numpy_dtype)
            arr = np.asarray(value)
            if target.names and arr.dtype != target:
                # Quantized types: plain integers become TensorFlow's one-field structured dtype.
                arr = np.ascontiguousarray(arr, dtype=target[0]).view(target)
            else:
                arr = np.asarray(arr, dtype=target)
    else:
        arr = np.asarray(value)
    if arr.dtype.byteorder not in ("=", "|", "<" if _LITTLE_HOST else ">"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind in "OSU":
        flat = arr.reshape(-1)
        out = np.empty(flat.shape, dtype=object)
        for i, x in enumerate(flat):
            if isinstance(x, (bytes, np.bytes_)):
                out[i] = bytes(x)
            elif isinstance(x, (str, np.str_)):
                out[i] = x.encode("utf-8")
            else:
                raise TypeError(
                    f"A string tensor's elements must be bytes or str; element {i} is a "
                    f"{type(x).__name__}")
        return out.reshape(arr.shape), DT_STRING
    enum = dtypes_lib.as_dtype(arr.dtype).as_datatype_enum
    _refuse_unsaveable(enum)
    return arr, enum


def _refuse_unsaveable(enum):
    if enum in (DT_RESOURCE, DT_VARIANT):
        raise errors.UnimplementedError(
            None, None, f"Cannot save a tensor of dtype {_dtype_name(enum)} to a checkpoint "
            "with mgrt (resource and variant tensors hold TensorFlow runtime objects).")


_fdatasync = getattr(os, "fdatasync", os.fsync)


class _Flusher:
    """Background write-back of one data file: every ``_FLUSH_EVERY`` bytes written (and when
    the previous one is done), an ``fdatasync`` of the file runs in a thread. An error it meets
    is kept and raised by :meth:`join` (an fsync error is reported only once, so the final
    fsync might not see it again)."""

    __slots__ = ("path", "pending", "thread", "error")

    def __init__(self, path):
        self.path = path
        self.pending = 0
        self.thread = None
        self.error = None

    def written(self, f, nbytes):
        self.pending += nbytes
        if self.pending < _FLUSH_EVERY or (self.thread is not None and self.thread.is_alive()):
            return
        f.flush()
        self.pending = 0
        thread = threading.Thread(target=self._run, args=(f.fileno(),),
                                  name="mgrt-checkpoint-flush", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: finish()'s fsync does it all
            return
        self.thread = thread

    def _run(self, fd):
        try:
            _fdatasync(fd)
        except OSError as e:
            if self.error is None:
                self.error = OSError(e.errno, e.strerror, self.path)

    def join(self, raise_error=True):
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if raise_error and self.error is not None:
            raise self.error


def _write_numeric(f, raw):
    """Writes a 1-D uint8 array chunk by chunk, each chunk checksummed right after it is
    written (still in the CPU's cache); returns its crc32c."""
    size = raw.size
    if not size:
        return 0
    ro = crc_lib.readonly_view(raw)
    write = f.write
    extend = crc_lib.extend_view
    crc = 0
    for pos in range(0, size, _CHUNK):
        chunk = ro[pos:pos + _CHUNK]
        write(chunk)
        crc = extend(crc, chunk)
    return crc


class BundleWriter:
    """Writes a V2 bundle at ``prefix``, tensor by tensor.

    ``add(name, value)`` writes the tensor's bytes to a temporary data file right away (no
    copy of a contiguous little-endian array; every 32 MiB an ``fdatasync`` in a thread starts
    the write-back to disk); ``finish()`` writes the index (keys sorted, as the table requires),
    fsyncs everything and renames the files to their final names, data files first and the
    index last. A crash before ``finish()`` returns leaves only ``*.tempstate*`` files, never a
    half-written bundle under the final names. ``abort()`` (or leaving a ``with`` block by an
    exception) deletes the temporary files.

    With ``num_shards > 1`` the tensors go to ``num_shards`` data files: to the one ``add``'s
    ``shard`` names, else to the one with the fewest bytes so far.

    Same tensors in the same order give the same bytes as TensorFlow's ``BundleWriter`` (one
    shard; TensorFlow's data alignment 1): the ``.index`` is byte-identical.

    Replacing an existing bundle at the same prefix is not atomic as a whole (a bundle is
    several files): the old ``.index`` is removed before the new data files take their names,
    so a crash in between leaves no index (NotFoundError), never the old index over new data.
    """

    def __init__(self, prefix, num_shards=1):
        self.prefix = os.fspath(prefix)
        if not isinstance(num_shards, int) or num_shards < 1:
            raise ValueError(f"num_shards must be a positive int, not {num_shards!r}")
        self.num_shards = num_shards
        tag = secrets.token_hex(8)
        self._shards = []
        self._finished = False
        self._index_final = index_filename(self.prefix)
        self._index_temp = f"{self._index_final}.tempstate{tag}"
        self._entries = {}
        dirname = os.path.dirname(self.prefix)
        temp = dirname
        try:
            if dirname:
                os.makedirs(dirname, exist_ok=True)
            for i in range(num_shards):
                final = data_filename(self.prefix, i, num_shards)
                temp = f"{final}.tempstate{tag}"
                self._shards.append([final, temp, open(temp, "wb"), 0, _Flusher(temp)])
        except OSError as e:
            self.abort()
            raise _write_error(e, temp) from None
        except BaseException:
            self.abort()
            raise

    def add(self, name, value, dtype=None, shard=None):
        """Writes tensor ``name`` (str or bytes). ``value``: a numpy array or anything
        ``np.asarray`` takes (strings: bytes or str elements, str saved as UTF-8); ``dtype``
        (a DType or anything ``as_dtype`` takes) converts it first."""
        if self._finished:
            raise ValueError("BundleWriter.add after finish() or abort()")
        key = _key_bytes(name)
        if key == HEADER_KEY:
            raise ValueError("A tensor name must not be empty (the empty key holds the header)")
        if key in self._entries:
            raise errors.InvalidArgumentError(None, None, f"Adding duplicate key: {_key_str(key)}")
        arr, enum = _to_array(value, dtype)
        if shard is None:
            shard = min(range(self.num_shards), key=lambda i: self._shards[i][3])
        elif not 0 <= shard < self.num_shards:
            raise ValueError(f"shard must be in [0, {self.num_shards}), not {shard}")
        rec = self._shards[shard]
        f = rec[2]
        entry = tensor_bundle_pb2.BundleEntryProto()
        entry.dtype = enum
        entry.shape.SetInParent()
        for d in arr.shape:
            entry.shape.dim.add(size=d)
        entry.shard_id = shard
        entry.offset = rec[3]
        try:
            if enum == DT_STRING:
                size, crc = _write_strings(f, arr)
            else:
                arr = np.ascontiguousarray(arr)
                if arr.dtype.kind not in "V" and arr.dtype.byteorder == (
                        "=" if not _LITTLE_HOST else ">"):
                    arr = arr.astype(arr.dtype.newbyteorder("<"))
                raw = arr.reshape(-1).view(np.uint8)
                crc = _write_numeric(f, raw)
                size = raw.size
            rec[4].written(f, size)
        except OSError as e:
            # A partly written tensor would shift every later offset: the writer is done.
            self.abort()
            raise _write_error(e, rec[1]) from None
        entry.size = size
        entry.crc32c = crc_lib.mask(crc)
        rec[3] += size
        self._entries[key] = entry

    def finish(self):
        """Writes the index and publishes the bundle under its final names."""
        if self._finished:
            raise ValueError("BundleWriter.finish called twice, or after abort()")
        try:
            for rec in self._shards:
                f = rec[2]
                rec[4].join()
                f.flush()
                os.fsync(f.fileno())
                f.close()
            header = tensor_bundle_pb2.BundleHeaderProto()
            header.num_shards = self.num_shards
            header.endianness = header.LITTLE
            header.version.producer = BUNDLE_VERSION
            header.version.min_consumer = BUNDLE_MIN_CONSUMER
            _write_index(self._index_temp, header, self._entries)
            renames = [(rec[1], rec[0]) for rec in self._shards]
            renames.append((self._index_temp, self._index_final))
            _publish(renames, self._index_final)
        except OSError as e:
            self.abort()
            raise _write_error(e, getattr(e, "filename", None) or self.prefix) from None
        except BaseException:
            self.abort()
            raise
        self._finished = True

    def abort(self):
        """Deletes the temporary files; the bundle is not written."""
        self._finished = True
        for rec in self._shards:
            rec[4].join(raise_error=False)
            try:
                rec[2].close()
            except OSError:
                pass
        for path in [rec[1] for rec in self._shards] + [getattr(self, "_index_temp", None)]:
            if path:
                try:
                    os.remove(path)
                except OSError:
                    pass

    def __del__(self):
        # Never finished (and not aborted): do not leave temporary files behind.
        try:
            if not self._finished:
                self.abort()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._finished:
            return
        if exc_type is None:
            self.finish()
        else:
            self.abort()


def _write_strings(f, arr):
    """Writes a string tensor as TensorFlow does; returns (bytes written, crc32c)."""
    flat = arr.reshape(-1)
    lengths = [len(x) for x in flat]
    varints = bytearray()
    for x in lengths:
        table.put_varint(varints, x)
    crc = crc_lib.value(_pack_lengths(lengths))
    len_crc = struct.pack("<I", crc_lib.mask(crc))
    crc = crc_lib.extend(crc, len_crc)
    f.write(varints)
    f.write(len_crc)
    for x in flat:
        if x:
            f.write(x)
            crc = crc_lib.extend(crc, x)
    return len(varints) + 4 + sum(lengths), crc


def _write_index(path, header, entries):
    """Writes the table (header + sorted entries) to ``path`` and fsyncs it."""
    with open(path, "wb") as f:
        builder = table.TableBuilder(f)
        builder.add(HEADER_KEY, header.SerializeToString())
        for key in sorted(entries):
            builder.add(key, entries[key].SerializeToString())
        builder.finish()
        f.flush()
        os.fsync(f.fileno())


def _publish(renames, index_final):
    """Renames temp files to their final names, the index last, and fsyncs the directories."""
    try:
        os.remove(index_final)
    except FileNotFoundError:
        pass
    dirs = set()
    for src, dst in renames:
        os.replace(src, dst)
        dirs.add(os.path.dirname(dst))
    for d in sorted(dirs):
        _fsync_dir(d)


# -- merging ------------------------------------------------------------------------------------

def merge_bundles(prefixes, output_prefix, delete_old_dirs=True):
    """Merges the bundles at ``prefixes`` into one at ``output_prefix``, as TensorFlow's
    ``MergeV2Checkpoints`` (what a sharded Saver runs after each device saved its part).

    The data files are renamed (not copied) to ``output_prefix.data-*``, numbered in order of
    first use; the slices of a partitioned tensor saved by several parts are merged into one
    entry; the merged index is written to a temporary file and renamed last; the parts'
    ``.index`` files are deleted, and with ``delete_old_dirs`` their directories too when empty.
    """
    prefixes = [os.fspath(p) for p in prefixes]
    output_prefix = os.fspath(output_prefix)
    if not prefixes:
        raise errors.InvalidArgumentError(None, None, "merge_bundles: no checkpoints to merge")
    entries = {}
    shard_ids = {}
    num_shards = 0
    first = None
    for prefix in prefixes:
        with BundleReader(prefix) as reader:
            h = reader.header
            num_shards += h.num_shards
            if first is None:
                first = h
            else:
                if h.endianness != first.endianness:
                    raise errors.InvalidArgumentError(
                        None, None, "Merging bundles with conflicting endianness; "
                        f"{prefix!r} differs from {prefixes[0]!r}.")
                if h.version.SerializeToString() != first.version.SerializeToString():
                    raise errors.InvalidArgumentError(
                        None, None, f"Merging bundles with different format versions: "
                        f"{prefix!r} differs from {prefixes[0]!r}.")
            for key in reader.keys():
                e = reader.entry(key)
                old = entries.get(key)
                if old is not None:
                    if not old.slices or not e.slices:
                        raise errors.InvalidArgumentError(
                            None, None, f"Duplicate tensor keyed by {_key_str(key)} "
                            f"encountered, when merging prefix: {prefix}")
                    if old.dtype != e.dtype or old.shape != e.shape:
                        raise errors.InvalidArgumentError(
                            None, None, f"Partitioned tensor {_key_str(key)} has different "
                            f"dtypes or shapes in the checkpoints being merged ({prefix}).")
                    old.slices.extend(e.slices)
                    continue
                if not e.slices:
                    path = data_filename(prefix, e.shard_id, reader.num_shards)
                    e.shard_id = shard_ids.setdefault(path, len(shard_ids))
                entries[key] = e
    n_out = len(shard_ids)
    if n_out != num_shards or n_out == 0:
        # TensorFlow numbers the files by those in use but counts every part's shards in the
        # header; they differ only when a part saved no tensor. Keep the two consistent.
        num_shards = max(n_out, 1)
    dirname = os.path.dirname(output_prefix)
    if dirname:
        os.makedirs(dirname, exist_ok=True)
    header = tensor_bundle_pb2.BundleHeaderProto()
    header.num_shards = num_shards
    header.endianness = first.endianness
    header.version.CopyFrom(first.version)
    for src in shard_ids:
        if not os.path.isfile(src):
            raise errors.NotFoundError(
                None, None, f"Cannot merge checkpoints: data file {src!r} does not exist.")
    index_final = index_filename(output_prefix)
    index_temp = f"{index_final}.tempstate{secrets.token_hex(8)}"
    try:
        _write_index(index_temp, header, entries)
        renames = [(src, data_filename(output_prefix, i, num_shards))
                   for src, i in shard_ids.items()]
        if not shard_ids:
            empty = data_filename(output_prefix, 0, 1) + f".tempstate{secrets.token_hex(8)}"
            open(empty, "wb").close()
            renames.append((empty, data_filename(output_prefix, 0, 1)))
        renames.append((index_temp, index_final))
        _publish(renames, index_final)
    except BaseException as e:
        try:
            os.remove(index_temp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _write_error(e, getattr(e, "filename", None) or output_prefix) from None
        raise
    out_dir = os.path.abspath(dirname or ".")
    for prefix in prefixes:
        if os.path.abspath(prefix) == os.path.abspath(output_prefix):
            continue
        for path in [index_filename(prefix)] + glob.glob(glob.escape(prefix) + ".data-*"):
            try:
                os.remove(path)
            except OSError:
                pass
        if delete_old_dirs:
            d = os.path.abspath(os.path.dirname(prefix) or ".")
            if d != out_dir:
                try:
                    os.rmdir(d)
                except OSError:
                    pass
