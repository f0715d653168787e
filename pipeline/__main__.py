"""`python -m edgepipe.pipeline`: the `edgepipe` command."""

import sys

from edgepipe.pipeline.cli.main import main

sys.exit(main())
