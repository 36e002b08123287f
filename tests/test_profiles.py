"""The profile loader: search order, strict validation, file:line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmctl.errors import ProfileError
from llmctl.profiles import load
from llmctl.profiles.loader import discover

GOOD = """\
profiles:
  heavy:
    model: heavy.gguf
    port: 8080
    gpu_layers: 99
    args: {flash-attn: "on"}
  light:
    model: light.gguf
    port: 8081
tasks:
  summary: {profile: light, fallback: [heavy], temperature: 0.7, stop: "###"}
defaults:
  sampling: {temperature: 0.35, top_k: 40}
"""


def problems(tmp_path: Path, text: str, name: str = "p.yaml") -> list[str]:
    f = tmp_path / name
    f.write_text(textwrap.dedent(text))
    with pytest.raises(ProfileError) as ei:
        load([str(f)])
    return [str(p) for p in ei.value.facts["problems"]]


def test_good_file_loads_with_defaults_and_lines(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    cfg = load([str(f)])
    heavy = cfg.profiles["heavy"]
    assert heavy.host == "127.0.0.1" and heavy.restart == "on-failure" and heavy.gpu_layers == 99
    assert heavy.where("port") == f"{f}:4"
    assert cfg.tasks["summary"].stop == ["###"] and cfg.tasks["summary"].fallback == ["heavy"]
    assert cfg.defaults.sampling.top_k == 40


@pytest.mark.parametrize("text,expected", [
    ("profiles:\n  a:\n    model: [x\n", "p.yaml:4: YAML syntax error"),
    ("profiles:\n  a:\n    model: x.gguf\n    port: 1\n    gpu_layer: 3\n",
     "p.yaml:5: profiles.a.gpu_layer: unknown key (did you mean 'gpu_layers'?)"),
    ("profiles:\n  a:\n    model: x.gguf\n    port: eighty\n",
     "p.yaml:4: profiles.a.port: expected an integer, got 'eighty'"),
    ("profiles:\n  a:\n    model: x.gguf\n    port: 1\n    port: 2\n",
     "p.yaml:5: profiles.a.port: duplicate key (first at line 4)"),
    ("profiles:\n  a:\n    model: x.gguf\n  a:\n    model: y.gguf\n",
     "p.yaml:4: profiles.a: duplicate key (first at line 2)"),
    ("profiles:\n  Heavy:\n    model: x.gguf\n    port: 1\n",
     "p.yaml:2: profiles.Heavy: names must match"),
    ("profiles:\n  a:\n    port: 1\n", "p.yaml:3: profiles.a.model: missing required key"),
    ("profiles:\n  a:\n    model: x.gguf\n    port: 1\n    restart: sometimes\n",
     "p.yaml:5: profiles.a.restart: 'sometimes' is not one of no | on-failure | always"),
    ("profiles:\n  a:\n    model: x.gguf\n    port: 1\n    embeddings: 1\n",
     "p.yaml:5: profiles.a.embeddings: expected true or false, got 1"),
    ("profile:\n  a: {}\n", "p.yaml:1: profile: unknown top-level key (did you mean 'profiles'?)"),
    ("profiles:\n  a: {model: x.gguf, port: 80}\n  b: {model: y.gguf, port: 80}\n",
     "p.yaml:3: profiles.b.port: 127.0.0.1:80 is also used by profile 'a'"),
    ("profiles:\n  a: {model: x.gguf, port: 80}\ntasks:\n  t: {profile: b}\n",
     "p.yaml:4: tasks.t.profile: no profile named 'b'"),
    ("profiles:\n  a: {model: x.gguf, port: 80, args: {x: 1, x: 2}}\n",
     "p.yaml:2: profiles.a.args.x: duplicate key"),
    ("profiles:\n  a:\n    model: x.gguf\n    port: 80\n    max_concurrent: 0\n",
     "p.yaml:5: profiles.a.max_concurrent: must be at least 1"),
])
def test_each_bad_input_names_file_line_and_key(tmp_path, text, expected):
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found


def test_all_problems_reported_together(tmp_path):
    found = problems(tmp_path, "profiles:\n  a:\n    model: x.gguf\n    port: x\n    ctx: 1\n")
    assert len(found) == 2


def test_wildcard_host_clashes_with_loopback(tmp_path):
    found = problems(tmp_path, "profiles:\n  a: {model: x.gguf, port: 80, host: 0.0.0.0}\n"
                               "  b: {model: y.gguf, port: 80}\n")
    assert any("also used by profile 'a'" in p for p in found)


def test_same_port_on_different_hosts_is_fine(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("profiles:\n  a: {model: x.gguf, port: 80, host: 127.0.0.1}\n"
                 "  b: {model: y.gguf, port: 80, host: 127.0.0.2}\n")
    assert set(load([str(f)]).profiles) == {"a", "b"}


def test_name_defined_in_two_files_names_both(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("profiles:\n  x: {model: m.gguf, port: 1}\n")
    b.write_text("profiles:\n\n  x: {model: m.gguf, port: 2}\n")
    with pytest.raises(ProfileError) as ei:
        load([str(a), str(b)])
    assert f"{b}:3: profiles.x: defined twice: also at {a}:2" in str(ei.value.message)


def test_yaml_is_safe_only(tmp_path):
    found = problems(tmp_path, "profiles:\n  a: !!python/object/apply:os.system ['true']\n")
    assert any("tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed" in p for p in found), found


def test_anchors_and_merge_keys_work(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("profiles:\n  a: &base {model: x.gguf, port: 1, ctx_size: 4096}\n"
                 "  b:\n    <<: *base\n    port: 2\n")
    cfg = load([str(f)])
    assert cfg.profiles["b"].ctx_size == 4096 and cfg.profiles["b"].port == 2


def test_search_order(tmp_path, monkeypatch):
    cwd = tmp_path / "proj"
    (cwd / "profiles").mkdir(parents=True)
    (cwd / "llmctl.yaml").write_text("profiles: {}\n")
    (cwd / "profiles" / "b.yaml").write_text("profiles: {}\n")
    (cwd / "profiles" / "a.yaml").write_text("profiles: {}\n")
    xdg = tmp_path / "xdg-config" / "llmctl" / "profiles"
    xdg.mkdir(parents=True)
    (xdg / "u.yaml").write_text("profiles: {}\n")
    other = tmp_path / "other.yaml"
    other.write_text("profiles: {}\n")
    # 1. -f wins over everything
    assert discover([str(other)], cwd) == [other]
    # 2. LLMCTL_PROFILES (files or directories, os.pathsep-separated)
    monkeypatch.setenv("LLMCTL_PROFILES", f"{other}:{cwd / 'profiles'}")
    assert discover(None, cwd) == [other, cwd / "profiles" / "a.yaml", cwd / "profiles" / "b.yaml"]
    monkeypatch.delenv("LLMCTL_PROFILES")
    # 3. ./llmctl.yaml and ./profiles/*.yaml
    assert discover(None, cwd) == [cwd / "llmctl.yaml", cwd / "profiles" / "a.yaml", cwd / "profiles" / "b.yaml"]
    # 4. XDG (LLMCTL_HOME would move the config dir under it)
    monkeypatch.delenv("LLMCTL_HOME")
    assert discover(None, tmp_path / "empty") == [xdg / "u.yaml"]


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ProfileError) as ei:
        load([str(tmp_path / "nope.yaml")])
    assert "cannot read" in ei.value.message


def test_demo_and_shipped_profiles_validate():
    repo = Path(__file__).resolve().parents[1]
    cfg = load([str(repo / "profiles" / "demo.yaml")])
    assert set(cfg.profiles) == {"heavy", "light"}
    assert {p.port for p in cfg.profiles.values()}.isdisjoint({8080, 8081})


def test_groups_are_checked(tmp_path):
    found = problems(tmp_path, "profiles:\n  a: {model: x.gguf, port: 1, group: g}\n"
                               "  b: {model: y.gguf, port: 2, group: nope}\n"
                               "groups:\n  g: {exclusive: true, primary: b}\n")
    assert any("profiles.b.group: no group named 'nope'" in p for p in found), found
    assert any("groups.g.primary: 'b' is not a profile of this group" in p for p in found), found
