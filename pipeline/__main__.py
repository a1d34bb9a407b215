"""`python -m pipeline`: the inspection and inference commands (`luigi --module pipeline` runs the tasks)."""
from .cli import main

raise SystemExit(main())
