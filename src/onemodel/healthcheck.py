"""Probe for containers: exit 0 when the model server named by the environment is ready.

Usage: ``python -m onemodel.healthcheck`` (reads MODEL_SERVER_ADDRESS and the authkey
variables, like the model server itself). Never prints the authkey.
"""

from __future__ import annotations

import sys

from onemodel.boundary.client import ModelClient
from onemodel.errors import ConfigError, OneModelError
from onemodel.settings import Address, Settings, parse_address


def main() -> int:
    """Return 0 if ready, 1 if not ready or unreachable, 2 on bad configuration."""
    try:
        settings = Settings.from_env()
        address = settings.model_server_address
        if address is None:
            raise ConfigError("MODEL_SERVER_ADDRESS is not set")
        client = ModelClient(_reachable(address), settings.require_authkey())
        info = client.info()
    except OneModelError as error:
        print(f"not ready: {error.message}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    if not info.ready:
        print(f"not ready: {info.reason}", file=sys.stderr)
        return 1
    print(f"ready: {info.name} (load_count {info.load_count})")
    return 0


def _reachable(address: Address) -> Address:
    """A server listening on all interfaces is probed through loopback."""
    if address.is_tcp and address.host in ("0.0.0.0", "::", ""):
        return parse_address(f"127.0.0.1:{address.port}")
    return address


if __name__ == "__main__":
    sys.exit(main())
