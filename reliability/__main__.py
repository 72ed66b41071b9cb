"""`python -m reliability`."""

from reliability.runner import main

raise SystemExit(main())
