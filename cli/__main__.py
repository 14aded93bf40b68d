"""`python -m shoal.cli ARGS` is `shoal ARGS` (what the lab, `shoal up` and the tests spawn)."""
import sys

from shoal.cli.main import main

sys.exit(main())
