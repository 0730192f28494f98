"""Entry for `python -m engine` and `torchrun -m engine`."""

import sys

from engine.cli import main

sys.exit(main())
