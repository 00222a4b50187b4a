"""An OpenAI-compatible endpoint the profiler attaches to (``--endpoint URL``)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

from profiler.errors import EndpointError, SpecError


@dataclass(frozen=True)
class Endpoint:
    url: str
    model: str
    api_key: str | None = None
    owned_by: str | None = None  # /v1/models says who serves the model (vllm, sglang, ...)

    @property
    def metrics_url(self) -> str:
        return self.url.rstrip("/") + "/metrics"


def normalise_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SpecError(
            f"--endpoint '{url}' is not an http(s) URL", "e.g. --endpoint http://127.0.0.1:8000"
        )
    path = parsed.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parsed.scheme}://{parsed.netloc}{path}"


def api_key_from_env(name: str | None) -> str | None:
    """The API key, read from the environment variable ``name`` (never from a flag value, so it
    stays out of shell history, the manifest and logs)."""
    if not name:
        return None
    key = os.environ.get(name)
    if not key:
        raise SpecError(
            f"--api-key-env {name}: the variable is not set or empty", f"export {name}=..."
        )
    return key


def _get_json(url: str, api_key: str | None, timeout_s: float) -> object:
    req = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (http/https checked)
        return json.loads(resp.read())


def attach(url: str, model: str | None, api_key: str | None, timeout_s: float = 10.0) -> Endpoint:
    """Check the endpoint answers ``/v1/models`` and resolve the model name."""
    base = normalise_url(url)
    try:
        data = _get_json(base + "/v1/models", api_key, timeout_s)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise EndpointError(
                f"{base} refused the API key (HTTP {e.code})", "pass --api-key-env NAME"
            ) from None
        raise EndpointError(
            f"{base}/v1/models answered HTTP {e.code}", "is it an OpenAI-compatible server?"
        ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise EndpointError(
            f"cannot reach {base}: {reason}", "start the server or fix --endpoint"
        ) from None
    except ValueError:
        raise EndpointError(
            f"{base}/v1/models did not answer JSON", "is it an OpenAI-compatible server?"
        ) from None
    cards = (
        [m for m in (data.get("data") or []) if isinstance(m, dict)]
        if isinstance(data, dict)
        else []
    )
    ids: list[str] = [m["id"] for m in cards if isinstance(m.get("id"), str)]
    if model is None:
        if not ids:
            raise EndpointError(f"{base} lists no model", "pass --model NAME")
        model = ids[0]
    elif ids and model not in ids:
        raise EndpointError(
            f"{base} does not serve '{model}' (it serves: {', '.join(ids)})", "fix --model"
        )
    owner = next((m.get("owned_by") for m in cards if m.get("id") == model), None)
    return Endpoint(
        url=base, model=model, api_key=api_key, owned_by=owner if isinstance(owner, str) else None
    )
