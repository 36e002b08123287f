"""Model references, the catalog, file selection, resolution of profiles' `model:`, and the
store commands (import, models list/show/rm/catalog) — everything that needs no Hub."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from llmctl.errors import ModelMissing, QuantNotFound, UsageError
from llmctl.models.catalog import load_catalog
from llmctl.models.hub import RemoteFile, Snapshot
from llmctl.models.pull import select
from llmctl.models.refs import parse_ref, quant_of
from llmctl.models.store import ModelError
from llmctl.paths import Paths

from .util import cli


@pytest.mark.parametrize("text, kind, repo, quant, file, canonical, name", [
    ("qwen2.5-7b", "alias", "Qwen/Qwen2.5-7B-Instruct-GGUF", "Q4_K_M", None, "qwen2.5-7b:Q4_K_M", "qwen2.5-7b-q4_k_m"),
    ("Qwen2.5-7B:q5_k_m", "alias", "Qwen/Qwen2.5-7B-Instruct-GGUF", "Q5_K_M", None, "qwen2.5-7b:Q5_K_M",
     "qwen2.5-7b-q5_k_m"),
    ("qwen3-4b-instruct-2507-awq", "alias", "cpatonn/Qwen3-4B-Instruct-2507-AWQ-4bit", None, None,
     "qwen3-4b-instruct-2507-awq", "qwen3-4b-instruct-2507-awq"),
    ("hf:bartowski/Phi-3.5-mini-instruct-GGUF:Q6_K", "hf", "bartowski/Phi-3.5-mini-instruct-GGUF", "Q6_K", None,
     "hf:bartowski/Phi-3.5-mini-instruct-GGUF:Q6_K", "bartowski--phi-3.5-mini-instruct-gguf-q6_k"),
    ("hf:Qwen/Qwen2.5-14B-Instruct-GGUF/qwen2.5-14b-instruct-q4_k_m-00002-of-00003.gguf", "hf",
     "Qwen/Qwen2.5-14B-Instruct-GGUF", None, "qwen2.5-14b-instruct-q4_k_m-00002-of-00003.gguf",
     "hf:Qwen/Qwen2.5-14B-Instruct-GGUF/qwen2.5-14b-instruct-q4_k_m-00002-of-00003.gguf",
     "qwen--qwen2.5-14b-instruct-gguf--qwen2.5-14b-instruct-q4_k_m"),
    ("hf:cpatonn/Qwen3-4B-Instruct-2507-AWQ-4bit", "hf", "cpatonn/Qwen3-4B-Instruct-2507-AWQ-4bit", None, None,
     "hf:cpatonn/Qwen3-4B-Instruct-2507-AWQ-4bit", "cpatonn--qwen3-4b-instruct-2507-awq-4bit"),
    ("./models/x.gguf", "path", None, None, None, "./models/x.gguf", "./models/x.gguf"),
    ("/abs/y.gguf", "path", None, None, None, "/abs/y.gguf", "/abs/y.gguf"),
    ("my-imported-model", "name", None, None, None, "my-imported-model", "my-imported-model"),
])
def test_references_and_store_names(text, kind, repo, quant, file, canonical, name):
    ref = parse_ref(text, load_catalog())
    assert (ref.kind, ref.repo, ref.quant, ref.file) == (kind, repo, quant, file)
    assert ref.canonical == canonical and ref.store_name == name


@pytest.mark.parametrize("bad", ["hf:", "hf:onlyorg", "hf:a/b:Q4:K", "hf:a/b/../c.gguf", "qwen2.5-7b:Q4 K"])
def test_malformed_references_are_usage_errors(bad):
    with pytest.raises(UsageError):
        parse_ref(bad, load_catalog())


@pytest.mark.parametrize("path, quant", [
    ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M"),
    ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
    ("Phi-3-mini-4k-instruct-q4.gguf", "Q4"),
    ("gemma-3-4b-it-Q4_0.gguf", "Q4_0"),
    ("Qwen3-4B-Instruct-2507-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
    ("Q4_K_M/Model-Q4_K_M-00001-of-00003.gguf", "Q4_K_M"),
    ("model-IQ4_XS.gguf", "IQ4_XS"),
    ("qwen2.5-0.5b-instruct-fp16.gguf", "FP16"),
    ("model-bf16.gguf", "BF16"),
    ("Qwen3-8B.gguf", None),
    ("config.json", None),
])
def test_quant_from_file_names(path, quant):
    assert quant_of(path) == quant


def _snap(*paths: str) -> Snapshot:
    return Snapshot("o/r", "c" * 40, [RemoteFile(p, 10, "b" * 40, None) for p in paths], "http://hub")


def test_select_quant_split_file_and_whole_repo():
    snap = _snap("README.md", "m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf", "m-Q8_0.gguf",
                 "m-UD-Q4_K_XL.gguf", "mmproj-m-F16.gguf")
    s = select(parse_ref("hf:o/r:Q4_K_M"), snap)
    assert [f.path for f in s.files] == ["m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf"]
    assert s.main == "m-Q4_K_M-00001-of-00002.gguf" and s.quant == "Q4_K_M"
    s = select(parse_ref("hf:o/r/m-Q4_K_M-00002-of-00002.gguf"), snap)
    assert len(s.files) == 2 and s.main == "m-Q4_K_M-00001-of-00002.gguf"
    with pytest.raises(QuantNotFound) as ei:
        select(parse_ref("hf:o/r:F16"), snap)  # the projector's F16 is not a model quant
    assert "its quants: Q4_K_M, Q8_0, UD-Q4_K_XL" in ei.value.message
    whole = select(parse_ref("hf:o/r"), snap)
    assert len(whole.files) == 6 and whole.main == "." and whole.quant is None
    one = select(parse_ref("hf:o/r"), _snap("README.md", "only-Q5_K_S.gguf"))
    assert one.main == "only-Q5_K_S.gguf" and one.quant == "Q5_K_S"


def test_builtin_catalog_has_the_families():
    cat = load_catalog()
    for alias in ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b", "qwen3-4b", "qwen3-8b",
                  "llama3.1-8b", "mistral-7b", "gemma3-1b", "gemma3-4b", "phi4", "phi3.5-mini", "smollm2-135m",
                  "smollm2-1.7b"]:
        e = cat.get(alias)
        assert e is not None and e.quant and e.engine == "llama-server" and e.repo.endswith("GGUF"), alias
    awq = [e for e in cat.values() if e.engine == "vllm"]
    assert "cpatonn/Qwen3-4B-Instruct-2507-AWQ-4bit" in {e.repo for e in awq}
    assert all(e.quant is None for e in awq)


def test_user_catalog_adds_and_replaces(llmctl_home):
    cfg = llmctl_home / "config"
    cfg.mkdir(parents=True)
    (cfg / "catalog.yaml").write_text("mine: {repo: me/Mine-GGUF, quant: q6_k}\n"
                                      "qwen2.5-7b: {repo: me/Other-GGUF, quant: Q8_0}\n")
    cat = load_catalog()
    assert (cat.get("mine").repo, cat.get("mine").quant) == ("me/Mine-GGUF", "Q6_K")
    assert cat.get("qwen2.5-7b").repo == "me/Other-GGUF" and cat.get("qwen2.5-14b") is not None
    listed = {e["alias"]: e for e in json.loads(cli("models", "catalog", "--json").stdout)}
    assert listed["mine"]["source"] == str(cfg / "catalog.yaml") and listed["qwen3-8b"]["source"] == "built-in"
    (cfg / "catalog.yaml").write_text("bad: {repo: me/X, quantt: Q4_0}\n")
    with pytest.raises(ModelError, match="unknown key"):
        load_catalog()


def _profile(tmp_path: Path, model: str):
    from llmctl import load_profiles

    f = tmp_path / "llmctl.yaml"
    f.write_text(f"profiles:\n  p:\n    model: {model}\n    port: 18999\n")
    return load_profiles([str(f)]).profiles["p"]


def test_resolve_model_for_every_kind_of_reference(tmp_path, smollm2, llmctl_home):
    from llmctl.models.resolve import resolve_model

    paths = Paths.from_env()
    for ref in ["qwen2.5-7b:Q5_K_M", "hf:o/r:Q4_0", "hf:o/r/file.gguf"]:
        with pytest.raises(ModelMissing) as ei:
            resolve_model(_profile(tmp_path, ref), paths)
        assert f"run `llmctl pull {ref}`" in ei.value.message and "llmctl.yaml:3" in ei.value.message
    with pytest.raises(ModelMissing, match="nor a catalog alias"):
        resolve_model(_profile(tmp_path, "no-such-model"), paths)
    assert resolve_model(_profile(tmp_path, str(smollm2)), paths) == smollm2

    # an alias resolves to the store directory of its default quant, once there
    assert cli("import", str(smollm2), "--as", "qwen2.5-7b-q4_k_m", "--link").returncode == 0
    assert resolve_model(_profile(tmp_path, "qwen2.5-7b"), paths) == paths.models / "qwen2.5-7b-q4_k_m" / smollm2.name
    assert resolve_model(_profile(tmp_path, "qwen2.5-7b-q4_k_m"), paths).name == smollm2.name
    with pytest.raises(ModelMissing):
        resolve_model(_profile(tmp_path, "qwen2.5-7b:Q8_0"), paths)


def test_import_then_list_show_rm(smollm2, llmctl_home):
    r = cli("import", str(smollm2), "--as", "smol", "--link")
    assert r.returncode == 0, r.stderr
    r = cli("import", str(smollm2), "--as", "smol")
    assert r.returncode == 2 and "--force" in r.stderr
    [e] = json.loads(cli("models", "list", "--json").stdout)
    assert e["name"] == "smol" and e["source"] == "import" and e["verified"] is None
    assert e["reference"] == str(smollm2) and e["size"] == smollm2.stat().st_size
    show = json.loads(cli("models", "show", "smol", "--json").stdout)
    assert show["gguf"]["architecture"] == "llama" and show["gguf"]["quant_type"] == "Q4_1"
    assert show["gguf"]["context_length"] == 8192 and show["gguf"]["parameters"] == 134515008
    assert cli("models", "show", "nope").returncode == 6
    r = cli("models", "rm", "smol")
    assert r.returncode == 0 and smollm2.exists()  # a linked import loses only its link
    assert not (llmctl_home / "models" / "smol").exists()
    assert "no models yet" in cli("models", "list").stderr


def test_import_copies_by_default(smollm2, llmctl_home):
    r = cli("import", str(smollm2), "--as", "smol-copy")
    assert r.returncode == 0, r.stderr
    [e] = json.loads(cli("models", "list", "--json").stdout)
    stored = Path(e["path"])
    assert stored.is_relative_to(llmctl_home / "models" / "smol-copy") and not stored.is_symlink()
    assert stored.stat().st_ino != smollm2.stat().st_ino and filecmp.cmp(stored, smollm2, shallow=False)
    assert cli("models", "rm", "smol-copy").returncode == 0
    assert not stored.exists() and smollm2.exists()


def test_import_refuses_a_file_that_is_not_gguf(tmp_path):
    bogus = tmp_path / "x.gguf"
    bogus.write_bytes(b"not a gguf file")
    r = cli("import", str(bogus), "--as", "x")
    assert r.returncode == 1 and "is not a GGUF file" in r.stderr
