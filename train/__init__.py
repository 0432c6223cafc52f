"""Training stage (needs the `train` extra): the model, the corpus, the trainer, the checkpoint.

    from charlstm.train import Trainer
    result = Trainer("corpus.txt", {"hidden_size": 256}, {"epochs": 2}).run("model.pt")

Names are imported on first use, so that `charlstm-train` can say which extra is missing
instead of failing on `import torch`.
"""

from charlstm.core.errors import BadInput
from charlstm.core.lazy import lazy_exports

_API = {
    "ModelConfig": "config", "TrainOptions": "config", "CharLSTM": "model", "Corpus": "data",
    "Trainer": "trainer", "TrainResult": "trainer", "Interrupted": "trainer", "Diverged": "trainer",
    "Checkpoint": "checkpoint", "load_checkpoint": "checkpoint:load", "save_checkpoint": "checkpoint:save",
    "build_model": "checkpoint",
}
__all__ = sorted([*_API, "BadInput"])
__getattr__ = lazy_exports(__name__, _API)
