"""Regex-constrained text: the pattern subset compiled to a DFA over the vocabulary; generated texts always match."""

import random
import re

import pytest

from charlstm.runtime import BadInput, Model, generate, generate_batch
from charlstm.runtime.regex import compile_regex
from conftest import ROOT, assert_bad_input, run_cli

SHIPPED = ROOT / "models" / "moliere.onnx"
VOCAB = list("abc01 \n-.é")
PATTERNS = ["a*b", "(ab|c)+", "[a-c]{2,3}", "[^a]*", r"\d+(\.\d{1,2})?", "a?b?c?", "(a|b)*c{2}", r"[\-.a]+", "x|a",
            r"\w+\s\w+", "^a.b$", "(?:ab){0,2}c*", "[]a]", "a{3}", "[é-é]+", r"\x61\u0062", "(a|)(b|)", "[a-c0-1]{2,}"]


def accepts(dfa, text: str) -> bool:
    state = 0
    for ch in text:
        if ch not in VOCAB or (state := int(dfa.next[state, VOCAB.index(ch)])) < 0:
            return False
    return bool(dfa.accepting[state])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_dfa_accepts_what_python_s_re_accepts(pattern):
    dfa, rng = compile_regex(pattern, VOCAB), random.Random(pattern)
    for _ in range(2000):
        text = "".join(rng.choice(VOCAB) for _ in range(rng.randint(0, 7)))
        assert accepts(dfa, text) == (re.fullmatch(pattern, text, re.ASCII) is not None), text


@pytest.mark.parametrize("pattern, words", [
    ("a(?=b)", "lookaround"), (r"(a)\1", "backreferences"), ("a*?", "lazy"), ("a++", "possessive"), ("(a", "unbalanced '('"),
    ("a)", "unbalanced ')'"), ("[a", "unbalanced '['"), ("*a", "nothing to repeat"), (r"a\b", "anchor"),
    ("a^b", "only at the very start"), ("[c-a]", "a range is"), ("a{2,1}", "m <= n"), ("a{1001}", "m <= n <= 1000"),
    ("q", "no text of the model's characters matches"), (r"\q", "unknown escape"), ("a\\", "end with a backslash"),
])
def test_what_the_subset_refuses(pattern, words):
    with pytest.raises(BadInput, match=re.escape(words)):
        compile_regex(pattern, VOCAB)


CONSTRAINTS = [r"[A-Z]+\.", r"(Monsieur|Madame), [a-zé ]+!", r"\d{3}-\d{4}", r"[a-z]+( [a-z]+){2,5}\.", "(oui|non)",
               r"[^\n]{10,40}\n[^\n]{5,}", "(ah|oh|eh)+!?", r"[A-Z][a-z]*(, [a-z]+)*\."]


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"temperature": 1.3, "top_k": 20}, {"min_p": 0.05, "repetition_penalty": 1.2},
                                     {"greedy": True}, {"ban": "e", "logit_bias": {"!": 2.0}}, {"top_p": 0.9}])
def test_generated_texts_always_match(options):
    model = Model(SHIPPED)
    for pattern in CONSTRAINTS:
        if "ban" in options and "Monsieur" in pattern:
            with pytest.raises(BadInput, match="no text of the model's characters matches"):  # it needs an 'e'
                generate(model, "", 10, regex=pattern, **options)
            continue
        for seed in range(3):
            for n in (60, 300):
                text = generate(model, "ALCESTE.\n", n, seed=seed, regex=pattern, **options)
                assert re.fullmatch(pattern, text) and len(text) <= n, (pattern, seed, n, text)
                assert "e" not in text or "ban" not in options


def test_batches_stop_strings_and_budgets():
    model = Model(SHIPPED)
    texts = generate_batch(model, "", 120, 6, seed=5, regex=r"[A-Z]+\.( [a-z]+)+\.", temperature=1.2)
    assert all(re.fullmatch(r"[A-Z]+\.( [a-z]+)+\.", t) for t in texts) and len(set(texts)) > 1
    for seed in range(6):  # a stop string ends the text only where what comes before it matches
        text = generate(model, "", 200, seed=seed, regex=r"[a-z ,]+\.", stop=[","], temperature=1.0)
        assert re.fullmatch(r"[a-z ,]+\.", text) or re.fullmatch(r"[a-z ]+\.?", text), text
    assert generate(model, "", 4, seed=1, regex=r"[a-z]{4}") .isalpha()
    with pytest.raises(BadInput, match="the shortest text matching"):
        generate(model, "", 3, regex=r"[a-z]{4}")
    with pytest.raises(BadInput, match="no text of the model's characters"):
        generate(model, "", 3, regex="[ab]", ban="ab")


@pytest.mark.slow
def test_cli_regex():
    proc = run_cli("charlstm-sample", "--prime", "ORGON.", "--regex", r"(Oui|Non), [a-z]+\.", "-n", 100, "--seed", 2)
    assert proc.returncode == 0 and re.fullmatch(r"ORGON\.(Oui|Non), [a-z]+\.\n", proc.stdout), proc.stdout
    assert_bad_input(run_cli("charlstm-sample", "--regex", "a(?=b)"), "lookaround")
