"""Read the history rows of an offline W&B run file (`run-*.wandb`), for tests.

W&B writes a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
records, each with a 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last)
and a protobuf `Record` as payload. Only the history items are decoded here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

_BLOCK = 32 * 1024
_HEADER = 7


def _payloads(data: bytes):
    pos, parts = _HEADER, []
    while pos + 7 <= len(data):
        block_left = _BLOCK - (pos % _BLOCK)
        if block_left < 7:  # block trailer padding
            pos += block_left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += block_left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            parts = [chunk]
        elif kind == 3:
            parts.append(chunk)
        elif kind == 4:
            parts.append(chunk)
            yield b"".join(parts)


def offline_history(run_file: Path) -> tuple[dict, list[dict]]:
    """(run metadata, history rows as {key: value}) of one offline run file."""
    meta, rows = {}, []
    for payload in _payloads(Path(run_file).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            meta = {"name": record.run.display_name, "group": record.run.run_group,
                    "job_type": record.run.job_type, "tags": list(record.run.tags)}
        elif kind == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
    return meta, rows


def offline_config(run_file: Path) -> dict:
    """The run's config as W&B shows it: nested keys flattened with dots (`method.name`, `train.lr`)."""
    flat: dict = {}

    def put(prefix: str, value) -> None:
        if isinstance(value, dict) and set(value) != {"value"}:
            for k, v in value.items():
                put(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value["value"] if isinstance(value, dict) else value

    for payload in _payloads(Path(run_file).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in items:
            key = item.key or ".".join(item.nested_key)
            if not key.startswith("_wandb"):
                put(key, json.loads(item.value_json))
    return flat


def offline_summary(run_file: Path) -> dict:
    """The run's summary as last written: {key: value} (nested keys joined with '/')."""
    summary: dict = {}
    for payload in _payloads(Path(run_file).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary
