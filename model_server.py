"""Run the model server: ``python model_server.py --help`` lists the settings."""

import sys

from onemodel.model_server.main import main

if __name__ == "__main__":
    sys.exit(main())
