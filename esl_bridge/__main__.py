import sys

from esl_bridge.cli import main

sys.exit(main())
