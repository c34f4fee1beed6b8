"""`python -m keras_gradreg ...`: see `keras_gradreg.cli`."""

import sys

from keras_gradreg.src.tools.cli import main

sys.exit(main())
