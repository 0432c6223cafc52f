"""The torch-free runtime (numpy + onnxruntime): load an exported model, step it, sample, score.

    from charlstm.runtime import Model, generate, score
    model = Model("model.onnx")
    print(generate(model, "ALCESTE.", 300, temperature=0.8, seed=1))
    print(score(model, "Je vous aime.").nats_per_char)
"""

from charlstm.core.errors import BadInput
from charlstm.runtime.beams import Beam, beam_search
from charlstm.runtime.generate import (Logprob, Score, generate, generate_batch, lane_seeds, score, stream,
                                       stream_batch, stream_logprobs)
from charlstm.runtime.model import Model, State
from charlstm.runtime.sampler import SamplingOptions

__all__ = ["BadInput", "Beam", "beam_search", "Logprob", "Model", "SamplingOptions", "Score", "State", "generate", "generate_batch",
           "lane_seeds", "score", "stream", "stream_batch", "stream_logprobs"]
