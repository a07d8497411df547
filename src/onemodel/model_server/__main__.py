"""``python -m onemodel.model_server``: run the model server."""

import sys

from onemodel.model_server.main import main

sys.exit(main())
