"""Allow ``python -m streamguard_core ...``."""

from streamguard_core.cli import main

raise SystemExit(main())
