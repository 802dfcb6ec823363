"""``python -m tierwise.testing``: run the provider simulator in the foreground."""

import sys

from tierwise.testing.serve import main

if __name__ == "__main__":
    sys.exit(main())
