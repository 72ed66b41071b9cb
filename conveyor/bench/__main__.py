"""`python -m conveyor.bench`."""

from conveyor.bench.runner import main

raise SystemExit(main())
