"""`python -m convtvm.arm [--force] [--jobs N] [--quiet]`: set up the emulated aarch64 device
(the same as `convtvm device setup arm-emulated`)."""

import sys

from .device import main

sys.exit(main())
