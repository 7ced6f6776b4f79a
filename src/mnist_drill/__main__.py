"""`python -m mnist_drill` is the `mnist-drill` command."""

from .cli import main

raise SystemExit(main())
