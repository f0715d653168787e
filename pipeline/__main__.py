import sys

from edgepipe.pipeline.cli import main

sys.exit(main())
