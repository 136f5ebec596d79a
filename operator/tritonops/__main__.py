"""``python -m tritonops``."""

import sys

from tritonops.cli import main

sys.exit(main())
