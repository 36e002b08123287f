"""GPU memory estimates (llmctl.gpu.estimate) on the tiny real models' GGUF headers."""

from __future__ import annotations

import struct

import pytest

from llmctl.gpu.estimate import (
    KV_TYPE_BYTES,
    ModelLayout,
    estimate,
    estimate_profile,
    format_size,
    header_fields,
    parse_size,
    read_layout,
)
from llmctl.profiles.schema import Profile


def prof(**kw) -> Profile:
    kw.setdefault("model", "m.gguf")
    kw.setdefault("port", 1)
    kw.setdefault("name", "p")
    return Profile(**kw)


def test_layout_of_smollm2(smollm2):
    lay = read_layout(smollm2)
    # SmolLM2-135M: a llama with 30 blocks, 9 heads of 64 (576 wide), 3 KV heads
    assert (lay.architecture, lay.block_count, lay.head_count, lay.head_count_kv, lay.embedding_length) == \
        ("llama", 30, 9, 3, 576)
    assert lay.key_length is None and lay.context_length == 8192
    assert lay.file_size == smollm2.stat().st_size


def test_layout_of_gemma(gemma):
    lay = read_layout(gemma)
    # Gemma 3 270M: 18 blocks, 4 heads, 1 KV head, explicit key/value length 256
    assert (lay.architecture, lay.block_count, lay.head_count_kv, lay.key_length, lay.value_length) == \
        ("gemma3", 18, 1, 256, 256)


def test_header_reader_agrees_with_gguf_package(smollm2):
    from gguf import GGUFReader

    reader = GGUFReader(str(smollm2))
    want = {k: f.contents() for k, f in reader.fields.items() if k.startswith("llama.")}
    got = header_fields(smollm2, lambda k: k.startswith("llama."))
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == (tuple(v) if isinstance(v, list) else v), k


def test_header_reader_takes_a_file_object(smollm2):
    """A binary file object (read/seek) gives what the path gives, read from its position, not closed."""
    import io

    want = header_fields(smollm2, lambda k: k.startswith("llama.") or k == "general.architecture")
    with open(smollm2, "rb") as f:
        assert header_fields(f, lambda k: k.startswith("llama.") or k == "general.architecture") == want
        assert not f.closed and 24 < f.tell() < smollm2.stat().st_size // 10  # the KV section only
    with open(smollm2, "rb") as f:
        head = f.read(4 * 1024 * 1024)
    buf = io.BytesIO(b"junk" + head)
    buf.seek(4)
    assert header_fields(buf, lambda k: k.startswith("llama.") or k == "general.architecture") == want
    with pytest.raises(ValueError, match="ends early"):
        header_fields(io.BytesIO(head[:100_000]), lambda k: True)
    with pytest.raises(ValueError, match="not a GGUF file"):
        header_fields(io.BytesIO(b"GGML" + head[4:]), lambda k: True)


def test_full_offload_smollm2(smollm2):
    lay = read_layout(smollm2)
    est = estimate(prof(backend="cuda", gpu_layers=99, ctx_size=2048), lay)
    per_token_per_layer = 3 * (64 + 64) * 2  # kv heads x (K + V width) x f16
    assert est.method == "gguf"
    assert est.weights == lay.file_size
    assert est.kv_cache == 30 * per_token_per_layer * 2048
    assert est.total == est.weights + est.kv_cache
    assert est.offloaded_layers == 30


def test_partial_offload_and_quantized_cache(smollm2):
    lay = read_layout(smollm2)
    est = estimate(prof(backend="vulkan", gpu_layers=15, ctx_size=4096,
                        args={"cache-type-k": "q8_0", "ctv": "q4_0"}), lay)
    assert est.weights == lay.file_size * 15 // 30
    assert est.kv_cache == int(15 * 3 * 4096 * (64 * KV_TYPE_BYTES["q8_0"] + 64 * KV_TYPE_BYTES["q4_0"]))


def test_gemma_uses_key_length_and_model_context(gemma):
    lay = read_layout(gemma)
    est = estimate(prof(backend="metal"), lay)  # gpu_layers unset: all; ctx unset: the model's 32768
    assert est.ctx == 32768 and est.offloaded_layers == 18
    assert est.kv_cache == 18 * 1 * (256 + 256) * 2 * 32768
    assert any("ctx_size unset" in n for n in est.notes)


def test_cpu_needs_no_gpu_memory(smollm2):
    assert estimate(prof(backend="cpu", gpu_layers=99), read_layout(smollm2)).total == 0
    assert estimate_profile(prof(model=str(smollm2), backend="cpu")).total == 0


def test_vllm_share_of_the_gpu():
    p = prof(engine="vllm", backend="cuda", gpu_memory_utilization=0.5, tensor_parallel_size=2)
    assert estimate(p, None, gpu_total=80 * 2**30).total == 80 * 2**30
    assert estimate(prof(engine="vllm", backend="cuda"), None).total is None  # the GPU is unknown
    assert estimate(prof(engine="vllm", backend="cuda"), None, gpu_total=10 * 2**30).total == int(0.9 * 10 * 2**30)


def test_estimate_profile_reads_the_model(smollm2, tmp_path):
    est = estimate_profile(prof(model=str(smollm2), backend="cuda", ctx_size=1024))
    assert est.weights == smollm2.stat().st_size and est.kv_cache == 30 * 768 * 1024
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    unknown = estimate_profile(prof(model=str(bad), backend="cuda"))
    assert unknown.total is None and unknown.method == "unknown" and "not a GGUF" in " ".join(unknown.notes)


def test_per_layer_kv_heads():
    lay = ModelLayout(file_size=1000, block_count=4, head_count=8, head_count_kv=(2, 2, 0, 4), embedding_length=512)
    est = estimate(prof(backend="cuda", gpu_layers=3, ctx_size=10), lay)  # layers 0..2: 2 + 2 + 0 heads
    assert est.kv_cache == 4 * 10 * (64 + 64) * 2


def test_big_endian_and_truncated_headers(tmp_path):
    # a minimal header written by hand: magic, version 3, 0 tensors, 1 key (a u32)
    key = b"general.alignment"
    le = struct.pack("<IIQQ", 0x46554747, 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, 64)
    (tmp_path / "le.gguf").write_bytes(le)
    assert header_fields(tmp_path / "le.gguf", lambda k: True) == {"general.alignment": 64}
    (tmp_path / "cut.gguf").write_bytes(le[:-3])
    with pytest.raises(ValueError, match="ends early"):
        header_fields(tmp_path / "cut.gguf", lambda k: True)


@pytest.mark.parametrize("text,n", [("22GiB", 22 * 2**30), ("20000MiB", 20000 * 2**20), ("8GB", 8 * 10**9),
                                    ("1.5 GiB", int(1.5 * 2**30)), ("123456", 123456), (4096, 4096)])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "GiB", "12 parsecs", "-3GiB"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size():
    assert format_size(3 * 2**30) == "3.0 GiB" and format_size(None) == "unknown" and format_size(12) == "12 B"
