"""The file of a cache of prepared tensors: written once, memory-mapped when read, checked piece by piece.

The file holds the tensors' bytes, one after the other, then a record of them (JSON): where each is, its type
and shape, a checksum (XXH3) of every 4 MiB of it, and the fingerprint of them all (a SHA-256), computed
once, when the file is written. After the record: its length, its own checksum and MAGIC.

Read, the file is memory-mapped: the tensors are its pages, which the kernel reads in once and shares between
all the processes of a node that map them; no process holds a copy of its own. Checking the pieces against
their checksums takes one pass over the file in as many threads as the process may use cores (XXH3 runs at
about 15 GB/s per core, memory's own speed; SHA-256, which the fingerprint needs, at about 1.3); the
fingerprint, in the checked record, then names the data without another pass.

A file mapped by a process must not be changed in place while it runs: a cache is replaced by renaming a
new file over it, which leaves the old one to the processes that map it.
"""

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch
import xxhash
from torch import Tensor

__all__ = ["MAGIC", "Build", "DamagedError", "Empty", "Tensors", "fingerprint", "read", "write"]

Tensors = dict[str, Tensor]
# The file's last bytes. Part of every cache key (see `cache_key`): change it with the layout, so that no run
# looks for a file of another layout.
MAGIC = b"prepared-tensors-3\n"
PIECE_BYTES = 4 * 2**20  # one checksum per piece: pieces are checked in parallel, and a damaged one is named
ALIGNMENT = 64  # each tensor starts at a multiple of this many bytes, as a view of any type requires
TAIL_BYTES = 16  # between the record and MAGIC: the record's length and its XXH3 (8 bytes each), little-endian


