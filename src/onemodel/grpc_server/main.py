"""``python -m onemodel.grpc_server``: serve the protocol over gRPC until SIGTERM, then drain."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from onemodel.boundary.pool import pool_from_settings
from onemodel.errors import ConfigError, OneModelError
from onemodel.grpc_server.server import create_server
from onemodel.grpc_server.service import ACCESS_LOGGER
from onemodel.logconfig import configure_logging
from onemodel.settings import Settings
from onemodel.web.image_decoder import create_decoder

logger = logging.getLogger(__name__)


def main() -> None:
    """Serve on GRPC_HOST:GRPC_PORT as a client of MODEL_SERVER_ADDRESS."""
    configure_logging()
    # Gunicorn's convention (gunicorn.conf.py): ACCESS_LOG="" turns the access log off.
    if os.environ.get("ACCESS_LOG", "-") == "":
        logging.getLogger(ACCESS_LOGGER).disabled = True
    try:
        settings = Settings.from_env()
        if settings.grpc_port is None:
            raise ConfigError("GRPC_PORT is not set: there is no port to serve gRPC on")
        # The same pool of model servers as the web workers: batches mix both tiers.
        client = pool_from_settings(settings)
        # The decode sandbox of a web worker: encoded images never decode in this process.
        decoder = create_decoder(settings)
        server, port = create_server(settings, client, decoder)
    except OneModelError as error:
        logger.error("cannot start the gRPC server: %s", error.message)
        sys.exit(2)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    logger.info(
        "serving the Open Inference Protocol over gRPC on %s:%d (model server %s)",
        settings.grpc_host,
        port,
        ",".join(str(address) for address in settings.model_server_pool),
    )
    stopping.wait()
    grace_s = settings.grpc_graceful_timeout_s
    logger.info("stopping: no new calls; up to %g s for the calls in flight", grace_s)
    # stop() refuses new calls at once and cancels those still running after the grace.
    server.stop(grace_s).wait()
    decoder.close()
    client.close()
    logger.info("stopped")
