"""``python -m plasticnet`` is the ``plasticnet`` command."""

import sys

from .cli import main

sys.exit(main())
