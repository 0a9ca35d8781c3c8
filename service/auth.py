"""Optional bearer-token authentication (``authorization: Bearer <token>`` metadata).

The call gate (calls.py) asks it on every call of the generation service. Health checks and
reflection are other services, outside the gate: they stay open so load balancers and tools work
without the token.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path


def load_token(token_file: str, token_env: str) -> str | None:
    """The configured token, from a file (first line) or an environment variable; None when off."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"{token_file}: the auth token file is empty")
        return token
    if token_env:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise ValueError(f"environment variable {token_env} holds no auth token")
        return token
    return None


class BearerToken:
    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def admits(self, metadata) -> bool:
        """Whether the call's metadata carries the token (compared in constant time)."""
        for key, value in metadata or ():
            if key == "authorization":
                return hmac.compare_digest(str(value).encode(), self._expected)
        return False
