"""`python -m edgepipe.runtime`: the on-device runner (`edgepipe-runner`)."""

import sys

from edgepipe.runtime.runner import main

sys.exit(main())
