"""``python -m vlens_async``: the ``vlens`` command."""

import sys

from vlens_async.cli import main

if __name__ == "__main__":
    sys.exit(main())
