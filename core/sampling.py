"""The sampler's shared numbers and words: defaults, bounds and refusal lines that every runtime uses (docs/formats.md section 4).

The Python runtime imports them; the JavaScript runtime reads them from contract.mjs,
generated from here (core/contract.py), so that no bound or message is copied by hand.
"""

from charlstm.core import limits

TEMPERATURE = 0.8  # the default
REPETITION_WINDOW = 32  # characters the penalty looks back, by default
# Beyond these a penalty changes nothing more (a penalized character is already never drawn)
# and the arithmetic would overflow.
MIN_PENALTY, MAX_PENALTY = 1e-6, 1e6
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-6, 1e6  # or 0, which is greedy
TOP_P_SLACK = 1e-12  # top-p keeps a character while the mass before it is < (top_p - slack) * total
MAX_BIAS = 100.0  # a logit bias lies in [-100, 100] (OpenAI's range): 100 already decides
MAX_TOP = 256  # logprobs: alternatives listed per character
MAX_BEAMS = 64
MAX_LENGTH_PENALTY = 10.0

MESSAGES = {
    "temperature": f"temperature must be a finite number, 0 (greedy) or between {MIN_TEMPERATURE:g} and"
                   f" {MAX_TEMPERATURE:g}",
    "top_k": "top-k must be at least 1",
    "top_p": "top-p must be in (0, 1]",
    "min_p": "min-p must be in (0, 1]",
    "repetition_penalty": f"repetition penalty must be between {MIN_PENALTY:g} and {MAX_PENALTY:g}",
    "repetition_window": f"repetition window must be from 1 to {limits.MAX_WINDOW}",
    "logit_bias": f"a logit bias must be a number from {-MAX_BIAS:g} to {MAX_BIAS:g}",
    "ban_all": "ban: it bans every character of the vocabulary",
    "logprobs": f"logprobs must be an integer from 0 to {MAX_TOP}",
    "beams": f"beams must be an integer from 1 to {MAX_BEAMS}",
    "length_penalty": f"the length penalty must be a number from 0 to {MAX_LENGTH_PENALTY:g}",
}


def contract() -> dict:
    """These facts as data, for contract.mjs."""
    return {"defaults": {"temperature": TEMPERATURE, "repetitionWindow": REPETITION_WINDOW},
            "minTemperature": MIN_TEMPERATURE, "maxTemperature": MAX_TEMPERATURE, "minPenalty": MIN_PENALTY,
            "maxPenalty": MAX_PENALTY, "topPSlack": TOP_P_SLACK, "maxBias": MAX_BIAS, "maxTop": MAX_TOP,
            "maxBeams": MAX_BEAMS, "maxLengthPenalty": MAX_LENGTH_PENALTY, "messages": MESSAGES}