class Empty(Protocol):
    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A new tensor of zeros that the processes a build forks share: the bytes written into it are in the
        cache file already, without a copy in memory."""
        ...


# Makes the tensors to cache, by name; large ones made with `Empty` are written into the file in place.
Build = Callable[[Empty], Tensors]


class DamagedError(Exception):
    """The file cannot be used; the message says why."""


def write(file: IO[bytes], name: str, build: Build, built: list[Tensors]) -> None:
    """Write the tensors of `build` into `file`, a new file named `name` (recorded, so that a file copied over
    another cache is told apart). The tensors, as placed in the file, are appended to `built` as soon as they
    are: a caller can use them even where writing the rest fails."""
    layout = _Layout(file)
    tensors = layout.place(build(layout.empty))
    built.append(tensors)
    checksums, digest = _summarise(tensors)
    places = {
        key: {"dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}
        | {"offset": layout.offsets[key], "checksums": checksums[key]}
        for key, tensor in tensors.items()
    }
    record = json.dumps({"name": name, "piece_bytes": PIECE_BYTES, "tensors": places, "fingerprint": digest}).encode()
    file.seek(layout.end)
    file.write(record + len(record).to_bytes(8, "little") + _checksum(record).to_bytes(TAIL_BYTES - 8, "little"))
    file.write(MAGIC)


def read(path: Path, *, check: bool = True) -> tuple[Tensors, str]:
    """The tensors of the file at `path`, memory-mapped (copy-on-write: writing to one changes this process's
    memory, never the file), and their fingerprint. Raises DamagedError if the file is not whole, or with
    `check`, if a piece of a tensor does not match its checksum."""
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            record = _read_record(file, size)
            if record["name"] != path.name:
                raise DamagedError(f"it holds the data of another cache, {record['name']}")
            whole = torch.as_tensor(np.memmap(file, dtype=np.uint8, mode="c", shape=(size,)))
    except OSError as error:
        raise DamagedError(str(error)) from None
    tensors: Tensors = {}
    for key, place in record["tensors"].items():
        dtype, shape, offset = getattr(torch, place["dtype"]), tuple(place["shape"]), place["offset"]
        end = offset + _nbytes(shape, dtype)
        if end > size:
            raise DamagedError(f"its {key} would end at byte {end:,}, after the end of the file")
        tensors[key] = whole[offset:end].view(dtype).view(shape)
    if check:
        _check(tensors, record)
    return tensors, record["fingerprint"]


def fingerprint(tensors: Tensors) -> str:
    """The fingerprint of tensors that are in no file: what `read` would return for them once written."""
    return _summarise(tensors)[1]


def _read_record(file: IO[bytes], size: int) -> dict[str, Any]:
    """The record at the end of a file, if it is whole."""
    tail = TAIL_BYTES + len(MAGIC)
    if size < tail:
        raise DamagedError(f"it has {size} bytes, too few for a cache file")
    file.seek(size - tail)
    ending = file.read(tail)
    length, checksum = int.from_bytes(ending[:8], "little"), int.from_bytes(ending[8:TAIL_BYTES], "little")
    if ending[TAIL_BYTES:] != MAGIC:
        raise DamagedError("it does not end as a cache file does: cut short, or another kind of file")
    if length > size - tail:
        raise DamagedError("its record would begin before the file does")
    file.seek(size - tail - length)
    record = file.read(length)
    if _checksum(record) != checksum:
        raise DamagedError("its record does not match its checksum")
    return json.loads(record)


def _check(tensors: Tensors, record: dict[str, Any]) -> None:
    """Raise DamagedError if a piece of a tensor does not match its checksum, naming the first."""
    piece_bytes = record["piece_bytes"]
    pieces = [
        (key, start, checksum)
        for key, place in record["tensors"].items()
        for start, checksum in zip(range(0, tensors[key].nbytes, piece_bytes), place["checksums"], strict=True)
    ]
    buffers = {key: _bytes(tensor) for key, tensor in tensors.items()}

    def matches(piece: tuple[str, int, int]) -> bool:
        key, start, checksum = piece
        return _checksum(buffers[key][start : start + piece_bytes]) == checksum  # xxhash lets go of the GIL

    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        for (key, start, _), good in zip(pieces, pool.map(matches, pieces), strict=True):
            if not good:
                end = min(start + piece_bytes, tensors[key].nbytes)
                raise DamagedError(f"bytes {start:,} to {end:,} of its {key} do not match their checksum")


class _Layout:
    """Where the tensors go in a file being written: one after the other, each aligned."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.end = 0  # the end of the last tensor
        self.offsets: dict[str, int] = {}
        self._made: dict[tuple[int, int], int] = {}  # the address and size of each tensor `empty` made: its offset

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A tensor of zeros mapped from the file (a shared mapping: forked processes write into it too)."""
        tensor, offset = self._allocate(shape, dtype)
        self._made[(tensor.data_ptr(), tensor.nbytes)] = offset
        return tensor

    def place(self, tensors: Tensors) -> Tensors:
        """`tensors`, each in the file: those that `empty` made where they are, the others copied in."""
        placed: Tensors = {}
        for key, tensor in tensors.items():
            offset = self._made.get((tensor.data_ptr(), tensor.nbytes)) if tensor.is_contiguous() else None
            if offset is None:
                copy, offset = self._allocate(tuple(tensor.shape), tensor.dtype)
                placed[key] = copy.copy_(tensor)
            else:
                placed[key] = tensor
            self.offsets[key] = offset
        return placed

    def _allocate(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[Tensor, int]:
        nbytes = _nbytes(shape, dtype)
        offset = -(-self.end // ALIGNMENT) * ALIGNMENT
        if nbytes == 0:  # nothing to map
            return torch.empty(shape, dtype=dtype), offset
        # On the disk now: a full disk is an error here, not a crash (SIGBUS) when the build writes.
        os.posix_fallocate(self.file.fileno(), offset, nbytes)
        self.end = offset + nbytes
        memory = np.memmap(self.file.name, dtype=np.uint8, mode="r+", offset=offset, shape=(nbytes,))
        return torch.as_tensor(memory).view(dtype).view(shape), offset


def _summarise(tensors: Tensors) -> tuple[dict[str, list[int]], str]:
    """The checksums of each tensor, an XXH3 per piece, and the fingerprint of all: a SHA-256 of their names,
    types and shapes and of the SHA-256 of each piece. Pieces are hashed in threads (hashlib and xxhash let go of
    the GIL); one SHA-256 of everything would run on one core."""
    buffers = {key: _bytes(tensor.contiguous()) for key, tensor in sorted(tensors.items())}
    pieces = [(key, start) for key, buffer in buffers.items() for start in range(0, len(buffer), PIECE_BYTES)]

    def summarise(piece: tuple[str, int]) -> tuple[int, bytes]:
        key, start = piece
        data = buffers[key][start : start + PIECE_BYTES]
        return _checksum(data), hashlib.sha256(data).digest()

    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        summaries = list(pool.map(summarise, pieces))
    checksums: dict[str, list[int]] = {key: [] for key in buffers}
    digest = hashlib.sha256()
    for key, tensor in sorted(tensors.items()):
        digest.update(f"{key} {tensor.dtype} {list(tensor.shape)};".encode())
    for (key, _), (checksum, piece_digest) in zip(pieces, summaries, strict=True):
        checksums[key].append(checksum)
        digest.update(piece_digest)
    return checksums, digest.hexdigest()


def _checksum(data: bytes | memoryview) -> int:
    """A checksum of `data` (XXH3, 64 bits): a damaged byte changes it; not a cryptographic hash."""
    return xxhash.xxh3_64_intdigest(data)


def _bytes(tensor: Tensor) -> memoryview:
    """The bytes of a contiguous tensor, without a copy."""
    return tensor.reshape(-1).view(torch.uint8).numpy().data


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
