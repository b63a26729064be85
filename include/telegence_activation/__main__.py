"""``python -m telegence_activation``: see :mod:`telegence_activation.cli`."""

import sys

from telegence_activation.cli import main

sys.exit(main())
