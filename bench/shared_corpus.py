"""Where benchmarks and tests find the real corpus: $CHARLSTM_CORPUS, else ../shared/data/moliere.txt beside the clone."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOLIERE = Path(os.environ.get("CHARLSTM_CORPUS", ROOT.parent / "shared" / "data" / "moliere.txt"))
