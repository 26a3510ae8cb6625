"""``python -m reactor.cli``."""

import sys

from reactor.cli.commands import main

sys.exit(main())
