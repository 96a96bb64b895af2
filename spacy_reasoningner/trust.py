"""What a saved pipeline may do when it is loaded.

A pipeline folder is code to trust like a wheel: its ``config.cfg`` picks the backend and its
settings. Two settings act beyond the folder, so when they come from a saved pipeline's
config (``spacy.load``, ``nlp.from_disk``) they take effect only if the user opts in at load
time:

* ``trust_remote_code`` (transformers and vLLM backends, also inside vLLM's
  ``engine_kwargs``) runs Python shipped with the model files. Opt in with the environment
  variable ``SPACY_REASONINGNER_TRUST_REMOTE_CODE``: ``1`` for any pipeline, or the
  pipeline folders, separated like ``PATH``.
* ``api_key_env`` and ``base_url`` (OpenAI-compatible backend) say which environment
  variable is sent to which host. A saved pipeline sends ``OPENAI_API_KEY`` to a loopback
  server; anything else needs the host allowed in ``SPACY_REASONINGNER_API_HOSTS`` (host or
  host:port, comma-separated), or the server set at load time:
  ``spacy.load(path, config={"components": {name: {"backend": {"base_url": ...}}}})``.

A setting counts as set at load time when its value differs from the saved config's. Without
a saved config (a pipeline built in code, then ``from_disk``), the settings are the caller's.
Pipelines built in code (``nlp.add_pipe``, ``Language.from_config``) run as configured.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from spacy.util import load_config

TRUST_REMOTE_CODE_ENV = "SPACY_REASONINGNER_TRUST_REMOTE_CODE"
API_HOSTS_ENV = "SPACY_REASONINGNER_API_HOSTS"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


class UntrustedPipelineError(ValueError):
    """A saved pipeline asks for something the user has not allowed at load time."""


@dataclass(frozen=True)
class SavedPipeline:
    """Where a component's settings came from: its pipeline folder and its name there, and
    the backend block of the saved ``config.cfg``."""

    folder: Path
    component: str
    backend: Mapping[str, Any]

    @classmethod
    def read(cls, folder: Path, component: str) -> SavedPipeline | None:
        """The saved settings of ``component`` in ``folder``; None without a config.cfg."""
        path = Path(folder) / "config.cfg"
        if not path.is_file():
            return None
        config = load_config(path, interpolate=True)
        block = config.get("components", {}).get(component, {}).get("backend", {})
        return cls(Path(folder), component, dict(block))

    def override_hint(self, settings: str) -> str:
        """How to set backend ``settings`` (a config fragment) at load time."""
        return (
            f'spacy.load("{self.folder}", config={{"components": {{"{self.component}": '
            f'{{"backend": {{{settings}}}}}}}}})'
        )


def check_remote_code(wanted: bool, saved_wanted: bool, saved: SavedPipeline) -> None:
    """Refuse ``trust_remote_code`` that comes from the saved config, unless allowed."""
    if not (wanted and saved_wanted) or _remote_code_allowed(saved.folder):
        return
    raise UntrustedPipelineError(
        f"the pipeline {saved.folder} sets trust_remote_code = true in its config.cfg: loading "
        "it would run Python code shipped with its model files. A pipeline is code; if you "
        f"trust this one as you would a package, allow it: {TRUST_REMOTE_CODE_ENV}="
        f"{saved.folder} (or =1 for any pipeline). Otherwise load it without: "
        + saved.override_hint('"trust_remote_code": false')
    )


def _remote_code_allowed(folder: Path) -> bool:
    value = os.environ.get(TRUST_REMOTE_CODE_ENV, "").strip()
    if value.lower() in ("1", "true", "yes"):
        return True
    allowed = {Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p.strip()}
    return folder.resolve() in allowed


def key_destination_problem(
    api_key_env: str | None, base_url: str, saved: SavedPipeline
) -> str | None:
    """Why the key in ``api_key_env`` must not go to ``base_url``, or None when it may: the
    host was set at load time or is allowed in ``SPACY_REASONINGNER_API_HOSTS``, or it is
    loopback and the variable ``OPENAI_API_KEY``."""
    if not api_key_env:
        return None
    saved_url = str(saved.backend.get("base_url") or "").rstrip("/")
    if base_url.rstrip("/") != saved_url or _host_allowed(base_url):
        return None
    from_load = api_key_env != saved.backend.get("api_key_env")
    if _is_loopback(base_url) and (api_key_env == DEFAULT_KEY_ENV or from_load):
        return None
    host = urlsplit(base_url).netloc
    return (
        f"the pipeline {saved.folder} asks to send ${api_key_env} to {host}, as its config.cfg "
        f"says; a saved pipeline may send only ${DEFAULT_KEY_ENV}, and only to a server on "
        "this machine, unless you allow more (a pipeline from elsewhere could send any "
        "variable anywhere). If you trust it, allow the host: "
        f"{API_HOSTS_ENV}={urlsplit(base_url).hostname}, or set the server when loading: "
        + saved.override_hint(f'"base_url": "{base_url}"')
    )


def _host_allowed(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    entries = os.environ.get(API_HOSTS_ENV, "").lower().replace(" ", "").split(",")
    return bool(host) and (host in entries or f"{host}:{parts.port}" in entries)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
