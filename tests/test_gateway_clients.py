"""Issue 16's "done when": the official `openai`, `anthropic` and `ollama` clients all get answers
from the demo servers (profiles/demo.yaml: real llama-servers, Gemma 3 270M and SmolLM2 135M)
through one gateway, which starts them on demand and stops them when it ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from .util import cli, port_is_free

pytestmark = [pytest.mark.engine]


def test_openai_anthropic_and_ollama_clients_through_one_gateway(tmp_path, smollm2, gemma, ports, llama_server):
    import anthropic
    import ollama
    import openai

    from llmctl import load_profiles
    from llmctl.gateway import GatewayConfig, start_in_thread
    from llmctl.paths import Paths

    for src, name in ((gemma, "gemma3-270m-q4_k_m"), (smollm2, "smollm2-135m-instruct-q4_1")):
        assert cli("import", str(src), "--as", name, "--link").returncode == 0
    heavy, light = ports(), ports()
    demo = (Path(__file__).resolve().parents[1] / "profiles" / "demo.yaml").read_text()
    f = tmp_path / "llmctl.yaml"
    f.write_text(demo.replace("18180", str(heavy)).replace("18181", str(light)))
    gw = start_in_thread(load_profiles([str(f)]), GatewayConfig(port=0, refresh_interval=0), paths=Paths.from_env())
    try:
        text = "The meeting moved from Monday to Tuesday at noon because of the holiday."
        chat = openai.OpenAI(base_url=gw.url + "/v1", api_key="none").chat.completions.create(
            model="summary", messages=[{"role": "user", "content": text}], max_tokens=16)
        assert chat.choices[0].message.content.strip()

        msg = anthropic.Anthropic(base_url=gw.url, api_key="none").messages.create(
            model="reasoning", max_tokens=16, system="Answer briefly.",
            messages=[{"role": "user", "content": "Name a colour."}])
        assert msg.type == "message" and msg.content[0].text.strip() and msg.usage.output_tokens > 0

        client = ollama.Client(host=gw.url)
        said = client.chat(model="summary", messages=[{"role": "user", "content": text}], options={"num_predict": 16})
        assert said.message.content.strip() and said.done
        made = client.generate(model="heavy", prompt="The sky is", options={"num_predict": 8, "temperature": 0})
        assert made.response.strip()
        assert {m.model for m in client.ps().models} >= {"heavy", "light"}  # both started on demand
    finally:
        gw.stop()
    assert port_is_free(heavy) and port_is_free(light)  # the gateway stopped what it started
