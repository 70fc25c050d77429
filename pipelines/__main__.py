"""`python -m pipelines` and `accelerate launch -m pipelines`: the same CLI as `hubtune`."""

import sys

from pipelines.commands.cli import main

sys.exit(main())
