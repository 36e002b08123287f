"""Build the OpenAI-compatible requests (`/v1/chat/completions`, `/v1/embeddings`) for a
profile: URL, headers (the API key from ``api_key_env``) and JSON body. Pure: nothing is sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engines.apikey import api_key
from ..errors import UsageError
from ..profiles.schema import Profile
from .params import Params, request_fields

REDACTED = "Bearer ***"


@dataclass
class HttpRequest:
    url: str
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  #: parameters this engine has no field for
    verify: bool = True  #: https: check the certificate (a remote profile's ``verify:``)

    def public(self) -> dict:
        """For --dry-run and errors: the key replaced by ``***``."""
        headers = {k: (REDACTED if k.lower() == "authorization" else v) for k, v in self.headers.items()}
        return {"url": self.url, "headers": headers, "payload": self.payload}


def auth_headers(profile: Profile) -> dict[str, str]:
    """``Authorization: Bearer KEY`` when the profile's server wants a key (from ``api_key_env``);
    :class:`~llmctl.errors.ApiKeyMissing` when the variable is not set."""
    key = api_key(profile)
    return {"Authorization": f"Bearer {key}"} if key else {}


def model_name(profile: Profile) -> str:
    """The name to put in ``model``: vLLM's served name, llama-server's alias, else the reference."""
    if profile.engine == "vllm" and profile.served_model_name:
        return profile.served_model_name
    if profile.alias:
        return profile.alias
    ref = profile.model
    return ref[3:] if ref.startswith("hf:") else ref


def image_part(path: str | Path) -> dict:
    """An OpenAI ``image_url`` content part holding the file as a base64 data URL."""
    import base64
    import mimetypes

    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read image {p}: {exc.strerror or exc}") from None
    mime = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    if not mime.startswith("image/"):
        raise UsageError(f"{p} does not look like an image (type {mime})")
    return {"type": "image_url",
            "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"}}


def chat_request(profile: Profile, params: Params, prompt: str, images: list[str] | None = None,
                 model: str | None = None, stream: bool = True) -> HttpRequest:
    """The `/v1/chat/completions` request: system + user messages, every sampling value set."""
    messages: list[dict[str, Any]] = []
    if params.system:
        messages.append({"role": "system", "content": params.system})
    if images:
        content: Any = [{"type": "text", "text": prompt}] + [image_part(i) for i in images]
    else:
        content = prompt
    messages.append({"role": "user", "content": content})
    fields, dropped = request_fields(params, profile.engine)
    payload: dict[str, Any] = {"model": model or model_name(profile), "messages": messages, **fields}
    if not payload["model"]:  # a remote profile without `model:`: the server answers with its own
        del payload["model"]
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
    headers.update(auth_headers(profile))
    return HttpRequest(profile.url + "/v1/chat/completions", payload, headers, dropped, profile.verify)


def embeddings_request(profile: Profile, texts: list[str], model: str | None = None) -> HttpRequest:
    payload = {"model": model or model_name(profile), "input": texts, "encoding_format": "float"}
    if not payload["model"]:
        del payload["model"]
    headers = {"Content-Type": "application/json", **auth_headers(profile)}
    return HttpRequest(profile.url + "/v1/embeddings", payload, headers, verify=profile.verify)
