"""Whether the Hugging Face Hub can be reached, asked once per command before the Hub libraries load.

Without network and without `HF_HUB_OFFLINE`, huggingface_hub retries every request, and a run spends minutes
before it reads the local cache. One short connection attempt decides instead; the Hub libraries read
`HF_HUB_OFFLINE` when they are imported, so this runs first.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can a TCP connection to `url`'s host and port be opened within `timeout` seconds?"""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:  # refused, unreachable, no DNS answer or timed out: all mean "not from here"
        return False


def go_offline_unless_reachable(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set HF_HUB_OFFLINE (and HF_DATASETS_OFFLINE) when the Hub, or the proxy in front of it, cannot be
    reached; an explicit HF_HUB_OFFLINE, 0 or 1, is left alone and skips the check. True when it went offline."""
    if "HF_HUB_OFFLINE" in environ:
        return False
    endpoint = environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT)
    proxy = next((environ[name] for name in PROXY_VARIABLES if environ.get(name)), None)
    if reachable(proxy or endpoint):
        return False
    environ["HF_HUB_OFFLINE"] = "1"
    environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logger.warning(
        "the Hugging Face Hub (%s) cannot be reached: working offline from the local cache; set "
        "HF_HUB_OFFLINE=1 to skip this check",
        proxy or endpoint,
    )
    return True
