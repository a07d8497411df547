"""``python -m onemodel``: the ``onemodel`` command."""

import sys

from onemodel.cli import main

sys.exit(main())
