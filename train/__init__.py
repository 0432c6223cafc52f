"""Training stage (needs the `train` extra): the model, the corpus, the trainer, the checkpoint.

    from charlstm.train import Trainer
    result = Trainer("corpus.txt", {"hidden_size": 256}, {"epochs": 2}).run("model.pt")

Names are imported on first use, so that `charlstm-train` can say which extra is missing
instead of failing on `import torch`.
"""

from charlstm.runtime.common import lazy_exports

_API = {
    "ModelConfig": "config", "TrainOptions": "config", "CharLSTM": "model", "Corpus": "data",
    "Trainer": "trainer", "TrainResult": "trainer", "Interrupted": "trainer", "Diverged": "trainer",
    "load_checkpoint": "checkpoint:load", "build_model": "checkpoint",
}
__all__ = sorted(_API)
__getattr__ = lazy_exports(__name__, _API)
