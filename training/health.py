"""Whether a server the stages need answers: the launcher waits on it, the GRPO stage checks
its rollout server before TRL's long retries."""

from __future__ import annotations

import urllib.error
import urllib.request

# Servers are local: no proxy from the environment in between.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers(url: str, timeout: float = 3.0) -> bool:
    """True when ``url`` answers with a success status."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False
