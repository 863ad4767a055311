"""`python -m agent` runs the same command line as `lesfocus-agent`."""

from .cli import main

raise SystemExit(main())
