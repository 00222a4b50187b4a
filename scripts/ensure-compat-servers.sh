#!/usr/bin/env bash
# Make the third-party OpenAI-compatible servers that tests/integration/test_compat_servers.py
# starts on loopback: GuideLLM's mock server and llama.cpp's server (llama-cpp-python[server],
# serving a tiny GGUF model the tests write with the `gguf` package). They live in their own
# virtual environment (default .venv-compat, ignored by git), never in the project's: their
# pins (transformers, sanic, fastapi) are not the profiler's. Idempotent: exits at once when the
# stamp names the same versions.
#
# - guidellm is installed without torch: its mock server does not use it, and torch from the
#   package index is several GB of CUDA wheels. Its other requirements are installed as declared.
# - llama-cpp-python has no binary wheel on the package index: pip compiles llama.cpp (about 7
#   minutes on 2 cores, once: pip caches the wheel).
set -euo pipefail

PY="${PY:-python3}"
VENV="${COMPAT_VENV:-.venv-compat}"
GUIDELLM_VERSION="0.8.1"
LLAMA_CPP_VERSION="0.3.36"
GGUF_VERSION="0.19.0"
WANT="guidellm==${GUIDELLM_VERSION} llama-cpp-python==${LLAMA_CPP_VERSION} gguf==${GGUF_VERSION}"
STAMP="$VENV/.compat-servers"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

echo "ensure-compat-servers: installing $WANT into $VENV" >&2
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install --no-deps "guidellm==${GUIDELLM_VERSION}"
REQS="$(mktemp)"
trap 'rm -f "$REQS"' EXIT
"$VENV/bin/python" - >"$REQS" <<'PYEOF'
from importlib.metadata import requires

from pip._vendor.packaging.requirements import Requirement

for line in requires("guidellm") or []:
    req = Requirement(line)
    if req.marker is not None and "extra" in str(req.marker):
        continue  # optional extras
    if req.name.lower() == "torch":
        continue  # the mock server does not import it
    print(line)
PYEOF
# pip then warns that guidellm requires torch: expected, it is left out on purpose
"${PIP[@]}" install -r "$REQS"
CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_CURL=OFF}" \
  "${PIP[@]}" install "llama-cpp-python[server]==${LLAMA_CPP_VERSION}" "gguf==${GGUF_VERSION}"
"$VENV/bin/guidellm" mock-server --help >/dev/null
"$VENV/bin/python" -c "import llama_cpp.server, gguf"
echo "$WANT" >"$STAMP"
