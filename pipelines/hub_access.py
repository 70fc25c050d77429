"""Whether the Hugging Face Hub can be reached, asked once per command before the Hub libraries load, and why a
command works offline, for the messages of what the cache lacks.

Without network and without `HF_HUB_OFFLINE`, huggingface_hub retries every request, and a run spends minutes
before it reads the local cache. One short connection attempt decides instead; the Hub libraries read
`HF_HUB_OFFLINE` when they are imported, so this runs first. When it sets `HF_HUB_OFFLINE` itself it says so in
the environment too (`UNREACHABLE_VARIABLE`, inherited by the processes a command starts), so that a message never
tells a user who set nothing that they set it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
# Set beside HF_HUB_OFFLINE when hubtune went offline itself; it holds the address that could not be reached.
UNREACHABLE_VARIABLE = "HUBTUNE_HUB_UNREACHABLE"
# The values huggingface_hub reads as true.
TRUE_VALUES = ("1", "ON", "YES", "TRUE")


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
    environ[UNREACHABLE_VARIABLE] = proxy or endpoint
    logger.warning(
        "the Hugging Face Hub (%s) cannot be reached: working offline from the local cache; set "
        "HF_HUB_OFFLINE=1 to skip this check",
        proxy or endpoint,
    )
    return True


def offline_reason(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the Hub is not asked, as the end of a sentence ("... is not in the local cache and <reason>"): hubtune
    could not reach it, or the user set HF_HUB_OFFLINE. None when the Hub is asked (online)."""
    if environ.get("HF_HUB_OFFLINE", "").upper() not in TRUE_VALUES:
        return None
    unreachable = environ.get(UNREACHABLE_VARIABLE)
    if unreachable:
        return f"the Hugging Face Hub ({unreachable}) could not be reached, so hubtune works from the local cache alone"
    return "HF_HUB_OFFLINE is set in your environment, so only the local cache is read"
