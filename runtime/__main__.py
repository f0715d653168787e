import sys

from edgepipe.runtime.runner import main

sys.exit(main())
