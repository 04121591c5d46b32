"""A stand-in model directory for the weights images: a config, a tokenizer and one shard of
deterministic bytes; and the one-byte change that makes a tampered copy."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

SHARD = "model-00001-of-00001.safetensors"


def write(directory: Path) -> None:
    (directory / "config.json").write_text(json.dumps({"architectures": ["Stub"], "hidden_size": 64}))
    (directory / "tokenizer.json").write_text(json.dumps({"vocab": {"<s>": 0, "</s>": 1, "hello": 2}}))
    block, blocks = b"securemodels", []
    for _ in range(2048):  # 64 KiB
        block = hashlib.sha256(block).digest()
        blocks.append(block)
    (directory / SHARD).write_bytes(b"".join(blocks))


def tamper(directory: Path) -> None:
    shard = directory / SHARD
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x01
    shard.write_bytes(bytes(data))


if __name__ == "__main__":
    {"write": write, "tamper": tamper}[sys.argv[1]](Path(sys.argv[2]))
