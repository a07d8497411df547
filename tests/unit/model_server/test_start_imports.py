"""What a model server imports before it loads a model: nothing a warm start does not need."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.processes import ROOT

# Heavy packages a warm OpenVINO start never uses: the converter's (TensorFlow, Keras), the
# int8 path's (NNCF, SciPy, scikit-learn) and the image decoder's (OpenCV, Pillow).
_NOT_AT_START = ("tensorflow", "keras", "nncf", "scipy", "sklearn", "cv2", "PIL", "torch")


def test_the_model_server_modules_import_no_heavy_package() -> None:
    script = (
        "import json, sys\n"
        "import onemodel.model_server.main, onemodel.model_server.loading\n"
        "import onemodel.model_server.versions\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    assert "onemodel.model_server.loading" in loaded  # the check saw the modules imported
    assert [name for name in loaded if name.split(".")[0] in _NOT_AT_START] == []
