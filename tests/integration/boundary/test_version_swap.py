"""A version swap across the real manager socket: the client drops its spec, answers say who."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from onemodel.boundary.client import ModelClient
from onemodel.boundary.contract import ModelInfo
from onemodel.boundary.server import create_server
from onemodel.errors import ModelChangedError
from onemodel.model_server.batcher import Batcher
from onemodel.model_server.service import ModelService
from onemodel.settings import Address, Settings
from onemodel.web.app import create_app

AUTHKEY = b"k" * 32


@dataclass
class Served:
    service: ModelService
    client: ModelClient
    batchers: list[Batcher]

    def serve(self, version: str, size: int, classes: int) -> Batcher | None:
        def model(images: np.ndarray) -> np.ndarray:
            # Class `classes - 1` always wins: answers show which version computed them.
            return np.tile(np.arange(classes, dtype=np.float32), (images.shape[0], 1))

        batcher = Batcher(model, max_batch_size=4, max_delay_ms=0, max_queue=16)
        batcher.start()
        self.batchers.append(batcher)
        return self.service.set_ready(
            batcher,
            ModelInfo(
                state="ready",
                name="m",
                version=version,
                input_size=(size, size),
                labels=tuple(f"v{version}_{index}" for index in range(classes)),
                max_batch_size=4,
            ),
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    service = ModelService()
    address = Address(path=str(tmp_path / "model.sock"))
    server = create_server(service, address, AUTHKEY)
    # Only the accepting thread: serve_forever's exit would reset pytest's captured stdout.
    # It ends with the test process; the socket lives in tmp_path.
    server.stop_event = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.accepter, daemon=True).start()  # type: ignore[attr-defined]
    state = Served(service, ModelClient(address, AUTHKEY), [])
    state.serve("1", 8, 2)
    yield state
    for batcher in state.batchers:
        batcher.stop()


def test_a_new_version_invalidates_the_clients_spec(served: Served) -> None:
    client = served.client
    old = client.spec()
    assert (old.version, old.input_size) == ("1", (8, 8))
    served.serve("2", 12, 3)
    assert client.spec() is old  # cached: nothing told the client yet
    with pytest.raises(ModelChangedError, match="version 2 is"):
        client.predict(np.zeros((1, 8, 8, 3), np.uint8), 5, version="1")
    new = client.spec()
    assert (new.version, new.input_size, new.num_classes) == ("2", (12, 12), 3)
    assert client.predict(np.zeros((1, 12, 12, 3), np.uint8), 5, version="2").shape == (1, 3)


def test_info_showing_a_new_version_also_drops_the_spec(served: Served) -> None:
    assert served.client.spec().version == "1"
    served.serve("2", 12, 3)
    assert served.client.info().version == "2"
    assert served.client.spec().version == "2"


def test_the_web_answers_with_the_new_version_after_a_swap(
    served: Served, photo_jpeg: bytes
) -> None:
    app = create_app(Settings(model_server_address=Address(path="/unused")), served.client)
    web = app.test_client()

    def predict() -> dict[str, object]:
        response = web.post("/predict", data={"file": (io.BytesIO(photo_jpeg), "photo.jpg")})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()  # type: ignore[no-any-return]

    first = predict()
    assert first["model_version"] == "1"
    assert first["predictions"][0]["label"] == "v1_1"  # type: ignore[index]
    served.serve("2", 12, 3)
    second = predict()
    assert second["model_version"] == "2"
    assert second["predictions"][0]["label"] == "v2_2"  # type: ignore[index]
    infer = web.post(
        "/v2/models/m/infer",
        json={
            "inputs": [
                {"name": "image", "datatype": "UINT8", "shape": [1, 12, 12, 3], "data": [0] * 432}
            ]
        },
    )
    assert infer.status_code == 200 and infer.get_json()["model_version"] == "2"
    assert web.get("/v2/models/m").get_json()["versions"] == ["2"]
    assert web.get("/v2/models/m/versions/2").status_code == 200
    gone = web.get("/v2/models/m/versions/1")
    assert gone.status_code == 404 and "served now" in gone.get_json()["error"]
    ready = web.get("/readyz").get_json()
    assert ready["version"] == "2" and ready["last_error"] == ""
