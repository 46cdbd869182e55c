"""``python -m scheduler_service``: the same command line as the ``clipsched`` script."""

from scheduler_service.cli import main

raise SystemExit(main())
