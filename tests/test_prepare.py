"""Corpus preparation: chunked reading gives the whole-file text's ids; the cache is reused, and rebuilt when wrong."""

import os
import stat

import numpy as np
import pytest

from charlstm.core.corpus import held_out, read_corpus
from charlstm.core.errors import BadInput
from charlstm.train.data import Corpus
from charlstm.train.prepare import cache_path, prepare, text_chunks
from conftest import MOLIERE, markov_text

TRICKY = "\ufeffÉté\r\nà l'ombre\rdes 𝄞 clés\r\n\r\nΩ" * 50 + "fin\r"  # BOM, CRLF, CR, 2-4 byte characters


def whole_file_ids(path, normalize=True):
    """Today's reading, the reference: the whole text, its sorted characters, a list of ids."""
    text = read_corpus(path, normalize)
    vocab = sorted(set(text))
    return vocab, np.array([vocab.index(c) for c in text])


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 1 << 20])
@pytest.mark.parametrize("normalize", [True, False])
def test_chunks_of_any_size_give_the_whole_files_ids(tmp_path, chunk, normalize):
    path = tmp_path / "tricky.txt"
    path.write_bytes(TRICKY.encode())
    assert "".join(text_chunks(path, normalize, chunk)) == read_corpus(path, normalize)
    prepared = prepare(path, normalize, cache_dir=tmp_path, chunk=chunk)
    vocab, ids = whole_file_ids(path, normalize)
    assert prepared.vocab == vocab and np.array_equal(prepared.ids, ids)
    assert prepared.ids.dtype == np.uint8 and not prepared.ids.flags.writeable


def test_wide_vocabularies_get_wider_ids(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text("".join(chr(0x4E00 + i) for i in range(300)) * 3)  # 300 distinct characters
    prepared = prepare(path, cache_dir=tmp_path)
    assert prepared.ids.dtype == np.uint16 and len(prepared.vocab) == 300
    assert np.array_equal(prepared.ids, whole_file_ids(path)[1])


@pytest.mark.parametrize("data, words", [
    (b"", "is empty"), (b"abc\x00def" * 10, "looks binary"),
    ("abcd café".encode("latin-1") * 3, "not UTF-8 (byte 0xe9 at offset 8)"),
])
def test_bad_corpora_are_refused_as_read_corpus_refuses_them(tmp_path, data, words):
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    for read in (lambda: read_corpus(path), lambda: prepare(path, cache_dir=tmp_path, chunk=4)):
        with pytest.raises(BadInput, match=words.replace("(", r"\(").replace(")", r"\)")):
            read()


def test_the_cache_is_reused_and_rebuilt_when_it_does_not_fit(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(markov_text(5_000))
    first = prepare(corpus)
    assert first.cache == tmp_path / "c.txt.text.charlstm-ids" and first.rebuilt == "no cache yet"
    assert prepare(corpus).rebuilt is None, "the second run reuses it"
    assert prepare(corpus, normalize_newlines=False).cache.name == "c.txt.raw.charlstm-ids"
    corpus.write_text(markov_text(5_000, seed=1))  # the corpus changed: its sha256 differs
    changed = prepare(corpus)
    assert changed.rebuilt == "made from another version of the corpus, with other options or by an older charlstm"
    assert np.array_equal(changed.ids, whole_file_ids(corpus)[1])
    data = first.cache.read_bytes()
    first.cache.write_bytes(data[:-10])
    assert prepare(corpus).rebuilt == "truncated"
    first.cache.write_bytes(b"garbage" * 10)
    assert prepare(corpus).rebuilt == "not a charlstm cache"
    assert np.array_equal(prepare(corpus).ids, whole_file_ids(corpus)[1])


def test_a_cache_folder_names_caches_by_content_and_a_read_only_folder_is_left_alone(tmp_path):
    shared = tmp_path / "cache"
    shared.mkdir()
    corpus = tmp_path / "c.txt"
    corpus.write_text(markov_text(3_000))
    found = prepare(corpus, cache_dir=shared)
    assert found.cache.parent == shared and found.cache.name == f"{found.sha256[:20]}.text.charlstm-ids"
    assert found.cache == cache_path(corpus, True, shared, found.sha256)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "c.txt").write_text(markov_text(3_000))
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)  # a read-only share, even for root
    try:
        away = prepare(locked / "c.txt")
        assert away.cache.parent != locked and os.listdir(locked) == ["c.txt"]
    finally:
        locked.chmod(0o755)


def test_the_corpus_split_and_lanes_read_the_prepared_ids(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(markov_text(10_000))
    loaded = Corpus.load(corpus, 0.05)
    train, val = held_out(whole_file_ids(corpus)[1], 0.05)
    assert np.array_equal(loaded.train_ids, train) and np.array_equal(loaded.val_ids, val)


@pytest.mark.slow
def test_moliere_gives_todays_vocabulary_and_split(tmp_path):
    if not MOLIERE.is_file():
        pytest.skip(f"the real corpus is not at {MOLIERE}")
    loaded = Corpus.load(MOLIERE, 0.05, cache_dir=tmp_path)
    vocab, ids = whole_file_ids(MOLIERE)
    train, val = held_out(ids, 0.05)
    assert loaded.vocab == vocab and len(vocab) == 114
    assert np.array_equal(loaded.train_ids, train) and np.array_equal(loaded.val_ids, val)
    assert (len(train), len(val)) == (1_581_576, 83_240)
