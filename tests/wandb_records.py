"""What an offline W&B run recorded: its .wandb file, read with W&B's own protobuf classes."""

import importlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

BLOCK_SIZE = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of checksummed chunks
FULL, LAST = 1, 4  # chunk types that end a record
# W&B's generated protobuf module picks its classes when imported, so they have no static types.
RECORD: Any = importlib.import_module("wandb.proto.wandb_internal_pb2").Record


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a .wandb file, parsed by W&B's own protobuf classes, as dictionaries."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""  # after the file header: ident, magic, version
    while position + 7 <= len(data):
        if BLOCK_SIZE - position % BLOCK_SIZE < 7:  # too little room for a chunk header: padding
            position += BLOCK_SIZE - position % BLOCK_SIZE
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (FULL, LAST):
            record = RECORD()
            record.ParseFromString(pending)
            pending = b""
            yield MessageToDict(record)


def logged(run_file: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The config and the history rows of one offline run."""
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    for record in read_records(run_file):
        config_record = record.get("run", record).get("config", {})
        config |= {item["key"]: json.loads(item["valueJson"]) for item in config_record.get("update", [])}
        if "history" in record:
            items = record["history"]["item"]
            history.append(
                {item.get("key") or "/".join(item["nestedKey"]): json.loads(item["valueJson"]) for item in items}
            )
    return config, history
