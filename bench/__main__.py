"""`python -m bench`."""

from bench.runner import main

raise SystemExit(main())
