"""The grpc.Server of the gRPC process: its limits, its threads, its one service."""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc

from onemodel.errors import ConfigError
from onemodel.grpc_server.metrics import GrpcMetrics
from onemodel.grpc_server.service import Backend, InferenceService
from onemodel.settings import Settings
from onemodel.web.image_decoder import ImageDecoder


def create_server(
    settings: Settings,
    backend: Backend,
    decoder: ImageDecoder,
    metrics: GrpcMetrics | None = None,
) -> tuple[Any, int]:
    """Build (not start) the server on GRPC_HOST:GRPC_PORT; return it and its bound port.

    Port 0 binds a free port (tests). A port in use raises ConfigError naming it. Encoded
    images go through ``decoder``: ``create_decoder(settings)``, the decode sandbox a web
    worker uses, in production; the caller closes it after the server has stopped.
    """
    threads = settings.grpc_threads
    server = grpc.server(
        # Each thread waits on one model call; like the web workers' threads, together they
        # are what lets the model server's batches fill.
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[
            # The same bound as an HTTP body (MAX_UPLOAD_BYTES); larger messages get
            # RESOURCE_EXHAUSTED from gRPC before any of our code runs.
            ("grpc.max_receive_message_length", settings.max_upload_bytes),
            ("grpc.max_send_message_length", -1),
            # Never share the port with another process silently (Linux default: shared).
            ("grpc.so_reuseport", 0),
        ],
        # Calls beyond this wait nowhere: gRPC answers RESOURCE_EXHAUSTED at once.
        maximum_concurrent_rpcs=2 * threads,
    )
    service = InferenceService(settings, backend, metrics or GrpcMetrics(), decoder)
    server.add_generic_rpc_handlers((service.generic_handler(),))
    address = f"{settings.grpc_host}:{settings.grpc_port or 0}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise ConfigError(f"cannot listen for gRPC on {address} (GRPC_HOST, GRPC_PORT): in use?")
    return server, int(port)
