"""``python -m slide_unet.cli``: the ``slide-unet`` command."""

import sys

from slide_unet.cli import main

sys.exit(main())
