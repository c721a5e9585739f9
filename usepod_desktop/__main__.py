"""`python -m usepod_desktop`: same as the `usepod-desktop` command."""

import sys

from usepod_desktop.cli import main

sys.exit(main())
