"""``python -m telegence_local``: the same as ``python -m telegence_local.demo`` (``make demo``)."""

from __future__ import annotations

import sys

from telegence_local.demo import main

if __name__ == "__main__":
    sys.exit(main())
