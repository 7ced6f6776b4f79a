"""`python -m mnist_drill` is the `mnist-drill` command."""

import sys

from .cli import main

sys.exit(main())
